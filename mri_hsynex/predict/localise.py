"""Where is the hypothalamus? The ventral DC (28/60) and 3rd ventricle (14), from an aseg or from
the localiser network, give the crop centre and the region used to mask false positives.

The hypothalamus lies medially between the two ventral DCs, about 11 mm anterior of the centroid
of ventral DC + 3rd ventricle: +10.8 mm in y on the MNI2009c aparc+aseg against the CIT168
hypothalamus map, and +9.8 to +12.3 mm in y (mean +10.8), -1.6 to +0.1 mm in z (mean -0.7),
|x| < 2.1 mm on the 8 real subjects of ../shared (teacher segmentation vs their aseg). The crop
centre is therefore that centroid moved by ``HYPOTHALAMUS_OFFSET_MM``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import HsynexError
from ..labels import THIRD_VENTRICLE, VENTRAL_DC_IDS
from .grid import Grid, bounding_grid, frame, overlaps, round_up, sample, sub_grid
from .postprocess import largest_component

REGION_LABELS = VENTRAL_DC_IDS + (THIRD_VENTRICLE,)
# From the VDC+3V centroid, along the scan's own R, A, S axes (``grid.frame``: the world's for a
# straight scan), so that a head scanned obliquely gets the same crop.
HYPOTHALAMUS_OFFSET_MM = np.array([0.0, 10.8, -0.7])
# Localiser channels (labels.LOCALISER_CLASS_NAMES): 2/3 ventral DCs, 4 third ventricle.
LOCALISER_REGION_CHANNELS = (2, 3, 4)
MIN_BRAIN_MM3 = 100_000.0  # 100 cm3: less than this is not a brain scan we can segment
# 2,500 cm3: more than any head (the localiser gives 690-1,900 cm3 on real scans with and
# without skull; brains are 1,000-1,900 cm3)
MAX_BRAIN_MM3 = 2_500_000.0
MIN_REGION_MM3 = 500.0  # ventral DC + 3rd ventricle of a real brain are ~8000 mm3
NO_BRAIN = "no brain found (is this a brain MRI? try --aseg)"


@dataclass
class Localisation:
    """Result of localisation: crop centre (RAS mm), the VDC+3V region on ``region_grid`` and
    how it was found ("aseg" or "localiser")."""

    centre_world: np.ndarray
    region: np.ndarray
    region_grid: Grid
    method: str
    details: dict = field(default_factory=dict)
    # voxels (on region_grid) that cannot be hypothalamus: the aseg's 3rd ventricle (None from
    # the localiser, whose 3 mm ventricle is too coarse for a 3-5 mm wide structure)
    exclude: np.ndarray | None = None

    def region_on(self, grid: Grid) -> np.ndarray:
        """The (undilated) VDC+3V region resampled (nearest) onto ``grid``, boolean."""
        return sample(self.region.astype(np.uint8), self.region_grid, grid, order=0) > 0

    def exclude_on(self, grid: Grid) -> np.ndarray | None:
        """``exclude`` resampled (nearest) onto ``grid``, boolean; None when there is none."""
        if self.exclude is None:
            return None
        return sample(self.exclude.astype(np.uint8), self.region_grid, grid, order=0) > 0


def centroid_world(mask: np.ndarray, grid: Grid) -> np.ndarray:
    """World coordinates (RAS mm) of the centroid of a non-empty boolean mask."""
    return grid.world(np.argwhere(mask).mean(axis=0))


def localise_from_aseg(aseg: np.ndarray, aseg_grid: Grid, image_grid: Grid,
                       aseg_path: str | os.PathLike | None = None) -> Localisation:
    """Localise from an aseg (label ids): region = 28 ∪ 60 ∪ 14 on the image grid; the 3rd
    ventricle (14) is also kept as ``exclude`` (never hypothalamus).

    An aseg on another grid is resampled (nearest) onto the image grid. HsynexError when it has no
    ventral DC (28/60) or does not overlap the image.
    """
    aseg = np.asarray(aseg)
    if not np.isin(aseg, VENTRAL_DC_IDS).any():
        raise HsynexError("aseg has no ventral DC (labels 28/60)", aseg_path)
    same_grid = (aseg.shape[:3] == tuple(image_grid.shape)
                 and np.allclose(aseg_grid.affine, image_grid.affine, atol=1e-4))
    if not same_grid:
        if not overlaps(aseg_grid, image_grid):
            raise HsynexError("aseg does not overlap the image", aseg_path)
        aseg = sample(aseg, aseg_grid, image_grid, order=0)
        if not np.isin(aseg, VENTRAL_DC_IDS).any():
            raise HsynexError("aseg's ventral DC (28/60) lies outside the image", aseg_path)
    region = np.isin(aseg, REGION_LABELS)
    ventricle = aseg == THIRD_VENTRICLE
    centre = centroid_world(region, image_grid)
    voxel_mm3 = float(abs(np.linalg.det(image_grid.affine[:3, :3])))
    return Localisation(centre + frame(image_grid) @ HYPOTHALAMUS_OFFSET_MM, region, image_grid,
                        "aseg",
                        {"resampled_aseg": not same_grid,
                         "region_mm3": float(region.sum() * voxel_mm3),
                         "region_centroid_ras_mm": [float(v) for v in centre]},
                        exclude=ventricle if ventricle.any() else None)


def normalise_percentiles(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Intensities mapped linearly from the [low, high] percentiles to [0, 1], clipped (float32)."""
    image = np.asarray(image, np.float32)
    lo, hi = (np.float32(v) for v in np.percentile(image, [low, high]))
    if hi <= lo:
        return np.zeros_like(image)
    return np.clip((image - lo) / (hi - lo), np.float32(0.0), np.float32(1.0))


def localiser_grid(image: np.ndarray, image_grid: Grid, voxel_mm: float, divisor: int) -> Grid:
    """The localiser's RAS grid: the image's world box at ``voxel_mm``, cut to the head (voxels
    brighter than 5% of the 99.5th percentile, plus 2 voxels), sides multiples of ``divisor``."""
    full = bounding_grid(image_grid, voxel_mm, divisor, snap_to=image_grid)
    coarse = sample(image, image_grid, full, order=1)
    head = coarse > 0.05 * np.percentile(coarse, 99.5)
    if not head.any():
        return full
    idx = np.argwhere(head)
    lo = np.maximum(idx.min(axis=0) - 2, 0)
    hi = np.minimum(idx.max(axis=0) + 3, full.shape)
    shape = [min(round_up(h - lo_, divisor), n) for lo_, h, n in zip(lo, hi, full.shape)]
    start = [min(lo_, n - s) for lo_, s, n in zip(lo, shape, full.shape)]
    return sub_grid(full, tuple(start), tuple(shape))


def block_mean(image: np.ndarray, image_grid: Grid, voxel_mm: float) -> tuple[np.ndarray, Grid]:
    """Average blocks of whole voxels about ``voxel_mm`` wide (per axis: floor(voxel_mm / voxel
    size) voxels), so that sampling at ``voxel_mm`` afterwards does not alias. Returns the
    averaged image and its grid (same axes, larger voxels); unchanged if voxels are coarse."""
    factors = np.maximum(np.floor(voxel_mm / image_grid.voxel_mm + 1e-6).astype(int), 1)
    if np.all(factors == 1):
        return image, image_grid
    shape = np.array(image.shape) // factors
    averaged = np.asarray(image, np.float32)
    fortran = averaged.flags.f_contiguous and not averaged.flags.c_contiguous
    if fortran:  # work on the C-ordered transpose (MGH data come Fortran-ordered)
        averaged, factors_c, shape_c = averaged.T, factors[::-1], shape[::-1]
    else:
        factors_c, shape_c = factors, shape
    for axis in (2, 1, 0):  # strided sums, innermost axis first (5x faster than a 6-D mean)
        f, n = int(factors_c[axis]), int(shape_c[axis])
        parts = [averaged[(slice(None),) * axis + (slice(k, n * f, f),)] for k in range(f)]
        averaged = sum(parts[1:], parts[0].copy())
    averaged /= np.float32(np.prod(factors))
    if fortran:
        averaged = averaged.T
    affine = image_grid.affine.copy()
    affine[:3, 3] = image_grid.world((factors - 1) / 2.0)
    affine[:3, :3] = image_grid.affine[:3, :3] * factors
    return averaged, Grid(tuple(int(n) for n in shape), affine)


def localiser_posteriors(image: np.ndarray, image_grid: Grid, localiser, voxel_mm: float,
                         divisor: int) -> tuple[np.ndarray, np.ndarray, Grid]:
    """The localiser's input (the head at ``voxel_mm``, intensities 0..1), its posteriors
    (X, Y, Z, 8) and their grid."""
    import keras

    averaged, averaged_grid = block_mean(image, image_grid, voxel_mm)
    grid = localiser_grid(averaged, averaged_grid, voxel_mm, divisor)
    coarse = sample(averaged, averaged_grid, grid, order=1)
    x = normalise_percentiles(coarse)
    probs = keras.ops.convert_to_numpy(localiser(x[None, ..., None], training=False))[0]
    return x, probs, grid


def localise_with_network(image: np.ndarray, image_grid: Grid, localiser, voxel_mm: float,
                          divisor: int, image_path: str | os.PathLike | None = None,
                          brain_check: bool = True) -> Localisation:
    """Localise with the localiser network on the whole head at ``voxel_mm`` (3 mm).

    HsynexError ``NO_BRAIN`` when the image is constant, the brain found is tiny or huge, no
    ventral DC is found or (``brain_check``) the image does not look like a brain
    (``brain_evidence``): never a random segmentation.
    """
    image = np.asarray(image)
    if not np.isfinite(image).all() or float(image.max()) <= float(image.min()):
        raise HsynexError(f"{NO_BRAIN}: the image is constant", image_path)
    coarse, probs, grid = localiser_posteriors(image, image_grid, localiser, voxel_mm, divisor)
    evidence = brain_evidence(coarse, probs, grid, brain_check)
    region = evidence.pop("region")
    if not evidence["is_brain"]:
        raise HsynexError(f"{NO_BRAIN}: {evidence['reason']}", image_path)
    centre = np.array(evidence["region_centroid_ras_mm"])
    return Localisation(centre + frame(grid) @ HYPOTHALAMUS_OFFSET_MM, region, grid, "localiser",
                        {**evidence, "grid_shape": list(grid.shape), "voxel_mm": voxel_mm})


def brain_evidence(image: np.ndarray, probs: np.ndarray, grid: Grid,
                   template: bool = True) -> dict:
    """What the localiser's input ``image`` (0..1) and posteriors ``probs`` (X, Y, Z, 8) on
    ``grid`` say about a brain: volumes (mm3) of the brain and of the ventral DC + 3rd
    ventricle ``region`` (largest component), the evidence of ``brain_check.template_evidence``
    (when ``template``), the region's centroid (RAS mm) and ``is_brain`` with the ``reason``
    when not."""
    from .brain_check import template_evidence

    classes = np.argmax(probs, axis=-1)
    voxel_mm3 = float(abs(np.linalg.det(grid.affine[:3, :3])))
    region = largest_component(np.isin(classes, LOCALISER_REGION_CHANNELS))
    evidence = {"brain_mm3": float((classes != 0).sum() * voxel_mm3),
                "region_mm3": float(region.sum() * voxel_mm3), "region": region}
    # the upper bound belongs to the brain checks (off for networks with "brain_check": false)
    high = MAX_BRAIN_MM3 if template else np.inf
    if not MIN_BRAIN_MM3 <= evidence["brain_mm3"] <= high:
        return {**evidence, "is_brain": False,
                "reason": f"{evidence['brain_mm3'] / 1000:.0f} cm3 of brain-like tissue, "
                          f"a brain has {MIN_BRAIN_MM3 / 1000:.0f}-{MAX_BRAIN_MM3 / 1000:.0f} cm3"}
    if evidence["region_mm3"] < MIN_REGION_MM3:
        return {**evidence, "is_brain": False, "reason": "no ventral diencephalon"}
    centre = centroid_world(region, grid)
    evidence["region_centroid_ras_mm"] = [float(v) for v in centre]
    found = template_evidence(image, grid, centre) if template else None
    if found is None:
        return {**evidence, "is_brain": True, "reason": "brain template check not run"}
    evidence.update(found)
    if not found["looks_like_brain"]:
        return {**evidence, "is_brain": False,
                "reason": f"the image does not look like a brain (mutual information with a "
                          f"brain template {found['template_mi']:.3f} where the brain should "
                          f"be, {found['template_mi_null']:.3f} elsewhere)"}
    return {**evidence, "is_brain": True, "reason": ""}
