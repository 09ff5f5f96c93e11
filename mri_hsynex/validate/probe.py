"""hsynex's inference with each post-processing step switched off in turn (issue 13, section 1).

:class:`ProbeEngine` runs the same steps as :meth:`mri_hsynex.predict.pipeline.Segmenter.segment`
(localise -> 1 mm crop -> percentile normalisation -> stage 1 -> stage 2 on the crop and its
x-flipped copy) once per image, then derives from those network outputs the volume of every
*variant*: the pipeline itself, the pipeline without one post-processing step (ventral-DC mask,
3rd-ventricle exclusion, largest component, flip TTA), without any, stage 1's own whole
hypothalamus, and hard voxel counts. It calls the predict package's public functions (it does not
change them); :meth:`ProbeEngine.check_against_pipeline` shows that its ``pipeline`` variant
reproduces the tool's volumes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..labels import GROUPINGS, SUBUNIT_IDS
from .engines import HsynexEngine, Segmentation, _with_groupings

# variant -> what it is (the report's table rows, in this order)
VARIANTS: dict[str, str] = {
    "pipeline": "the tool's soft volume (all post-processing)",
    "no VDC mask": "ventral-DC(+3V) mask off",
    "no 3V exclusion": "3rd-ventricle exclusion off (only with an aseg; the localiser gives none)",
    "no largest component": "largest component per hemisphere off",
    "no flip TTA": "stage 2 on the image only (not averaged with its flipped copy)",
    "no post-processing": "stage 2's TTA-merged posteriors as they come",
    "pipeline hard": "voxel count of the tool's labels (not the soft volume)",
    "posterior volume": "the posteriors summed (partial-volume correction off)",
    "PV corrected": "partial-volume-corrected soft volume (predict/pvc.py) on",
    "stage 1": "stage 1's whole-hypothalamus posterior summed (TTA-merged, no mask)",
    "stage 1 masked": "stage 1's posterior summed inside the pipeline's mask",
    "stage 1 hard": "stage 1's voxels with posterior > 0.5 (TTA-merged, no mask)",
}
WHOLE_ONLY = ("stage 1", "stage 1 masked", "stage 1 hard")  # variants without subunits/sides


def soft_volumes(post: np.ndarray, voxel_mm3: float) -> dict[int, float]:
    """Soft volume (mm^3) of 801-810 and 811-813 from channels-last posteriors (X, Y, Z, 11), as
    the tool reports them (``volumes.channel_volumes``)."""
    from ..volumes import channel_volumes

    return _with_groupings(channel_volumes(post, voxel_mm3))


def hard_volumes(post: np.ndarray, voxel_mm3: float) -> dict[int, float]:
    """Voxel counts x voxel volume of the labels of posteriors (X, Y, Z, 11), as the tool
    labels them (``predict.postprocess.hard_channels``)."""
    from ..predict.postprocess import hard_channels

    counts = np.bincount(hard_channels(post).ravel(), minlength=post.shape[-1])
    return _with_groupings({label: float(counts[k]) * voxel_mm3
                            for k, label in enumerate(SUBUNIT_IDS, start=1)})


def whole_only(volume_mm3: float) -> dict[int, float]:
    """A volumes dict that knows only the whole hypothalamus (813): NaN elsewhere."""
    out = {label: float("nan") for label in (*SUBUNIT_IDS, *GROUPINGS)}
    out[813] = float(volume_mm3)
    return out


def variant_volumes(stage1_pair: np.ndarray, stage2_pair: np.ndarray, region: np.ndarray,
                    exclude: np.ndarray | None, voxel_mm: float, image: np.ndarray | None = None,
                    partial_volume: bool = False, thickness=None,
                    no_tissue: np.ndarray | None = None) -> dict[str, dict[int, float]]:
    """Every variant's volumes from the network outputs on an image and its flipped copy.

    ``stage1_pair``: stage 1's whole-hypothalamus posterior, (2, X, Y, Z) (image, flipped copy,
    each in its own frame); ``stage2_pair``: stage 2's posteriors (2, X, Y, Z, 11); ``region``:
    the undilated VDC+3V region on the crop; ``exclude``: voxels that cannot be hypothalamus (the
    aseg's 3rd ventricle) or None; ``image``: the crop the networks saw (for the
    partial-volume correction; None: the whole crop is taken as one tissue, no correction);
    ``partial_volume``: whether the tool's volume ("pipeline") is the corrected one;
    ``thickness``: the scan's voxel sizes along the crop axes (for the correction's thick-slice
    handling, as the pipeline passes them); ``no_tissue``: the crop's zeroed background
    (``pvc.filled_background``, as the pipeline passes it), or a function of the pipeline's
    posteriors that returns it (so that it need look only within ``pvc.background_reach``).
    """
    from ..predict.postprocess import (
        anatomical_mask,
        clean_posteriors,
        keep_largest_component_per_hemisphere,
        mask_posteriors,
        merge_flip_tta,
    )

    voxel_mm3 = float(voxel_mm) ** 3
    merged = merge_flip_tta(stage2_pair[0], stage2_pair[1])
    whole1 = 0.5 * (stage1_pair[0] + stage1_pair[1][::-1])
    not_ventricle = np.ones(region.shape, bool) if exclude is None else ~exclude
    pipeline, mask = clean_posteriors(merged, region, exclude, voxel_mm)  # the pipeline's own step
    lcc = keep_largest_component_per_hemisphere

    def full(post, m=mask, largest=True):
        post = mask_posteriors(post, m)
        return lcc(post) if largest else post

    posterior = soft_volumes(pipeline, voxel_mm3)
    corrected = posterior
    if callable(no_tissue):
        no_tissue = no_tissue(pipeline)
    if image is not None:
        from ..predict.pvc import corrected_posteriors

        corrected = soft_volumes(corrected_posteriors(pipeline, image, mask, thickness,
                                                      no_tissue), voxel_mm3)
    return {
        "pipeline": corrected if partial_volume else posterior,
        "posterior volume": posterior,
        "PV corrected": corrected,
        "no VDC mask": soft_volumes(full(merged, not_ventricle), voxel_mm3),
        "no 3V exclusion": soft_volumes(
            full(merged, anatomical_mask(merged, region, None, voxel_mm)), voxel_mm3),
        "no largest component": soft_volumes(full(merged, largest=False), voxel_mm3),
        "no flip TTA": soft_volumes(full(stage2_pair[0]), voxel_mm3),
        "no post-processing": soft_volumes(merged, voxel_mm3),
        "pipeline hard": hard_volumes(pipeline, voxel_mm3),
        "stage 1": whole_only(float(whole1.sum(dtype=np.float64)) * voxel_mm3),
        "stage 1 masked": whole_only(float(whole1[mask].sum(dtype=np.float64)) * voxel_mm3),
        "stage 1 hard": whole_only(float((whole1 > 0.5).sum()) * voxel_mm3),
    }


class ProbeEngine(HsynexEngine):
    """hsynex's cascade, returning the volumes of every variant in ``Segmentation.variants``
    (``volumes`` and ``labels`` are the pipeline's own). With ``aseg_path`` it localises and
    masks from the aseg, as ``mri_hsynex segment --aseg`` does."""

    name = "hsynex"

    def segment(self, image_path: str | os.PathLike,
                aseg_path: str | os.PathLike | None = None,
                centre_world: np.ndarray | None = None) -> Segmentation:
        """Segment one image file; ``centre_world`` is not used (hsynex localises itself)."""
        from ..io import load_volume
        from ..models.cascade import STAGE1_POSTERIOR, run_cascade
        from ..predict.canonical import canonical_input
        from ..predict.pvc import background_reach, filled_background

        t0 = time.perf_counter()
        seg = self.segmenter
        image = load_volume(Path(image_path), kind="image")
        data, grid = canonical_input(np.asarray(image.data, np.float32).reshape(image.shape),
                                     np.asarray(image.affine, float))
        localisation = seg.localise(data, grid, image_path, aseg_path)
        crop, crop_image = seg.crop_input(data, grid, localisation)
        x = crop_image[None, ..., None]
        out1, out2 = run_cascade(seg.networks.stage1, seg.networks.stage2,
                                 np.concatenate([x, x[:, ::-1]], axis=0), self._mode)
        variants = variant_volumes(out1[..., STAGE1_POSTERIOR], out2,
                                   localisation.region_on(crop), localisation.exclude_on(crop),
                                   float(seg.stage_voxel_mm), crop_image, seg.partial_volume,
                                   grid.voxel_mm,
                                   lambda post: filled_background(
                                       data, grid, crop, lambda: background_reach(post)))
        labels = self._labels(out2, localisation, crop)
        return Segmentation(labels, np.asarray(crop.affine, float), variants["pipeline"],
                            time.perf_counter() - t0, variants=variants)

    @staticmethod
    def _labels(out2: np.ndarray, localisation, crop) -> np.ndarray:
        """The pipeline's hard labels on the crop (for Dice)."""
        from ..predict.postprocess import clean_posteriors, hard_channels, merge_flip_tta
        from ..predict.result import CHANNEL_LABELS

        post, _ = clean_posteriors(merge_flip_tta(out2[0], out2[1]),
                                   localisation.region_on(crop), localisation.exclude_on(crop),
                                   crop.voxel_mm)
        return CHANNEL_LABELS[hard_channels(post)]

    def check_against_pipeline(self, image_path: str | os.PathLike) -> float:
        """Largest absolute difference (mm^3, over 801-813) between this probe's ``pipeline``
        volumes and the tool's own (``Segmenter.segment``) on one image."""
        mine = self.segment(image_path).volumes
        theirs = HsynexEngine.segment(self, image_path).volumes
        return max(abs(mine[k] - theirs[k]) for k in mine)

    def crop_variants(self, crop_image: np.ndarray) -> dict[str, dict[int, float]]:
        """Variants on a crop given directly (no localisation; the mask is the whole crop):
        what the networks make of a blank or a noise crop."""
        from ..models.cascade import STAGE1_POSTERIOR, run_cascade

        seg = self.segmenter
        x = np.asarray(crop_image, np.float32)[None, ..., None]
        out1, out2 = run_cascade(seg.networks.stage1, seg.networks.stage2,
                                 np.concatenate([x, x[:, ::-1]], axis=0), self._mode)
        everywhere = np.ones(x.shape[1:4], bool)
        return variant_volumes(out1[..., STAGE1_POSTERIOR], out2, everywhere, None,
                               float(seg.stage_voxel_mm), x[0, ..., 0], seg.partial_volume)

    @property
    def _mode(self) -> str:
        """The cascade's mode as the model folder's model.json sets it (as the pipeline)."""
        return self.segmenter.networks.settings.get("cascade_mode", "independent")
