"""Deterministic synthetic *test* images: a whole head of a named contrast, acquired with thick
slices and stored at the low resolution, as a clinical scan would be.

Steps (all seeded): label map -> tissue class -> mean intensity of the contrast (plus a small
per-label jitter) -> extra-cerebral shells when the map has none (CSF, skull, scalp) -> partial
volume blur -> mild multiplicative bias field -> acquisition at a slice thickness along the axial
(S), coronal (A) or sagittal (R) world axis (Gaussian slice profile, FWHM = thickness, then
resampling at the slice spacing, the slices placed at a given phase) -> Rician-like noise ->
intensities scaled to 0..255.

Conventions: label ids are FreeSurfer's; affines map voxel indices to RAS world mm; distances in
mm. The low-resolution affine keeps world coordinates: the centre of thick slice ``k`` is the
world position of the 1 mm voxel ``p0 + k * step`` it was sampled at.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import HsynexError
from ..labels import (
    EXTRA_CEREBRAL_IDS,
    SUBUNIT_IDS,
    VENTRAL_DC_IDS,
    generation_class_lut,
)

# --- tissues ------------------------------------------------------------------------------------
TISSUES: tuple[str, ...] = (
    "background", "wm", "cortex", "deep_gm", "thalamus", "csf", "ventral_dc", "hypothalamus",
    "brainstem", "cerebellum_gm", "vessel", "extra_cerebral", "skull", "scalp",
)
_T = {name: i for i, name in enumerate(TISSUES)}

# aseg label -> tissue (labels not listed: 0 -> background, >= 500 -> extra_cerebral, else cortex)
TISSUE_OF_LABEL: dict[int, str] = {
    **{i: "wm" for i in (2, 41, 7, 46, 77, 78, 79, 85, 251, 252, 253, 254, 255)},
    **{i: "cortex" for i in (3, 42)},
    **{i: "deep_gm" for i in (11, 12, 13, 17, 18, 26, 50, 51, 52, 53, 54, 58, 96, 97, 136, 137,
                             163, 164)},
    **{i: "thalamus" for i in (9, 10, 48, 49)},
    **{i: "csf" for i in (4, 5, 14, 15, 24, 31, 43, 44, 63, 72)},
    **{i: "ventral_dc" for i in VENTRAL_DC_IDS},
    **{i: "hypothalamus" for i in SUBUNIT_IDS},
    16: "brainstem",
    **{i: "cerebellum_gm" for i in (8, 47)},
    **{i: "vessel" for i in (25, 30, 57, 62)},
}

# Mean intensity of each tissue per named contrast (arbitrary units, 0..1). The hypothalamus is
# grey matter, apart from the ventral DC (which carries white-matter tracts).
CONTRASTS: dict[str, dict[str, float]] = {
    # T1: tissue medians / WM median in the real T1.mgz of training subjects (sub-01..03, with
    # the teacher's subunits of build/labels for the hypothalamus: 0.83-0.86), x 0.85
    "T1": dict(background=0.02, wm=0.85, cortex=0.61, deep_gm=0.72, thalamus=0.81, csf=0.30,
               ventral_dc=0.85, hypothalamus=0.72, brainstem=0.87, cerebellum_gm=0.65,
               vessel=0.55, extra_cerebral=0.55, skull=0.35, scalp=0.65),
    "T2": dict(background=0.02, wm=0.30, cortex=0.55, deep_gm=0.45, thalamus=0.40, csf=0.95,
               ventral_dc=0.38, hypothalamus=0.50, brainstem=0.35, cerebellum_gm=0.55,
               vessel=0.20, extra_cerebral=0.45, skull=0.05, scalp=0.50),
    "PD": dict(background=0.02, wm=0.55, cortex=0.72, deep_gm=0.66, thalamus=0.63, csf=0.80,
               ventral_dc=0.60, hypothalamus=0.68, brainstem=0.58, cerebellum_gm=0.70,
               vessel=0.35, extra_cerebral=0.55, skull=0.08, scalp=0.65),
    "FLAIR": dict(background=0.02, wm=0.45, cortex=0.62, deep_gm=0.55, thalamus=0.52, csf=0.08,
                  ventral_dc=0.48, hypothalamus=0.58, brainstem=0.50, cerebellum_gm=0.60,
                  vessel=0.20, extra_cerebral=0.50, skull=0.05, scalp=0.70),
    "FA": dict(background=0.02, wm=0.70, cortex=0.12, deep_gm=0.16, thalamus=0.30, csf=0.05,
               ventral_dc=0.45, hypothalamus=0.20, brainstem=0.60, cerebellum_gm=0.12,
               vessel=0.10, extra_cerebral=0.06, skull=0.04, scalp=0.08),
}
RANDOM = "random"
CONTRAST_NAMES: tuple[str, ...] = tuple(CONTRASTS) + (RANDOM,)
# slice direction -> RAS world axis (S, A, R)
AXES: dict[str, int] = {"axial": 2, "coronal": 1, "sagittal": 0}

# extra-cerebral shells added around maps without extra-cerebral labels (mm from the brain),
# drawn as pseudo-labels of their own (not FreeSurfer ids) so that they deform with the map
SHELLS_MM: tuple[tuple[str, float, float], ...] = (
    ("csf", 0.0, 2.0), ("skull", 2.0, 7.0), ("scalp", 7.0, 12.0),
)
SHELL_LABELS: dict[str, int] = {"csf": 9000, "skull": 9001, "scalp": 9002}


@dataclass(frozen=True)
class Acquisition:
    """How a test image is made: contrast name, slice thickness (mm) and slice direction."""

    contrast: str
    thickness_mm: float = 1.0
    orientation: str = "axial"
    noise: float = 0.04  # noise sd, fraction of the brightest tissue mean
    bias: float = 0.08  # sd of the log bias field
    label_jitter: float = 0.03  # sd of the per-label multiplicative jitter of the means

    @property
    def name(self) -> str:
        """A short identifier such as ``T2_5mm_coronal`` (1 mm images carry no direction)."""
        thick = f"{self.thickness_mm:g}mm"
        if self.thickness_mm <= 1.0:
            return f"{self.contrast}_{thick}"
        return f"{self.contrast}_{thick}_{self.orientation}"


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel sizes (mm) along each voxel axis of a 4x4 affine."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def tissue_map(labels: np.ndarray) -> np.ndarray:
    """Tissue index (into ``TISSUES``) of every voxel of an integer label map."""
    labels = np.asarray(labels)
    if labels.size and labels.min() < 0:
        raise HsynexError("label map has negative labels")
    lut = _tissue_lut(int(labels.max(initial=0)))
    return lut[labels]


def _tissue_lut(max_label: int) -> np.ndarray:
    lut = np.full(max_label + 1, _T["cortex"], dtype=np.int16)
    lut[0] = _T["background"]
    lut[500:] = _T["extra_cerebral"]
    for label, tissue in (*TISSUE_OF_LABEL.items(), *((v, k) for k, v in SHELL_LABELS.items())):
        if label <= max_label:
            lut[label] = _T[tissue]
    return lut


def label_means(max_label: int, contrast: str, rng: np.random.Generator,
                jitter: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """Mean intensity per label (``lut[label]``) and per tissue for a contrast.

    Named contrasts use the tissue table with a multiplicative per-label jitter (the ten subunits
    share one factor: there is no contrast between subunits). ``random`` draws every generation
    class of :func:`mri_hsynex.labels.generation_class_lut` and every tissue uniformly in [0, 1].
    """
    if contrast == RANDOM:
        tissue_means = rng.uniform(0.0, 1.0, len(TISSUES))
        classes = generation_class_lut(max_label)
        class_means = rng.uniform(0.0, 1.0, int(classes.max()) + 1)
        means = class_means[classes]
        means[0] = tissue_means[_T["background"]]
        return means.astype(np.float32), tissue_means.astype(np.float32)
    if contrast not in CONTRASTS:
        raise HsynexError(f"unknown contrast {contrast!r} (known: {', '.join(CONTRAST_NAMES)})")
    table = CONTRASTS[contrast]
    tissue_means = np.array([table[t] for t in TISSUES], dtype=np.float32)
    means = tissue_means[_tissue_lut(max_label)].astype(np.float32)
    factors = 1.0 + jitter * rng.standard_normal(max_label + 1)
    subunits = [s for s in SUBUNIT_IDS if s <= max_label]
    if subunits:
        factors[subunits] = factors[subunits[0]]
    factors[0] = 1.0
    return (means * factors).astype(np.float32), tissue_means


def has_head(labels: np.ndarray) -> bool:
    """Whether a label map already has extra-cerebral labels (SynthSeg's or our shells)."""
    return bool(np.isin(labels, EXTRA_CEREBRAL_IDS + tuple(SHELL_LABELS.values())).any())


def add_head_shells(labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The label map with shell pseudo-labels (``SHELL_LABELS``) drawn in its background, when
    it has no extra-cerebral labels (else unchanged)."""
    labels = np.asarray(labels)
    if has_head(labels):
        return labels
    shells = head_shells(labels, affine)
    out = labels.copy()
    for tissue, label in SHELL_LABELS.items():
        out[shells == _T[tissue]] = label
    return out


def skull_strip(image: np.ndarray, affine: np.ndarray, labels: np.ndarray,
                labels_affine: np.ndarray) -> np.ndarray:
    """``image`` (grid ``affine``) zeroed outside the brain of ``labels`` (every label but the
    background, the extra-cerebral labels and the head shells), the mask dilated by one voxel as
    a skull-stripping tool leaves it: the scan skull-stripped."""
    from .engines import nearest_onto

    labels = np.asarray(labels)
    brain = (labels > 0) & ~np.isin(labels, EXTRA_CEREBRAL_IDS + tuple(SHELL_LABELS.values()))
    mask = nearest_onto(brain.astype(np.uint8), labels_affine, image.shape, affine) > 0
    return np.where(ndimage.binary_dilation(mask, iterations=1), image, 0).astype(image.dtype)


def head_shells(labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Tissue index of the extra-cerebral shells (CSF, skull, scalp) around the brain, -1 elsewhere.

    Used for label maps without extra-cerebral labels (FreeSurfer asegs), so that the test image
    is a whole head rather than a skull-stripped brain. Shell widths: ``SHELLS_MM``.
    """
    outside = np.asarray(labels) == 0
    shells = np.full(outside.shape, -1, dtype=np.int16)
    if outside.all() or not outside.any():
        return shells
    distance = ndimage.distance_transform_edt(outside, sampling=voxel_sizes(affine))
    for tissue, d0, d1 in SHELLS_MM:
        shells[outside & (distance > d0) & (distance <= d1)] = _T[tissue]
    return shells


def bias_field(shape: tuple[int, ...], rng: np.random.Generator, sd: float,
               grid: int = 4) -> np.ndarray:
    """A smooth multiplicative field ``exp(b)``, ``b`` cubic-interpolated from a ``grid``^3 of
    N(0, sd) values spanning the volume (separable: one small matrix per axis)."""
    if sd <= 0:
        return np.ones(shape, dtype=np.float32)
    log_field = rng.normal(0.0, sd, (grid,) * len(shape))
    for axis, n in enumerate(shape):
        # row k of `basis`: the cubic interpolation weights of output voxel k on the grid
        basis = ndimage.zoom(np.eye(grid), (n / grid, 1), order=3, mode="nearest",
                             grid_mode=True)[:n]
        log_field = np.moveaxis(np.tensordot(basis, log_field, axes=([1], [axis])), 0, axis)
    return np.exp(log_field).astype(np.float32)


def slice_axis(affine: np.ndarray, orientation: str) -> int:
    """Voxel axis closest to the world axis of a slice direction (``axial``: S, ``coronal``: A,
    ``sagittal``: R)."""
    if orientation not in AXES:
        raise HsynexError(f"unknown slice direction {orientation!r} (known: {', '.join(AXES)})")
    directions = np.abs(np.asarray(affine)[:3, :3]) / voxel_sizes(affine)
    return int(np.argmax(directions[AXES[orientation]]))


def acquire_thick_slices(image: np.ndarray, affine: np.ndarray, thickness_mm: float,
                         orientation: str = "axial",
                         phase_mm: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Simulate thick-slice acquisition: blur along the slice axis with a Gaussian slice profile
    (FWHM = ``thickness_mm``), sample every ``thickness_mm``, return ``(image, affine)`` at the
    low resolution. World coordinates are kept (the returned affine places each thick slice at the
    world position it was sampled from). Thickness at or below the voxel size: no change.

    ``phase_mm`` (0 <= phase < thickness) moves every slice by that much along the slice axis's
    voxel direction: where the slices fall on the anatomy, which a real scan leaves to chance."""
    axis = slice_axis(affine, orientation)
    size = float(voxel_sizes(affine)[axis])
    if thickness_mm <= size * 1.001:
        return image, np.asarray(affine, dtype=float).copy()
    if not 0.0 <= phase_mm < thickness_mm:
        raise HsynexError(f"slice phase {phase_mm:g} mm is outside [0, {thickness_mm:g}) mm")
    step = thickness_mm / size  # in voxels of the input
    sigma = step / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    blurred = ndimage.gaussian_filter1d(image.astype(np.float32), sigma, axis=axis,
                                        mode="nearest", truncate=3.0)
    n = image.shape[axis]
    p0 = (step - 1.0) / 2.0 + phase_mm / size
    if p0 > n - 1:
        raise HsynexError(f"volume too small for {thickness_mm:g} mm slices")
    positions = p0 + step * np.arange(int(np.floor((n - 1 - p0) / step)) + 1)
    lo = np.floor(positions).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    w = (positions - lo).astype(np.float32)
    shape = [1] * image.ndim
    shape[axis] = len(positions)
    w = w.reshape(shape)
    low = (1 - w) * np.take(blurred, lo, axis=axis) + w * np.take(blurred, hi, axis=axis)
    new_affine = np.asarray(affine, dtype=float).copy()
    new_affine[:3, axis] = affine[:3, axis] * step
    new_affine[:3, 3] = affine[:3, 3] + affine[:3, axis] * p0
    return low.astype(np.float32), new_affine


def synthesize(labels: np.ndarray, affine: np.ndarray, acquisition: Acquisition,
               seed: int, fine=None, phase_mm: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A whole-head test image of ``labels`` (integer map, RAS affine) as ``acquisition`` says.

    ``fine`` (an :class:`~mri_hsynex.validate.anatomy.FinePatch` of this map): inside its box
    the intensities are drawn on the finer grid and averaged over each voxel (true partial
    voluming of the boundaries, and shrinkage by less than a voxel). Everything random (label
    jitter, bias, noise) depends only on ``seed`` and the coarse map's shape and largest label,
    so two maps that differ only in their fine patches get identical contrast, bias and noise.
    ``phase_mm``: where the thick slices fall (``acquire_thick_slices``).

    Returns ``(image float32 0..255, affine)`` at the acquired resolution. Deterministic for a
    given ``seed``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise HsynexError(f"label map must be 3-D, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        labels = np.rint(labels).astype(np.int32)
    rng = np.random.default_rng(seed)
    acq = acquisition
    labels = add_head_shells(labels, affine)
    means, tissue_means = label_means(int(max(labels.max(initial=0), *SHELL_LABELS.values())),
                                      acq.contrast, rng, acq.label_jitter)
    image = means[labels]
    if fine is not None:
        image[fine.box] = fine.pooled(means[fine.labels])
    image = ndimage.gaussian_filter(image, 0.5 / voxel_sizes(affine), truncate=2.0)
    image *= bias_field(image.shape, rng, acq.bias)
    image, new_affine = acquire_thick_slices(image, affine, acq.thickness_mm, acq.orientation,
                                             phase_mm)
    scale = float(max(tissue_means.max(), means.max(), 1e-3))
    sd = acq.noise * scale
    noisy = np.hypot(image + rng.normal(0.0, sd, image.shape).astype(np.float32),
                     rng.normal(0.0, sd, image.shape).astype(np.float32))
    return (noisy * (255.0 / (scale * 1.2))).clip(0, 255).astype(np.float32), new_affine


def crop_to_head(labels: np.ndarray, affine: np.ndarray,
                 margin_mm: float = 16.0) -> tuple[np.ndarray, np.ndarray]:
    """Crop a label map to the bounding box of its non-zero labels plus ``margin_mm`` (room for
    the extra-cerebral shells); returns ``(labels, affine)`` with world coordinates kept."""
    labels = np.asarray(labels)
    nonzero = np.argwhere(labels > 0)
    if nonzero.size == 0:
        raise HsynexError("label map is empty")
    margin = np.ceil(margin_mm / voxel_sizes(affine)).astype(int)
    lo = np.maximum(nonzero.min(axis=0) - margin, 0)
    hi = np.minimum(nonzero.max(axis=0) + margin + 1, labels.shape)
    cropped = labels[tuple(slice(a, b) for a, b in zip(lo, hi))]
    new_affine = np.asarray(affine, dtype=float).copy()
    new_affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    return np.ascontiguousarray(cropped), new_affine
