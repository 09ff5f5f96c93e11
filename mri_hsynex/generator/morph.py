"""Step 2b: random growth or shrinkage of each hypothalamus against its ventral diencephalon.

hsynex addition (not in SynthSeg or the paper). The subunits of the training maps come from a
handful of subjects whose hypothalami all have about the same size relative to their
surroundings, so a network can reproduce a size learnt from the context (ventral DC, third
ventricle) instead of reading the boundary in the image: a first model measured the same volume
whether or not the hypothalamus had been shrunk by 10 %. This layer decouples size from context:
per side, the surface of the whole hypothalamus moves by a smooth random offset field
(``offset = mean + field``, in mm, positive = growth), i.e. the new side mask is
``signed_distance < offset``.

- Voxels that leave the hypothalamus become that side's ventral DC (aseg's ventral DC contains
  the hypothalamus, so that is what the tissue is labelled when it is not hypothalamus).
- Voxels that join it must have been that side's ventral DC, and take the subunit of an adjacent
  hypothalamus voxel (nearest by repeated 6-neighbour propagation; ties go to the larger id).

Growth never crosses into the third ventricle, the other side or any other structure. The change
happens before the GMM, so image and targets agree. The signed distance is quantised at +-0.5,
1.5, ... voxels and the offset is clipped to +-0.95 voxel, so the field (a node every ~3 mm)
moves patches of the surface by one voxel and the volume changes continuously. Defaults (mean
U(-0.65, 0.65) mm, node sd 0.4 mm) measured on a real 1 mm map: whole-hypothalamus volume change
-24 % to +11 % (10th-90th percentile), -38 % to +24 % at the extremes; growth is the smaller
because it is confined to the ventral DC.

In *tied* samples (``RandomGMM`` gives the hypothalamus the ventral DC's intensity) this boundary
is invisible, and moving it would change the target with no change in the image: a lesson to
ignore the boundary (issue 13). Given the tie flag (``[labels, tie]``, drawn by ``RandomTie``
and shared with the GMM), the layer leaves tied samples unchanged.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from .. import labels as label_tables
from .grid import coarse_grid_size, labels_and_tie, seed_generator, upsample_field
from .targets import shifted, signed_distance

SIDES = (
    (label_tables.LEFT_SUBUNIT_IDS, label_tables.LEFT_VENTRAL_DC),
    (label_tables.RIGHT_SUBUNIT_IDS, label_tables.RIGHT_VENTRAL_DC),
)


def _is_any(labels, ids):
    out = ops.equal(labels, ids[0])
    for i in ids[1:]:
        out = ops.logical_or(out, ops.equal(labels, i))
    return out


def _propagate(subunit, steps: int):
    """Fill zeros of a (B, X, Y, Z) int32 map with the largest non-zero 6-neighbour, ``steps``
    times (a nearest-label fill within ``steps`` voxels)."""
    for _ in range(steps):
        best = subunit
        for axis in (1, 2, 3):
            low, high = shifted(subunit, axis)
            best = ops.maximum(best, ops.maximum(low, high))
        subunit = ops.where(subunit > 0, subunit, best)
    return subunit


def morph_hypothalamus(labels, offset_mm, voxel_mm: float = 1.0, max_mm: float = 2.0):
    """Move the surface of each hypothalamus of (B, X, Y, Z) int32 ``labels`` by ``offset_mm``
    (B, X, Y, Z, 2) float32 (channel 0 left, 1 right; mm, positive = growth; only the values
    near each surface matter). ``max_mm`` bounds the distances computed (offsets beyond it act as
    +-max_mm). A zero offset is the identity."""
    labels = ops.convert_to_tensor(labels, dtype="int32")
    steps = int(math.ceil(max_mm / voxel_mm)) + 1
    for side, (ids, vdc) in enumerate(SIDES):
        inside = _is_any(labels, ids)
        dist = signed_distance(inside, voxel_mm, max_mm + voxel_mm)[..., 0]
        new_inside = ops.less(dist, offset_mm[..., side])
        leaving = ops.logical_and(inside, ops.logical_not(new_inside))
        joining = ops.logical_and(ops.logical_and(new_inside, ops.logical_not(inside)),
                                  ops.equal(labels, vdc))
        subunit = _propagate(ops.where(inside, labels, 0), steps)
        labels = ops.where(leaving, vdc, labels)
        labels = ops.where(ops.logical_and(joining, subunit > 0), subunit, labels)
    return labels


@keras.saving.register_keras_serializable(package="hsynex")
class RandomHypothalamusMorph(keras.layers.Layer):
    """Randomly grow or shrink each hypothalamus of (B, X, Y, Z) int32 labels into / out of its
    ventral DC, with probability ``prob`` per sample (see the module docstring)."""

    def __init__(self, prob: float = 0.0, mean_mm: float = 0.65, field_std_mm: float = 0.4,
                 field_scale: float = 0.3, voxel_mm: float = 1.0, seed: int | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.prob = float(prob)
        self.mean_mm = float(mean_mm)
        self.field_std_mm = float(field_std_mm)
        self.field_scale = float(field_scale)  # coarse grid cells per output voxel
        self.voxel_mm = float(voxel_mm)
        self.seed = seed
        self.seed_generator = seed_generator(seed)

    def sample_parameters(self, batch_size: int, shape: tuple[int, int, int], tie=None) -> dict:
        """``offset_mm`` (B, X, Y, Z, 2): per sample and side, with probability ``prob``,
        U(-mean_mm, mean_mm) plus a smooth field (N(0, field_std_mm^2) at its nodes), clipped
        to +-0.95 voxel; else 0. ``tie`` (B,) float 1/0, when given: 0 in tied samples."""
        sg = self.seed_generator
        grid = tuple(coarse_grid_size(n, 1.0, 1.0, self.field_scale) for n in shape)
        mean = keras.random.uniform((batch_size, 1, 1, 1, 2), -self.mean_mm, self.mean_mm, seed=sg)
        field = self.field_std_mm * keras.random.normal((batch_size, *grid, 2), seed=sg)
        on = keras.random.uniform((batch_size, 1, 1, 1, 1), 0.0, 1.0, seed=sg) < self.prob
        # at most one voxel layer: beyond that, erosion or dilation of the whole surface
        offset = ops.clip(upsample_field(field, shape) + mean, -0.95 * self.voxel_mm,
                          0.95 * self.voxel_mm)
        if tie is not None:
            on = on & (ops.reshape(ops.convert_to_tensor(tie), (-1, 1, 1, 1, 1)) < 0.5)
        return {"offset_mm": ops.where(on, offset, ops.zeros_like(offset))}

    def apply(self, labels, params: dict):
        """The deterministic half: ``morph_hypothalamus`` with given parameters."""
        return morph_hypothalamus(labels, params["offset_mm"], self.voxel_mm, self.voxel_mm)

    def call(self, inputs):
        """``labels`` or ``[labels, tie]`` (tie (B,) float 1/0: tied samples stay unchanged)."""
        labels, tie = labels_and_tie(inputs)
        if self.prob <= 0:
            return labels
        shape = tuple(int(n) for n in labels.shape[1:4])
        return self.apply(labels, self.sample_parameters(ops.shape(labels)[0], shape, tie))

    def compute_output_spec(self, inputs):
        labels = labels_and_tie(inputs)[0]
        return keras.KerasTensor(labels.shape, dtype="int32")

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(prob=self.prob, mean_mm=self.mean_mm, field_std_mm=self.field_std_mm,
                      field_scale=self.field_scale, voxel_mm=self.voxel_mm, seed=self.seed)
        return config
