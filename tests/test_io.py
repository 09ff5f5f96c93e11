"""mri_hsynex.io: bad inputs (each names the file), dtypes, atomic writes, and world-safe geometry.

Geometry tests check world coordinates: a label's centroid in RAS mm must not move (more than
half a voxel) through reorientation, resampling and cropping.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mri_hsynex import io
from mri_hsynex.errors import HsynexError
from mri_hsynex.io import (
    Volume,
    atomic_path,
    centroid_world,
    crop_around,
    from_ras,
    load_volume,
    paste_into,
    resample_like,
    resample_to_voxel_size,
    save_volume,
    to_ras,
    voxel_to_world,
    world_to_voxel,
)

FAST = settings(max_examples=20, deadline=None)


# --- helpers -------------------------------------------------------------------------------------
def rotation(axis: int, degrees: float) -> np.ndarray:
    """3x3 rotation about a world axis."""
    from mri_hsynex.predict.grid import rotation as grid_rotation

    return grid_rotation(degrees, axis)


def make_affine(axes: str, sizes=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), rot=None) -> np.ndarray:
    """Affine whose voxel axes run along ``axes`` (e.g. 'LIA'), optionally rotated (oblique)."""
    direction = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    m = np.zeros((3, 3))
    for k, code in enumerate(axes):
        world, sign = direction[code]
        m[world, k] = sign * sizes[k]
    if rot is not None:
        m = rot @ m
    affine = np.eye(4)
    affine[:3, :3] = m
    affine[:3, 3] = origin
    return affine


AFFINES = {
    "RAS": make_affine("RAS", (1.0, 1.0, 1.0), (-12, -10, -8)),
    "LIA": make_affine("LIA", (1.0, 1.0, 1.0), (12, 9, -11)),
    "LPS": make_affine("LPS", (0.9, 0.9, 1.5), (10, 11, -9)),
    "oblique": make_affine("LIA", (1.1, 1.0, 1.3), (14, 8, -10),
                           rot=rotation(0, 17) @ rotation(2, -23)),
}


def blob_volume(affine: np.ndarray, shape=(24, 22, 20), center=(10.0, 12.0, 9.0),
                radii=(4.0, 5.0, 3.5), label: int = 803) -> Volume:
    """Int32 labels: an ellipsoid of ``label`` (centre/radii in voxels) and a block of 28."""
    grid = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii)) <= 1
    data = np.zeros(shape, np.int32)
    data[inside] = label
    data[1:4, 1:3, 1:5] = 28  # something else in the volume
    return Volume(data, affine.copy())


def image_of(vol: Volume) -> Volume:
    """A float image made from a label volume (for resampling with interpolation)."""
    return vol.with_data((vol.data > 0).astype(np.float32) * 100.0)


def write_raw_nifti(path: Path, data: np.ndarray, *, sform=None, pixdim=None,
                    qform_code: int = 0) -> Path:
    """Write a NIfTI-1 file byte by byte (nibabel refuses to build some broken headers)."""
    header = nib.Nifti1Header()
    header.set_data_shape(data.shape)
    header.set_data_dtype(data.dtype)
    header["vox_offset"] = 352
    header["qform_code"] = qform_code
    if sform is not None:
        sform = np.asarray(sform, dtype=np.float64)
        header["srow_x"], header["srow_y"], header["srow_z"] = sform[0], sform[1], sform[2]
        header["sform_code"] = 1
    if pixdim is not None:
        header["pixdim"][1:4] = pixdim
    raw = header.binaryblock + b"\0" * 4 + np.asfortranarray(data).tobytes(order="F")
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(raw)
    return path


def write_header_only_nifti(path: Path, shape) -> Path:
    """A NIfTI header claiming ``shape`` float32 voxels, followed by no data at all."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header.set_sform(np.eye(4), code=1)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header.binaryblock + b"\0" * 4)
    return path


def good_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(1, 100, size=(8, 9, 10)).astype(np.float32)


def expect_error(path: Path, **kwargs) -> HsynexError:
    """load_volume must raise HsynexError whose message names ``path``."""
    with pytest.raises(HsynexError) as info:
        load_volume(path, **kwargs)
    err = info.value
    assert err.path == str(path)
    assert str(err).endswith(str(path))
    return err


# --- bad inputs -----------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    assert "not found" in expect_error(tmp_path / "nope.nii.gz").what


def test_directory_instead_of_file(tmp_path):
    folder = tmp_path / "scan.nii.gz"
    folder.mkdir()
    assert "directory" in expect_error(folder).what


@pytest.mark.parametrize("name", ["scan.txt", "scan.nii.bz2", "scan"])
def test_unsupported_extension(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"x" * 400)
    assert "unsupported" in expect_error(path).what


DICOM_BYTES = b"\0" * 128 + b"DICM" + b"\x02\x00\x00\x00" * 40


@pytest.mark.parametrize("name, content, fmt", [
    ("scan.img", b"x" * 400, "Analyze"), ("scan.hdr", b"x" * 348, "Analyze"),
    ("IM0001.dcm", b"x" * 400, "DICOM"), ("1.2.840.113619", DICOM_BYTES, "DICOM"),
    ("brain.mnc", b"x" * 400, "MINC")])
def test_other_formats_say_what_they_are_and_how_to_convert(tmp_path, name, content, fmt):
    from mri_hsynex.io import foreign_format

    path = tmp_path / name
    path.write_bytes(content)
    assert foreign_format(path) == fmt
    what = expect_error(path).what
    assert what.startswith(f"{fmt} files are not read") and "mri_convert" in what


@pytest.mark.parametrize("name", ["notes.nii.gz", "notes.nii", "notes.mgz", "notes.mgh"])
def test_text_file_with_image_name(tmp_path, name):
    path = tmp_path / name
    path.write_text("this is not an image\n" * 30)
    expect_error(path)


@pytest.mark.parametrize("name", ["cut.nii.gz", "cut.mgz", "cut.nii", "cut.mgh"])
def test_truncated_file(tmp_path, name):
    full = tmp_path / ("full" + name[3:])
    img = (nib.MGHImage if name.endswith(("mgz", "mgh")) else nib.Nifti1Image)(
        good_image(), np.eye(4))
    nib.save(img, str(full))
    raw = full.read_bytes()
    path = tmp_path / name
    path.write_bytes(raw[: len(raw) // 2])
    expect_error(path)


def test_2d_image(tmp_path):
    path = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8), np.float32), np.eye(4)), str(path))
    assert "3-D" in expect_error(path).what


def test_single_slice_is_not_3d(tmp_path):
    path = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 1), np.float32), np.eye(4)), str(path))
    assert "3-D" in expect_error(path).what


@pytest.mark.parametrize("kind", ["image", "labels"])
def test_4d_with_several_frames(tmp_path, kind):
    path = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8, 3), np.float32), np.eye(4)), str(path))
    assert "3 frames" in expect_error(path, kind=kind).what


@pytest.mark.parametrize("shape", [(8, 9, 10, 1), (8, 9, 10, 1, 1)])
def test_single_frame_is_squeezed(tmp_path, shape):
    path = tmp_path / "one.nii.gz"
    data = good_image().reshape(shape)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    vol = load_volume(path)
    assert vol.data.shape == (8, 9, 10)
    np.testing.assert_array_equal(vol.data, good_image())


def test_posteriors_keep_channels(tmp_path):
    path = tmp_path / "post.mgz"
    post = np.random.default_rng(1).random((6, 7, 8, 11)).astype(np.float32)
    nib.save(nib.MGHImage(post, np.eye(4)), str(path))
    vol = load_volume(path, kind="posteriors")
    assert vol.data.shape == (6, 7, 8, 11) and vol.shape == (6, 7, 8)
    np.testing.assert_array_equal(vol.data, post)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("kind", ["labels", "posteriors"])
def test_non_finite_voxels(tmp_path, bad, kind):
    data = good_image()
    data[3, 4, 5] = bad
    path = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    expect_error(path, kind=kind)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_image_voxels_are_read_as_background(tmp_path, bad):
    """A quantitative map with a NaN (or infinite) background: those voxels read as 0 (or as the
    lowest value where that is negative), counted; the others unchanged. All non-finite: an
    error."""
    data = good_image()
    data[:2] = bad
    path = tmp_path / "nanbg.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    vol = load_volume(path)
    assert vol.non_finite == data[:2].size
    assert np.all(vol.data[:2] == 0) and np.array_equal(vol.data[2:], data[2:])
    shifted = np.where(np.isfinite(data), data - 200.0, data).astype(np.float32)
    nib.save(nib.Nifti1Image(shifted, np.eye(4)), str(path))
    assert np.all(load_volume(path).data[:2] == shifted[2:].min())
    assert vol.with_data(vol.data).non_finite == vol.non_finite
    assert load_volume(tmp_path / "nanbg.nii.gz", kind="image").data.dtype == np.float32
    nib.save(nib.Nifti1Image(np.full((6, 6, 6), bad, np.float32), np.eye(4)), str(path))
    assert "no finite voxel" in expect_error(path).what


def test_all_zero_image(tmp_path):
    path = tmp_path / "zero.mgz"
    nib.save(nib.MGHImage(np.zeros((8, 8, 8), np.float32), np.eye(4)), str(path))
    assert "zero" in expect_error(path).what
    # an empty label map is a valid (if unusual) segmentation
    assert not load_volume(path, kind="labels").data.any()


def test_singular_affine(tmp_path):
    sform = np.eye(4)
    sform[:3, 1] = sform[:3, 0]  # two parallel voxel axes
    path = write_raw_nifti(tmp_path / "flat.nii.gz", good_image(), sform=sform)
    assert "singular" in expect_error(path).what


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_affine(tmp_path, bad):
    sform = np.eye(4)
    sform[1, 3] = bad
    path = write_raw_nifti(tmp_path / "nan.nii.gz", good_image(), sform=sform)
    expect_error(path)


@pytest.mark.parametrize("diag", [(0.0, 1.0, 1.0), (1.0, 25.0, 1.0), (1.0, 1.0, 1e-12)])
def test_voxel_size_out_of_range_sform(tmp_path, diag):
    sform = np.diag(list(diag) + [1.0])
    path = write_raw_nifti(tmp_path / "vox.nii", good_image(), sform=sform)
    assert "voxel size" in expect_error(path).what


def test_zero_pixdim_not_silently_repaired(tmp_path):
    # nibabel turns a zero pixdim into 1 mm when the affine comes from the qform
    path = write_raw_nifti(tmp_path / "pix.nii.gz", good_image(), pixdim=(0.0, 1.0, 1.0),
                           qform_code=1)
    assert "voxel size" in expect_error(path).what


def test_voxel_size_zero_and_large_mgz(tmp_path):
    zero = np.eye(4)
    zero[0, 0] = 0.0
    path = tmp_path / "zero_col.mgz"
    with np.errstate(invalid="ignore", divide="ignore"):
        nib.save(nib.MGHImage(good_image(), zero), str(path))
    expect_error(path)
    path = tmp_path / "thick.mgz"
    nib.save(nib.MGHImage(good_image(), np.diag([1.0, 1.0, 21.0, 1.0])), str(path))
    assert "voxel size" in expect_error(path).what


def test_thick_but_valid_voxels_load(tmp_path):
    path = tmp_path / "thick.nii.gz"
    nib.save(nib.Nifti1Image(good_image(), np.diag([0.8, 0.8, 20.0, 1.0])), str(path))
    np.testing.assert_allclose(load_volume(path).voxel_sizes, [0.8, 0.8, 20.0], rtol=1e-6)


@pytest.mark.parametrize("name,shape", [("huge.nii", (5000, 5000, 5000)),
                                        ("huge.nii.gz", (5000, 5000, 5000)),
                                        # under the voxel-count limit, but the file is empty
                                        ("big.nii.gz", (1000, 1000, 1000)),
                                        ("big.nii", (1000, 1000, 1000))])
def test_absurd_dimensions_refused_before_reading(tmp_path, name, shape):
    path = write_header_only_nifti(tmp_path / name, shape)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        expect_error(path)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 5.0  # reading/allocating 4 GB takes far longer on this machine
    assert peak < 20 * 2**20, f"allocated {peak / 2**20:.0f} MiB before refusing"


# --- reading and writing ------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".mgz", ".mgh", ".nii.gz", ".nii"])
def test_round_trip_dtypes(tmp_path, ext):
    affine = AFFINES["oblique"]
    labels = blob_volume(affine)
    image = labels.with_data(good_image_like(labels.shape))
    save_volume(labels, tmp_path / f"seg{ext}", kind="labels")
    save_volume(image, tmp_path / f"img{ext}", kind="image")
    # stored dtypes (MGH is big-endian): int32 labels, float32 images
    stored = [nib.load(str(tmp_path / f"{n}{ext}")).get_data_dtype().newbyteorder("=")
              for n in ("seg", "img")]
    assert stored == [np.dtype(np.int32), np.dtype(np.float32)]
    seg_back = load_volume(tmp_path / f"seg{ext}", kind="labels")
    img_back = load_volume(tmp_path / f"img{ext}")
    assert seg_back.data.dtype == np.int32 and img_back.data.dtype == np.float32
    np.testing.assert_array_equal(seg_back.data, labels.data)
    np.testing.assert_array_equal(img_back.data, image.data)
    # headers store the affine in float32
    np.testing.assert_allclose(seg_back.affine, affine, atol=1e-4)
    np.testing.assert_allclose(img_back.affine, affine, atol=1e-4)
    assert seg_back.path == str(tmp_path / f"seg{ext}")


def good_image_like(shape) -> np.ndarray:
    return np.random.default_rng(2).uniform(1, 50, size=shape).astype(np.float32)


def test_save_labels_rounds_float_labels(tmp_path):
    data = np.full((6, 6, 6), 802.9999, np.float64)
    data[0] = 0.0001
    save_volume(Volume(data, np.eye(4)), tmp_path / "seg.mgz", kind="labels")
    back = load_volume(tmp_path / "seg.mgz", kind="labels").data
    assert back.dtype == np.int32
    assert set(np.unique(back)) == {0, 803}


def test_load_float_labels_are_rounded(tmp_path):
    path = tmp_path / "float_labels.nii.gz"
    data = np.full((6, 6, 6), 59.9999, np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    back = load_volume(path, kind="labels").data
    assert back.dtype == np.int32 and np.all(back == 60)


def test_save_volume_unsupported_extension(tmp_path):
    with pytest.raises(HsynexError):
        save_volume(Volume(good_image(), np.eye(4)), tmp_path / "out.png")


def test_bad_kind_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError):
        load_volume(tmp_path / "x.nii.gz", kind="mask")


# --- atomic writes ------------------------------------------------------------------------------
def test_atomic_write_success_and_permissions(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_text("done")
        assert not target.exists()
    assert target.read_text() == "done"
    assert os.listdir(tmp_path) == ["out.txt"]
    mask = os.umask(0o022)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_failed_write_leaves_nothing(tmp_path, exc):
    target = tmp_path / "seg.mgz"
    with pytest.raises(exc), atomic_path(target) as tmp:
        tmp.write_bytes(b"half a file")
        raise exc("interrupted")
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("new, half")
        raise RuntimeError
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["table.csv"]


def test_save_volume_failing_midway_leaves_nothing(tmp_path, monkeypatch):
    def broken_save(img, filename):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError):
        save_volume(Volume(good_image(), np.eye(4)), tmp_path / "img.nii.gz")
    assert os.listdir(tmp_path) == []


def test_missing_output_folder(tmp_path):
    with pytest.raises(HsynexError) as info:
        save_volume(Volume(good_image(), np.eye(4)), tmp_path / "no" / "such" / "img.mgz")
    assert info.value.path == str(tmp_path / "no" / "such")


def test_output_folder_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(HsynexError), atomic_path(tmp_path / "file" / "out.txt"):
        pass


def test_output_path_is_a_directory(tmp_path):
    (tmp_path / "out.mgz").mkdir()
    with pytest.raises(HsynexError) as info:
        save_volume(Volume(good_image(), np.eye(4)), tmp_path / "out.mgz")
    assert info.value.path == str(tmp_path / "out.mgz")
    assert os.listdir(tmp_path) == ["out.mgz"]


def test_unwritable_output_folder(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):  # root ignores permission bits: simulate the refusal
            def refuse(*args, **kwargs):
                raise PermissionError(13, "Permission denied")

            monkeypatch.setattr(tempfile, "mkstemp", refuse)
        with pytest.raises(HsynexError) as info:
            save_volume(Volume(good_image(), np.eye(4)), folder / "img.mgz")
        assert info.value.path == str(folder)
    finally:
        folder.chmod(0o755)
    assert os.listdir(folder) == []


# --- geometry: reorientation ---------------------------------------------------------------------
@pytest.mark.parametrize("name", list(AFFINES))
@pytest.mark.parametrize("channels", [0, 3])
def test_to_ras_from_ras_bit_exact(name, channels):
    affine = AFFINES[name]
    rng = np.random.default_rng(3)
    shape = (7, 8, 9) + ((channels,) if channels else ())
    vol = Volume(rng.random(shape).astype(np.float32), affine.copy())
    ras, orientation = to_ras(vol)
    assert nib.aff2axcodes(ras.affine) == ("R", "A", "S")
    assert ras.data.shape[3:] == vol.data.shape[3:]
    back = from_ras(ras, orientation)
    assert back.data.dtype == vol.data.dtype
    np.testing.assert_array_equal(back.data, vol.data)
    np.testing.assert_array_equal(back.affine, affine)


@pytest.mark.parametrize("name", list(AFFINES))
def test_to_ras_keeps_world_coordinates(name):
    vol = blob_volume(AFFINES[name])
    ras, _ = to_ras(vol)
    np.testing.assert_allclose(centroid_world(ras, [803]), centroid_world(vol, [803]), atol=1e-9)
    # every voxel keeps its world position: compare the world coordinates of each label-28 voxel
    world_before = voxel_to_world(vol.affine, np.argwhere(vol.data == 28))
    world_after = voxel_to_world(ras.affine, np.argwhere(ras.data == 28))
    np.testing.assert_allclose(np.sort(world_before, axis=0), np.sort(world_after, axis=0),
                               atol=1e-9)


AXES_CODES = st.permutations([0, 1, 2]).flatmap(
    lambda perm: st.tuples(st.just(tuple(perm)), st.tuples(st.booleans(), st.booleans(),
                                                           st.booleans())))


@FAST
@given(axes=AXES_CODES,
       sizes=st.tuples(*[st.floats(0.3, 5.0)] * 3),
       shape=st.tuples(*[st.integers(2, 6)] * 3),
       angle=st.floats(-40, 40))
def test_reorientation_property(axes, sizes, shape, angle):
    perm, flips = axes
    m = np.zeros((3, 3))
    for k in range(3):
        m[perm[k], k] = (-1 if flips[k] else 1) * sizes[k]
    affine = np.eye(4)
    affine[:3, :3] = rotation(1, angle) @ m
    affine[:3, 3] = (3.0, -7.0, 11.0)
    data = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)
    vol = Volume(data, affine)
    ras, orientation = to_ras(vol)
    back = from_ras(ras, orientation)
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_array_equal(back.affine, affine)
    # the voxel holding value v is at the same world position on both grids
    for v in (0, data.size - 1, data.size // 2):
        before = voxel_to_world(affine, np.argwhere(data == v))
        after = voxel_to_world(ras.affine, np.argwhere(ras.data == v))
        np.testing.assert_allclose(after, before, atol=1e-9)


@FAST
@given(points=st.lists(st.tuples(*[st.floats(-200, 200)] * 3), min_size=1, max_size=5))
def test_world_voxel_inverse(points):
    affine = AFFINES["oblique"]
    xyz = np.array(points)
    np.testing.assert_allclose(voxel_to_world(affine, world_to_voxel(affine, xyz)), xyz,
                               atol=1e-9)


# --- geometry: resampling ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["LIA", "oblique"])
@pytest.mark.parametrize("voxel_mm", [0.7, 1.5, (1.0, 2.0, 0.8), (2.5, 1.2, 1.2)])
def test_resample_to_voxel_size_keeps_centroid(name, voxel_mm):
    vol = blob_volume(AFFINES[name])
    before = centroid_world(vol, [803])
    out = resample_to_voxel_size(vol, voxel_mm, order=0)
    np.testing.assert_allclose(out.voxel_sizes, np.broadcast_to(voxel_mm, (3,)), rtol=1e-9)
    assert out.data.dtype == np.int32
    assert set(np.unique(out.data)) <= {0, 28, 803}
    tolerance = 0.5 * max(np.max(out.voxel_sizes), np.max(vol.voxel_sizes))
    assert np.linalg.norm(centroid_world(out, [803]) - before) < tolerance
    # orientation is kept: same voxel axis directions
    np.testing.assert_allclose(out.affine[:3, :3] / out.voxel_sizes,
                               vol.affine[:3, :3] / vol.voxel_sizes, atol=1e-12)
    # the image version, linear and cubic: intensity-weighted centroid also stays
    for order in (1, 3):
        img = resample_to_voxel_size(image_of(vol), voxel_mm, order=order)
        assert img.data.dtype == np.float32
        w = np.clip(img.data, 0, None)
        mean_ijk = np.tensordot(np.indices(img.shape), w, axes=3) / w.sum()
        centre = voxel_to_world(img.affine, mean_ijk)[0]
        full = centroid_world(vol, [28, 803])
        assert np.linalg.norm(centre - full) < tolerance


def test_resample_to_voxel_size_rejects_bad_size():
    with pytest.raises(ValueError):
        resample_to_voxel_size(blob_volume(AFFINES["RAS"]), 0.0, order=0)


@pytest.mark.parametrize("name", list(AFFINES))
def test_resample_like_rotated_grid_keeps_centroid(name):
    vol = blob_volume(AFFINES[name])
    before = centroid_world(vol, [803])
    # a target grid rotated 30 degrees, 1.2 mm voxels, centred on the blob
    target = np.eye(4)
    target[:3, :3] = rotation(2, 30) @ rotation(0, -15) * 1.2
    shape = (20, 20, 20)
    target[:3, 3] = before - target[:3, :3] @ ((np.array(shape) - 1) / 2)
    out = resample_like(vol, shape, target, order=0)
    assert out.shape == shape and out.data.dtype == np.int32
    np.testing.assert_array_equal(out.affine, target)
    assert np.linalg.norm(centroid_world(out, [803]) - before) < 0.5 * 1.2


def test_resample_like_identity_is_exact():
    vol = blob_volume(AFFINES["oblique"])
    same = resample_like(vol, vol.shape, vol.affine, order=0)
    np.testing.assert_array_equal(same.data, vol.data)
    img = image_of(vol)
    for order in (1, 3):
        np.testing.assert_allclose(resample_like(img, img.shape, img.affine, order=order).data,
                                   img.data, atol=1e-3)


def test_resample_like_posteriors_channelwise_and_fill():
    vol = blob_volume(AFFINES["LIA"])
    post = np.stack([(vol.data == 0), (vol.data == 803)], axis=-1).astype(np.float32)
    pv = vol.with_data(post)
    shifted = vol.affine.copy()
    shifted[:3, 3] += 100.0  # far outside: everything is fill
    out = resample_like(pv, (5, 5, 5), shifted, order=1, fill=0.25)
    assert out.data.shape == (5, 5, 5, 2)
    assert np.all(out.data == 0.25)
    out = resample_like(pv, vol.shape, vol.affine, order=1)
    np.testing.assert_allclose(out.data, post, atol=1e-6)


# --- geometry: cropping ------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(AFFINES))
def test_crop_around_keeps_world_and_paste_is_exact(name):
    vol = blob_volume(AFFINES[name])
    centre = centroid_world(vol, [803])
    crop = crop_around(vol, centre, (12, 14, 10), fill=-1)
    assert crop.shape == (12, 14, 10)
    assert crop.data.dtype == vol.data.dtype
    np.testing.assert_allclose(crop.affine[:3, :3], vol.affine[:3, :3])
    # the blob lies wholly inside the box: its centroid is unchanged (exactly, same voxels)
    assert np.count_nonzero(crop.data == 803) == np.count_nonzero(vol.data == 803)
    np.testing.assert_allclose(centroid_world(crop, [803]), centre, atol=1e-9)
    # the box centre voxel is the voxel nearest the requested centre
    mid = voxel_to_world(crop.affine, np.array((12, 14, 10)) // 2)[0]
    assert np.all(np.abs(world_to_voxel(vol.affine, mid) - world_to_voxel(vol.affine, centre))
                  <= 0.5 + 1e-9)
    pasted = paste_into(crop, vol.shape, vol.affine, fill=0)
    np.testing.assert_array_equal(pasted.affine, vol.affine)
    inside = paste_into(crop.with_data(np.ones(crop.shape, bool)), vol.shape, vol.affine,
                        fill=False).data
    np.testing.assert_array_equal(pasted.data, np.where(inside, vol.data, 0))


def test_crop_past_the_edge_is_padded():
    vol = blob_volume(AFFINES["LPS"])
    corner = voxel_to_world(vol.affine, (0, 0, 0))[0]
    crop = crop_around(vol, corner, (6, 6, 6), fill=-7)
    assert np.all(crop.data[:3] == -7) and np.all(crop.data[:, :3] == -7)
    np.testing.assert_array_equal(crop.data[3:, 3:, 3:], vol.data[:3, :3, :3])
    # padded voxels also have consistent world coordinates: voxel (3,3,3) is the old (0,0,0)
    np.testing.assert_allclose(voxel_to_world(crop.affine, (3, 3, 3)), [corner], atol=1e-9)
    back = paste_into(crop, vol.shape, vol.affine, fill=0)
    np.testing.assert_array_equal(back.data[:3, :3, :3], vol.data[:3, :3, :3])
    assert not back.data[3:].any()


def test_crop_4d_and_paste_round_trip():
    vol = blob_volume(AFFINES["oblique"])
    post = np.stack([vol.data == k for k in (0, 28, 803)], axis=-1).astype(np.float32)
    pv = vol.with_data(post)
    crop = crop_around(pv, centroid_world(vol, [803]), (30, 30, 30))  # larger than the volume
    assert crop.data.shape == (30, 30, 30, 3)
    back = paste_into(crop, vol.shape, vol.affine)
    np.testing.assert_array_equal(back.data, post)


def test_paste_into_refuses_misaligned_crop():
    vol = blob_volume(AFFINES["RAS"])
    crop = crop_around(vol, (0, 0, 0), (6, 6, 6))
    crop.affine[:3, 3] += 0.4  # half-voxel shift
    with pytest.raises(ValueError):
        paste_into(crop, vol.shape, vol.affine)


@FAST
@given(centre=st.tuples(*[st.integers(-4, 27)] * 3),
       box=st.tuples(*[st.integers(1, 12)] * 3))
def test_crop_paste_property(centre, box):
    vol = blob_volume(AFFINES["LIA"])
    world = voxel_to_world(vol.affine, centre)[0]
    crop = crop_around(vol, world, box, fill=0)
    assert crop.shape == box
    # every kept voxel has the same world position and value as in the source
    for ijk in np.argwhere(crop.data != 0)[:5]:
        src = np.rint(world_to_voxel(vol.affine, voxel_to_world(crop.affine, ijk))[0]).astype(int)
        assert vol.data[tuple(src)] == crop.data[tuple(ijk)]
    back = paste_into(crop, vol.shape, vol.affine, fill=0)
    box_mask = paste_into(crop.with_data(np.ones(box, bool)), vol.shape, vol.affine,
                          fill=False).data
    np.testing.assert_array_equal(back.data, np.where(box_mask, vol.data, 0))


def test_centroid_world_empty_and_volume_helpers():
    vol = blob_volume(AFFINES["LPS"])
    assert centroid_world(vol, [999]) is None
    np.testing.assert_allclose(vol.voxel_sizes, [0.9, 0.9, 1.5])
    assert vol.shape == (24, 22, 20)
    with pytest.raises(ValueError):
        vol.with_data(np.zeros((3, 3, 3)))
    assert io.suffix("A/B.NII.GZ") == ".nii.gz" and io.suffix("x.nii.bz2") == ""


# --- real files (../shared/data) -----------------------------------------------------------------
@pytest.mark.realdata
def test_real_files_load_and_reorient(shared_data):
    t2 = load_volume(shared_data / "examples" / "T2w_1x1x2mm.nii.gz")
    assert t2.shape == (224, 224, 60) and t2.data.dtype == np.float32
    np.testing.assert_allclose(sorted(t2.voxel_sizes), [1.0, 1.0, 2.0], atol=1e-3)
    aseg = load_volume(shared_data / "subjects" / "bert" / "mri" / "aseg.mgz", kind="labels")
    assert aseg.shape == (256, 256, 256) and aseg.data.dtype == np.int32
    assert nib.aff2axcodes(aseg.affine) == ("L", "I", "A")  # conformed FreeSurfer volume
    ras, orientation = to_ras(aseg)
    assert nib.aff2axcodes(ras.affine) == ("R", "A", "S")
    for label in (28, 60, 14):
        np.testing.assert_allclose(centroid_world(ras, [label]), centroid_world(aseg, [label]),
                                   atol=1e-6)
    # left ventral DC lies left (-x in RAS) of the right one
    assert centroid_world(aseg, [28])[0] < centroid_world(aseg, [60])[0]
    np.testing.assert_array_equal(from_ras(ras, orientation).data, aseg.data)
