"""Losses of the cascade (backend-agnostic, ``keras.ops`` only), registered for saving.

Tensors are channels-last: ``y_true``/``y_pred`` of shape (B, X, Y, Z, C).
"""

from __future__ import annotations

import keras
from keras import ops

EPS = 1e-5


def soft_dice_loss(y_true, y_pred):
    """1 - mean soft Dice over channels (background included), per sample then averaged."""
    axes = (1, 2, 3)
    intersection = ops.sum(y_true * y_pred, axis=axes)
    denominator = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    dice = (2.0 * intersection + EPS) / (denominator + EPS)
    return 1.0 - ops.mean(dice, axis=-1)


def cross_entropy(y_true, y_pred):
    """Mean categorical cross-entropy over voxels, per sample."""
    y_pred = ops.clip(y_pred, EPS, 1.0)
    return -ops.mean(ops.sum(y_true * ops.log(y_pred), axis=-1), axis=(1, 2, 3))


@keras.saving.register_keras_serializable(package="hsynex")
class DiceCrossEntropy(keras.losses.Loss):
    """Soft Dice + ``ce_weight`` x cross-entropy (stage 2 and the localiser)."""

    def __init__(self, ce_weight: float = 1.0, name: str = "dice_ce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.ce_weight = float(ce_weight)

    def call(self, y_true, y_pred):
        return soft_dice_loss(y_true, y_pred) + self.ce_weight * cross_entropy(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "ce_weight": self.ce_weight}


@keras.saving.register_keras_serializable(package="hsynex")
class DiceDistance(keras.losses.Loss):
    """Stage-1 loss: soft Dice on the ``n_classes`` softmax channels + ``distance_weight`` x MSE
    between the predicted tanh channel and the true signed distance map divided by
    ``distance_max_mm`` (both in [-1, 1]; negative inside the hypothalamus).

    ``y_true`` packs the one-hot target and the signed distance (mm) as its last channel.
    """

    def __init__(self, n_classes: int = 2, distance_max_mm: float = 10.0,
                 distance_weight: float = 1.0, name: str = "dice_distance", **kwargs):
        super().__init__(name=name, **kwargs)
        self.n_classes = int(n_classes)
        self.distance_max_mm = float(distance_max_mm)
        self.distance_weight = float(distance_weight)

    def call(self, y_true, y_pred):
        k = self.n_classes
        dice = soft_dice_loss(y_true[..., :k], y_pred[..., :k])
        target = ops.clip(y_true[..., k] / self.distance_max_mm, -1.0, 1.0)
        mse = ops.mean(ops.square(y_pred[..., k] - target), axis=(1, 2, 3))
        return dice + self.distance_weight * mse

    def get_config(self):
        return {**super().get_config(), "n_classes": self.n_classes,
                "distance_max_mm": self.distance_max_mm, "distance_weight": self.distance_weight}


def merge_foreground(y):
    """(B, X, Y, Z, C) class maps -> (B, X, Y, Z, 2): channel 0 and the sum of the others."""
    return ops.concatenate([y[..., :1], ops.sum(y[..., 1:], axis=-1, keepdims=True)], axis=-1)


def soft_volume_error(y_true, y_pred, min_volume: float = 50.0):
    """Per sample, the mean over the foreground channels (1..) of |sum p - sum t| /
    (sum t + ``min_volume``): the relative error of the soft volumes (voxels), damped for
    structures that are (nearly) absent from the crop."""
    axes = (1, 2, 3)
    predicted = ops.sum(y_pred[..., 1:], axis=axes)
    true = ops.sum(y_true[..., 1:], axis=axes)
    return ops.mean(ops.abs(predicted - true) / (true + min_volume), axis=-1)


def pair_volume_error(y_true, y_pred, min_volume: float = 50.0):
    """Same-seed pairs (samples 2i, 2i+1 differ only in the hypothalamus): per sample,
    |predicted difference - true difference| of the whole foreground's soft volume (channels
    1..), relative to the pair's mean true volume + ``min_volume``; each pair's value given to
    both of its samples. An odd batch: zeros."""
    whole_true = ops.sum(y_true[..., 1:], axis=(1, 2, 3, 4))
    whole_pred = ops.sum(y_pred[..., 1:], axis=(1, 2, 3, 4))
    batch = int(y_true.shape[0]) if y_true.shape[0] is not None else None
    if batch is None or batch % 2:
        return ops.zeros_like(whole_true)
    t = ops.reshape(whole_true, (-1, 2))
    p = ops.reshape(whole_pred, (-1, 2))
    error = ops.abs((p[:, 0] - p[:, 1]) - (t[:, 0] - t[:, 1])) / (ops.mean(t, axis=1)
                                                                  + min_volume)
    return ops.reshape(ops.stack([error, error], axis=1), (-1,))


@keras.saving.register_keras_serializable(package="hsynex")
class VolumeAwareLoss(keras.losses.Loss):
    """Issue 13's loss for either stage: ``dice_weight`` x soft Dice + ``ce_weight`` x
    cross-entropy + ``volume_weight`` x ``soft_volume_error`` + ``pair_weight`` x
    ``pair_volume_error`` on the ``n_classes`` softmax channels (soft targets welcome), plus,
    with ``distance_weight`` > 0 (stage 1), the MSE of the tanh channel against the signed
    distance / ``distance_max_mm`` packed as ``y_true``'s channel ``n_classes``.

    ``whole_only_flag`` (stage 2): ``y_true``'s channel ``n_classes`` is a per-sample flag (the
    same value at every voxel); where it is 1 the Dice, cross-entropy and volume terms see
    channels 1.. merged into one (``merge_foreground``): the sample trains the whole structure
    only (``TrainConfig.whole_only_maps``)."""

    def __init__(self, n_classes: int = 2, dice_weight: float = 1.0, ce_weight: float = 1.0,
                 volume_weight: float = 0.0, pair_weight: float = 0.0,
                 distance_weight: float = 0.0, distance_max_mm: float = 8.0,
                 min_volume: float = 50.0, whole_only_flag: bool = False,
                 name: str = "volume_aware", **kwargs):
        super().__init__(name=name, **kwargs)
        self.n_classes = int(n_classes)
        self.dice_weight = float(dice_weight)
        self.ce_weight = float(ce_weight)
        self.volume_weight = float(volume_weight)
        self.pair_weight = float(pair_weight)
        self.distance_weight = float(distance_weight)
        self.distance_max_mm = float(distance_max_mm)
        self.min_volume = float(min_volume)
        self.whole_only_flag = bool(whole_only_flag)

    def _per_class(self, t, p):
        """The terms that look at each channel: Dice, cross-entropy, soft volumes."""
        loss = self.dice_weight * soft_dice_loss(t, p) + self.ce_weight * cross_entropy(t, p)
        if self.volume_weight:
            loss = loss + self.volume_weight * soft_volume_error(t, p, self.min_volume)
        return loss

    def call(self, y_true, y_pred):
        k = self.n_classes
        t, p = y_true[..., :k], ops.cast(y_pred[..., :k], "float32")
        loss = self._per_class(t, p)
        if self.whole_only_flag:  # flagged samples: background vs the rest
            flag = ops.cast(y_true[:, 0, 0, 0, k], "float32")
            merged = self._per_class(merge_foreground(t), merge_foreground(p))
            loss = flag * merged + (1.0 - flag) * loss
        if self.pair_weight:
            loss = loss + self.pair_weight * pair_volume_error(t, p, self.min_volume)
        if self.distance_weight:
            target = ops.clip(y_true[..., k] / self.distance_max_mm, -1.0, 1.0)
            mse = ops.mean(ops.square(ops.cast(y_pred[..., k], "float32") - target),
                           axis=(1, 2, 3))
            loss = loss + self.distance_weight * mse
        return loss

    def get_config(self):
        return {**super().get_config(), "n_classes": self.n_classes,
                "dice_weight": self.dice_weight, "ce_weight": self.ce_weight,
                "volume_weight": self.volume_weight, "pair_weight": self.pair_weight,
                "distance_weight": self.distance_weight,
                "distance_max_mm": self.distance_max_mm, "min_volume": self.min_volume,
                "whole_only_flag": self.whole_only_flag}


def dice_per_class(y_true, y_pred_labels, n_classes: int):
    """Hard Dice per class (numpy arrays of integer labels); NaN where a class is in neither."""
    import numpy as np

    out = np.full(n_classes, np.nan)
    for c in range(n_classes):
        a, b = y_true == c, y_pred_labels == c
        s = a.sum() + b.sum()
        if s:
            out[c] = 2.0 * np.logical_and(a, b).sum() / s
    return out
