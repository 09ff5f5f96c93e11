"""Tiny synthetic label maps with the anatomy hsynex cares about (for fast tests)."""

from __future__ import annotations

import numpy as np


def tiny_label_map(shape: tuple[int, int, int] = (40, 40, 40)) -> np.ndarray:
    """An int32 RAS label map: a 'brain' (label 2/41 halves) holding ventral DCs (28/60), a 3rd
    ventricle (14) on the midline, thalami (10/49) above, and the ten subunits (801-810) beside
    the ventricle, left subunits at lower x (RAS: left is -x)."""
    x, y, z = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij")
    r = np.array(shape) / 2
    labels = np.zeros(shape, np.int32)
    brain = (x / (0.9 * r[0])) ** 2 + (y / (0.9 * r[1])) ** 2 + (z / (0.9 * r[2])) ** 2 < 1
    labels[brain & (x < 0)] = 2
    labels[brain & (x >= 0)] = 41
    s = min(shape) / 40.0  # scale of the inner structures
    vdc = (np.abs(x) < 7 * s) & (np.abs(y) < 6 * s) & (np.abs(z + 2 * s) < 4 * s)
    labels[vdc & (x < 0)] = 28
    labels[vdc & (x >= 0)] = 60
    labels[(np.abs(x) < 7 * s) & (np.abs(y) < 6 * s) & (z > 2 * s) & (z < 7 * s) & (x < 0)] = 10
    labels[(np.abs(x) < 7 * s) & (np.abs(y) < 6 * s) & (z > 2 * s) & (z < 7 * s) & (x >= 0)] = 49
    labels[(np.abs(x) < 1) & (np.abs(y) < 5 * s) & (np.abs(z) < 5 * s)] = 14
    # subunits: five slabs along y (anterior-posterior) on each side of the ventricle
    for side, base in ((-1, 801), (1, 806)):
        sub = (side * x >= 1) & (side * x < 4 * s) & (np.abs(z + 1 * s) < 3 * s)
        for k, (y0, y1) in enumerate([(2, 4), (0, 2), (-4, -2), (-2, -1), (-1, 0)]):
            labels[sub & (y >= y0 * s) & (y < y1 * s)] = base + k
    return labels


def tiny_affine(voxel_mm: float = 1.0) -> np.ndarray:
    """A RAS affine with the given isotropic voxel size, origin near the centre."""
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = -20.0 * voxel_mm
    return affine
