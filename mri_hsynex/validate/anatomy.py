"""Simulated anatomy for the group study and the paired sensitivity study: hypothalamic atrophy
(two kinds), small random deformations, and a finer redrawing of the hypothalamus' surroundings.

Label maps are integer arrays with FreeSurfer ids on a grid with a RAS affine; volumes in mm^3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import HsynexError
from ..labels import (
    LEFT_SUBUNIT_IDS,
    LEFT_VENTRAL_DC,
    RIGHT_SUBUNIT_IDS,
    RIGHT_VENTRAL_DC,
    SUBUNIT_IDS,
    THIRD_VENTRICLE,
)


def _bbox(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, mask.shape)
    return tuple(slice(a, b) for a, b in zip(lo, hi))


SHRINK_KINDS = ("vdc", "ventricle")  # what the lost tissue becomes: ventral DC, 3rd ventricle


def shrink_hypothalamus(labels: np.ndarray, fraction: float,
                        voxel_mm: tuple[float, float, float] | np.ndarray = (1.0, 1.0, 1.0),
                        kind: str = "vdc") -> np.ndarray:
    """Simulated atrophy: remove ``fraction`` of each side's hypothalamus (801-805, 806-810).

    ``kind`` "vdc": the voxels removed first are those nearest the hypothalamus' outer surface,
    where "outer" ignores the border with the third ventricle (distance map of hypothalamus +
    3rd ventricle), so the structure erodes toward the ventricle; ties go to the voxels farthest
    from the ventricle. Removed voxels become the ventral DC of their side (28 / 60).

    ``kind`` "ventricle": the voxels nearest the 3rd ventricle (14) go first (ties: the deepest
    inside the hypothalamus' outer surface first), and they become 3rd ventricle: the
    ventricle widens into the hypothalamus, as in neurodegeneration, and the outer border
    with the ventral DC stays where it is. HsynexError when the map has no 3rd ventricle.

    Exactly ``round(fraction * n)`` voxels of each side are relabelled (``voxel_mm``: the grid's
    voxel sizes, so that distances are in mm on any grid, e.g. a finer one).
    """
    if not 0.0 <= fraction < 1.0:
        raise HsynexError(f"atrophy fraction must be in [0, 1), got {fraction}")
    if kind not in SHRINK_KINDS:
        raise HsynexError(f"unknown shrinkage kind {kind!r} (known: {', '.join(SHRINK_KINDS)})")
    labels = np.asarray(labels)
    out = labels.copy()
    hyp = np.isin(labels, SUBUNIT_IDS)
    if fraction == 0 or not hyp.any():
        return out
    box = _bbox(hyp, 4)
    sub = labels[box]
    ventricle = sub == THIRD_VENTRICLE
    if kind == "ventricle" and not ventricle.any():
        raise HsynexError("cannot widen the 3rd ventricle: the label map has none (label 14) "
                          "next to the hypothalamus")
    depth = ndimage.distance_transform_edt(np.isin(sub, SUBUNIT_IDS + (THIRD_VENTRICLE,)),
                                           sampling=voxel_mm).ravel()
    if ventricle.any():
        from_ventricle = ndimage.distance_transform_edt(~ventricle, sampling=voxel_mm).ravel()
    else:
        from_ventricle = np.zeros(sub.size)
    sub_out = np.array(out[box])  # contiguous copy: its reshape(-1) is a view
    flat_out = sub_out.reshape(-1)
    for ids, vdc in ((LEFT_SUBUNIT_IDS, LEFT_VENTRAL_DC), (RIGHT_SUBUNIT_IDS, RIGHT_VENTRAL_DC)):
        side = np.flatnonzero(np.isin(sub, ids))
        n_remove = int(round(fraction * side.size))
        if n_remove == 0:
            continue
        # lexsort: the last key is primary
        if kind == "vdc":  # shallowest first, then farthest from the ventricle
            order = np.lexsort((-from_ventricle[side], depth[side]))
            flat_out[side[order[:n_remove]]] = vdc
        else:  # nearest the ventricle first, then deepest
            order = np.lexsort((-depth[side], from_ventricle[side]))
            flat_out[side[order[:n_remove]]] = THIRD_VENTRICLE
    out[box] = sub_out
    return out


@dataclass
class FinePatch:
    """A box of a label map redrawn on a grid ``factor`` times finer (for partial voluming and
    sub-voxel shrinkage): ``labels`` (fine) cover the coarse voxels ``box`` exactly, each
    coarse voxel being ``factor``^3 fine ones."""

    labels: np.ndarray
    box: tuple[slice, ...]
    factor: int
    coarse_voxel_mm: np.ndarray

    @property
    def voxel_mm(self) -> np.ndarray:
        return np.asarray(self.coarse_voxel_mm, float) / self.factor

    @property
    def voxel_mm3(self) -> float:
        return float(np.prod(self.voxel_mm))

    def with_labels(self, labels: np.ndarray) -> FinePatch:
        return FinePatch(labels, self.box, self.factor, self.coarse_voxel_mm)

    def volumes(self) -> dict[int, float]:
        """Subunit and grouping volumes (mm^3) of the fine labels (``label_volumes``)."""
        return label_volumes(self.labels, self.voxel_mm3)

    def pooled(self, values: np.ndarray) -> np.ndarray:
        """Average ``values`` (fine grid) over each coarse voxel (true partial voluming)."""
        f = self.factor
        n = [s // f for s in values.shape]
        return values.reshape(n[0], f, n[1], f, n[2], f).mean(axis=(1, 3, 5))


def fine_patch(labels: np.ndarray, affine: np.ndarray, factor: int = 3,
               margin_mm: float = 8.0) -> FinePatch:
    """The hypothalamus and ``margin_mm`` around it, redrawn ``factor`` times finer.

    Each label's indicator is interpolated (trilinear) at the fine voxel centres and every fine
    voxel takes the label with the largest value (nearest neighbour on ties): boundaries become
    smooth surfaces half-way between coarse voxel centres instead of voxel staircases, so that
    shrinkage by a fraction of a voxel and its partial volume are both representable. Volumes
    change little (each label keeps about its coarse volume).
    """
    labels = np.asarray(labels)
    hyp = np.isin(labels, SUBUNIT_IDS)
    if not hyp.any():
        raise HsynexError("label map has no hypothalamic subunits (801-810)")
    voxel_mm = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    margin = np.ceil(margin_mm / voxel_mm).astype(int)
    idx = np.argwhere(hyp)
    lo = np.maximum(idx.min(axis=0) - margin, 1)
    hi = np.minimum(idx.max(axis=0) + margin + 1, np.array(labels.shape) - 1)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    ext = tuple(slice(s.start - 1, s.stop + 1) for s in box)  # one voxel more to interpolate
    sub = labels[ext]
    # fine voxel centres in the coordinates of `sub`: coarse i + (k - (f - 1) / 2) / f, + 1
    axes = [1 + np.repeat(np.arange(s.stop - s.start), factor)
            + np.tile((np.arange(factor) - (factor - 1) / 2) / factor, s.stop - s.start)
            for s in box]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"))
    nearest = ndimage.map_coordinates(sub, coords, order=0, mode="nearest")
    best = np.full(nearest.shape, 0.5, np.float32)  # above 0.5: a label wins outright
    out = nearest.astype(np.int32)
    for label in np.unique(sub):
        value = ndimage.map_coordinates((sub == label).astype(np.float32), coords, order=1,
                                        mode="nearest")
        better = value > best
        out[better] = label
        best[better] = value[better]
    return FinePatch(out, box, factor, voxel_mm)


def random_deformation(labels: np.ndarray, rng: np.random.Generator, scale_sd: float = 0.02,
                       elastic_mm: float = 0.75, grid: int = 5, voxel_mm: float = 1.0,
                       radius_mm: float = 48.0) -> np.ndarray:
    """Warp a label map by a small random deformation around the hypothalamus (same grid).

    Anatomical variability between simulated subjects: independent scalings N(1, ``scale_sd``)
    along each axis about the hypothalamus' centre (the map's centre without one), plus a smooth
    displacement interpolated from a ``grid``^3 of N(0, ``elastic_mm``) vectors, both applied
    fully within ``radius_mm / 2`` of the centre and tapered (cosine) to nothing at
    ``radius_mm``; the rest of the head is unchanged (and cheap). The map is resampled
    nearest-neighbour, except the hypothalamus: nearest neighbour would round a 2 % scaling of a
    small structure near the centre back to the identity (its boundaries sit half-way between
    voxel centres), so its volume is set by the deformation's Jacobian instead
    (see ``_paint_subunits``).
    """
    labels = np.asarray(labels)
    shape = np.array(labels.shape)
    hyp = np.isin(labels, SUBUNIT_IDS)
    centre = np.argwhere(hyp).mean(axis=0) if hyp.any() else (shape - 1) / 2.0
    scales = np.clip(1.0 + scale_sd * rng.standard_normal(3), 0.5, 1.5)
    radius = radius_mm / voxel_mm
    lo = np.maximum(np.floor(centre - radius).astype(int), 0)
    hi = np.minimum(np.ceil(centre + radius).astype(int) + 1, shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    box_shape = tuple(hi - lo)
    axes = [np.arange(a, b, dtype=np.float32) for a, b in zip(lo, hi)]
    taper = np.ones(box_shape, np.float32)
    for axis, values in enumerate(axes):
        t = np.clip((np.abs(values - centre[axis]) - radius / 2) / (radius / 2), 0.0, 1.0)
        view = [1, 1, 1]
        view[axis] = len(values)
        taper = taper * (0.5 + 0.5 * np.cos(np.pi * t)).reshape(view)
    coords = np.empty((3,) + box_shape, dtype=np.float32)
    for axis in range(3):
        coarse = rng.normal(0.0, elastic_mm / voxel_mm, (grid,) * 3) if elastic_mm > 0 \
            else np.zeros((grid,) * 3)
        elastic = ndimage.zoom(coarse, [n / grid for n in box_shape], order=1, mode="nearest",
                               grid_mode=True)[:box_shape[0], :box_shape[1], :box_shape[2]]
        view = [1, 1, 1]
        view[axis] = box_shape[axis]
        identity = axes[axis].reshape(view)
        scaled = (identity - centre[axis]) * (1.0 / scales[axis] - 1.0)
        coords[axis] = identity + taper * (scaled + elastic)
    if hyp.any():
        context = labels.copy()
        context[np.isin(labels, LEFT_SUBUNIT_IDS)] = LEFT_VENTRAL_DC
        context[np.isin(labels, RIGHT_SUBUNIT_IDS)] = RIGHT_VENTRAL_DC
    else:
        context = labels
    out = labels.copy()
    warped = ndimage.map_coordinates(context, coords, order=0, mode="nearest")
    if hyp.any():
        _paint_subunits(warped, labels, hyp, coords)
    out[box] = warped
    return out


def _paint_subunits(warped: np.ndarray, labels: np.ndarray, hyp: np.ndarray,
                    coords: np.ndarray) -> None:
    """Draw the subunits into ``warped`` (in place): the ``n0 / mean det(d coords / dx)``
    voxels (``n0`` = the hypothalamus' voxel count, the determinant taken over where it lands)
    with the highest warped one-hot sum (linear interpolation; ties broken by the same of the
    one-hot maps smoothed with sigma 1 voxel), each labelled with its likeliest subunit."""
    box_in = _bbox(hyp, 4)
    start = np.array([s.start for s in box_in], dtype=np.float32)
    lo = np.array([s.start for s in box_in]) - 0.5
    hi = np.array([s.stop for s in box_in]) - 0.5
    inside = np.ones(warped.shape, bool)
    for axis in range(3):
        inside &= (coords[axis] >= lo[axis]) & (coords[axis] <= hi[axis])
    if not inside.any():
        return
    box_out = _bbox(inside, 0)
    local = coords[(slice(None),) + box_out] - start.reshape(3, 1, 1, 1)
    sub = labels[box_in]
    one_hot = [(sub == i).astype(np.float32) for i in SUBUNIT_IDS]
    smooth = np.stack([ndimage.map_coordinates(ndimage.gaussian_filter(m, 1.0), local, order=1,
                                               mode="constant", cval=0.0) for m in one_hot])
    sharp = np.stack([ndimage.map_coordinates(m, local, order=1, mode="constant", cval=0.0)
                      for m in one_hot])
    soft = sharp + 1e-3 * smooth  # sharp decides (identity stays identity); smooth breaks ties
    total = soft.sum(axis=0)
    landed = total >= 0.5
    if not landed.any():
        return
    jacobian = np.stack([np.stack(np.gradient(local[a]), axis=-1) for a in range(3)], axis=-2)
    det = float(np.linalg.det(jacobian[landed]).mean())
    n_voxels = int(round(hyp.sum() / det)) if det > 0 else int(landed.sum())
    order = np.argsort(-total, axis=None, kind="stable")[:n_voxels]
    is_hyp = np.zeros(total.shape, bool)
    is_hyp.flat[order] = True
    region = warped[box_out]
    region[is_hyp] = np.asarray(SUBUNIT_IDS)[soft.argmax(axis=0)][is_hyp]
    warped[box_out] = region


def label_volumes(labels: np.ndarray, voxel_mm3: float = 1.0) -> dict[int, float]:
    """Volume (mm^3) of each subunit 801-810 and of the groupings 811 (left), 812 (right) and
    813 (whole) in a label map."""
    from ..labels import GROUPINGS

    counts = np.bincount(np.asarray(labels).ravel().clip(0), minlength=max(SUBUNIT_IDS) + 1)
    volumes = {i: float(counts[i]) * voxel_mm3 for i in SUBUNIT_IDS}
    for group, ids in GROUPINGS.items():
        volumes[group] = sum(volumes[i] for i in ids)
    return volumes
