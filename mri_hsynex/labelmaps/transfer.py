"""Give whole-brain label maps without a hypothalamus (SynthSeg's) subunit labels by registration.

Multi-atlas label transfer: each atlas (a real subject's label map with teacher subunits) is
aligned to the target by the least-squares affine between the centroids of deep structures both
maps have (thalami, ventral DCs, 3rd ventricle, basal ganglia, hippocampi, amygdalae, brain stem,
...); the atlases' subunit labels are pulled onto the target (nearest neighbour), combined by
majority vote, restricted to within 2 mm of the target's ventral DC / 3rd ventricle, and cleaned
to the largest component per hemisphere. Everything works in world RAS mm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..labels import (
    LEFT_SUBUNIT_IDS,
    LEFT_VENTRAL_DC,
    RIGHT_SUBUNIT_IDS,
    RIGHT_VENTRAL_DC,
    SUBUNIT_IDS,
)
from .checks import INSIDE_DILATION_MM, REFERENCE_IDS

# Structures around the hypothalamus whose centroids anchor the affine (FreeSurfer aseg ids):
# thalami, ventral DCs, 3rd ventricle, brain stem, optic chiasm, putamen, pallidum, amygdalae,
# accumbens. Chosen by leave-one-subject-out Dice on the eight real subjects (lateral
# ventricles, caudates and hippocampi made the fit worse; docs/training_data.md).
ANCHOR_IDS = (10, 49, 28, 60, 14, 16, 85, 12, 51, 13, 52, 18, 54, 26, 58)
MIN_ANCHOR_VOXELS = 20
MARGIN_MM = 6.0  # box around the target's ventral DC / 3rd ventricle that receives labels


@dataclass
class Anchors:
    """Centroids (RAS mm) of the anchor structures of one label map."""

    points: dict[int, np.ndarray]


def anchors(labels: np.ndarray, affine: np.ndarray) -> Anchors:
    """Centroids of ``ANCHOR_IDS`` (subunits count as the ventral DC of their side, as in aseg)."""
    merged = np.asarray(labels)
    if np.isin(merged, SUBUNIT_IDS).any():
        merged = merged.copy()
        merged[np.isin(merged, LEFT_SUBUNIT_IDS)] = LEFT_VENTRAL_DC
        merged[np.isin(merged, RIGHT_SUBUNIT_IDS)] = RIGHT_VENTRAL_DC
    lut = np.zeros(int(max(merged.max(), max(ANCHOR_IDS))) + 1, np.int32)
    for k, i in enumerate(ANCHOR_IDS):
        lut[i] = k + 1
    index = lut[np.clip(merged, 0, None)].ravel()
    counts = np.bincount(index, minlength=len(ANCHOR_IDS) + 1)
    grid = np.indices(merged.shape).reshape(3, -1)
    sums = np.stack([np.bincount(index, weights=g, minlength=len(ANCHOR_IDS) + 1)
                     for g in grid], axis=1)
    points = {}
    for k, i in enumerate(ANCHOR_IDS):
        if counts[k + 1] >= MIN_ANCHOR_VOXELS:
            ijk = sums[k + 1] / counts[k + 1]
            points[i] = affine[:3, :3] @ ijk + affine[:3, 3]
    return Anchors(points)


def fit_affine(target: Anchors, source: Anchors) -> np.ndarray:
    """4x4 affine (least squares) mapping target world mm -> source world mm."""
    common = sorted(set(target.points) & set(source.points))
    if len(common) < 4:
        raise ValueError(f"only {len(common)} anchor structures in common; need at least 4")
    dst = np.array([target.points[i] for i in common])
    src = np.array([source.points[i] for i in common])
    design = np.hstack([dst, np.ones((len(common), 1))])
    if np.linalg.matrix_rank(design, tol=1e-3) < 4:
        raise ValueError("anchor structures are coplanar; cannot fit an affine")
    solution, *_ = np.linalg.lstsq(design, src, rcond=None)  # (4, 3)
    matrix = np.eye(4)
    matrix[:3, :] = solution.T
    return matrix


def _target_box(labels: np.ndarray, affine: np.ndarray):
    voxel_mm = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    ref = np.argwhere(np.isin(labels, REFERENCE_IDS))
    if ref.size == 0:
        raise ValueError("target has no ventral DC (28/60) or 3rd ventricle (14)")
    margin = np.ceil(MARGIN_MM / voxel_mm).astype(int)
    lo = np.maximum(ref.min(axis=0) - margin, 0)
    hi = np.minimum(ref.max(axis=0) + margin + 1, labels.shape)
    return tuple(slice(a, b) for a, b in zip(lo, hi)), voxel_mm


class Atlas:
    """A label map with subunits (and its affine, voxel -> RAS mm); anchors computed once."""

    def __init__(self, labels: np.ndarray, affine: np.ndarray, name: str = ""):
        self.labels = np.asarray(labels)
        self.affine = np.asarray(affine, np.float64)
        self.name = name
        self._anchors: Anchors | None = None

    @property
    def anchors(self) -> Anchors:
        if self._anchors is None:
            self._anchors = anchors(self.labels, self.affine)
        return self._anchors


def transfer_subunits(target: np.ndarray, target_affine: np.ndarray,
                      atlases: Sequence[Atlas]) -> np.ndarray:
    """Subunit labels (0 / 801-810) for ``target`` (a label map with aseg labels; affine voxel ->
    RAS mm) voted from ``atlases`` (label maps with subunits), on the target grid."""
    from scipy import ndimage

    from ..teacher.predict import largest_component_per_hemisphere

    target_affine = np.asarray(target_affine, np.float64)
    box, voxel_mm = _target_box(target, target_affine)
    ijk = np.indices(target[box].shape).reshape(3, -1) + np.array([s.start for s in box])[:, None]
    world = target_affine[:3, :3] @ ijk + target_affine[:3, 3:4]
    lut = np.zeros(max(SUBUNIT_IDS) + 1, np.int32)
    lut[list(SUBUNIT_IDS)] = np.arange(1, len(SUBUNIT_IDS) + 1)
    votes = np.zeros((world.shape[1], len(SUBUNIT_IDS) + 1), np.int32)
    target_anchors = anchors(target, target_affine)
    for atlas in atlases:
        labels = atlas.labels
        to_source = np.linalg.inv(atlas.affine) @ fit_affine(target_anchors, atlas.anchors)
        src = np.rint(to_source[:3, :3] @ world + to_source[:3, 3:4]).astype(int)
        inside = np.all((src >= 0) & (src < np.array(labels.shape)[:, None]), axis=0)
        found = np.zeros(world.shape[1], np.int32)
        values = labels[src[0, inside], src[1, inside], src[2, inside]]
        found[inside] = np.where(np.isin(values, SUBUNIT_IDS), lut[np.clip(values, 0,
                                                                             len(lut) - 1)], 0)
        votes[np.arange(world.shape[1]), found] += 1
    channel = votes.argmax(axis=1)
    seg_box = np.array((0,) + SUBUNIT_IDS, np.int32)[channel].reshape(target[box].shape)
    distance = ndimage.distance_transform_edt(~np.isin(target[box], REFERENCE_IDS),
                                              sampling=voxel_mm)
    seg_box[distance > INSIDE_DILATION_MM + 1e-6] = 0
    seg_box[largest_component_per_hemisphere(seg_box)] = 0
    seg = np.zeros(target.shape, np.int32)
    seg[box] = seg_box
    return seg


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def atlases_in(folder) -> list[Atlas]:
    """Every label map (``.nii``, ``.nii.gz``, ``.mgz``) of ``folder`` that has subunit labels."""
    from pathlib import Path

    from ..errors import HsynexError
    from ..io import load_volume, suffix

    root = Path(folder)
    if not root.is_dir():
        raise HsynexError("folder of label maps to transfer subunits from not found", root)
    found = []
    for path in sorted(p for p in root.iterdir() if p.is_file() and suffix(p)):
        vol = load_volume(path, kind="labels")
        if np.isin(vol.data, SUBUNIT_IDS).any():
            found.append(Atlas(vol.data, vol.affine, path.name[: -len(suffix(path))]))
    if not found:
        raise HsynexError("no label map with subunits (801-810) in", root)
    return found
