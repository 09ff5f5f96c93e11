"""The same anatomy, written differently: file variants of one scan and images with no brain
(issue 12).

``layout_variants`` and ``intensity_variants`` rewrite a scan without changing its anatomy: the
same voxels in another axis order (RAS, LIA, PIR, LPS ...), an intensity offset or scale, another
data type (uint8, int16 with ``scl_slope`` / ``scl_inter``, float32 with a negative background).
``oblique_variant`` rotates the affine about the scan's centre (an oblique acquisition: the same
voxels, the head tilted in the world). ``mask_cut_variants`` zero the scan as a tight brain mask
would, across the base of the brain a few mm under the hypothalamus (placed from the tool's own
segmentation of the scan as written): the hypothalamus is untouched, so its volume must not
move. ``field_of_view_variants`` keep only a coronal or axial slab of the scan around the
hypothalamus (a partial field of view), again with the structure inside. ``voxel_size_variants``
write such a slab with acquisition noise on the scan's voxels and on voxels twice as fine (same
noise per mm^3): the two must agree. ``non_brain_images``
draws images that hold no brain (noise, a constant with noise, phantoms, a body-like image, a
smooth random texture), which the pipeline must refuse.

``run_invariance`` segments every variant with one ``Segmenter`` and returns the whole and per-side
volumes with their change from the scan as written; ``python -m mri_hsynex.validate.invariance``
regenerates the table of ``docs/segment.md`` (``make invariance``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import HsynexError
from ..predict.grid import rotation

WHOLE, LEFT, RIGHT = 813, 811, 812


@dataclass(frozen=True)
class Variant:
    """A way of writing a scan: ``name``, ``group`` (layout / intensity / oblique / mask cut),
    and the function that turns (data, affine) into (data, affine, storage) for
    ``write_variant``; a ``placed`` variant's function also takes the world positions (N, 3) of
    the voxels segmented in the scan as written."""

    name: str
    group: str
    make: Callable[..., tuple[np.ndarray, np.ndarray, dict]]
    placed: bool = False


# --- pure transformations ---------------------------------------------------------------------
def reorder(data: np.ndarray, affine: np.ndarray, axcodes: str) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels stored with voxel axes along ``axcodes`` (e.g. "LIA"): world positions are
    unchanged (no interpolation)."""
    from nibabel.orientations import (
        apply_orientation,
        axcodes2ornt,
        inv_ornt_aff,
        io_orientation,
        ornt_transform,
    )

    transform = ornt_transform(io_orientation(affine), axcodes2ornt(tuple(axcodes)))
    out = apply_orientation(np.asarray(data), transform)
    return np.ascontiguousarray(out), np.asarray(affine, float) @ inv_ornt_aff(transform,
                                                                                 data.shape)


def rotate_affine(affine: np.ndarray, shape: Sequence[int], degrees: float,
                  axis: int = 0) -> np.ndarray:
    """``affine`` rotated in the world about the scan's centre: the same voxels, tilted."""
    affine = np.asarray(affine, float)
    centre = affine[:3, :3] @ ((np.asarray(shape[:3], float) - 1) / 2) + affine[:3, 3]
    move = np.eye(4)
    move[:3, :3] = rotation(degrees, axis)
    move[:3, 3] = centre - move[:3, :3] @ centre
    return move @ affine


# --- variants ----------------------------------------------------------------------------------
def _stored(data, affine, dtype=np.float32, slope=None, inter=None):
    return data, affine, {"dtype": np.dtype(dtype).name, "slope": slope, "inter": inter}


def _as_uint8(data, affine):
    lo, hi = float(data.min()), float(data.max())
    exact = np.array_equal(data, np.rint(data)) and lo >= 0 and hi <= 255
    out = data if exact else (data - lo) * (255.0 / max(hi - lo, 1e-6))
    return _stored(np.rint(out), affine, np.uint8)


def _as_scaled_int16(data, affine):
    lo, hi = float(data.min()), float(data.max())
    slope = max(hi - lo, 1e-6) / 60000.0
    inter = (hi + lo) / 2.0
    return _stored(data, affine, np.int16, slope, inter)


LAYOUTS = ("LIA", "PIR", "LPS", "RAS", "ASL")
INTENSITY_VARIANTS: tuple[Variant, ...] = (
    Variant("intensities - 1024 (float32, negative background)", "intensity",
            lambda d, a: _stored(d - 1024.0, a)),
    Variant("intensities x 0.25 (float32)", "intensity", lambda d, a: _stored(d * 0.25, a)),
    Variant("intensities x 7.3 + 150 (float32)", "intensity",
            lambda d, a: _stored(d * 7.3 + 150.0, a)),
    Variant("stored as uint8", "intensity", _as_uint8),
    Variant("stored as int16 with scl_slope / scl_inter", "intensity", _as_scaled_int16),
)


def layout_variants(axcodes: Sequence[str] = LAYOUTS) -> tuple[Variant, ...]:
    """The same voxels stored in each axis order of ``axcodes``."""
    return tuple(Variant(f"stored {code}", "layout",
                         lambda d, a, code=code: _stored(*reorder(d, a, code)))
                 for code in axcodes)


def oblique_variants(degrees: Sequence[float] = (10.0, 20.0, 30.0),
                     axes: Sequence[int] = (0,)) -> tuple[Variant, ...]:
    """The affine rotated by each angle about each world axis (an oblique acquisition)."""
    names = "xyz"
    return tuple(Variant(f"affine rotated {deg:g} deg about {names[ax]}", "oblique",
                         lambda d, a, deg=deg, ax=ax: _stored(d, rotate_affine(a, d.shape, deg,
                                                                                ax)))
                 for ax in axes for deg in degrees)


def cut_below(data: np.ndarray, affine: np.ndarray, structure_world: np.ndarray,
              below_mm: float, corner: bool = False) -> np.ndarray:
    """``data`` zeroed where a tight brain mask would cut: every voxel centre more than
    ``below_mm`` (>= 0) under the structure's lowest point (world z); with ``corner``, only those
    also in front of its posterior end (world y), the box corner of the MNI152 2009 template.
    The structure itself is never cut."""
    from ..io import voxel_to_world

    ijk = np.indices(data.shape[:3]).reshape(3, -1).T
    world = voxel_to_world(np.asarray(affine, float), ijk).reshape(*data.shape[:3], 3)
    cut = world[..., 2] < structure_world[:, 2].min() - below_mm
    if corner:
        cut &= world[..., 1] > structure_world[:, 1].min()
    return np.where(cut, 0.0, data).astype(np.float32)


def mask_cut_variants(below_mm: Sequence[float] = (8.0, 4.0, 2.0),
                      corner_mm: Sequence[float] = (2.0,)) -> tuple[Variant, ...]:
    """The scan zeroed below an axial plane ``d`` mm under the hypothalamus, for each ``d`` of
    ``below_mm`` (and only in front of its posterior end for each of ``corner_mm``)."""
    planes = [(d, False) for d in below_mm] + [(d, True) for d in corner_mm]
    return tuple(Variant(f"brain mask cut {d:g} mm under it" + (", front only" if c else ""),
                         "mask cut", lambda v, a, w, d=d, c=c: _stored(cut_below(v, a, w, d, c), a),
                         placed=True)
                 for d, c in planes)


def brainmask_variants(scan: str | os.PathLike) -> tuple[Variant, ...]:
    """The scan zeroed outside FreeSurfer's brain mask (``brainmask.mgz`` beside it, on the
    scan's grid): a real skull-stripping of the same head, which often keeps some CSF under the
    hypothalamus. None when there is no such file or it lies on another grid."""
    from ..io import load_volume

    scan = Path(scan)
    path = scan.parent / "brainmask.mgz"
    if not path.is_file() or path.resolve() == scan.resolve():
        return ()
    import nibabel as nib

    mask, header = load_volume(path, kind="image"), nib.load(scan)  # the scan: its header only
    if (tuple(mask.data.shape[:3]) != tuple(header.shape[:3])
            or not np.allclose(mask.affine, header.affine, atol=1e-3)):
        return ()
    brain = np.asarray(mask.data) > 0
    return (Variant("skull-stripped by FreeSurfer (its brainmask.mgz)", "mask cut",
                    lambda v, a: _stored(np.where(brain, v, 0.0).astype(np.float32), a)),)


# world axis of a slab's thickness: coronal slabs are thin along y (A), axial ones along z (S)
SLAB_AXES = {"coronal": 1, "axial": 2}


def crop_slab(data: np.ndarray, affine: np.ndarray, structure_world: np.ndarray,
              direction: str, half_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The scan cut down to a slab (a partial field of view): the voxels whose world y
    (``direction`` "coronal") or z ("axial") lies within ``half_mm`` of the structure's centre,
    as the smallest box of the scan's own voxels that holds them, with its affine (every kept
    voxel stays at its world position)."""
    from ..io import voxel_to_world

    axis = SLAB_AXES[direction]
    ijk = np.indices(data.shape[:3]).reshape(3, -1).T
    world = voxel_to_world(np.asarray(affine, float), ijk)
    centre = float(np.asarray(structure_world, float)[:, axis].mean())
    keep = ijk[np.abs(world[:, axis] - centre) <= half_mm]
    if len(keep) == 0:
        raise HsynexError(f"a {direction} slab of +-{half_mm:g} mm holds no voxel")
    lo, hi = keep.min(axis=0), keep.max(axis=0) + 1
    out = np.asarray(data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], np.float32)
    moved = np.asarray(affine, float).copy()
    moved[:3, 3] = voxel_to_world(np.asarray(affine, float), lo[None].astype(float))[0]
    return out, moved


def field_of_view_variants(slabs: Sequence[tuple[str, float]] = (
        ("coronal", 50.0), ("coronal", 40.0), ("coronal", 32.0),
        ("axial", 40.0), ("axial", 25.0), ("axial", 15.0))) -> tuple[Variant, ...]:
    """The scan cut to a slab of +-``half`` mm around the hypothalamus for each (direction,
    half) of ``slabs``: a partial field of view (a high-resolution slab, a clinical scan that
    covers part of the head)."""
    return tuple(Variant(f"{d} slab +-{h:g} mm around it", "field of view",
                         lambda v, a, w, d=d, h=h: _stored(*crop_slab(v, a, w, d, h)),
                         placed=True)
                 for d, h in slabs)


def finer_voxels(data: np.ndarray, affine: np.ndarray, factor: int = 2
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Every voxel split into ``factor``^3 voxels of the same intensity (voxel size / factor),
    each lying inside the voxel it came from: the same image on a finer grid, whose blocks
    average back to the original voxels."""
    fine = np.asarray(data, np.float32)
    for axis in range(3):
        fine = np.repeat(fine, factor, axis=axis)
    moved = np.asarray(affine, float).copy()
    moved[:3, :3] = affine[:3, :3] / factor
    moved[:3, 3] = affine[:3, :3] @ np.full(3, (1.0 / factor - 1.0) / 2.0) + affine[:3, 3]
    return fine, moved


def with_noise(data: np.ndarray, affine: np.ndarray, sd: float, seed: int = 0) -> np.ndarray:
    """``data`` plus Gaussian noise of ``sd`` x its 99th percentile *per 1 mm^3* (a voxel of V
    mm^3 gets sd / sqrt(V): the same acquisition noise on any voxel size), magnitude kept."""
    voxel_mm3 = float(abs(np.linalg.det(np.asarray(affine, float)[:3, :3])))
    scale = float(np.percentile(data, 99)) * sd / np.sqrt(voxel_mm3)
    noise = np.random.default_rng(seed).standard_normal(np.shape(data), dtype=np.float32)
    return np.abs(np.asarray(data, np.float32) + np.float32(scale) * noise)


def voxel_size_variants(noise: float = 0.03, half_mm: float = 40.0,
                        factor: int = 2) -> tuple[Variant, ...]:
    """A coronal slab of +-``half_mm`` around the hypothalamus (as ``field_of_view_variants``)
    with acquisition noise ``noise`` per mm^3 (``with_noise``), once on the scan's voxels and once
    on voxels ``factor`` times finer: a high-resolution acquisition of the same anatomy with the
    same noise per mm^3 must give the volume of the ordinary one (the two rows' changes)."""

    def make(v, a, w, fine):
        data, affine = crop_slab(v, a, w, "coronal", half_mm)
        if fine:
            data, affine = finer_voxels(data, affine, factor)
        return _stored(with_noise(data, affine, noise), affine)

    label = f"coronal slab +-{half_mm:g} mm, noise {100 * noise:g} % per mm3"
    return (Variant(f"{label}, scan's voxels", "voxel size",
                    lambda v, a, w: make(v, a, w, False), placed=True),
            Variant(f"{label}, voxels / {factor} (e.g. 0.5 mm)", "voxel size",
                    lambda v, a, w: make(v, a, w, True), placed=True))


def write_variant(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray,
                  storage: dict) -> Path:
    """Write a NIfTI with the requested on-disk data type (and ``scl_slope`` / ``scl_inter``)."""
    import nibabel as nib

    image = nib.Nifti1Image(np.asarray(data, np.float32), np.asarray(affine, float))
    image.set_data_dtype(np.dtype(storage["dtype"]))
    if storage.get("slope") is not None:
        image.header.set_slope_inter(storage["slope"], storage["inter"])
        image = nib.Nifti1Image(np.asarray(data, np.float32), np.asarray(affine, float),
                                header=image.header)
    nib.save(image, os.fspath(path))
    return Path(path)


# --- images with no brain ------------------------------------------------------------------------
def _grid(shape: Sequence[int], voxel_mm: float) -> tuple[np.ndarray, ...]:
    axes = [(np.arange(n) - (n - 1) / 2) * voxel_mm for n in shape]
    return np.meshgrid(*axes, indexing="ij")


def non_brain_images(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Images with no brain in them, name -> (data float32, affine): the pipeline must refuse
    every one. Deterministic for a ``seed``."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    out["uniform noise 96^3"] = (rng.uniform(0, 1000, (96, 96, 96)), np.diag([1, 1, 1, 1.0]))
    out["constant with noise 128^3"] = (500 + rng.normal(0, 20, (128, 128, 128)),
                                        np.diag([1, 1, 1, 1.0]))
    # a cylindrical QA phantom (ACR-like: a water cylinder with a grid and rods), 1 mm
    x, y, z = _grid((190, 190, 150), 1.0)
    r = np.hypot(x, y)
    phantom = np.where(r < 95, 800.0, 0.0)
    phantom[(r < 95) & (np.abs(z) < 10) & ((np.abs(x) % 20 < 2) | (np.abs(y) % 20 < 2))] = 150.0
    for cx, cy in ((30, 30), (-30, 30), (0, -40)):
        phantom[(np.hypot(x - cx, y - cy) < 6) & (z > 20)] = 1500.0
    out["cylinder phantom (grid and rods)"] = (phantom + rng.normal(0, 15, phantom.shape),
                                               _rotated_z_to_y(np.diag([1, 1, 1, 1.0])))
    # a sphere of water with three spheres of other materials, 1.5 mm
    x, y, z = _grid((128, 128, 128), 1.5)
    rho = np.sqrt(x**2 + y**2 + z**2)
    sphere = np.where(rho < 85, 600.0, 0.0)
    for c, v in (((-30, 0, 0), 1200.0), ((30, 0, 0), 200.0), ((0, 30, 20), 900.0)):
        sphere[np.sqrt((x - c[0])**2 + (y - c[1])**2 + (z - c[2])**2) < 15] = v
    out["spherical phantom with inserts"] = (sphere + rng.normal(0, 10, sphere.shape),
                                             np.diag([1.5, 1.5, 1.5, 1.0]))
    # a body-like slab: an elliptic trunk with lungs, a spine and a liver, 2 mm
    x, y, z = _grid((180, 120, 100), 2.0)
    body = np.where((x / 170) ** 2 + (y / 110) ** 2 < 1, 400.0, 0.0)
    body[((np.abs(x) - 80) / 55) ** 2 + (y / 70) ** 2 + (z / 90) ** 2 < 1] = 40.0
    body[np.hypot(x, y + 80) < 18] = 900.0
    body[((x + 60) / 70) ** 2 + ((y - 10) / 50) ** 2 + ((z + 60) / 60) ** 2 < 1] = 550.0
    body = ndimage.gaussian_filter(body, 1.0)
    out["body-like image (trunk, lungs, spine)"] = (body + rng.normal(0, 10, body.shape),
                                                    np.diag([2, 2, 2, 1.0]))
    # a smooth random texture filling a head-sized ellipsoid
    x, y, z = _grid((150, 180, 150), 1.0)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, x.shape), 4.0)
    texture = (texture - texture.min()) / np.ptp(texture) * 900
    inside = (x / 70) ** 2 + (y / 85) ** 2 + (z / 70) ** 2 < 1
    out["head-sized ellipsoid of random texture"] = (np.where(inside, texture, 0.0),
                                                     np.diag([1, 1, 1, 1.0]))
    return {k: (np.asarray(d, np.float32), a) for k, (d, a) in out.items()}


def _rotated_z_to_y(affine: np.ndarray) -> np.ndarray:
    """A phantom scanned with its long axis along the scanner's y (as it lies on the table)."""
    move = np.eye(4)
    move[:3, :3] = rotation(90.0, 0)
    return move @ affine


# --- running --------------------------------------------------------------------------------------
@dataclass
class Row:
    """Volumes (mm3) of one variant and their change (%) from the scan as written."""

    name: str
    group: str
    whole: float
    left: float
    right: float
    change: tuple[float, float, float] = (0.0, 0.0, 0.0)


def _change(value: float, reference: float) -> float:
    return 100.0 * (value - reference) / reference if reference else float("nan")


def run_invariance(scan: str | os.PathLike, segmenter, variants: Sequence[Variant],
                   workdir: str | os.PathLike, aseg: str | os.PathLike | None = None
                   ) -> list[Row]:
    """Segment ``scan`` as written and as each variant; volumes of the whole hypothalamus and of
    each side (soft, mm3) with their change from the first row."""
    from ..io import load_volume

    volume = load_volume(scan, kind="image")
    first, result = _segment_row("as written", "-", scan, segmenter, aseg)
    rows = [first]
    structure = _structure_world(result)
    if len(structure) == 0 and any(v.placed for v in variants):
        raise HsynexError("nothing segmented in the scan as written: cannot place the "
                          "mask-cut variants", scan)
    for k, variant in enumerate(variants):
        extra = (structure,) if variant.placed else ()
        data, affine, storage = variant.make(np.asarray(volume.data, np.float32),
                                             np.asarray(volume.affine, float), *extra)
        path = write_variant(Path(workdir) / f"variant_{k:02d}.nii.gz", data, affine, storage)
        rows.append(_segment_row(variant.name, variant.group, path, segmenter, aseg)[0])
        path.unlink()
    ref = rows[0]
    for row in rows:
        row.change = (_change(row.whole, ref.whole), _change(row.left, ref.left),
                      _change(row.right, ref.right))
    return rows


def _segment_row(name: str, group: str, path, segmenter, aseg):
    """(the Row, the segmentation result)."""
    result = segmenter.segment(path, aseg_path=aseg)
    volumes = result.volumes
    return Row(name, group, volumes[WHOLE][1], volumes[LEFT][1], volumes[RIGHT][1]), result


def _structure_world(result) -> np.ndarray:
    """World positions (N, 3) of the voxels labelled in a segmentation result."""
    return result.output_grid.world(np.argwhere(np.asarray(result.seg) > 0))


def refusals(segmenter, workdir: str | os.PathLike, seed: int = 0) -> list[tuple[str, str]]:
    """Segment every ``non_brain_images`` image; (name, the error or "NOT REFUSED") each."""
    out = []
    for k, (name, (data, affine)) in enumerate(non_brain_images(seed).items()):
        path = write_variant(Path(workdir) / f"nobrain_{k:02d}.nii.gz", data, affine,
                             {"dtype": "float32"})
        try:
            segmenter.segment(path)
            out.append((name, "NOT REFUSED"))
        except HsynexError as err:
            out.append((name, err.what))
        path.unlink()
    return out


def brain_evidence_of(segmenter, data: np.ndarray, affine: np.ndarray) -> dict:
    """The localiser's brain evidence for an image (as ``Segmenter.segment`` computes it), without
    raising: ``is_brain``, ``reason``, ``template_mi``, ``template_mi_null`` ..."""
    from ..predict.canonical import canonical_input
    from ..predict.localise import brain_evidence, localiser_posteriors

    info = segmenter.networks.info["localiser"]
    image, grid = canonical_input(np.asarray(data, np.float32), np.asarray(affine, float))
    coarse, probs, coarse_grid = localiser_posteriors(image, grid, segmenter.networks.localiser,
                                                      info.voxel_mm, info.divisor)
    evidence = brain_evidence(coarse, probs, coarse_grid)
    evidence.pop("region")
    return evidence


def brain_images(shared: str | os.PathLike) -> dict[str, tuple[str, Callable]]:
    """Brain scans that must never be refused, name -> (group, loader of (data, affine)): the real
    scans of ``shared``/data (with and without skull, T1 and T2, templates) and renders of a real
    aseg in six contrasts, 1-7 mm axial and coronal slices, with and without skull."""
    from ..io import load_volume

    data = Path(shared) / "data"
    out: dict[str, tuple[str, Callable]] = {}

    def loader(path):
        return lambda: (lambda v: (v.data, v.affine))(load_volume(path, kind="image"))

    groups = (("FreeSurfer T1 (with skull)", "subjects/*/mri/T1.mgz"),
              ("FreeSurfer norm (skull-stripped)", "subjects/*/mri/norm.mgz"),
              ("FreeSurfer brainmask (skull-stripped)", "subjects/*/mri/brainmask.mgz"),
              ("OASIS T1 (skull-stripped)", "mindboggle_oasis20/*/t1weighted_brain.nii.gz"),
              ("T2 1x1x2 mm (with skull)", "examples/*.nii.gz"),
              ("MNI templates (skull-stripped)", "atlases/*_brain.nii.gz"))
    for group, pattern in groups:
        for path in sorted(data.glob(pattern)):
            out[str(path.relative_to(data))] = (group, loader(path))
    aseg = data / "subjects" / "sub-08" / "mri" / "aseg.mgz"
    if aseg.is_file():
        for name, maker in _renders(aseg).items():
            out[name] = ("render of sub-08's aseg", maker)
    return out


def _renders(aseg: Path) -> dict[str, Callable]:
    from ..io import load_volume, to_ras
    from .contrasts import CONTRAST_NAMES, Acquisition, crop_to_head, skull_strip, synthesize

    @lru_cache(maxsize=1)
    def labels():
        ras, _ = to_ras(load_volume(aseg, kind="labels"))
        return crop_to_head(ras.data, ras.affine)

    def make(contrast, thickness, orientation, stripped):
        def load():
            lab, aff = labels()
            image, affine = synthesize(lab, aff, Acquisition(contrast, thickness, orientation), 1)
            if stripped:
                image = skull_strip(image, affine, lab, aff)
            return image, affine
        return load

    out = {}
    for contrast in CONTRAST_NAMES:
        for thickness, orientation in ((1.0, "axial"), (5.0, "axial"), (7.0, "axial"),
                                       (5.0, "coronal")):
            for stripped in (False, True) if orientation == "axial" else (False,):
                name = (f"render {Acquisition(contrast, thickness, orientation).name}"
                        + (" skull-stripped" if stripped else ""))
                out[name] = make(contrast, thickness, orientation, stripped)
    return out


# --- report ---------------------------------------------------------------------------------------
BEGIN, END = "<!-- invariance:begin -->", "<!-- invariance:end -->"


def brain_rows(segmenter, shared: str | os.PathLike) -> list[tuple[str, str, dict]]:
    """(name, group, brain evidence) of every ``brain_images`` scan."""
    rows = []
    for name, (group, load) in brain_images(shared).items():
        data, affine = load()
        rows.append((name, group, brain_evidence_of(segmenter, data, affine)))
    return rows


def _brain_table(rows: list[tuple[str, str, dict]]) -> list[str]:
    """Per group of brain images: how many, how many refused, the lowest template evidence."""
    lines = ["| brain images | n | refused | lowest template MI | lowest margin over null |",
             "|---|---|---|---|---|"]
    for group in dict.fromkeys(g for _, g, _ in rows):
        ev = [e for _, g, e in rows if g == group]
        mi = [e.get("template_mi", float("nan")) for e in ev]
        margin = [e.get("template_mi", np.nan) - e.get("template_mi_null", np.nan) for e in ev]
        refused = [n for n, g, e in rows if g == group and not e["is_brain"]]
        lines.append(f"| {group} | {len(ev)} | {len(refused)}"
                     + (f" ({', '.join(refused)})" if refused else "")
                     + f" | {min(mi):.3f} | {min(margin):.3f} |")
    return lines


def markdown(scan: str, rows: list[Row], refused: list[tuple[str, str]], seconds: float,
             brains: list[tuple[str, str, dict]] = ()) -> str:
    """The tables of ``docs/segment.md``: volumes per variant, the refused images and the brain
    images checked (none may be refused)."""
    lines = [BEGIN, f"Scan: `{scan}` (no aseg: the localiser finds the hypothalamus). Soft "
             "volumes in mm3 and their change from the scan as written. Generated by "
             f"`make invariance` on {time.strftime('%Y-%m-%d')} in {seconds / 60:.1f} min.", "",
             "| the same scan, written as | group | whole | left | right | change whole | "
             "change left | change right |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.name} | {r.group} | {r.whole:.1f} | {r.left:.1f} | {r.right:.1f} | "
                     + " | ".join(f"{c:+.2f} %" for c in r.change) + " |")
    worst = {g: max((max(abs(c) for c in r.change) for r in rows if r.group == g), default=0.0)
             for g in ("layout", "intensity", "oblique", "mask cut", "field of view", "voxel size")
             if any(r.group == g for r in rows)}
    pair = [r for r in rows if r.group == "voxel size"]
    if len(pair) == 2:  # the pair is compared with itself: the noise it adds is in both rows
        worst["voxel size"] = max(abs(a - b) for a, b in zip(pair[0].change, pair[1].change))
    lines += ["", "Largest change (any of whole, left, right; voxel size: between its two "
              "rows, in percentage points): "
              + ", ".join(f"{g} {v:.2f} %" for g, v in worst.items()) + ".", "",
              "Images with no brain (`mri_hsynex segment` must refuse each: exit 1, one "
              "`ERROR:` line, no output):", "", "| image | result |", "|---|---|"]
    lines += [f"| {name} | {result} |" for name, result in refused]
    if brains:
        lines += ["", "Brain images that must not be refused (the localiser's brain evidence, "
                  "`brain_check.py`; thresholds: MI >= "
                  f"{_thresholds()[0]:.2f}, margin >= {_thresholds()[1]:.3f}):", ""]
        lines += _brain_table(list(brains))
    lines.append(END)
    return "\n".join(lines)


def _thresholds() -> tuple[float, float]:
    from ..predict.brain_check import MIN_MARGIN_OVER_NULL, MIN_MUTUAL_INFORMATION

    return MIN_MUTUAL_INFORMATION, MIN_MARGIN_OVER_NULL


def replace_section(doc: str, section: str) -> str:
    """``doc`` with the text between the markers replaced by ``section`` (appended if absent)."""
    if BEGIN in doc and END in doc:
        return doc[: doc.index(BEGIN)] + section + doc[doc.index(END) + len(END):]
    return doc.rstrip("\n") + "\n\n" + section + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mri_hsynex.validate.invariance",
        description="Segment one scan written in many ways (axis orders, intensity scalings, "
                    "data types, oblique affines, tight brain-mask cuts) and images with no "
                    "brain; write the tables into a markdown file between the invariance "
                    "markers.")
    parser.add_argument("--i", required=True, help="the scan (a real 1 mm T1, say)")
    parser.add_argument("--doc", default="docs/segment.md", help="markdown file to update")
    parser.add_argument("--shared", default="../shared",
                        help="folder whose data/ holds the brain scans that must not be refused "
                             "(skipped when absent)")
    parser.add_argument("--threads", type=int, default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..predict.pipeline import Segmenter

    t0 = time.time()
    segmenter = Segmenter(threads=args.threads)
    variants = (layout_variants() + INTENSITY_VARIANTS
                + oblique_variants((10.0, 20.0, 30.0), (0,)) + oblique_variants((20.0,), (1, 2))
                + mask_cut_variants() + brainmask_variants(args.i) + field_of_view_variants()
                + voxel_size_variants())
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_invariance(args.i, segmenter, variants, tmp)
        refused = refusals(segmenter, tmp)
    brains = brain_rows(segmenter, args.shared)
    scan = os.path.relpath(args.i) if not os.path.isabs(args.i) else args.i
    section = markdown(scan, rows, refused, time.time() - t0, brains)
    doc = Path(args.doc)
    doc.write_text(replace_section(doc.read_text() if doc.exists() else "", section))
    print(section)
    ok = all(r != "NOT REFUSED" for _, r in refused) and all(e["is_brain"] for _, _, e in brains)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
