"""Partial-volume-corrected soft volumes (issue 13).

The networks say *where* the hypothalamus is, but at its boundary their posteriors carry a shape
prior rather than what the image shows: the shipped networks return about the same volume when a
hypothalamus is shrunk by 20 % (paired sensitivity near 0, ``docs/validation.md``). As FreeSurfer's
``mri_segstats --pv`` does for aseg structures, the volume therefore counts every voxel at and
next to the segmentation by the fraction of hypothalamic tissue its *intensity* implies:

    f(v) = (I(v) - mu_n(v)) / (mu_h - mu_n(v)),  clipped to [-0.1, 1]

``mu_h``: the median intensity of the segmentation's confident core (more than 2 voxels deep:
after a loss the segmentation's outer layer holds the tissue that replaced it); ``mu_n(v)``: the
mean intensity of the tissue around the segmentation near ``v`` on the side ``v`` leans to (the
darker or the brighter voxels of a ring 2.5-3.5 voxels outside it, averaged over a local window), so
the 3rd ventricle's CSF, the ventral DC or the optic chiasm each act as the neighbour where they
touch. All of it is estimated on the image itself, so it holds for any contrast and any linear
intensity scaling. Where the hypothalamus and its neighbour differ by less than half the
interior's own spread the image cannot tell and the network's posterior is kept; the two are
blended up to one spread. The subunits share each voxel's fraction in the networks'
proportions, so they still add up to the whole.

The fraction may fall to -0.1 (``LOWEST_FRACTION``). Clipped at 0 (v7), the image noise of every
voxel without hypothalamus counted as tissue (sub-08 T1-like 1 mm: 0.21 on average for the ~430
such voxels around the segmentation), so a loss that emptied voxels partly vanished into that
bias: renders of three maps, paired ventricle-kind sensitivity of the worst contrast at 1 / 5 mm,
v7 -> v9: sub-08 0.73 -> 0.79 / 0.62 -> 0.68, sub-01 0.84 -> 0.93 / 0.51 -> 0.59,
oasis-trt-20-01 0.46 -> 0.49 / 0.48 -> 0.54. Further down the noise of single voxels weighs more
than the bias: the whole volume's correlation with the true one across 18 maps (T1-like /
PD-like 1 mm, two noise seeds each) was 0.88 / 0.77 at 0 and stays 0.88 / 0.73 at -0.1, but
falls to 0.87 / 0.64 with a bound at minus half the fraction's own noise sd; and
taking a voxel's side from a wider smoothing (so that a pure voxel's noise does not pick it)
misreads voxels where three tissues meet (T1-like 0.88 -> 0.78; v8 did both, for one
commit). These fractions are the volume's estimate only: the posteriors the tool writes are the
networks'.

On thick slices every voxel mixes the hypothalamus with what lies above and below it in the
slice, the core included; one ``mu_h`` for the whole structure then reads that through-plane
mixing as lost tissue (T1-like 7 mm axial: -26 %). Given the scan's voxel sizes along the crop
axes (``thickness``), ``mu_h`` is taken per plane across the slices: the median of the same core
voxels within half a slice thickness of that plane (``slab_axis``).

A skull-stripped scan holds zeros where the mask removed the tissue around the brain, and the
mask often ends right at the hypothalamus' lower surface (the cisterns' CSF is stripped): there
the zeros act as a neighbour far darker than the CSF that was there, and the boundary voxels
(hypothalamus and CSF, intensities untouched) read as mostly hypothalamus (renders of 18 maps,
T1-like 1 mm: +8.6 % against the same images with the skull). The zeroed background
(``filled_background``: the scan's minimum, connected to its border) counts as no tissue, and
the voxels next to it, whose neighbour tissue is gone, keep the networks' posterior. A mask with
a margin leaves the zeros a voxel or two away, inside the neighbour ring, where they pull
``mu_n`` down: each voxel keeps the posterior for the share of its ring (``WIDE_WINDOW``) that the
mask zeroed. Renders of 18 maps stripped with a one-voxel margin, change from the same image
with the skull (v6 -> v7): T1-like +7.0 -> +3.1 %, FLAIR-like +0.9 -> -0.7 %, T2-like
+5.7 -> +4.0 % (the posteriors alone: +4.9 %), PD-like +5.3 -> +1.9 %.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# the neighbour ring: this far outside the segmentation (voxels of the 1 mm grid); the voxels at
# 2-2.5 still share partial volume with the hypothalamus (render blur, smoothing) and pull the
# neighbour's intensity toward it (offline, 5 renders: ventricle-kind sensitivity 0.73 with
# (2, 3), 0.87 with (2.5, 3.5), 0.89 with (3, 4); ventral-DC kind 0.24, 0.27, 0.24)
RING_MM = (2.5, 3.5)
WINDOW = 7  # voxels: the local window over which the ring's intensity is averaged
WIDE_WINDOW = 15  # fallback window where the local one holds no ring voxel
CONFIDENT = 0.9  # interior: hypothalamus posterior above this ...
CORE_VOXELS = 2.0  # ... and deeper than this inside the segmentation (else 1 voxel, else all)
# bump when the correction changes: the validation cache redoes hsynex's records
VERSION = 9
MIN_VOXELS = 20  # fewer segmented (or interior) voxels: no correction
# more: no correction either; not a hypothalamus (~700-1,300 voxels of the 1 mm grid) but, say,
# untrained networks filling the crop, which leaves no neighbour ring to read
MAX_VOXELS = 5000
SMOOTH_VOXELS = 0.5  # Gaussian sd of the smoothing before the fractions
CONTRAST_LOW, CONTRAST_HIGH = 0.5, 1.0  # |mu_h - mu_n| in units of the interior's spread
LOWEST_FRACTION = -0.1  # how far below 0 a voxel's fraction may go (v7: 0)
# thick slices: an axis whose voxels are at least this thick (mm) and this many times the other
# axes' (median) gets a per-plane mu_h (isotropic low-resolution scans keep one mu_h)
SLAB_MIN_MM, SLAB_RATIO = 1.5, 1.5
SLAB_MIN_VOXELS = 5  # fewer core voxels within a plane's slab: the global mu_h there


def _local_mean(values: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """Weighted mean of ``values`` over a ``size``³ window (NaN where it holds no weight)."""
    from scipy import ndimage

    w = ndimage.uniform_filter(weights.astype(np.float64), size=size, mode="constant")
    s = ndimage.uniform_filter(values * weights, size=size, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(w > 1e-9, s / np.maximum(w, 1e-12), np.nan)


def slab_axis(thickness) -> tuple[int, int] | None:
    """(crop axis, half-width in planes of the 1 mm model grid) of a thick-slice scan whose voxel
    sizes along the crop axes are ``thickness`` (mm), or None (no such axis, or ``thickness``
    None). A scan resliced to 1 mm before hsynex shows no thick axis and keeps one ``mu_h``."""
    if thickness is None:
        return None
    thickness = np.asarray(thickness, float)
    axis = int(np.argmax(thickness))
    others = np.delete(thickness, axis)
    if thickness[axis] < SLAB_MIN_MM or thickness[axis] < SLAB_RATIO * float(np.median(others)):
        return None
    return axis, int(round((thickness[axis] - 1.0) / 2.0))


def _plane_intensity(image: np.ndarray, interior: np.ndarray, axis: int, half: int,
                     mu_h: float) -> np.ndarray:
    """``mu_h`` per plane across ``axis``: the median of the ``interior`` voxels within ``half``
    planes of it (the thick slice it lies in), broadcastable to the image; ``mu_h`` where fewer
    than ``SLAB_MIN_VOXELS`` lie there."""
    n = image.shape[axis]
    moved_image, moved_interior = np.moveaxis(image, axis, 0), np.moveaxis(interior, axis, 0)
    per_plane = np.full(n, mu_h)
    for k in range(n):
        lo, hi = max(0, k - half), min(n, k + half + 1)
        values = moved_image[lo:hi][moved_interior[lo:hi]]
        if values.size >= SLAB_MIN_VOXELS:
            per_plane[k] = float(np.median(values))
    shape = [1, 1, 1]
    shape[axis] = n
    return per_plane.reshape(shape)


def segmented_region(posteriors: np.ndarray) -> np.ndarray:
    """The whole hypothalamus' own region (posterior > 0.5) rather than the arg-max over eleven
    classes: where subunits are near-tied it does not flip with rounding-level changes
    (re-storing sub-08's uint8 T1: 0.9 % instead of 1.6 %)."""
    return 1.0 - np.asarray(posteriors, np.float32)[..., 0] > 0.5


def background_reach(posteriors: np.ndarray) -> np.ndarray:
    """The crop voxels where a zeroed background can change the correction of these posteriors:
    the neighbour ring and everything inside it (no farther than ``RING_MM[1]`` from the
    segmentation). ``filled_background`` needs to look no farther."""
    from scipy import ndimage

    return ndimage.distance_transform_edt(~segmented_region(posteriors)) <= RING_MM[1]


def filled_background(data: np.ndarray, grid, crop,
                      reach: np.ndarray | Callable[[], np.ndarray] | None = None
                      ) -> np.ndarray | None:
    """The voxels of ``crop`` (a Grid) where the scan ``data`` (on ``grid``) holds no tissue: its
    minimum value, in regions connected to the scan's border (the zeros a skull-stripping or
    defacing mask leaves; an enclosed dark region such as a FLAIR's nulled ventricle is tissue),
    sampled onto the crop; None where the crop has none (most scans), or none within ``reach``
    (crop voxels, e.g. ``background_reach``: the fill elsewhere would change nothing; or a
    function returning them, called only when some of the scan's minimum lies in the crop)."""
    from .grid import sample_antialiased

    data = np.asarray(data)
    lowest = data <= data.min()
    # the fill is a subset of the lowest voxels (and sampling is monotone): most scans hold none
    # of them in the crop, or none where they would count (FreeSurfer's T1.mgz clips the air
    # under the brain to 0, 15-27 voxels from the hypothalamus), and need no labelling of the
    # whole scan (0.5 s on 256^3)
    candidates = sample_antialiased(lowest.astype(np.float32), grid, crop) > 0.5
    if not candidates.any():
        return None
    if reach is not None:
        candidates &= np.asarray(reach() if callable(reach) else reach, bool)
        if not candidates.any():
            return None
    fill = border_minimum(data, lowest)
    if not fill.any():
        return None
    on_crop = sample_antialiased(fill.astype(np.float32), grid, crop) > 0.5
    return on_crop if on_crop.any() else None


def border_minimum(data: np.ndarray, lowest: np.ndarray | None = None) -> np.ndarray:
    """The voxels of ``data`` that hold its minimum value in regions connected to its border
    (``lowest``: the minimum's voxels when the caller has them): where a skull-stripping or
    defacing mask removed the tissue."""
    from scipy import ndimage

    data = np.asarray(data)
    if lowest is None:
        lowest = data <= data.min()
    labels, _ = ndimage.label(lowest)
    border = np.concatenate([np.moveaxis(labels, axis, 0)[side].ravel()
                             for axis in range(3) for side in (0, -1)])
    border = np.unique(border[border > 0])
    return np.isin(labels, border) if border.size else np.zeros(data.shape, bool)


def tissue_fraction(image: np.ndarray, probability: np.ndarray, segmented: np.ndarray,
                    allowed: np.ndarray | None = None, thickness=None,
                    no_tissue: np.ndarray | None = None,
                    outside: np.ndarray | None = None) -> np.ndarray | None:
    """Hypothalamic tissue fraction (X, Y, Z) in [0, 1] of every voxel of the segmentation and of
    the one-voxel shell around it (0 elsewhere), or None when the segmentation is too small to
    estimate the tissue's intensity or too large to be a hypothalamus (then the posteriors
    stand).

    ``image``: intensities on the model grid; ``probability``: the networks' hypothalamus
    posterior (1 - background); ``segmented``: the hypothalamus' region (``corrected_posteriors``
    takes ``probability`` > 0.5); ``allowed``: voxels that may count (the post-processing
    mask); ``thickness``: the scan's voxel sizes (mm) along the crop axes (a thick-slice axis
    gets a per-plane tissue intensity, ``slab_axis``; None: one for the whole structure);
    ``no_tissue``: voxels that hold no tissue (``filled_background``): fraction 0, and their
    face neighbours keep ``probability``; ``outside``: the distance (voxels) of every voxel from
    ``segmented`` when the caller has it (computed here otherwise)."""
    from scipy import ndimage

    image = np.asarray(image, np.float64)
    segmented = np.asarray(segmented, bool)
    if not _correctable(segmented):
        return None
    # the tissue's own intensity from the segmentation's core: the networks' segmentation does
    # not shrink with the hypothalamus, so after a loss its outer layer holds the tissue that
    # replaced it; the deepest confident voxels are the least mixed
    depth = ndimage.distance_transform_edt(segmented)
    confident = probability > CONFIDENT
    for interior in ((depth > CORE_VOXELS) & confident, (depth > 1.0) & confident, segmented):
        if interior.sum() >= MIN_VOXELS:
            break
    values = image[interior]
    mu_h = float(np.median(values))
    spread = max(1.4826 * float(np.median(np.abs(values - mu_h))), 1e-6)
    slab = slab_axis(thickness)
    if slab is not None:  # thick slices: the core's intensity in each slice, mixing included
        mu_h = _plane_intensity(image, interior, slab[0], slab[1], mu_h)

    if outside is None:
        outside = ndimage.distance_transform_edt(~segmented)
    ring = (outside >= RING_MM[0]) & (outside <= RING_MM[1])
    zone = outside <= 1.0  # the segmentation and its face-neighbour shell
    if allowed is not None:
        zone &= np.asarray(allowed, bool)
    if not ring.any():
        return None
    # a light smoothing (it keeps the tissue's sum) halves the noise that clipping would turn
    # into a bias
    smooth = ndimage.gaussian_filter(image, SMOOTH_VOXELS, mode="nearest")
    fraction = np.asarray(probability, np.float64).copy()
    if no_tissue is not None:
        no_tissue = np.asarray(no_tissue, bool)
    # the neighbour darker than the hypothalamus for voxels darker than it, the brighter one for
    # brighter voxels: a voxel is a mixture of the hypothalamus and the tissue its intensity
    # leans to
    for darker in (True, False):
        side_ring = ring & ((smooth < mu_h) if darker else (smooth > mu_h))
        mu_n = _neighbour_mean(smooth, side_ring)
        if mu_n is None:  # no neighbour on that side: the image cannot tell, keep P
            continue
        contrast = np.abs(mu_h - mu_n)
        voxels = (smooth < mu_h) if darker else (smooth >= mu_h)
        with np.errstate(invalid="ignore", divide="ignore"):
            from_image = np.clip(1.0 - np.abs(smooth - mu_h) / np.maximum(contrast, 1e-9),
                                 LOWEST_FRACTION, 1.0)
        reliable = np.clip((contrast / spread - CONTRAST_LOW) / (CONTRAST_HIGH - CONTRAST_LOW),
                           0.0, 1.0)
        blended = reliable * from_image + (1.0 - reliable) * probability
        if no_tissue is not None:
            # where the mask removed part of the neighbour ring around v, mu_n(v) mixes the
            # tissue left with the zeros: that share of v keeps P
            removed = np.nan_to_num(_local_mean(no_tissue.astype(np.float64), side_ring,
                                                WIDE_WINDOW))
            blended = removed * probability + (1.0 - removed) * blended
        fraction[voxels] = blended[voxels]
    if no_tissue is not None:
        # next to a zeroed background the neighbour tissue was removed: the image cannot tell
        near = ndimage.binary_dilation(no_tissue) & ~no_tissue
        fraction = np.where(near, probability, np.where(no_tissue, 0.0, fraction))
    return np.where(zone, fraction, 0.0).astype(np.float32)


def _correctable(segmented: np.ndarray) -> bool:
    """Whether a segmentation is large enough to estimate the tissue's intensity and small enough
    to be a hypothalamus (``MIN_VOXELS``-``MAX_VOXELS``)."""
    return MIN_VOXELS <= int(np.count_nonzero(segmented)) <= MAX_VOXELS


def _neighbour_mean(image: np.ndarray, ring: np.ndarray) -> np.ndarray | None:
    """Mean of ``image`` over the ``ring`` voxels near every voxel (local window, then a wide
    one, then the whole ring); None when the ring is empty."""
    if not ring.any():
        return None
    mu = _local_mean(image, ring, WINDOW)
    wide = _local_mean(image, ring, WIDE_WINDOW)
    mu = np.where(np.isnan(mu), wide, mu)
    return np.where(np.isnan(mu), float(image[ring].mean()), mu)


def corrected_posteriors(posteriors: np.ndarray, image: np.ndarray,
                         allowed: np.ndarray | None = None, thickness=None,
                         no_tissue: np.ndarray | None = None) -> np.ndarray:
    """Posteriors (X, Y, Z, 11) whose subunit channels sum, at every voxel, to its tissue
    fraction (:func:`tissue_fraction`), split in the networks' proportions (those of the nearest
    segmented voxel where the networks put no mass); background takes the rest. Unchanged when
    the fraction cannot be estimated. Where the fraction is below 0 (down to
    ``LOWEST_FRACTION``) the subunit channels are too: these are the volume's estimate, not
    probabilities (``volumes.channel_volumes`` keeps every structure's volume at 0 or more)."""
    from scipy import ndimage

    posteriors = np.asarray(posteriors, np.float32)
    probability = 1.0 - posteriors[..., 0]
    segmented = segmented_region(posteriors)
    if not _correctable(segmented):  # before the distance transform it would not need
        return posteriors
    outside, nearest = ndimage.distance_transform_edt(~segmented, return_indices=True)
    fraction = tissue_fraction(image, probability, segmented, allowed, thickness, no_tissue,
                               outside)
    if fraction is None:
        return posteriors
    subunits = posteriors[..., 1:].astype(np.float64)
    total = subunits.sum(axis=-1)
    # proportions where the networks gave (almost) none: the nearest segmented voxel's
    borrowed = subunits[tuple(nearest)]
    weak = total < 1e-3
    subunits = np.where(weak[..., None], borrowed, subunits)
    total = np.where(weak, borrowed.sum(axis=-1), total)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total[..., None] > 0, subunits / total[..., None], 0.0)
    out = np.empty_like(posteriors)
    out[..., 1:] = share * fraction[..., None]
    out[..., 0] = 1.0 - out[..., 1:].sum(axis=-1)
    return out
