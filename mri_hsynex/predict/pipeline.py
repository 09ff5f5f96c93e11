"""The inference engine: ``Segmenter`` loads the networks once and segments scan after scan.

Pipeline (issue 6): load -> localise (aseg or localiser network) -> 1 mm RAS crop around the
hypothalamus -> percentile normalisation -> stage 1 -> stage 2 -> left/right flip TTA ->
ventral-DC masking -> largest component per hemisphere -> back to the input grid (``native``) or
kept on the model grid (``model``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..constants import PARTIAL_VOLUME, STAGE_CROP
from ..errors import HsynexError
from .canonical import canonical_axes, canonical_input
from .grid import Grid, ras_grid, round_up, sample_antialiased
from .localise import (
    Localisation,
    localise_from_aseg,
    localise_with_network,
    normalise_percentiles,
)
from .postprocess import clean_posteriors, merge_flip_tta
from .result import SegmentationResult

RESAMPLE_MODES = ("native", "model")


class Segmenter:
    """Loads the networks once (``model_dir`` > ``$HSYNEX_MODELS`` > shipped ``models/``).

    ``threads``/``cpu`` configure the Keras backend before keras is imported; ``seed`` fixes
    Keras' random state (inference itself is deterministic). ``partial_volume``: soft volumes
    corrected by the image's partial volume (``predict/pvc.py``); None: as model.json's
    ``"partial_volume"`` says (default ``constants.PARTIAL_VOLUME``).
    """

    def __init__(self, model_dir: str | os.PathLike | None = None, threads: int | None = None,
                 cpu: bool = False, seed: int = 0, partial_volume: bool | None = None):
        from ..backend import configure

        t0 = time.perf_counter()
        self.backend = configure(threads, cpu)
        from .networks import load_networks

        _seed_everything(int(seed or 0), self.backend)
        self.networks = load_networks(model_dir)
        self.seed = seed
        self.load_seconds = time.perf_counter() - t0
        info = self.networks.info
        self.stage_voxel_mm = info["stage1"].voxel_mm
        divisor = max(info["stage1"].divisor, info["stage2"].divisor)
        # model.json may set "stage_crop" (voxels per axis), e.g. the training crop, to trade
        # context for speed; the default is constants.STAGE_CROP.
        crop = int(self.networks.settings.get("stage_crop") or STAGE_CROP)
        self.crop_shape = (round_up(crop, divisor),) * 3
        if partial_volume is None:
            partial_volume = self.networks.settings.get("partial_volume", PARTIAL_VOLUME)
        self.partial_volume = bool(partial_volume)

    def segment(self, image_path: str | os.PathLike, aseg_path: str | os.PathLike | None = None,
                resample: str = "native") -> SegmentationResult:
        """Segment one scan (any contrast/resolution). HsynexError on bad input.

        ``aseg_path``: an aseg whose ventral DC (28/60) and 3rd ventricle (14) localise and mask
        (else the localiser network). ``resample``: "native" (outputs on the input grid) or
        "model" (on the 1 mm model grid).
        """
        from ..io import load_volume

        if resample not in RESAMPLE_MODES:
            raise HsynexError(f"resample must be one of {RESAMPLE_MODES}", resample)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        image = load_volume(image_path, kind="image")
        native_grid = Grid(image.shape, np.asarray(image.affine, float))
        # Everything up to the posteriors works on the canonical view (RAS voxel order, robust
        # intensity scale), so that file layout and intensity scaling cannot change the result;
        # outputs go back onto the scan's own grid by world position.
        data, grid = canonical_input(_as_3d_float(image.data, image_path), native_grid.affine)
        timings["load"] = time.perf_counter() - t0
        t = time.perf_counter()
        localisation = self.localise(data, grid, image_path, aseg_path)
        timings["localise"] = time.perf_counter() - t
        t = time.perf_counter()
        crop, crop_image = self.crop_input(data, grid, localisation)
        stage1, posteriors = self._run_cascade_tta(crop_image)
        timings["networks"] = time.perf_counter() - t
        t = time.perf_counter()
        # near the ventral DC + 3rd ventricle, and blobs that continue there; never in the aseg's
        # 3rd ventricle (the hypothalamus lines it, never fills it)
        posteriors, mask = clean_posteriors(posteriors, localisation.region_on(crop),
                                            localisation.exclude_on(crop), crop.voxel_mm)
        from .pvc import background_reach, corrected_posteriors, filled_background

        # a skull-stripped scan's zeroed background is no tissue (QC: where it cuts into the
        # segmentation)
        no_tissue = filled_background(data, grid, crop, lambda: background_reach(posteriors))
        volume_posteriors = None
        if self.partial_volume:  # volumes from the image's own partial volume (predict/pvc.py)
            # the crop's axes follow the scan's (canonical) voxel axes: their voxel sizes tell
            # the correction which axis, if any, was acquired with thick slices
            volume_posteriors = corrected_posteriors(
                posteriors, crop_image, mask, thickness=grid.voxel_mm, no_tissue=no_tissue)
        timings["postprocess"] = time.perf_counter() - t
        return SegmentationResult(
            image=image, image_grid=native_grid, crop_grid=crop, posteriors=posteriors,
            stage1=stage1, localisation=localisation, resample=resample,
            networks=self.networks, backend=self.backend, timings=timings,
            aseg_path=None if aseg_path is None else Path(aseg_path),
            volume_posteriors=volume_posteriors, no_tissue=no_tissue,
        )

    def crop_input(self, data: np.ndarray, grid: Grid,
                   localisation: Localisation) -> tuple[Grid, np.ndarray]:
        """The networks' crop around the localised centre (along the scan's own voxel axes,
        snapped to its voxels) and the canonical view ``data``/``grid`` sampled onto it
        (anti-aliased where the scan is finer, ``grid.sample_antialiased``), intensities
        normalised."""
        crop = ras_grid(localisation.centre_world, self.stage_voxel_mm, self.crop_shape,
                        snap_to=grid)
        return crop, normalise_percentiles(sample_antialiased(data, grid, crop))

    def localise(self, data: np.ndarray, grid: Grid, image_path, aseg_path) -> Localisation:
        """Localise on the canonical view ``data``/``grid`` (``canonical_input``): from the aseg
        when given, else with the localiser network and its brain checks."""
        if aseg_path is not None:
            from ..io import load_volume

            aseg = load_volume(aseg_path, kind="labels")
            if np.asarray(aseg.data).ndim != 3:
                raise HsynexError("aseg is not a 3-D label volume", aseg_path)
            labels, aseg_grid = canonical_axes(aseg.data, aseg.affine)
            return localise_from_aseg(labels, aseg_grid, grid, aseg_path)
        if self.networks.localiser is None:
            raise HsynexError("no localiser network in the model folder (give --aseg)",
                              self.networks.folder)
        info = self.networks.info["localiser"]
        # model.json may turn the brain-template check off ("brain_check": false), e.g. for
        # networks trained on non-human anatomy; it is on for the shipped model.
        return localise_with_network(data, grid, self.networks.localiser, info.voxel_mm,
                                     info.divisor, image_path,
                                     bool(self.networks.settings.get("brain_check", True)))

    def _run_cascade_tta(self, crop_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stage 1 -> stage 2 on the crop and its x-flipped copy (one batch of two); returns the
        TTA-merged stage-1 hypothalamus posterior (X, Y, Z) and stage-2 posteriors (X, Y, Z, 11)."""
        from ..models.cascade import STAGE1_POSTERIOR, run_cascade

        x = crop_image[None, ..., None]
        batch = np.concatenate([x, x[:, ::-1]], axis=0)
        mode = self.networks.settings.get("cascade_mode", "independent")  # model.json
        out1, out2 = run_cascade(self.networks.stage1, self.networks.stage2, batch, mode)
        whole = 0.5 * (out1[0, ..., STAGE1_POSTERIOR] + out1[1, ::-1, ..., STAGE1_POSTERIOR])
        return whole.astype(np.float32), merge_flip_tta(out2[0], out2[1]).astype(np.float32)


def _seed_everything(seed: int, backend: str) -> None:
    """Seed Python, NumPy and the active backend only (``keras.utils.set_random_seed`` would
    import TensorFlow under torch: ~3 s). Inference is deterministic; this is for reproducible
    extras only."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    if backend == "torch":
        import torch

        torch.manual_seed(seed)
    elif backend == "tensorflow":
        import tensorflow as tf

        tf.random.set_seed(seed)


def _as_3d_float(data, path) -> np.ndarray:
    data = np.asarray(data)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise HsynexError(f"expected a 3-D scan, got shape {tuple(data.shape)}", path)
    return np.asarray(data, np.float32)
