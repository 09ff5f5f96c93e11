"""Step 9b: a tight brain mask's cut under the hypothalamus (skull-stripped scans).

hsynex addition (not in SynthSeg or the paper). Skull strippers and templates often cut the
brain mask straight across the base of the brain, a few mm under the hypothalamus (the MNI152
2009 template of ``make demo``; the Mindboggle/OASIS T1s). The label maps' background already
comes as exact zeros in some samples (``background_zero_prob``), but there the zeros follow the
labelled brain's outline; a cut also removes labelled tissue (optic chiasm, ventral DC, brain
stem, temporal lobes) right under the structure. Measured (2026-12-06): zeroing the real sub-08
T1 below a plane 4 mm under its hypothalamus took the tool's volume from 951 to 508 mm^3, but
the cascade's own output did not move (stage 1: 1,080 voxels either way; 500 fine-tuning steps
with this layer changed nothing): the 3 mm localiser lost the anterior ventral DC and its mask
cut the structure (fixed in ``predict/postprocess.anatomical_mask``). The layer is off in every
shipped config; it is there to train networks (a localiser, say) that must see such cuts.

With probability ``prob`` per sample, the image is set to 0 beyond a plane under the
hypothalamus: its normal points inferior, tilted by up to ``max_tilt_deg`` in any direction, and
it lies U(``offset_mm``) below the hypothalamus' lowest point along that normal. With
``corner_prob``, only the part of that half-space in front of a second plane is cut (normal
anterior, tilted likewise, at a uniform position between the hypothalamus' posterior end and
the middle of its anterior-posterior extent): the box corner of the MNI template. Hypothalamus
voxels are never zeroed and labels and targets are unchanged: the structure stays visible, only
its surroundings go. Applied to the output-grid image after noise (a mask cuts the acquired
image), before normalisation; a crop without hypothalamus is left unchanged.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from .. import labels as label_tables
from .grid import seed_generator

FAR = 1.0e6  # mm; beyond any crop


def _positions_mm(shape: tuple[int, int, int], voxel_mm: float):
    """(X, Y, Z, 3) float32 voxel centres in mm (RAS axes), origin at the crop's centre."""
    axes = [(ops.arange(n, dtype="float32") - (n - 1) / 2.0) * voxel_mm for n in shape]
    grids = ops.meshgrid(*axes, indexing="ij")
    return ops.stack(grids, axis=-1)


def _unit(vectors):
    """Rows of (B, 3) ``vectors`` scaled to unit length."""
    return vectors / ops.sqrt(ops.sum(vectors * vectors, axis=-1, keepdims=True))


def _project(positions, normals):
    """(B, X, Y, Z): the signed distance (mm) along each sample's (B, 3) normal."""
    return ops.sum(positions[None] * normals[:, None, None, None, :], axis=-1)


def cut_mask(labels, params: dict, voxel_mm: float = 1.0):
    """(B, X, Y, Z) bool: the voxels a mask with ``params`` (see ``RandomMaskCut``) removes from
    images of (B, X, Y, Z) int32 ``labels``. Never a hypothalamus voxel; empty where
    ``params["on"]`` is 0 or the crop holds no hypothalamus."""
    labels = ops.convert_to_tensor(labels, "int32")
    shape = tuple(int(n) for n in labels.shape[1:4])
    ids = label_tables.SUBUNIT_IDS
    hyp = ops.logical_and(labels >= min(ids), labels <= max(ids))
    positions = _positions_mm(shape, voxel_mm)
    below = _project(positions, params["normal"])
    lowest = ops.max(ops.where(hyp, below, -FAR), axis=(1, 2, 3))
    cut = below > (lowest + params["offset_mm"])[:, None, None, None]
    front = _project(positions, params["corner_normal"])
    back = ops.min(ops.where(hyp, front, FAR), axis=(1, 2, 3))
    ahead = ops.max(ops.where(hyp, front, -FAR), axis=(1, 2, 3))
    edge = back + params["corner_fraction"] * (ahead - back)
    corner = ops.logical_or(params["corner"][:, None, None, None] < 0.5,
                            front > edge[:, None, None, None])
    present = ops.max(ops.cast(hyp, "float32"), axis=(1, 2, 3)) > 0.5
    on = ops.logical_and(params["on"] > 0.5, present)
    cut = ops.logical_and(ops.logical_and(cut, corner), on[:, None, None, None])
    return ops.logical_and(cut, ops.logical_not(hyp))


@keras.saving.register_keras_serializable(package="hsynex")
class RandomMaskCut(keras.layers.Layer):
    """Zero (B, X, Y, Z) float32 images beyond a random brain-mask cut under the hypothalamus of
    their (B, X, Y, Z) int32 labels (same grid), with probability ``prob`` per sample (see the
    module docstring). Inputs ``[image, labels]``; returns the image."""

    def __init__(self, prob: float = 0.0, offset_mm: tuple[float, float] = (0.0, 10.0),
                 max_tilt_deg: float = 30.0, corner_prob: float = 0.5, voxel_mm: float = 1.0,
                 seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.prob = float(prob)
        self.offset_mm = tuple(float(v) for v in offset_mm)
        self.max_tilt_deg = float(max_tilt_deg)
        self.corner_prob = float(corner_prob)
        self.voxel_mm = float(voxel_mm)
        self.seed = seed
        self.seed_generator = seed_generator(seed)

    def _tilted(self, batch_size, axis: int, sign: float):
        """(B, 3) unit vectors: ``sign`` x axis ``axis`` plus U(-tan, tan) of the maximum tilt
        on the other two axes."""
        sg = self.seed_generator
        slope = math.tan(math.radians(self.max_tilt_deg))
        other = keras.random.uniform((batch_size, 3), -slope, slope, seed=sg)
        main = ops.convert_to_tensor([[float(i == axis) for i in range(3)]], "float32")
        return _unit(main * sign + (1.0 - main) * other)

    def sample_parameters(self, batch_size: int) -> dict:
        """Per sample: ``on`` and ``corner`` (B,) float 1/0, ``normal`` (B, 3) (inferior,
        tilted), ``offset_mm`` (B,) U(offset_mm), ``corner_normal`` (B, 3) (anterior, tilted),
        ``corner_fraction`` (B,) U(0, 0.5) of the hypothalamus' extent from its back end."""
        sg = self.seed_generator
        on = keras.random.uniform((batch_size,), 0.0, 1.0, seed=sg) < self.prob
        corner = keras.random.uniform((batch_size,), 0.0, 1.0, seed=sg) < self.corner_prob
        return {
            "on": ops.cast(on, "float32"),
            "normal": self._tilted(batch_size, 2, -1.0),
            "offset_mm": keras.random.uniform((batch_size,), *self.offset_mm, seed=sg),
            "corner": ops.cast(corner, "float32"),
            "corner_normal": self._tilted(batch_size, 1, 1.0),
            "corner_fraction": keras.random.uniform((batch_size,), 0.0, 0.5, seed=sg),
        }

    def apply(self, inputs, params: dict):
        """The deterministic half: zero the image where ``cut_mask`` says."""
        image, labels = inputs
        image = ops.convert_to_tensor(image, "float32")
        return ops.where(cut_mask(labels, params, self.voxel_mm), 0.0, image)

    def call(self, inputs):
        image, labels = inputs
        if self.prob <= 0:
            return image
        return self.apply([image, labels], self.sample_parameters(ops.shape(image)[0]))

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs[0].shape, dtype="float32")

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(prob=self.prob, offset_mm=list(self.offset_mm),
                      max_tilt_deg=self.max_tilt_deg, corner_prob=self.corner_prob,
                      voxel_mm=self.voxel_mm, seed=self.seed)
        return config
