"""Is there a brain in the image? Evidence that does not come from the localiser alone.

The localiser was trained on brains only, and it finds ventral DCs, thalami and a brain stem with
high confidence in anything: uniform noise, a water phantom, a body-like image (measured: 190 to
2,700 cm3 of "brain" and 0.84-0.94 mean confidence on each, the same as on real scans). What
separates a brain is the image itself: around the place the localiser points to, a brain image
looks like a brain. ``template_evidence`` measures that as the **mutual information** between the
localiser's input (the head at 3 mm, any contrast) and an MNI152 T1 template, over a 40 mm
sphere of the template's brain centred on its deep grey matter, after moving the template's
centre onto the localised one (the best of 7 orientations: as is and tilted 20 degrees either way
about each axis, since heads lie tilted). Mutual information does not care which tissue is bright,
so it works on every contrast. It is measured twice: at the localised position, and with the
template moved 25 mm along each world axis (the null: a structured non-brain image matches a
shifted brain about as well as an aligned one; a brain does not).

Calibration (``make invariance`` lists every image; 3 mm, 16 bins): 100 brain images (real
FreeSurfer T1 with skull, norm and brainmask, 20 OASIS skull-stripped T1s, a real T2 with 2 mm
slices, three MNI templates, renders of a real aseg in six contrasts at 1-7 mm axial and coronal
slices with and without skull, two real T1s tilted 20-30 degrees about each axis): aligned MI
0.121-0.78 and 0.035 or more above the null; the lowest are renders with random tissue
intensities, real scans are 0.14 or more. Images with no brain: uniform noise 0.034, a constant
with noise 0.005, a cylinder phantom 0.027, a spherical phantom with inserts 0.048, a head-sized
ellipsoid of random texture 0.022, a body-like image 0.101 (refused for its size: the localiser
calls 2,700 cm3 of it brain; real heads give 690-1,900 cm3).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from .grid import Grid, rotation

TEMPLATE_FILES = {"t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
                  "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
                  "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"}
# Centroid of the localiser's ventral DC + 3rd ventricle on that template (RAS mm, measured):
# the point that is moved onto the localised centroid of a scan.
TEMPLATE_CENTRE_MM = np.array([-0.8, -16.6, -7.1])
SPHERE_MM = 40.0
VOXEL_MM = 3.0
BINS = 16
NULL_SHIFT_MM = 25.0
TILT_DEGREES = 20.0
# Calibration (docs/segment.md, docs/validation.md): images with no brain reached MI 0.048 at most
# (a spherical phantom); renders of real brains in arbitrary contrasts (validation grid, 'random'
# contrast, 1-7 mm) and 5 mm FLAIR-like group-study scans went down to 0.077, with margins over
# the null down to 0.006. The first thresholds (0.10 / 0.015) refused 5 of those 202 brains.
MIN_MUTUAL_INFORMATION = 0.06
MIN_MARGIN_OVER_NULL = 0.0


def template_folder() -> Path | None:
    """nilearn's bundled data folder, or None when nilearn is not installed."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


@lru_cache(maxsize=1)
def reference() -> tuple[np.ndarray, np.ndarray] | None:
    """World points (N, 3) of the template's brain inside the sphere, at 3 mm, and the template
    intensities there (0..1); None when the template is not available."""
    folder = template_folder()
    if folder is None or not all((folder / f).is_file() for f in TEMPLATE_FILES.values()):
        return None
    from ..io import load_volume
    from .localise import block_mean

    vols = {k: load_volume(folder / f, kind="image") for k, f in TEMPLATE_FILES.items()}
    grid = Grid(vols["t1"].shape, np.asarray(vols["t1"].affine, float))
    t1, coarse = block_mean(vols["t1"].data, grid, VOXEL_MM)
    brain, _ = block_mean(vols["gm"].data + vols["wm"].data, grid, VOXEL_MM)
    points = coarse.world(np.indices(coarse.shape).reshape(3, -1).T).reshape(coarse.shape + (3,))
    inside = (brain > 0.5) & (np.linalg.norm(points - TEMPLATE_CENTRE_MM, axis=-1) < SPHERE_MM)
    values = t1[inside]
    values = np.clip(values / np.percentile(values, 99.5), 0.0, 1.0)
    return points[inside], values.astype(np.float32)


def mutual_information(a: np.ndarray, b: np.ndarray, bins: int = BINS) -> float:
    """Mutual information (nats) of two samples of values in [0, 1] (joint histogram)."""
    joint, _, _ = np.histogram2d(a, b, bins=bins, range=[[0.0, 1.0], [0.0, 1.0]])
    total = joint.sum()
    if total == 0:
        return 0.0
    p = joint / total
    outer = p.sum(axis=1, keepdims=True) @ p.sum(axis=0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / outer[nz])).sum())


def _sample_at(image: np.ndarray, grid: Grid, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trilinear values of ``image`` at world ``points`` and whether each lies inside it."""
    from scipy import ndimage

    ijk = grid.voxel(points)
    inside = np.all((ijk >= 0) & (ijk <= np.asarray(image.shape) - 1), axis=1)
    values = ndimage.map_coordinates(image, ijk.T, order=1, mode="nearest")
    return np.clip(values, 0.0, 1.0), inside


def template_evidence(image: np.ndarray, grid: Grid, centre_mm: np.ndarray) -> dict | None:
    """Mutual information between ``image`` (0..1 on ``grid``, the localiser's input) and the
    template moved onto ``centre_mm`` (the localised ventral DC + 3rd ventricle centroid), and
    the mean over six 25 mm shifts (the null). None when the template is not available."""
    ref = reference()
    if ref is None:
        return None
    points, template = ref
    offsets = points - TEMPLATE_CENTRE_MM
    shifts = [np.zeros(3)] + [sign * NULL_SHIFT_MM * np.eye(3)[axis]
                              for axis in range(3) for sign in (1, -1)]
    scores = []
    for shift in shifts:
        best = 0.0
        for tilt in _rotations():
            values, inside = _sample_at(image, grid, offsets @ tilt.T + centre_mm + shift)
            if inside.sum() > 100:
                best = max(best, mutual_information(values[inside], template[inside]))
        scores.append(best)
    aligned, null = scores[0], float(np.mean(scores[1:]))
    return {"template_mi": round(aligned, 4), "template_mi_null": round(null, 4),
            "looks_like_brain": bool(aligned >= MIN_MUTUAL_INFORMATION
                                     and aligned - null >= MIN_MARGIN_OVER_NULL)}


@lru_cache(maxsize=1)
def _rotations() -> tuple[np.ndarray, ...]:
    """The template's orientations tried at each position: as is, and tilted by
    ``TILT_DEGREES`` either way about each world axis (heads lie tilted in scanners)."""
    return (np.eye(3),) + tuple(rotation(sign * TILT_DEGREES, axis)
                                for axis in range(3) for sign in (1, -1))
