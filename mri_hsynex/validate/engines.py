"""The two segmenters compared by the report, behind one small interface.

``HsynexEngine`` wraps :class:`mri_hsynex.predict.Segmenter` (networks loaded once);
``TeacherEngine`` wraps :class:`mri_hsynex.teacher.Teacher` (the T1-only baseline). Both take an
image file and return the hard segmentation on its own grid, the volumes of 801-813 (mm^3) and
the seconds spent. Heavy imports happen inside the methods.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..labels import GROUPINGS, SUBUNIT_IDS

TEACHER_CROP = 160  # voxels at 1 mm per axis: the block the tool normalises intensities on
TEACHER_NETWORK_CROP = 96  # the central part the network is run on (same labels, ~5x faster)


@dataclass
class Segmentation:
    """Hard labels (801-810, 0 elsewhere) on ``affine``'s grid, volumes per row id (mm^3)."""

    labels: np.ndarray
    affine: np.ndarray
    volumes: dict[int, float]
    seconds: float
    failed: str | None = None  # the error message when the engine refused the image
    # volumes of other read-outs of the same run (validate.probe: post-processing steps off)
    variants: dict[str, dict[int, float]] | None = None


def failed_segmentation(message: str) -> Segmentation:
    """What a refused image counts as: no labels (Dice 0), unknown volumes (NaN)."""
    volumes = _with_groupings({i: float("nan") for i in SUBUNIT_IDS})
    return Segmentation(np.zeros((1, 1, 1), np.int32), np.eye(4), volumes, float("nan"),
                        message)


def nearest_onto(labels: np.ndarray, affine: np.ndarray, shape: tuple[int, ...],
                 target_affine: np.ndarray) -> np.ndarray:
    """Resample a label volume onto another grid (nearest neighbour, 0 outside), via world
    (RAS mm) coordinates: used to score every output on the label map's 1 mm grid."""
    from scipy import ndimage

    vox_to_vox = np.linalg.inv(np.asarray(affine, float)) @ np.asarray(target_affine, float)
    return ndimage.affine_transform(np.asarray(labels), vox_to_vox[:3, :3],
                                    offset=vox_to_vox[:3, 3], output_shape=tuple(shape),
                                    order=0, mode="constant", cval=0)


def _with_groupings(volumes: dict[int, float]) -> dict[int, float]:
    out = {i: float(volumes.get(i, 0.0)) for i in SUBUNIT_IDS}
    for group, ids in GROUPINGS.items():
        out[group] = float(volumes[group]) if group in volumes else sum(out[i] for i in ids)
    return out


class HsynexEngine:
    """hsynex's cascade (localiser when no aseg is given); loads the networks on first use."""

    name = "hsynex"

    def __init__(self, model_dir: str | os.PathLike | None = None, threads: int | None = None,
                 seed: int = 0):
        self.model_dir = model_dir
        self.threads = threads
        self.seed = seed
        self._segmenter = None

    @property
    def segmenter(self):
        """The :class:`~mri_hsynex.predict.pipeline.Segmenter`, made on first use."""
        if self._segmenter is None:
            from ..predict.pipeline import Segmenter

            self._segmenter = Segmenter(model_dir=self.model_dir, threads=self.threads,
                                        cpu=True, seed=self.seed)
        return self._segmenter

    def segment(self, image_path: str | os.PathLike,
                aseg_path: str | os.PathLike | None = None,
                centre_world: np.ndarray | None = None) -> Segmentation:
        """Segment one image file (``centre_world`` is not used: hsynex localises itself, or
        from the aseg); labels on the 1 mm model grid (not the thick-slice input
        grid, so that Dice measures the segmentation rather than the storage), soft volumes
        as the tool reports them."""
        t0 = time.perf_counter()
        result = self.segmenter.segment(Path(image_path), aseg_path=aseg_path,
                                         resample="model")
        labels = np.asarray(result.seg, dtype=np.int32)
        volumes = {int(k): float(v[1]) for k, v in result.volumes.items()}
        seconds = time.perf_counter() - t0
        return Segmentation(labels, np.asarray(result.crop_grid.affine, float),
                            _with_groupings(volumes), seconds)

    def blank_input_voxels(self) -> dict[str, int]:
        """Hypothalamus voxels (stage 1, posterior > 0.5) the networks return for a crop with no
        image in it (constant, and uniform noise): anything but ~0 is a prior learnt from the
        crop's position, not read from the image."""
        import keras

        from ..models.cascade import STAGE1_POSTERIOR

        seg = self.segmenter
        shape = (1, *seg.crop_shape, 1)
        inputs = {"constant": np.full(shape, 0.5, np.float32),
                  "noise": np.random.default_rng(0).random(shape).astype(np.float32)}
        out = {}
        for name, x in inputs.items():  # stage 1 only: stage 2 does not change its answer
            stage1 = keras.ops.convert_to_numpy(seg.networks.stage1(x, training=False))
            out[name] = int((stage1[0, ..., STAGE1_POSTERIOR] > 0.5).sum())
        return out


class TeacherEngine:
    """The T1-only teacher (Billot et al. 2020); loads its weights on first use.

    As the tool does, the image is resampled to 1 mm (linear) and intensities are normalised on
    a ``crop``^3 block (0.5th -> 99.5th percentile), here centred on ``centre_world`` (the report
    gives it the centre of the ventral DCs and 3rd ventricle of the aseg / label map: the
    localisation recon-all's aseg provides, a help to the baseline). The network then runs on
    the central ``network_crop``^3 only: the block's size matters to the teacher only through
    its intensity normalisation (a 96^3 or 80^3 centre normalised on the 160^3 block gave the
    same Dice as the whole block to 3 decimals on a test image, 5x faster), and the labels keep
    its largest component per hemisphere.
    """

    name = "teacher"

    def __init__(self, weights_path: str | os.PathLike, crop: int = TEACHER_CROP,
                 network_crop: int = TEACHER_NETWORK_CROP):
        self.weights_path = weights_path
        self.crop = crop
        self.network_crop = network_crop
        self._teacher = None

    def segment(self, image_path: str | os.PathLike,
                aseg_path: str | os.PathLike | None = None,
                centre_world: np.ndarray | None = None) -> Segmentation:
        """Segment one image file (aseg is not used); labels on the 1 mm RAS block, volumes
        from its labels (its soft volumes, summed over a 160^3 block, come out about twice the
        labelled volume: 1870 vs 956 mm^3 on sub-08)."""
        from ..io import crop_around, load_volume, resample_to_voxel_size, to_ras, voxel_to_world
        from ..teacher.predict import (
            CHANNEL_LABELS,
            VOXEL_RANGE_MM,
            Teacher,
            largest_component_per_hemisphere,
            normalise_intensities,
        )

        if self._teacher is None:
            self._teacher = Teacher(self.weights_path)
        t0 = time.perf_counter()
        vol = load_volume(image_path)
        vol = vol.with_data(np.asarray(vol.data, np.float32))
        sizes = vol.voxel_sizes
        if np.any((sizes < VOXEL_RANGE_MM[0]) | (sizes > VOXEL_RANGE_MM[1])):
            vol = resample_to_voxel_size(vol, 1.0, order=1)
        ras, _ = to_ras(vol)
        if centre_world is None:
            centre_world = voxel_to_world(ras.affine, (np.array(ras.shape) - 1) / 2.0)[0]
        centre = [float(v) for v in centre_world]
        block = crop_around(ras, centre, (self.crop,) * 3, fill=0.0)
        inner = crop_around(ras, centre, (self.network_crop,) * 3, fill=0.0)
        post = self._teacher.network_posteriors(
            normalise_intensities(inner.data, reference=block.data))
        labels = CHANNEL_LABELS[post.argmax(-1)].astype(np.int32)
        labels[largest_component_per_hemisphere(labels)] = 0
        seconds = time.perf_counter() - t0
        voxel_mm3 = float(abs(np.linalg.det(np.asarray(inner.affine)[:3, :3])))
        counts = np.bincount(labels.ravel().clip(0), minlength=max(SUBUNIT_IDS) + 1)
        volumes = {i: float(counts[i]) * voxel_mm3 for i in SUBUNIT_IDS}
        return Segmentation(labels, np.asarray(inner.affine, float), _with_groupings(volumes),
                            seconds)
