"""Label maps for the generator: loaded once, in RAS at the generator's input voxel size, with a
precomputed crop centre each."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import labels as label_tables
from ..errors import HsynexError
from ..io import SUFFIXES as LABEL_SUFFIXES  # the volume files hsynex reads
from .config import GeneratorConfig


def named_by(path: str | os.PathLike, strings) -> bool:
    """Whether the file name of ``path`` contains one of ``strings`` (how a training config
    names maps: ``holdout``, ``whole_only_maps``)."""
    name = Path(path).name
    return any(s in name for s in strings)


def list_label_maps(path: str | os.PathLike) -> list[Path]:
    """``path`` itself if it is a file, else the label-map files (.nii, .nii.gz, .mgz, .mgh) in
    the folder ``path``, sorted. An error if there are none."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise HsynexError("label map or folder not found", path)
    found = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(LABEL_SUFFIXES))
    if not found:
        raise HsynexError("no label maps (.nii, .nii.gz, .mgz, .mgh) in folder", path)
    return found


def resample_nearest(data: np.ndarray, voxel_mm: Sequence[float],
                     target_mm: float) -> np.ndarray:
    """Nearest-neighbour resampling of an axis-aligned (RAS) volume with voxel sizes
    ``voxel_mm`` to isotropic ``target_mm`` voxels (voxel centres aligned on the volume's
    corner-to-corner extent); unchanged when the sizes already match (to 1e-3 mm)."""
    if all(abs(v - target_mm) < 1e-3 for v in voxel_mm):
        return data
    index = []
    for n, v in zip(data.shape, voxel_mm):
        m = max(1, int(round(n * v / target_mm)))
        centres = (np.arange(m) + 0.5) * target_mm / v - 0.5
        index.append(np.clip(np.rint(centres), 0, n - 1).astype(np.intp))
    return data[np.ix_(*index)]


def label_centroid(data: np.ndarray, ids: Sequence[int]) -> np.ndarray | None:
    """Centroid (3,) in voxels of the voxels whose label is in ``ids``; None if there are none."""
    if not len(ids):
        return None
    where = np.nonzero(np.isin(data, np.asarray(ids)))
    if not where[0].size:
        return None
    return np.array([w.mean() for w in where], dtype=np.float32)


def reach_voxels(cfg: GeneratorConfig) -> float:
    """How far (input voxels, per axis) from the crop centre the generator can read labels.

    Bound of |A p| over the crop corners (A = rotation . shear . scaling: spectral norm at most
    (1 + scaling_bounds)(1 + sqrt(6) shearing_bounds)), plus jitter and translation, plus five
    times the largest elastic std (linear upsampling never exceeds the largest grid value), plus
    rounding. Beyond it the generator would only ever read background.
    """
    half = np.array([(n - 1) / 2.0 for n in cfg.output_shape]) * cfg.output_voxel_mm
    norm = (1 + cfg.scaling_bounds) * (1 + np.sqrt(6.0) * cfg.shearing_bounds)
    linear = norm * float(np.sqrt((half**2).sum())) / cfg.input_voxel_mm
    shift = (cfg.crop_jitter_mm + cfg.translation_bounds_mm) / cfg.input_voxel_mm
    return linear + shift + 5.0 * cfg.nonlin_std + 2.0


class LabelMapSource:
    """Label maps kept in memory (uint16, RAS, ``cfg.input_voxel_mm``) with their crop centres.

    The centre of a map is the centroid of ``center_labels``, else of
    ``fallback_center_labels``, else the volume centre (input voxels). ``sample()`` draws one map
    uniformly at random (``rng_seed``: reproducible).
    """

    def __init__(self, paths: Sequence[str | os.PathLike], cfg: GeneratorConfig,
                 center_labels: Sequence[int] = label_tables.SUBUNIT_IDS,
                 fallback_center_labels: Sequence[int] = (28, 60, 14),
                 rng_seed: int | None = 0):
        if not paths:
            raise HsynexError("no label maps given")
        self.paths = [Path(p) for p in paths]
        self.cfg = cfg
        self.maps: list[np.ndarray] = []
        self.centers: list[np.ndarray] = []
        self.affines: list[np.ndarray] = []  # RAS voxel -> world mm of each stored map
        for path in self.paths:
            data, affine = self._load(path, cfg)
            self.affines.append(affine)
            center = label_centroid(data, list(center_labels))
            if center is None:
                center = label_centroid(data, list(fallback_center_labels))
            if center is None:
                center = (np.array(data.shape, np.float32) - 1) / 2
            self.maps.append(data)
            self.centers.append(center.astype(np.float32))
        self.rng = np.random.default_rng(rng_seed)

    @staticmethod
    def _load(path: Path, cfg: GeneratorConfig) -> tuple[np.ndarray, np.ndarray]:
        from ..io import load_volume, to_ras

        volume, _ = to_ras(load_volume(path, kind="labels"))
        data = np.asarray(volume.data)
        if data.ndim != 3:
            raise HsynexError(f"label map must be 3-D, not of shape {data.shape}", path)
        if np.issubdtype(data.dtype, np.floating):
            data = np.rint(data)
        affine = np.asarray(volume.affine, np.float64)
        voxel = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        resampled = resample_nearest(data, voxel, cfg.input_voxel_mm)
        if resampled is not data:  # new voxel i sits at old voxel (i + 0.5) * t / v - 0.5
            step = cfg.input_voxel_mm / voxel
            to_old = np.eye(4)
            to_old[:3, :3] = np.diag(step)
            to_old[:3, 3] = 0.5 * step - 0.5
            affine = affine @ to_old
        data = np.where((resampled < 0) | (resampled > cfg.max_label), 0, resampled)
        return data.astype(np.uint16), affine

    def __len__(self) -> int:
        return len(self.maps)

    def get(self, index: int, whole: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Map ``index`` as (labels (1, X, Y, Z) int32, centre (1, 3) float32 input voxels).

        Unless ``whole``, only the block of the map the generator can reach from the centre
        (``reach_voxels``) is returned, with the centre in block coordinates: the generator's
        output is the same, and far less memory is converted and copied per sample.
        """
        data, center = self.maps[index], self.centers[index]
        if whole:
            return data[None].astype(np.int32), center[None].copy()
        reach = reach_voxels(self.cfg)
        lo = np.maximum(np.floor(center - reach).astype(int), 0)
        hi = np.minimum(np.ceil(center + reach).astype(int) + 1, data.shape)
        block = data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        return block[None].astype(np.int32), (center - lo)[None].astype(np.float32)

    def sample_index(self) -> int:
        """The index of a random map (advances the random state like ``sample``)."""
        return int(self.rng.integers(len(self.maps)))

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """A random map: (labels (1, X, Y, Z) int32, centre (1, 3) float32 input voxels)."""
        return self.get(self.sample_index())
