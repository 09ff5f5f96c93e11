"""Small helpers shared by the generator layers: coarse grids and per-axis matrix products.

Smooth random fields (elastic deformation, bias field, background regions) are drawn on a coarse
grid and upsampled by one linear-interpolation matrix per axis: three small ``einsum`` products
instead of a 3-D resize (``keras.ops.image.resize`` is 2-D only) or a convolution.
"""

from __future__ import annotations

import math

import keras
from keras import ops


def coarse_grid_size(n_out: int, output_voxel_mm: float, input_voxel_mm: float,
                     scale: float) -> int:
    """Number of coarse grid nodes along one axis for a smooth field over the output crop.

    ``scale`` is in grid cells per input voxel (SynthSeg's ``nonlin_scale``/``bias_scale`` applied
    to a 1 mm label map), so the smoothness in mm does not depend on the crop size or its voxel
    size: ``ceil(extent_in_input_voxels * scale) + 1`` nodes, at least 2.
    """
    extent = n_out * output_voxel_mm / input_voxel_mm
    return max(2, int(math.ceil(extent * scale - 1e-9)) + 1)


def linear_interpolation_matrix(n_out: int, n_in: int, dtype: str = "float32"):
    """(n_out, n_in) matrix resampling a 1-D signal of ``n_in`` nodes to ``n_out`` linearly, the
    first and last nodes of both grids aligned (corner-aligned)."""
    if n_in == 1 or n_out == 1:
        return ops.ones((n_out, n_in), dtype=dtype) / float(n_in)
    pos = ops.cast(ops.arange(n_out), dtype) * ((n_in - 1) / (n_out - 1))
    nodes = ops.cast(ops.arange(n_in), dtype)
    return ops.maximum(0.0, 1.0 - ops.abs(pos[:, None] - nodes[None, :]))


def upsample_field(coarse, shape: tuple[int, int, int]):
    """Upsample a (B, g0, g1, g2, C) coarse field to (B, n0, n1, n2, C) by per-axis linear
    interpolation (corner-aligned)."""
    g = tuple(int(s) for s in coarse.shape[1:4])
    mx, my, mz = (linear_interpolation_matrix(n, k, coarse.dtype) for n, k in zip(shape, g))
    out = ops.einsum("xi,bijkc->bxjkc", mx, coarse)
    out = ops.einsum("yj,bxjkc->bxykc", my, out)
    return ops.einsum("zk,bxykc->bxyzc", mz, out)


def apply_per_axis(volume, mx, my, mz):
    """``volume`` (B, X, Y, Z) multiplied along each axis by per-sample matrices
    ``mx`` (B, X', X), ``my`` (B, Y', Y), ``mz`` (B, Z', Z) -> (B, X', Y', Z')."""
    out = ops.einsum("bix,bxyz->biyz", mx, volume)
    out = ops.einsum("bjy,biyz->bijz", my, out)
    return ops.einsum("bkz,bijz->bijk", mz, out)


def batch_size(tensor) -> int:
    """The batch size of ``tensor`` (dynamic shapes resolved through ``keras.ops.shape``)."""
    return ops.shape(tensor)[0]


def labels_and_tie(inputs):
    """``(labels, tie)`` from a layer input that is ``labels`` or ``[labels, tie]`` (the tie flag
    drawn once by ``RandomTie`` and shared by the layers that must respect it); tie None if
    absent."""
    return tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs, None)


def derived_seed(seed: int | None, index: int) -> int | None:
    """A distinct, reproducible seed for sub-layer ``index`` of a generator seeded ``seed``."""
    if seed is None:
        return None
    return int((int(seed) * 1_000_003 + 7919 * (index + 1)) % (2**31 - 1))


def seed_generator(seed: int | None):
    """A ``keras.random.SeedGenerator`` (random seed when ``seed`` is None)."""
    return keras.random.SeedGenerator(seed)
