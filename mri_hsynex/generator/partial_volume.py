"""Render finer, then pool: true partial volume at the network's voxel size (hsynex, issue 13).

With ``supersample`` s > 1 the label crop is drawn at s times the output resolution (a 48^3
crop at 1 mm is 144^3 at 0.33 mm for s = 3), shape changes and the GMM are applied there, and
the image is average-pooled over s x s x s blocks back to the network grid. The training targets
are the pooled label fractions (soft targets): a boundary that moves by a third of a voxel
changes both the image (the mixed voxel's intensity) and the target (its fraction), so the
summed softmax can equal the true volume.

Everything here is deterministic (no random parameters): pooling a volume of s*n voxels per axis
to n by block means.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from .. import labels as label_tables
from .targets import signed_distance, target_lut


def pool_blocks(volume, factor: int):
    """Block mean of a (B, s*n0, s*n1, s*n2) float volume over s x s x s blocks (s = ``factor``)
    -> (B, n0, n1, n2). Every block is inside the volume: sums (volumes) are preserved up to the
    factor s^3."""
    volume = ops.convert_to_tensor(volume)
    if factor == 1:
        return volume
    shape = [int(n) for n in volume.shape[1:4]]
    n = [k // factor for k in shape]
    x = ops.reshape(volume, (-1, n[0], factor, n[1], factor, n[2], factor))
    return ops.mean(x, axis=(2, 4, 6))


def block_centre_labels(labels, factor: int):
    """The label at the centre of every s x s x s block ((B, n0, n1, n2) int32): the label a
    nearest-neighbour crop at the coarse voxel would have read (s odd: exactly its centre)."""
    if factor == 1:
        return labels
    c = factor // 2
    return labels[:, c::factor, c::factor, c::factor]


def soft_targets(labels, lut, n_classes: int, factor: int):
    """Pooled one-hot (B, n0, n1, n2, C) float32 of fine ``labels`` (B, s*n0, s*n1, s*n2) over the
    class table ``lut`` (label -> channel): the fraction of each coarse voxel that is each class.
    Channels sum to 1."""
    eye = ops.eye(n_classes, dtype="float32")
    one_hot = ops.take(eye, ops.take(lut, labels), axis=0)  # rows of I: fast on every backend
    if factor == 1:
        return one_hot
    shape = [int(n) // factor for n in labels.shape[1:4]]
    x = ops.reshape(one_hot, (-1, shape[0], factor, shape[1], factor, shape[2], factor,
                              n_classes))
    return ops.mean(x, axis=(2, 4, 6))


def partial_volume_distance(fraction, voxel_mm: float, max_mm: float):
    """Signed distance (B, n0, n1, n2, 1) mm to the hypothalamus surface from its voxel
    ``fraction`` (B, n0, n1, n2) in [0, 1]: the chamfer distance of the mask fraction >= 0.5
    (``targets.signed_distance``), with the layer of voxels next to the surface (|d| = half a
    voxel) replaced by (0.5 - fraction) voxels, so the surface moves continuously with the
    fraction: a full voxel -0.5, an empty one +0.5, a half-filled one 0."""
    mask = ops.greater_equal(fraction, 0.5)
    dist = signed_distance(mask, voxel_mm, max_mm)[..., 0]
    surface = ops.less(ops.abs(dist), 0.5 * voxel_mm + 1e-4)
    corrected = (0.5 - fraction) * voxel_mm
    return ops.where(surface, corrected, dist)[..., None]


def _subunit_lut(max_label: int) -> np.ndarray:
    lut = np.zeros(max_label + 1, dtype=np.int32)
    for i in label_tables.SUBUNIT_IDS:
        if i <= max_label:
            lut[i] = 1
    return lut


@keras.saving.register_keras_serializable(package="hsynex")
class PoolImage(keras.layers.Layer):
    """(B, s*n0, s*n1, s*n2) float32 image rendered at the fine grid -> (B, n0, n1, n2) block
    means (partial volume at the network voxel size)."""

    def __init__(self, factor: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)

    def call(self, image):
        return pool_blocks(image, self.factor)

    def compute_output_spec(self, image):
        shape = [None if n is None else n // self.factor for n in image.shape[1:4]]
        return keras.KerasTensor((image.shape[0], *shape), dtype="float32")

    def get_config(self) -> dict:
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="hsynex")
class PoolLabels(keras.layers.Layer):
    """Fine (B, s*n0, s*n1, s*n2) int32 labels -> the block-centre labels (B, n0, n1, n2)."""

    def __init__(self, factor: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)

    def call(self, labels):
        return block_centre_labels(labels, self.factor)

    def compute_output_spec(self, labels):
        shape = [None if n is None else n // self.factor for n in labels.shape[1:4]]
        return keras.KerasTensor((labels.shape[0], *shape), dtype="int32")

    def get_config(self) -> dict:
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="hsynex")
class SoftTargets(keras.layers.Layer):
    """Fine (B, s*n0, s*n1, s*n2) int32 labels -> (B, n0, n1, n2, C) float32 class fractions over
    the table ``target`` ("stage1", "stage2", "localiser")."""

    def __init__(self, target: str = "stage2", max_label: int = 830, factor: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.target = str(target)
        self.max_label = int(max_label)
        self.factor = int(factor)
        lut = target_lut(self.target, self.max_label)
        self.n_classes = int(lut.max()) + 1
        self.lut = ops.convert_to_tensor(lut, dtype="int32")

    def call(self, labels):
        return soft_targets(labels, self.lut, self.n_classes, self.factor)

    def compute_output_spec(self, labels):
        shape = [None if n is None else n // self.factor for n in labels.shape[1:4]]
        return keras.KerasTensor((labels.shape[0], *shape, self.n_classes), dtype="float32")

    def get_config(self) -> dict:
        return {**super().get_config(), "target": self.target, "max_label": self.max_label,
                "factor": self.factor}


@keras.saving.register_keras_serializable(package="hsynex")
class PartialVolumeDistance(keras.layers.Layer):
    """Fine (B, s*n0, s*n1, s*n2) int32 labels -> (B, n0, n1, n2, 1) float32 signed distance (mm)
    to the whole-hypothalamus surface at the coarse voxel ``voxel_mm``, sub-voxel at the surface
    (``partial_volume_distance``)."""

    def __init__(self, voxel_mm: float = 1.0, max_mm: float = 8.0, max_label: int = 830,
                 factor: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.voxel_mm = float(voxel_mm)
        self.max_mm = float(max_mm)
        self.max_label = int(max_label)
        self.factor = int(factor)
        self.lut = ops.convert_to_tensor(_subunit_lut(self.max_label), dtype="int32")

    def call(self, labels):
        inside = ops.cast(ops.take(self.lut, labels), "float32")
        fraction = pool_blocks(inside, self.factor)
        return partial_volume_distance(fraction, self.voxel_mm, self.max_mm)

    def compute_output_spec(self, labels):
        shape = [None if n is None else n // self.factor for n in labels.shape[1:4]]
        return keras.KerasTensor((labels.shape[0], *shape, 1), dtype="float32")

    def get_config(self) -> dict:
        return {**super().get_config(), "voxel_mm": self.voxel_mm, "max_mm": self.max_mm,
                "max_label": self.max_label, "factor": self.factor}
