"""Posterior post-processing on the model grid: flip test-time augmentation, ventral-DC masking
(:func:`anatomical_mask`), largest connected component per hemisphere.

Posteriors are channels-last float32 arrays ``(X, Y, Z, 11)``: channel 0 background, channel k
label ``800 + k`` (1-5 left subunits, 6-10 right). Axis 0 of the model grid is RAS x.
"""

from __future__ import annotations

import numpy as np

from ..labels import LEFT_SUBUNIT_IDS, RIGHT_SUBUNIT_IDS, SUBUNIT_IDS

LEFT_CHANNELS = tuple(i - 800 for i in LEFT_SUBUNIT_IDS)  # 1..5
RIGHT_CHANNELS = tuple(i - 800 for i in RIGHT_SUBUNIT_IDS)  # 6..10
N_CHANNELS = 1 + len(SUBUNIT_IDS)
# Channel permutation that swaps left and right subunits (k <-> k + 5); background stays.
SWAP_LR = np.array((0,) + RIGHT_CHANNELS + LEFT_CHANNELS)
# how voxels are labelled (bump on change: the validation cache redoes hsynex's records):
# 1 the arg-max over eleven channels, 2 :func:`hard_channels`, 3 the mask of
# :func:`anatomical_mask` (before: the region dilated by 3 mm), 4 the mask keeps blobs whole
# where the region holds less than half of them
LABEL_RULE = 4


def swap_hemispheres(post: np.ndarray) -> np.ndarray:
    """Posteriors with left and right subunit channels exchanged (channel k <-> k + 5)."""
    return post[..., SWAP_LR]


def unflip(post_of_flipped: np.ndarray) -> np.ndarray:
    """Bring the posteriors of an x-flipped input back: flip RAS x (axis 0) and swap sides."""
    return swap_hemispheres(post_of_flipped[::-1])


def merge_flip_tta(post: np.ndarray, post_of_flipped: np.ndarray) -> np.ndarray:
    """Average the posteriors of an image and of its x-flipped copy (in the image's frame)."""
    return 0.5 * (post + unflip(post_of_flipped))


def distance_mm(mask: np.ndarray, voxel_mm: float | tuple = 1.0) -> np.ndarray:
    """Euclidean distance (mm, on a grid of ``voxel_mm``) of every voxel to a boolean mask: 0
    inside, inf everywhere when the mask is empty."""
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    if not mask.any():
        return np.full(mask.shape, np.inf)
    sampling = np.broadcast_to(np.asarray(voxel_mm, float), (3,))
    return ndimage.distance_transform_edt(~mask, sampling=sampling)


def dilate(mask: np.ndarray, mm: float, voxel_mm: float | tuple = 1.0) -> np.ndarray:
    """Boolean mask grown by ``mm`` millimetres (Euclidean distance on a grid of ``voxel_mm``)."""
    mask = np.asarray(mask, bool)
    if mm <= 0 or not mask.any():
        return mask.copy()
    return distance_mm(mask, voxel_mm) <= mm


def anatomical_mask(post: np.ndarray, region: np.ndarray, exclude: np.ndarray | None = None,
                    voxel_mm: float = 1.0) -> np.ndarray:
    """Where posteriors (X, Y, Z, 11) may label the hypothalamus: within
    ``VENTRAL_DC_DILATION_MM`` of the ventral DC + 3rd ventricle ``region``; beyond that and up
    to ``MASK_REACH_MM``, the labelled blobs (:func:`hard_channels`) that continue one inside,
    with one voxel around them for their soft edge; never the ``exclude`` voxels (the aseg's 3rd
    ventricle).

    Blobs unconnected to the region still go (false positives far from the ventral DC), but the
    region no longer cuts the structure where it misses part of it: with a brain mask cut a few
    mm under the hypothalamus, the 3 mm localiser loses the anterior ventral DC and the plain
    3 mm dilation took sub-08's volume from 951 to 441 mm3 (anterior subunits gone), while the
    networks' own output did not change (issue 13, seventh session).

    Where the region holds less than :func:`region_agreement`'s ``MIN_REGION_AGREEMENT`` of the
    blobs that continue it, the region is the part that is wrong (a scan whose field of view
    ends near the hypothalamus: the localiser, trained on whole heads, puts the ventral DC at
    the edge), and those blobs are kept whole, beyond the reach, as long as they are no larger
    than a hypothalamus can be (``MAX_UNREACHED_MM3``; untrained networks that label everything
    stay within the reach).
    """
    from scipy import ndimage

    from ..constants import MASK_REACH_MM, VENTRAL_DC_DILATION_MM

    allowed = np.ones(region.shape, bool) if exclude is None else ~np.asarray(exclude, bool)
    distance = distance_mm(region, voxel_mm)  # one transform for both bands
    near = (distance <= VENTRAL_DC_DILATION_MM) & allowed
    reach = (distance <= MASK_REACH_MM) & allowed
    touching = _blobs_touching((hard_channels(post) > 0) & allowed, near)
    if not touching.any():
        return near
    voxel_mm3 = float(np.prod(np.broadcast_to(np.asarray(voxel_mm, float), (3,))))
    if (region_agreement(touching, near) < MIN_REGION_AGREEMENT
            and touching.sum() * voxel_mm3 <= MAX_UNREACHED_MM3):
        kept, limit = touching, allowed
    else:
        kept, limit = _blobs_touching(touching & reach, near), reach
    edge = ndimage.binary_dilation(kept, structure=np.ones((3, 3, 3), bool))
    return near | (edge & limit)


# anatomical_mask: the region must hold at least this share of the blobs that continue it, or it
# is taken to be incomplete (partial field of view). Measured (issue 13, ninth session): whole-head
# real scans and renders of sub-08 (T1, T2, PD, FLAIR, 1 and 5 mm, brainmask.mgz) 0.74-1.0; the
# MNI template of `make demo` 0.54; sub-08 with a brain-mask cut 0 / 2 / 4 mm under the
# hypothalamus 0.39 / 0.51 / 0.64; cut to a +-40 mm coronal slab 0.22, a +-15 mm axial one 0.10.
MIN_REGION_AGREEMENT = 0.5
MAX_UNREACHED_MM3 = 3000.0  # a hypothalamus (both sides) is ~700-1,300 mm3


def _blobs_touching(labelled: np.ndarray, band: np.ndarray) -> np.ndarray:
    """The 26-connected blobs of ``labelled`` that have a voxel in ``band``."""
    from scipy import ndimage

    blobs, n = ndimage.label(labelled, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return np.zeros(labelled.shape, bool)
    inside = np.unique(blobs[band & labelled])
    return np.isin(blobs, inside[inside > 0])


def region_agreement(segmented: np.ndarray, near: np.ndarray) -> float:
    """Share of the ``segmented`` voxels that lie in ``near`` (the localised ventral DC + 3rd
    ventricle, dilated); 1.0 for an empty segmentation."""
    segmented = np.asarray(segmented, bool)
    total = int(segmented.sum())
    return 1.0 if total == 0 else float((segmented & near).sum()) / total


def clean_posteriors(post: np.ndarray, region: np.ndarray, exclude: np.ndarray | None = None,
                     voxel_mm: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The pipeline's post-processing of TTA-merged posteriors: (the posteriors masked by
    :func:`anatomical_mask` with only the largest blob per hemisphere kept, the mask)."""
    mask = anatomical_mask(post, region, exclude, voxel_mm)
    return keep_largest_component_per_hemisphere(mask_posteriors(post, mask)), mask


def mask_posteriors(post: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Posteriors with every voxel outside ``mask`` set to certain background."""
    out = post.copy()
    outside = ~np.asarray(mask, bool)
    out[outside] = 0.0
    out[outside, 0] = 1.0
    return out


def hard_channels(post: np.ndarray) -> np.ndarray:
    """The segmentation's channel at every voxel of posteriors (..., 11): the most probable
    subunit where the whole hypothalamus is more probable than the background (1 - P(background)
    > 0.5), else 0.

    The whole hypothalamus decides *whether* a voxel is labelled and the subunits only *which*
    label it gets, as the volumes are counted (the subunits add up to the whole, and the
    partial-volume correction reads the same region): an arg-max over all eleven channels would
    leave a voxel unlabelled where, say, background 0.4 beats two subunits at 0.3 each."""
    post = np.asarray(post)
    return np.where(post[..., 0] < 0.5, 1 + np.argmax(post[..., 1:], axis=-1), 0)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean mask (empty stays empty)."""
    from scipy import ndimage

    labelled, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return np.asarray(mask, bool).copy()
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return labelled == int(np.argmax(sizes))


def keep_largest_component_per_hemisphere(post: np.ndarray) -> np.ndarray:
    """Keep, per hemisphere, only the largest connected blob of its subunits
    (:func:`hard_channels`).

    Outside that blob the hemisphere's subunit probabilities are moved to the background, so the
    posteriors stay normalised and agree with the segmentation.
    """
    out = post.copy()
    hard = hard_channels(post)
    for channels in (LEFT_CHANNELS, RIGHT_CHANNELS):
        side = np.isin(hard, channels)
        removed = side & ~largest_component(side)
        if not removed.any():
            continue
        block = out[removed]
        block[:, 0] += block[:, list(channels)].sum(axis=-1)
        block[:, list(channels)] = 0.0
        out[removed] = block
    return out
