"""Write synthetic samples to disk (``mri_hsynex synth``): what the networks are trained on."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from .. import labels as label_tables
from ..errors import HsynexError
from .config import GeneratorConfig
from .data import LabelMapSource, list_label_maps

MONTAGE_NAME = "montage.png"
MONTAGE_MAX_ROWS = 12


def output_affine(cfg: GeneratorConfig, center_world: np.ndarray) -> np.ndarray:
    """RAS affine of an output crop at ``cfg.output_voxel_mm`` whose centre voxel sits at
    ``center_world`` (mm). The crop's jitter and deformation are not in it: it places the
    sample roughly where it came from, at the right voxel size and orientation."""
    affine = np.diag([cfg.output_voxel_mm] * 3 + [1.0])
    half = (np.array(cfg.output_shape) - 1) / 2.0
    affine[:3, 3] = np.asarray(center_world, float) - half * cfg.output_voxel_mm
    return affine


def _write_nifti(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write a NIfTI-1 ``.nii.gz`` atomically and byte-reproducibly (gzip time stamp 0)."""
    import nibabel as nib

    from ..io import atomic_path

    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    raw = img.to_bytes()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(gzip.compress(raw, compresslevel=6, mtime=0))


def _write_bytes(data: bytes, path: Path) -> None:
    from ..io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def synthesise(labels: str | os.PathLike, n: int, out_dir: str | os.PathLike,
               cfg: GeneratorConfig | None = None, seed: int = 0,
               montage: bool = True) -> list[Path]:
    """Generate ``n`` samples from the label map(s) ``labels`` (a file or a folder) into
    ``out_dir``: ``sample_000_image.nii.gz`` (float32 in [0, 1]), ``sample_000_labels.nii.gz``
    (int32), ... at ``cfg.output_voxel_mm`` (RAS), and ``montage.png`` (up to 12 samples).
    Returns the written paths. The same seed writes identical files (per backend)."""
    if n < 1:
        raise HsynexError(f"--n must be at least 1, not {n}")
    cfg = cfg or GeneratorConfig()
    paths = list_label_maps(labels)  # user errors before the slow imports

    import keras

    from .builder import build_generator

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HsynexError(f"cannot create the output folder ({err.strerror})", out_dir) from None
    centre_labels = (label_tables.VENTRAL_DC_IDS + (label_tables.THIRD_VENTRICLE,)
                     if cfg.target == "localiser" else label_tables.SUBUNIT_IDS)
    source = LabelMapSource(paths, cfg, center_labels=centre_labels, rng_seed=seed)
    generator = build_generator(cfg, seed=seed)
    written: list[Path] = []
    images, label_maps, titles = [], [], []
    for i in range(n):
        index = source.sample_index()
        lab, center = source.get(index)
        out = generator({"labels": lab, "center": center}, training=True)
        image = np.asarray(keras.ops.convert_to_numpy(out["image"]))[0, ..., 0]
        sample_labels = np.asarray(keras.ops.convert_to_numpy(out["labels"]))[0]
        affine = source.affines[index]
        centre = source.centers[index]  # whole-map voxels (``center`` is in block voxels)
        affine = output_affine(cfg, affine[:3, :3] @ centre + affine[:3, 3])
        for kind, data in (("image", image.astype(np.float32)),
                           ("labels", sample_labels.astype(np.int32))):
            path = out_dir / f"sample_{i:03d}_{kind}.nii.gz"
            _write_nifti(data, affine, path)
            written.append(path)
        if len(images) < MONTAGE_MAX_ROWS:
            images.append(image)
            label_maps.append(sample_labels)
            titles.append(f"{i:03d} {source.paths[index].name.split('.')[0][:18]}")
    if montage:
        from .montage import montage_png

        path = out_dir / MONTAGE_NAME
        _write_bytes(montage_png(images, label_maps, titles, cfg.max_label), path)
        written.append(path)
    return written
