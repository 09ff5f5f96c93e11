"""Training label maps: painting, volumes, checks, subject discovery, SynthSeg conversion, CLI."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from mri_hsynex.errors import HsynexError
from mri_hsynex.io import load_volume
from mri_hsynex.labelmaps.build import (
    LabelMapBuilder,
    convert_synthseg,
    find_subjects,
    paint_subunits,
    subunit_volumes,
    synthseg_name,
)
from mri_hsynex.labelmaps.checks import check_subunits
from mri_hsynex.labels import LEFT_SUBUNIT_IDS, SUBUNIT_IDS, VOLUME_COLUMNS, lr_swap_lut
from tests.synthetic import tiny_affine, tiny_label_map

LIA = np.array([[-1.0, 0, 0, 16], [0, 0, 1, -16], [0, -1, 0, 16], [0, 0, 0, 1]])


def _split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(teacher-like seg with only 801-810, aseg-like map with the subunits put back to VDC)."""
    seg = np.where(np.isin(labels, SUBUNIT_IDS), labels, 0)
    aseg = labels.copy()
    aseg[np.isin(labels, LEFT_SUBUNIT_IDS)] = 28
    aseg[np.isin(labels, SUBUNIT_IDS) & ~np.isin(labels, LEFT_SUBUNIT_IDS)] = 60
    return seg, aseg


def test_paint_subunits_keeps_other_labels():
    labels = tiny_label_map((32, 32, 32))
    seg, aseg = _split(labels)
    painted = paint_subunits(aseg, seg)
    assert painted.dtype == np.int32 and np.array_equal(painted, labels)
    assert np.array_equal(paint_subunits(aseg, np.zeros_like(seg)), aseg)


def test_subunit_volumes_columns_and_sums():
    seg, _ = _split(tiny_label_map((32, 32, 32)))
    volumes = subunit_volumes(seg, voxel_mm3=2.0)
    assert list(volumes) == list(VOLUME_COLUMNS)
    assert volumes["whole"] == 2.0 * np.isin(seg, SUBUNIT_IDS).sum()
    assert volumes["whole"] == volumes["whole_left"] + volumes["whole_right"]


def test_checks_on_a_tiny_map_and_its_mirror():
    labels = tiny_label_map((40, 40, 40))
    seg, aseg = _split(labels)
    result = check_subunits("tiny", seg, aseg, tiny_affine())
    assert result.all_present and result.sides_ok and result.inside_fraction == 1.0
    assert result.whole_mm3 == np.isin(seg, SUBUNIT_IDS).sum()
    assert not result.volume_ok and not result.passed  # a tiny map is far below 600 mm^3
    mirrored = lr_swap_lut(int(seg.max()))[seg]  # left labels on the right side
    assert check_subunits("swap", mirrored, aseg, tiny_affine()).sides_correct == 0
    far = np.zeros_like(seg)
    far[:3, :3, :3] = 801
    assert check_subunits("far", far, aseg, tiny_affine()).inside_fraction == 0.0
    row = result.row()
    assert row["labels_present"] == "10/10" and row["pass"] == "NO"


def test_checks_do_not_depend_on_voxel_order():
    labels = tiny_label_map((32, 32, 32))
    seg, aseg = _split(labels)
    affine = tiny_affine()
    ras = check_subunits("ras", seg, aseg, affine)
    flipped_affine = affine.copy()
    flipped_affine[:3, 0] *= -1
    flipped_affine[0, 3] = affine[0, 3] + 31  # x axis reversed, same world positions
    flipped = check_subunits("flip", seg[::-1], aseg[::-1], flipped_affine)
    assert flipped.sides_correct == ras.sides_correct == 10
    assert flipped.whole_mm3 == ras.whole_mm3 and flipped.inside_fraction == ras.inside_fraction


def _fake_subject(root, name, image_name="T1.mgz", aseg=True):
    labels = tiny_label_map((24, 24, 24))
    _, aseg_map = _split(labels)
    (root / name / "mri").mkdir(parents=True)
    rng = np.random.default_rng(1)
    image = (labels > 0) * 100.0 + rng.normal(0, 3, labels.shape)
    nib.save(nib.MGHImage(image.astype(np.float32), LIA), str(root / name / "mri" / image_name))
    if aseg:
        nib.save(nib.MGHImage(aseg_map.astype(np.int32), LIA),
                 str(root / name / "mri" / "aseg.mgz"))


def test_find_subjects_picks_the_first_input(tmp_path):
    _fake_subject(tmp_path, "a")
    _fake_subject(tmp_path, "b", image_name="norm.mgz")
    _fake_subject(tmp_path, "no_aseg", aseg=False)
    (tmp_path / "empty").mkdir()
    found = find_subjects(tmp_path)
    assert [s.name for s in found] == ["a", "b"]
    assert found[0].image.name == "T1.mgz" and found[1].image.name == "norm.mgz"
    with pytest.raises(HsynexError, match="no aseg"):
        find_subjects(tmp_path, ["no_aseg"])
    with pytest.raises(HsynexError, match="none of"):
        find_subjects(tmp_path, ["empty"])
    with pytest.raises(HsynexError, match="not found"):
        find_subjects(tmp_path / "nowhere")


def test_synthseg_maps_become_int32_with_their_affine(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    labels = tiny_label_map((16, 16, 16)).astype(np.float32) + 0.0001  # float-stored labels
    nib.save(nib.Nifti1Image(labels, LIA), str(src / "training_seg_03.nii.gz"))
    rows = convert_synthseg(src, out, log=lambda _: None)
    written = load_volume(out / "synthseg_03_labels.nii.gz", kind="labels")
    assert written.data.dtype == np.int32 and np.allclose(written.affine, LIA)
    assert np.array_equal(written.data, np.rint(labels).astype(np.int32))
    assert rows[0]["has_vdc_3v"] == "yes" and rows[0]["has_subunits"] == "yes"
    assert (out / "synthseg_maps.tsv").is_file()
    assert synthseg_name(src / "training_seg_03.nii.gz") == "synthseg_03"
    with pytest.raises(HsynexError):
        convert_synthseg(tmp_path / "none", out)


@pytest.mark.backend
def test_builder_writes_every_output_with_a_stand_in_teacher(tmp_path):
    from mri_hsynex.teacher.network import build_teacher_network, save_teacher_weights

    weights = tmp_path / "random.h5"
    save_teacher_weights(build_teacher_network(), weights)
    sd, out = tmp_path / "subjects", tmp_path / "labels"
    _fake_subject(sd, "s1")
    builder = LabelMapBuilder(out, weights, crop=16, log=lambda _: None)
    checks, failures = builder.subjects(find_subjects(sd))
    assert failures == [] and checks[0].subject == "s1"
    written = load_volume(out / "s1_labels.nii.gz", kind="labels")
    aseg = load_volume(sd / "s1" / "mri" / "aseg.mgz", kind="labels")
    assert np.allclose(written.affine, LIA) and written.shape == aseg.shape
    not_hyp = ~np.isin(written.data, SUBUNIT_IDS)
    assert np.array_equal(written.data[not_hyp], aseg.data[not_hyp])
    for name in ("subunit_volumes.tsv", "checks.tsv", "qc/s1.png"):
        assert (out / name).is_file()
    header = (out / "subunit_volumes.tsv").read_text().splitlines()[0].split("\t")
    assert header == ["subject", *VOLUME_COLUMNS]
    # a second run reuses the label map (no teacher needed)
    again = LabelMapBuilder(out, None, log=lambda _: None)
    checks2, _ = again.subjects(find_subjects(sd))
    assert checks2[0].row() == checks[0].row()


def test_cli_errors(tmp_path, capsys):
    from mri_hsynex.cli.build_labels import main

    assert main([]) == 1
    assert main(["--sd", str(tmp_path / "none"), "--o", str(tmp_path / "o")]) == 1
    assert "ERROR: subjects folder not found" in capsys.readouterr().err
    _fake_subject(tmp_path / "sd", "s1")
    assert main(["--sd", str(tmp_path / "sd"), "--o", str(tmp_path / "o")]) == 1
    assert "ERROR: the teacher needs its weights file" in capsys.readouterr().err
    assert main(["--sd", str(tmp_path / "sd"), "--o", str(tmp_path / "o"),
                 "--weights", str(tmp_path / "w.h5")]) == 1
    assert "ERROR: teacher weights file not found" in capsys.readouterr().err


@pytest.mark.realdata
@pytest.mark.slow
def test_real_subject_passes_the_checks(shared_data, tmp_path):
    """sub-01: all ten labels, sides, 600-1400 mm^3, >= 90 % inside VDC + 3rd ventricle (2 mm)."""
    subject = find_subjects(shared_data / "subjects", ["sub-01"])
    builder = LabelMapBuilder(tmp_path, shared_data / "teacher" / "hypothalamus_seg_model.h5",
                              log=lambda _: None)
    checks, failures = builder.subjects(subject)
    assert failures == []
    result = checks[0]
    assert result.all_present, result.missing
    assert result.sides_ok, result.centroid_offsets_mm
    assert 600 <= result.whole_mm3 <= 1400
    assert result.inside_fraction >= 0.90


def _with_anchor_blobs(labels: np.ndarray) -> np.ndarray:
    """Add brain-stem (16) and optic-chiasm (85) blobs so the anchors are not coplanar."""
    out = labels.copy()
    n = labels.shape[0]
    c = n // 2
    out[c - 2:c + 2, 2:6, c - 8:c - 4] = 16
    out[c - 2:c + 2, n - 8:n - 4, c - 2:c + 1] = 85
    return out


def test_transfer_recovers_subunits_of_a_shifted_copy():
    from mri_hsynex.labelmaps.transfer import Atlas, anchors, dice, fit_affine, transfer_subunits

    atlas_map = _with_anchor_blobs(tiny_label_map((40, 40, 40)))
    affine = tiny_affine()
    moved = np.roll(atlas_map, (2, -1, 1), axis=(0, 1, 2))  # the same anatomy, moved 2/-1/1 mm
    truth, target = _split(moved)
    atlas = Atlas(atlas_map, affine, "a")
    matrix = fit_affine(anchors(target, affine), atlas.anchors)
    assert np.allclose(matrix[:3, :3], np.eye(3), atol=0.05)
    assert np.allclose(matrix[:3, 3], [-2, 1, -1], atol=0.3)
    seg = transfer_subunits(target, affine, [atlas])
    assert set(np.unique(seg)) <= {0, *SUBUNIT_IDS}
    assert dice(seg > 0, truth > 0) > 0.9
    assert np.mean([dice(seg == i, truth == i) for i in SUBUNIT_IDS]) > 0.7
    with pytest.raises(ValueError, match="coplanar"):
        fit_affine(Atlas(tiny_label_map((40, 40, 40)), affine).anchors, atlas.anchors)


def test_transfer_to_synthseg_writes_checks_and_leaves_out_failing_maps(tmp_path):
    from mri_hsynex.io import Volume, save_volume
    from mri_hsynex.labelmaps.build import transfer_to_synthseg

    atlas_map = _with_anchor_blobs(tiny_label_map((40, 40, 40)))
    _, target = _split(np.roll(atlas_map, 1, axis=0))
    save_volume(Volume(atlas_map, tiny_affine()), tmp_path / "s1_labels.nii.gz", kind="labels")
    save_volume(Volume(target, tiny_affine()), tmp_path / "synthseg_01_labels.nii.gz",
                kind="labels")
    checks = transfer_to_synthseg(tmp_path, ["s1"], log=lambda _: None)
    assert [c.subject for c in checks] == ["synthseg_01"]
    assert checks[0].all_present and checks[0].sides_ok and not checks[0].volume_ok
    dest = tmp_path / "transferred"
    assert (dest / "checks.tsv").is_file() and (dest / "qc" / "synthseg_01.png").is_file()
    assert not (dest / "synthseg_01_labels.nii.gz").exists()  # too small: left out
    with pytest.raises(HsynexError):
        transfer_to_synthseg(tmp_path, [], log=lambda _: None)
