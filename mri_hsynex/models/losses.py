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
