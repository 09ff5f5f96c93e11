"""``mri_hsynex segment`` end to end on tiny synthetic scans with random-weight networks: outputs,
the bad-input list (one ERROR line, exit 1, nothing left behind) and batches."""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from synthetic import tiny_affine, tiny_label_map

from mri_hsynex.cli import segment

VOXEL_MM = 3.0  # 32 voxels of 3 mm: a 96 mm field of view around the tiny "brain"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    from helpers_models import write_tiny_models

    return write_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def nobrain_models(tmp_path_factory) -> Path:
    from helpers_models import write_tiny_models

    return write_tiny_models(tmp_path_factory.mktemp("nobrain"), localiser="nobrain")


def _image(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.where(labels > 0, 60.0, 0.0) + np.isin(labels, (28, 60)) * 30.0
    return (image + rng.random(labels.shape) * 5).astype(np.float32)


@pytest.fixture()
def scan(tmp_path) -> dict[str, Path]:
    labels = tiny_label_map((32, 32, 32))
    affine = tiny_affine(VOXEL_MM)
    paths = {"image": tmp_path / "in" / "t2.nii.gz", "aseg": tmp_path / "in" / "aseg.mgz",
             "out": tmp_path / "out"}
    paths["image"].parent.mkdir()
    paths["out"].mkdir()
    nib.save(nib.Nifti1Image(_image(labels), affine), paths["image"])
    nib.save(nib.MGHImage(labels, affine), paths["aseg"])
    return paths


def _run(argv, capsys) -> tuple[int, str, str]:
    rc = segment.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- help ----------------------------------------------------------------------------------------
def test_no_arguments_prints_help_and_exits_1(capsys):
    assert segment.main([]) == 1
    assert "--resample" in capsys.readouterr().out


def test_help_does_not_import_keras():
    code = ("import sys; from mri_hsynex.cli import main, segment; segment.build_parser(); "
            "print(any(m in sys.modules for m in ('keras', 'tensorflow', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- one scan ------------------------------------------------------------------------------------
@pytest.mark.backend
@pytest.mark.parametrize("use_aseg", [False, True])
def test_segment_writes_every_output(scan, models, capsys, use_aseg):
    out = scan["out"]
    argv = ["--i", scan["image"], "--o", out / "seg.mgz", "--post", out / "post.nii.gz",
            "--vol", out / "vol.csv", "--stats", out / "h.stats", "--qc", out / "qc.png",
            "--model", models, "--threads", "1"]
    if use_aseg:
        argv += ["--aseg", scan["aseg"]]
    rc, stdout, err = _run(argv, capsys)
    assert rc == 0, err
    assert _files(out) == ["h.stats", "post.nii.gz", "qc.png", "seg.json", "seg.mgz", "vol.csv"]
    image = nib.load(scan["image"])
    seg = nib.load(out / "seg.mgz")
    assert seg.shape == image.shape and np.allclose(seg.affine, image.affine)
    labels = np.asarray(seg.dataobj)
    assert labels.dtype.kind == "i" and labels.dtype.itemsize == 4
    assert set(np.unique(labels)) <= {0, *range(801, 811)}
    if use_aseg:  # never hypothalamus inside the aseg's 3rd ventricle
        aseg = np.asarray(nib.load(scan["aseg"]).dataobj)
        assert aseg.shape == labels.shape and not np.any(labels[aseg == 14])
    post = nib.load(out / "post.nii.gz")
    assert post.shape == image.shape + (11,) and post.get_data_dtype() == np.float32
    np.testing.assert_allclose(np.asarray(post.dataobj).sum(-1), 1.0, atol=1e-4)
    with open(out / "vol.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["subject"] == "t2" and list(rows[0])[-3:] == ["whole_left", "whole_right",
                                                                 "whole"]
    sidecar = json.loads((out / "seg.json").read_text())
    assert sidecar["localisation"]["method"] == ("aseg" if use_aseg else "localiser")
    assert set(sidecar["models"]["sha256"]) == {"stage1.keras", "stage2.keras", "localiser.keras"}
    assert {"qc_flag", "qc_reasons", "backend", "runtime_s", "hsynex_version"} <= set(sidecar)
    assert "mean_max_posterior" in sidecar["qc"]
    np.testing.assert_allclose(sidecar["input_voxel_mm"],
                               np.sqrt((image.affine[:3, :3] ** 2).sum(axis=0)), atol=1e-4)
    stats = (out / "h.stats").read_text()
    assert "Hypothalamus-Whole" in stats and "# ColHeaders" in stats
    # the sidecar's QC flag travels in the stats header too (mri_hsynex table names it)
    from mri_hsynex.stats import read_stats

    assert read_stats(out / "h.stats").qc_flag is sidecar["qc_flag"]
    assert "masked_share" in sidecar["qc"]
    assert "Hypothalamus-Whole" in stdout  # the volumes table
    assert (out / "qc.png").read_bytes()[:4] == b"\x89PNG"


def test_no_pv_sums_the_posteriors_and_keeps_the_labels(scan, models, capsys):
    """--no-pv: the same labels and posteriors; the volumes are the posteriors summed on the model
    grid, and the sidecar and the stats header say which way they were counted."""
    out = scan["out"]
    runs = {}
    for name, extra in (("pv", []), ("nopv", ["--no-pv"])):
        argv = ["--i", scan["image"], "--o", out / f"{name}.mgz", "--post", out / f"{name}_p.mgz",
                "--stats", out / f"{name}.stats", "--resample", "model", "--model", models,
                "--threads", "1", *extra]
        rc, _, err = _run(argv, capsys)
        assert rc == 0, err
        runs[name] = json.loads((out / f"{name}.json").read_text())
        assert f"# VolumeMethod {runs[name]['volume_method']} " in \
            (out / f"{name}.stats").read_text()
    assert runs["pv"]["volume_method"] == "partial-volume corrected posteriors"
    assert runs["nopv"]["volume_method"] == "posteriors"
    labels = [np.asarray(nib.load(out / f"{n}.mgz").dataobj) for n in ("pv", "nopv")]
    np.testing.assert_array_equal(*labels)
    post = nib.load(out / "nopv_p.mgz")
    voxel_mm3 = abs(np.linalg.det(post.affine[:3, :3]))
    whole = float(np.asarray(post.dataobj)[..., 1:].sum(dtype=np.float64)) * voxel_mm3
    assert runs["nopv"]["volumes_mm3"]["Hypothalamus-Whole"] == pytest.approx(whole, rel=1e-3,
                                                                             abs=0.05)


@pytest.mark.backend
def test_resample_model_keeps_the_model_grid(scan, models, capsys):
    out = scan["out"]
    rc, _, err = _run(["--i", scan["image"], "--o", out / "seg.nii.gz", "--resample", "model",
                       "--model", models], capsys)
    assert rc == 0, err
    seg = nib.load(out / "seg.nii.gz")
    assert seg.shape == (64, 64, 64)
    np.testing.assert_allclose(np.abs(np.diag(seg.affine)[:3]), 1.0)


def test_oblique_thick_slice_scan(tmp_path, models, capsys):
    labels = tiny_label_map((32, 32, 16))
    angle = np.deg2rad(15)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)],
                         [0, np.sin(angle), np.cos(angle)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([2.5, 2.5, 5.0])
    affine[:3, 3] = -rotation @ np.array([40.0, 40.0, 40.0])
    image = _write(tmp_path / "oblique.nii.gz", _image(labels), affine)
    rc, _, err = _run(["--i", image, "--o", tmp_path / "seg.nii.gz", "--qc", tmp_path / "q.png",
                       "--model", models], capsys)
    assert rc == 0, err
    seg = nib.load(tmp_path / "seg.nii.gz")
    assert seg.shape == (32, 32, 16) and np.allclose(seg.affine, affine, atol=1e-4)


@pytest.mark.slow
def test_overwrite_is_announced(scan, models, capsys):
    out = scan["out"]
    argv = ["--i", scan["image"], "--o", out / "seg.mgz", "--model", models]
    assert _run(argv, capsys)[0] == 0
    rc, stdout, _ = _run(argv, capsys)
    assert rc == 0 and f"overwriting {out / 'seg.mgz'}" in stdout


def test_models_from_environment(scan, models, capsys, monkeypatch):
    monkeypatch.setenv("HSYNEX_MODELS", str(models))
    rc, _, err = _run(["--i", scan["image"], "--o", scan["out"] / "s.mgz"], capsys)
    assert rc == 0, err


# --- bad input: one ERROR line, exit 1, nothing left behind ---------------------------------------
def _write(path: Path, data, affine=None) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(data), tiny_affine(VOXEL_MM) if affine is None
                             else affine), path)
    return path


def _bad_image(kind: str, folder: Path) -> Path:
    labels = tiny_label_map((32, 32, 32))
    good = _image(labels)
    if kind == "missing":
        return folder / "missing.nii.gz"
    if kind == "not-an-image":
        (folder / "scan.png").write_bytes(b"\x89PNG....")
        return folder / "scan.png"
    if kind == "corrupt-gzip":
        (folder / "bad.nii.gz").write_bytes(b"not gzip at all")
        return folder / "bad.nii.gz"
    if kind == "truncated":
        _write(folder / "t.nii.gz", good)
        raw = gzip.decompress((folder / "t.nii.gz").read_bytes())
        (folder / "t.nii").write_bytes(raw[: len(raw) // 3])
        return folder / "t.nii"
    if kind == "all-zeros":
        return _write(folder / "zeros.nii.gz", np.zeros_like(good))
    if kind == "all-nan":
        return _write(folder / "nan.nii.gz", np.full_like(good, np.nan))
    if kind == "4d":
        return _write(folder / "4d.nii.gz", np.stack([good, good], -1))
    if kind == "2d":
        return _write(folder / "2d.nii.gz", good[:, :, :1])
    if kind == "huge-voxels":
        return _write(folder / "huge.nii.gz", good, np.diag([50.0, 50.0, 50.0, 1.0]))
    if kind == "text-named-nii-gz":
        (folder / "notes.nii.gz").write_text("this is not an image\n")
        return folder / "notes.nii.gz"
    if kind == "all-inf":
        return _write(folder / "inf.nii.gz", np.full_like(good, -np.inf))
    if kind in ("singular-affine", "zero-voxel-size"):
        affine = np.eye(4)  # two equal columns, or a zero column; sform only (no qform SVD)
        affine[:3, :3] = ([[1, 0, 1], [0, 1, 0], [1, 0, 1]] if kind == "singular-affine"
                          else np.diag([1.0, 1.0, 0.0]))
        header = nib.Nifti1Header()
        header.set_data_dtype(np.float32)
        header.set_sform(affine, code=1)
        nib.save(nib.Nifti1Image(good, None, header), folder / f"{kind}.nii.gz")
        return folder / f"{kind}.nii.gz"
    if kind == "absurd-dimensions":  # header only: must be refused before reading any data
        header = nib.Nifti1Header()
        header.set_data_dtype(np.uint8)
        header.set_data_shape((4096, 4096, 4096))
        header.set_qform(np.eye(4), code=1)
        path = folder / "absurd.nii"
        path.write_bytes(header.binaryblock + b"\0" * 4 + b"\1" * 1000)
        return path
    raise ValueError(kind)


BAD_IMAGES = ["missing", "not-an-image", "corrupt-gzip", "truncated", "all-zeros", "all-nan",
              "4d", "2d", "huge-voxels", "text-named-nii-gz", "all-inf", "singular-affine",
              "zero-voxel-size", "absurd-dimensions"]


def _assert_one_error(rc: int, err: str, out_folder: Path, before: list[str]) -> None:
    assert rc == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ERROR: "), err
    assert _files(out_folder) == before  # no output, no temporary file


@pytest.mark.parametrize("kind", BAD_IMAGES)
def test_bad_image(kind, tmp_path, models, capsys):
    image = _bad_image(kind, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    rc, _, err = _run(["--i", image, "--o", out / "seg.mgz", "--vol", out / "v.csv",
                       "--qc", out / "q.png", "--model", models], capsys)
    _assert_one_error(rc, err, out, [])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_background_is_read_as_background_with_a_warning(bad, scan, models, capsys):
    """A quantitative map with a NaN (or infinite) background segments as the same image with a
    zero background, with one WARNING line naming the file and the count in the sidecar."""
    labels = tiny_label_map((32, 32, 32))
    image = _image(labels)
    outside = labels == 0
    image[outside] = 0.0
    plain = _write(scan["image"].parent / "zero_bg.nii.gz", image)
    nan_bg = _write(scan["image"].parent / "nan_bg.nii.gz", np.where(outside, bad, image))
    out = scan["out"]
    seg = {}
    for name, path in (("plain", plain), ("nan", nan_bg)):
        rc, _, err = _run(["--i", path, "--o", out / f"{name}.mgz", "--model", models], capsys)
        assert rc == 0
        seg[name] = np.asarray(nib.load(out / f"{name}.mgz").dataobj)
        warnings = [line for line in err.splitlines() if line.startswith("WARNING:")]
        if name == "nan":
            assert len(warnings) == 1 and str(nan_bg) in warnings[0]
            assert f"{int(outside.sum())} NaN or infinite voxels" in warnings[0]
        else:
            assert not warnings
    np.testing.assert_array_equal(seg["plain"], seg["nan"])
    sidecar = json.loads((out / "nan.json").read_text())
    assert sidecar["input_non_finite_voxels"] == int(outside.sum())


def test_thick_slices_get_one_warning(scan, models, capsys):
    """A thick-slice scan (here 6 mm along one axis, 3 mm in-plane) is segmented with one
    WARNING line about its biased volumes; with --no-pv (the posteriors' volumes) none."""
    labels = tiny_label_map((32, 32, 32))
    affine = tiny_affine(VOXEL_MM)
    affine[:3, 2] *= 2.0
    thick = _write(scan["image"].parent / "thick.nii.gz", _image(labels)[:, :, ::2], affine)
    for extra, expected in (([], 1), (["--no-pv"], 0)):
        rc, _, err = _run(["--i", thick, "--o", scan["out"] / "t.mgz", "--model", models, *extra],
                          capsys)
        assert rc == 0, err
        warnings = [line for line in err.splitlines() if line.startswith("WARNING:")]
        assert len(warnings) == expected
        if expected:
            assert warnings[0].startswith("WARNING: 6 mm slices") and str(thick) in warnings[0]
    rc, _, err = _run(["--i", scan["image"], "--o", scan["out"] / "iso.mgz", "--model", models],
                      capsys)
    assert rc == 0 and "WARNING" not in err  # isotropic 3 mm voxels are not thick slices


def _aseg_case(kind: str, scan: dict) -> Path:
    labels = tiny_label_map((32, 32, 32))
    folder = scan["image"].parent
    if kind == "no-overlap":
        affine = tiny_affine(VOXEL_MM)
        affine[:3, 3] += 1000.0
        return _write(folder / "far.nii.gz", labels, affine)
    if kind == "no-ventral-dc":
        return _write(folder / "novdc.nii.gz", np.where(np.isin(labels, (28, 60)), 2, labels))
    if kind == "missing":
        return folder / "nope.mgz"
    if kind == "directory":
        (folder / "aseg_dir.mgz").mkdir()
        return folder / "aseg_dir.mgz"
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["no-overlap", "no-ventral-dc", "missing", "directory"])
def test_bad_aseg(kind, scan, models, capsys):
    aseg = _aseg_case(kind, scan)
    rc, _, err = _run(["--i", scan["image"], "--aseg", aseg, "--o", scan["out"] / "seg.mgz",
                       "--model", models], capsys)
    _assert_one_error(rc, err, scan["out"], [])
    assert str(aseg) in err
    if kind == "no-ventral-dc":
        assert "28/60" in err


def test_aseg_on_another_grid_is_resampled(scan, models, capsys):
    labels = tiny_label_map((32, 32, 32))
    affine = tiny_affine(2.5)
    affine[:3, 3] = tiny_affine(VOXEL_MM)[:3, 3] + 10.0
    aseg = _write(scan["image"].parent / "aseg2.nii.gz", labels, affine)
    rc, _, err = _run(["--i", scan["image"], "--aseg", aseg, "--o", scan["out"] / "seg.mgz",
                       "--model", models], capsys)
    assert rc == 0, err
    sidecar = json.loads((scan["out"] / "seg.json").read_text())
    assert sidecar["localisation"]["resampled_aseg"] is True


def test_no_brain_is_an_error_not_a_segmentation(scan, nobrain_models, capsys):
    rc, _, err = _run(["--i", scan["image"], "--o", scan["out"] / "seg.mgz",
                       "--model", nobrain_models], capsys)
    _assert_one_error(rc, err, scan["out"], [])
    assert "no brain found" in err


def test_output_equal_to_input(scan, models, capsys):
    rc, _, err = _run(["--i", scan["image"], "--o", scan["image"], "--model", models], capsys)
    assert rc == 1 and "same as an input" in err
    assert scan["image"].exists() and nib.load(scan["image"]).shape == (32, 32, 32)


def _unwritable_folder(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    if Path("/sys").is_dir():  # root may write anywhere except special file systems
        return Path("/sys")
    pytest.skip("no unwritable folder for root on this system")


@pytest.mark.parametrize("which", ["--o", "--vol", "--qc"])
def test_unwritable_output_folder_fails_before_work(which, scan, models, capsys, tmp_path):
    folder = _unwritable_folder(tmp_path)
    outputs = {"--o": scan["out"] / "seg.mgz", "--vol": scan["out"] / "v.csv",
               "--qc": scan["out"] / "q.png"}
    outputs[which] = folder / Path(str(outputs[which])).name
    argv = ["--i", scan["image"], "--model", models]
    for flag, path in outputs.items():
        argv += [flag, path]
    rc, _, err = _run(argv, capsys)
    _assert_one_error(rc, err, scan["out"], [])
    assert "not writable" in err


def test_missing_output_folder(scan, models, capsys):
    rc, _, err = _run(["--i", scan["image"], "--o", scan["out"] / "no" / "seg.mgz",
                       "--model", models], capsys)
    _assert_one_error(rc, err, scan["out"], [])


def test_missing_networks_name_the_folder(scan, tmp_path, capsys):
    empty = tmp_path / "empty_models"
    empty.mkdir()
    rc, _, err = _run(["--i", scan["image"], "--o", scan["out"] / "seg.mgz", "--model", empty],
                      capsys)
    _assert_one_error(rc, err, scan["out"], [])
    assert str(empty) in err and "stage1.keras" in err


def test_bad_resample_choice_is_a_usage_error(scan, capsys):
    with pytest.raises(SystemExit) as exit_info:
        segment.main(["--i", str(scan["image"]), "--o", "x.mgz", "--resample", "cubic"])
    assert exit_info.value.code == 2


# --- batches -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_batch_folder_with_one_bad_scan(tmp_path, models, capsys):
    scans = tmp_path / "scans"
    scans.mkdir()
    labels = tiny_label_map((32, 32, 32))
    _write(scans / "a.nii.gz", _image(labels, 1))
    nib.save(nib.MGHImage(_image(labels, 2), tiny_affine(VOXEL_MM)), scans / "b.mgz")
    _write(scans / "bad.nii.gz", np.zeros((32, 32, 32), np.float32))
    (scans / "notes.txt").write_text("ignored: not an image")
    out, qc = tmp_path / "segs", tmp_path / "qc"
    rc, stdout, err = _run(["--i", scans, "--o", out, "--qc", qc, "--vol", tmp_path / "v.csv",
                            "--model", models], capsys)
    assert rc == 1
    assert sorted(p.name for p in out.glob("*.mgz")) == [
        "a.hypothalamic_subunits_seg.synex.mgz", "b.hypothalamic_subunits_seg.synex.mgz"]
    assert len(list(out.glob("*.json"))) == 2 and len(list(qc.glob("*.png"))) == 2
    with open(tmp_path / "v.csv") as f:
        assert [r["subject"] for r in csv.DictReader(f)] == ["a", "b"]
    assert err.count("ERROR:") == 1 and "all zeros" in err
    assert "1 failed" in err and "bad.nii.gz" in err.splitlines()[-1]
    assert "segmented 2 of 3 scans" in stdout


def test_batch_list_file(tmp_path, models, capsys):
    labels = tiny_label_map((32, 32, 32))
    a = _write(tmp_path / "a.nii.gz", _image(labels))
    listing = tmp_path / "scans.txt"
    listing.write_text(f"# scans\n{a}\n\n")
    rc, _, err = _run(["--i", listing, "--o", tmp_path / "segs", "--model", models], capsys)
    assert rc == 0, err
    assert (tmp_path / "segs" / "a.hypothalamic_subunits_seg.synex.mgz").exists()


def test_batch_errors_before_work(tmp_path, models, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = _run(["--i", empty, "--o", tmp_path / "segs", "--model", models], capsys)
    assert rc == 1 and "no scans" in err
    # a folder of DICOM files, and one DICOM file without a suffix (not a list of scans)
    dicom = tmp_path / "dicom"
    dicom.mkdir()
    (dicom / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00" * 60)
    rc, _, err = _run(["--i", dicom, "--o", tmp_path / "segs", "--model", models], capsys)
    assert rc == 1 and "holds DICOM files" in err and "dcm2niix" in err
    rc, _, err = _run(["--i", dicom / "IM0001", "--o", tmp_path / "segs", "--model", models],
                      capsys)
    assert rc == 1 and "DICOM files are not read" in err and "list of scans" not in err
    assert not (tmp_path / "segs").exists() or not any((tmp_path / "segs").iterdir())
    listing = tmp_path / "l.txt"
    listing.write_text(str(tmp_path / "x.nii.gz"))
    rc, _, err = _run(["--i", listing, "--o", tmp_path / "segs", "--aseg", listing,
                       "--model", models], capsys)
    assert rc == 1 and "--aseg" in err


@pytest.mark.realdata
@pytest.mark.slow
def test_real_subject_with_aseg(shared_data, models, tmp_path, capsys):
    mri = shared_data / "subjects" / "sub-01" / "mri"
    rc, _, err = _run(["--i", mri / "T1.mgz", "--aseg", mri / "aseg.mgz",
                       "--o", tmp_path / "seg.mgz", "--stats", tmp_path / "h.stats",
                       "--model", models], capsys)
    assert rc == 0, err
    seg, t1 = nib.load(tmp_path / "seg.mgz"), nib.load(mri / "T1.mgz")
    assert seg.shape == t1.shape and np.allclose(seg.affine, t1.affine)
    labels = np.asarray(seg.dataobj)
    aseg = np.asarray(nib.load(mri / "aseg.mgz").dataobj)
    # every label lies within the anatomical mask's reach of the subject's ventral DC / 3rd
    # ventricle (postprocess.anatomical_mask; these random networks label all they may), and
    # none in its 3rd ventricle
    from mri_hsynex.constants import MASK_REACH_MM
    from mri_hsynex.predict.postprocess import dilate

    near = dilate(np.isin(aseg, (28, 60, 14)), MASK_REACH_MM + 0.5, 1.0)
    assert np.any(labels > 0) and not np.any((labels > 0) & ~near)
    assert not np.any((labels > 0) & (aseg == 14))


@pytest.mark.slow
def test_demo_segments_the_bundled_template(tmp_path, models, capsys):
    pytest.importorskip("nilearn")
    from mri_hsynex import demo

    out = tmp_path / "demo_out"
    assert demo.main([str(out), "--model", str(models)]) == 0
    names = _files(out)
    assert demo.TEMPLATE_NAME in names and "hypothalamic_subunits_seg.json" in names
    assert all(name in names for name in demo.OUTPUTS.values())
    stdout = capsys.readouterr().out
    assert "Hypothalamus-Whole" in stdout and str(out) in stdout


def test_demo_without_networks_names_the_folder(tmp_path, capsys):
    pytest.importorskip("nilearn")
    from mri_hsynex import demo

    empty = tmp_path / "no_models"
    empty.mkdir()
    assert demo.main([str(tmp_path / "d"), "--model", str(empty)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ERROR: ") and str(empty) in err
