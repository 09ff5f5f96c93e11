"""Step 8: training targets: one-hot classes of the output labels, and the signed distance to the
whole-hypothalamus surface (stage-1 loss).

The signed distance is computed in the graph by repeated binary dilations (outside) and erosions
(inside) of the hypothalamus mask, alternating a 6-neighbour (cross) and a 26-neighbour (cube)
3x3x3 structuring element: an "octagonal" chamfer distance whose iso-surfaces are far closer to
spheres than the cube (chessboard) or cross (city-block) metric alone. A voxel first reached by
step k is given (k - 0.5) voxels, so the surface between the last inside and first outside voxel
is at 0. Values are negative inside, in mm, clipped to +-``distance_max_mm``. Along the axes the
result is exact; along the diagonals it is within about 10 % of the Euclidean distance.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from .. import labels as label_tables


def target_lut(target: str, max_label: int) -> np.ndarray:
    """Lookup ``lut[label] -> channel`` of the one-hot target table ``target``
    ("stage1" | "stage2" | "localiser")."""
    if target == "stage1":
        return label_tables.class_lut(label_tables.STAGE1_CLASSES, max_label)
    if target == "stage2":
        return label_tables.class_lut(label_tables.STAGE2_CLASSES, max_label)
    if target == "localiser":
        return label_tables.localiser_lut(max_label)
    raise ValueError(f"unknown target table {target!r}")


def one_hot_targets(labels, lut, n_classes: int):
    """(B, X, Y, Z) int32 labels -> (B, X, Y, Z, n_classes) float32 one-hot of ``lut[labels]``.

    Rows of an identity matrix gathered by class (6x faster than ``ops.one_hot`` on torch)."""
    eye = ops.eye(n_classes, dtype="float32")
    return ops.take(eye, ops.take(lut, labels), axis=0)


def shifted(mask, axis: int):
    """The two neighbours of every voxel of a (B, X, Y, Z) mask along ``axis`` (1, 2, 3),
    False (zero) beyond the border: (value at v - 1, value at v + 1)."""
    n = int(mask.shape[axis])
    index = [slice(None)] * 4
    index[axis] = slice(0, 1)
    edge = ops.zeros_like(mask[tuple(index)])
    index[axis] = slice(0, n - 1)
    low = mask[tuple(index)]
    index[axis] = slice(1, n)
    high = mask[tuple(index)]
    return ops.concatenate([edge, low], axis=axis), ops.concatenate([high, edge], axis=axis)


def _dilate(mask, cube: bool):
    """Binary dilation of a (B, X, Y, Z) bool mask by the 3x3x3 cube (three separable 1-D
    dilations) or the 6-neighbour cross. Shifted copies, not max-pooling: torch's CPU
    ``max_pool3d`` is about 30x slower here."""
    out = mask
    for axis in (1, 2, 3):
        low, high = shifted(out if cube else mask, axis)
        out = ops.logical_or(out, ops.logical_or(low, high))
    return out


def signed_distance(mask, voxel_mm: float, max_mm: float):
    """Signed distance (B, X, Y, Z, 1) float32 in mm to the surface of a (B, X, Y, Z) binary
    ``mask`` (negative inside), clipped to +-``max_mm`` (octagonal chamfer approximation).

    A crop without any mask voxel is +``max_mm`` everywhere. The crop border is not a surface:
    an object touching it is not eroded from outside the crop."""
    inside = ops.cast(mask, "bool")
    batch = ops.shape(inside)[0]
    steps = int(math.ceil(max_mm / voxel_mm))
    # dilate the object (outside distances) and its complement (inside distances) together
    front = ops.concatenate([inside, ops.logical_not(inside)], axis=0)
    not_reached = ops.zeros(ops.shape(front), dtype="float32")
    for k in range(steps):
        front = _dilate(front, cube=k % 2 == 1)
        not_reached = not_reached + ops.cast(ops.logical_not(front), "float32")
    outside_steps, inside_steps = not_reached[:batch], not_reached[batch:]
    dist = ops.where(inside, -(inside_steps + 0.5), outside_steps + 0.5) * voxel_mm
    return ops.clip(dist, -max_mm, max_mm)[..., None]


@keras.saving.register_keras_serializable(package="hsynex")
class OneHotTargets(keras.layers.Layer):
    """(B, X, Y, Z) int32 labels -> (B, X, Y, Z, C) float32 one-hot over a class table."""

    def __init__(self, target: str = "stage2", max_label: int = 830, **kwargs):
        super().__init__(**kwargs)
        self.target = str(target)
        self.max_label = int(max_label)
        lut = target_lut(self.target, self.max_label)
        self.n_classes = int(lut.max()) + 1
        self.lut = ops.convert_to_tensor(lut, dtype="int32")

    def call(self, labels):
        return one_hot_targets(labels, self.lut, self.n_classes)

    def compute_output_spec(self, labels):
        return keras.KerasTensor((*labels.shape, self.n_classes), dtype="float32")

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(target=self.target, max_label=self.max_label)
        return config


@keras.saving.register_keras_serializable(package="hsynex")
class HypothalamusDistance(keras.layers.Layer):
    """(B, X, Y, Z) int32 labels -> (B, X, Y, Z, 1) float32 signed distance (mm) to the surface
    of the whole hypothalamus (labels 801-810), negative inside, clipped to +-``max_mm``."""

    def __init__(self, voxel_mm: float = 1.0, max_mm: float = 8.0, max_label: int = 830,
                 **kwargs):
        super().__init__(**kwargs)
        self.voxel_mm = float(voxel_mm)
        self.max_mm = float(max_mm)
        self.max_label = int(max_label)
        lut = np.zeros(self.max_label + 1, dtype=np.int32)
        for i in label_tables.SUBUNIT_IDS:
            if i <= self.max_label:
                lut[i] = 1
        self.lut = ops.convert_to_tensor(lut, dtype="int32")

    def call(self, labels):
        return signed_distance(ops.take(self.lut, labels) > 0, self.voxel_mm, self.max_mm)

    def compute_output_spec(self, labels):
        return keras.KerasTensor((*labels.shape, 1), dtype="float32")

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(voxel_mm=self.voxel_mm, max_mm=self.max_mm, max_label=self.max_label)
        return config
