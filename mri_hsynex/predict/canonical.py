"""The scan as the pipeline sees it: the same anatomy gives the same array, however the file was
written (issue 12).

Two things about a file change its array but not the anatomy in it:

- **Axis order and direction** (RAS, LIA, LPS, PIR ...): ``canonical_axes`` permutes and flips the
  voxel axes to the nearest RAS order. No interpolation: the voxels and their world positions
  are kept, so every later step (the localiser's block averages and head box, the crop's snap to
  scan voxels, flips) gets the same array and the same affine whatever the stored order.
- **Intensity scale and offset** (``a * x + b`` with ``a > 0``; the data type; ``scl_slope`` /
  ``scl_inter``; a negative or CT-like background): ``rescale_intensities`` maps the image's
  0.5th / 99.5th percentiles to 0 / 1. Percentiles move with any increasing linear map, so the
  result is the same array up to float rounding, and the background lands near 0, the value the
  crop and the localiser pad with.
"""

from __future__ import annotations

import numpy as np

from .grid import Grid

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5


def canonical_axes(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, Grid]:
    """``data`` with voxel axes permuted/flipped to the nearest RAS order, and its grid (same
    world positions; an oblique affine stays oblique)."""
    from ..io import Volume, to_ras

    ras, _ = to_ras(Volume(np.asarray(data), np.asarray(affine, float)))
    return ras.data, Grid(ras.shape, ras.affine)


def rescale_intensities(data: np.ndarray, low: float = LOW_PERCENTILE,
                        high: float = HIGH_PERCENTILE) -> np.ndarray:
    """float32 ``data`` with its ``low`` / ``high`` percentiles mapped to 0 / 1 (not clipped).

    Equivariant to any ``a * x + b`` with ``a > 0``: the output does not depend on them. An image
    whose percentiles coincide (nearly constant) is only shifted to 0 at ``low``.
    """
    data = np.asarray(data, np.float32)
    lo, hi = (float(v) for v in np.percentile(data, [low, high]))
    out = data - np.float32(lo)
    if hi > lo:
        out *= np.float32(1.0 / (hi - lo))
    return out


def canonical_input(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, Grid]:
    """The pipeline's view of a 3-D scan: RAS voxel order (``canonical_axes``) and rescaled
    intensities (``rescale_intensities``). Returns float32 data and its grid."""
    data, grid = canonical_axes(data, affine)
    return rescale_intensities(data), grid
