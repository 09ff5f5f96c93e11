"""Validation machinery: contrast synthesis, thick slices, simulated atrophy, group statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from synthetic import tiny_affine, tiny_label_map

from mri_hsynex.errors import HsynexError
from mri_hsynex.labels import LEFT_SUBUNIT_IDS, RIGHT_SUBUNIT_IDS, SUBUNIT_IDS
from mri_hsynex.validate import anatomy, contrasts, metrics
from mri_hsynex.validate.contrasts import Acquisition

# LIA, like a conformed FreeSurfer volume: voxel axes -> (-x, -z, +y)
LIA = np.array([[-1.0, 0, 0, 20], [0, 0, 1, -20], [0, -1, 0, 20], [0, 0, 0, 1]])


def _clean(contrast: str, thickness: float = 1.0, orientation: str = "axial") -> Acquisition:
    return Acquisition(contrast, thickness, orientation, noise=0.0, bias=0.0, label_jitter=0.0)


def _tissue_mean(image, labels, label):
    core = ndimage.binary_erosion(labels == label, iterations=1)
    if not core.any():  # thin structure (the 3rd ventricle): all its voxels
        core = labels == label
    return float(image[core].mean())


@pytest.mark.parametrize("contrast, brighter, darker", [
    ("T1", 2, 10), ("T1", 10, 14),      # WM > deep GM > CSF
    ("T2", 14, 10), ("T2", 10, 2),      # reversed
    ("PD", 10, 2),                      # GM > WM
    ("FLAIR", 10, 14), ("FLAIR", 10, 2),  # CSF suppressed, GM > WM
    ("FA", 2, 10), ("FA", 2, 14),       # white matter bright, grey/CSF dark
])
def test_tissue_ordering(contrast, brighter, darker):
    labels = tiny_label_map((32, 32, 32))
    image, _ = contrasts.synthesize(labels, tiny_affine(), _clean(contrast), seed=0)
    assert _tissue_mean(image, labels, brighter) > _tissue_mean(image, labels, darker)


def test_subunits_share_one_intensity():
    labels = tiny_label_map((32, 32, 32))
    for contrast in contrasts.CONTRAST_NAMES:
        means, _ = contrasts.label_means(810, contrast, np.random.default_rng(3))
        assert np.ptp(means[list(SUBUNIT_IDS)]) == 0
    assert labels.max() == 810


def test_synthesis_is_seeded():
    labels = tiny_label_map((24, 24, 24))
    acq = Acquisition("random", 3.0, "coronal")
    a, _ = contrasts.synthesize(labels, tiny_affine(), acq, seed=5)
    b, _ = contrasts.synthesize(labels, tiny_affine(), acq, seed=5)
    c, _ = contrasts.synthesize(labels, tiny_affine(), acq, seed=6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 255


def test_unknown_contrast_is_a_user_error():
    with pytest.raises(HsynexError):
        contrasts.synthesize(tiny_label_map((16, 16, 16)), tiny_affine(), _clean("T7"), seed=0)
    with pytest.raises(HsynexError):
        contrasts.slice_axis(tiny_affine(), "sagittal-ish")


@pytest.mark.parametrize("orientation, world_axis", [("axial", 2), ("coronal", 1),
                                                     ("sagittal", 0)])
@pytest.mark.parametrize("thickness, phase", [(3.0, 0.0), (5.0, 0.0), (7.0, 0.0), (5.0, 2.0),
                                              (5.0, 4.5)])
def test_thick_slices_keep_world_coordinates(orientation, world_axis, thickness, phase):
    shape = (30, 36, 30)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    world = ijk @ LIA[:3, :3].T + LIA[:3, 3]
    ramp = world[..., world_axis].astype(np.float32)  # image = its own world coordinate
    low, affine = contrasts.acquire_thick_slices(ramp, LIA, thickness, orientation, phase)
    axis = contrasts.slice_axis(LIA, orientation)
    sizes = contrasts.voxel_sizes(affine)
    assert sizes[axis] == pytest.approx(thickness)
    assert np.allclose(np.delete(sizes, axis), 1.0)
    first = (thickness - 1) / 2 + phase  # the first slice's centre, in input voxels
    assert low.shape[axis] == int(np.floor((shape[axis] - 1 - first) / thickness)) + 1
    # the phase moves the slices by that much along the slice axis's voxel direction
    _, unshifted = contrasts.acquire_thick_slices(ramp, LIA, thickness, orientation)
    assert np.allclose(affine[:3, 3] - unshifted[:3, 3], LIA[:3, axis] * phase)
    assert np.allclose(np.delete(low.shape, axis), np.delete(shape, axis))
    # a linear ramp survives the blur away from the edges: each thick voxel holds its own world
    # coordinate, so the low-resolution affine places it where it was sampled
    low_ijk = np.stack(np.meshgrid(*[np.arange(n) for n in low.shape], indexing="ij"), axis=-1)
    low_world = (low_ijk @ affine[:3, :3].T + affine[:3, 3])[..., world_axis]
    inner = [slice(None)] * 3
    inner[axis] = slice(1, -1)
    assert np.allclose(low[tuple(inner)], low_world[tuple(inner)], atol=1e-2)


def test_slice_phase_outside_one_slice_is_refused():
    image = np.zeros((20, 20, 20), np.float32)
    for phase in (-1.0, 5.0):
        with pytest.raises(HsynexError, match="slice phase"):
            contrasts.acquire_thick_slices(image, LIA, 5.0, "axial", phase)


def test_one_mm_is_unchanged():
    image = np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)
    out, affine = contrasts.acquire_thick_slices(image, LIA, 1.0, "axial")
    assert np.array_equal(out, image) and np.allclose(affine, LIA)


def test_synthesised_head_has_shells_and_thick_grid():
    labels = tiny_label_map((32, 32, 32))
    padded = np.pad(labels, 14)
    image, affine = contrasts.synthesize(padded, LIA, Acquisition("T1", 5.0, "axial"), seed=1)
    axis = contrasts.slice_axis(LIA, "axial")
    assert contrasts.voxel_sizes(affine)[axis] == pytest.approx(5.0)
    shells = contrasts.head_shells(padded, LIA)
    assert (shells == contrasts.TISSUES.index("skull")).any()
    assert (shells[padded > 0] == -1).all()


def test_crop_to_head_keeps_world_coordinates():
    labels = np.pad(tiny_label_map((24, 24, 24)), 30)
    cropped, affine = contrasts.crop_to_head(labels, LIA, margin_mm=4)
    assert cropped.shape < labels.shape
    for label in (14, 801):
        a = np.argwhere(labels == label).mean(axis=0)
        b = np.argwhere(cropped == label).mean(axis=0)
        assert np.allclose(LIA[:3, :3] @ a + LIA[:3, 3], affine[:3, :3] @ b + affine[:3, 3])


@pytest.mark.parametrize("fraction", [0.05, 0.10, 0.15])
def test_shrink_gives_requested_fraction(fraction):
    labels = tiny_label_map((40, 40, 40))
    shrunk = anatomy.shrink_hypothalamus(labels, fraction)
    for ids, vdc in ((LEFT_SUBUNIT_IDS, 28), (RIGHT_SUBUNIT_IDS, 60)):
        before = np.isin(labels, ids).sum()
        after = np.isin(shrunk, ids).sum()
        assert abs((before - after) / before - fraction) < 0.01
        removed = np.isin(labels, ids) & ~np.isin(shrunk, ids)
        assert (shrunk[removed] == vdc).all()
    changed = labels != shrunk
    assert np.isin(labels[changed], SUBUNIT_IDS).all()
    v0 = anatomy.label_volumes(labels)[813]
    assert anatomy.label_volumes(shrunk)[813] == pytest.approx(v0 * (1 - fraction), rel=0.01)


def test_shrink_erodes_away_from_the_ventricle():
    labels = tiny_label_map((40, 40, 40))
    shrunk = anatomy.shrink_hypothalamus(labels, 0.15)
    ventricle = ndimage.binary_dilation(labels == 14)
    touching = ventricle & np.isin(labels, SUBUNIT_IDS)
    assert np.isin(shrunk[touching], SUBUNIT_IDS).all()


def test_shrink_rejects_bad_fraction():
    with pytest.raises(HsynexError):
        anatomy.shrink_hypothalamus(tiny_label_map((16, 16, 16)), 1.2)


def test_deformation_identity_and_small():
    labels = tiny_label_map((32, 32, 32))
    same = anatomy.random_deformation(labels, np.random.default_rng(0), scale_sd=0.0,
                                      elastic_mm=0.0)
    assert np.array_equal(same, labels)
    warped = anatomy.random_deformation(labels, np.random.default_rng(0))
    assert 0 < (warped != labels).mean() < 0.2
    assert set(np.unique(warped)) <= set(np.unique(labels))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_deformation_volume_follows_the_jacobian(seed):
    """A few-% scaling must change the hypothalamus volume by the scaling's determinant
    (nearest neighbour alone rounds it back to the identity near the centre)."""
    labels = tiny_label_map((40, 40, 40))
    sd = 0.04
    scales = 1.0 + sd * np.random.default_rng(seed).standard_normal(3)  # the function's 1st draw
    warped = anatomy.random_deformation(labels, np.random.default_rng(seed), scale_sd=sd,
                                        elastic_mm=0.0)
    before = anatomy.label_volumes(labels)[813]
    after = anatomy.label_volumes(warped)[813]
    assert after / before == pytest.approx(np.prod(scales), abs=0.01)


def test_dice_cv_auroc_ranksum_on_known_numbers():
    a = np.array([0, 801, 801, 802, 0])
    b = np.array([0, 801, 0, 802, 802])
    assert metrics.dice(a, b, [801]) == pytest.approx(2 * 1 / 3)
    assert metrics.dice(a, b, [802]) == pytest.approx(2 * 1 / 3)
    assert np.isnan(metrics.dice(a, b, [805]))
    table = metrics.dice_table(a, b)
    assert table[813] == pytest.approx(2 * 2 / 6) and table[811] == table[813]
    assert metrics.coefficient_of_variation([1.0, 2.0, 3.0]) == pytest.approx(0.5)
    assert np.isnan(metrics.coefficient_of_variation([1.0]))
    # patients smaller than every control: perfect separation; exact two-sided p for 3 vs 2
    assert metrics.auroc([3, 4, 5], [1, 2]) == 1.0
    assert metrics.ranksum_p([3, 4, 5], [1, 2]) == pytest.approx(0.2)
    assert metrics.auroc([1, 3], [2, 4]) == pytest.approx(0.25)
    assert metrics.auroc([1.0], [1.0]) == 0.5
    with pytest.raises(HsynexError):
        metrics.auroc([], [1.0])


def test_auroc_interval_hanley_mcneil():
    # A = 0.5, 20 per group: Q1 = Q2 = 1/3, var = (0.25 + 2 * 19 / 12) / 400
    lo, hi = metrics.auroc_interval(0.5, 20, 20)
    half = 1.96 * np.sqrt((0.25 + 38 / 12) / 400)
    assert (lo, hi) == pytest.approx((0.5 - half, 0.5 + half))
    assert metrics.auroc_interval(1.0, 20, 20) == (1.0, 1.0)
    narrow = metrics.auroc_interval(0.85, 200, 200)
    wide = metrics.auroc_interval(0.85, 20, 20)
    assert wide[0] < narrow[0] < 0.85 < narrow[1] < wide[1] <= 1.0
    assert np.isnan(metrics.auroc_interval(float("nan"), 20, 20)[0])


def test_atrophy_target_notes_its_interval_and_the_change():
    from mri_hsynex.validate.tables import GroupResult, auroc_target

    g = GroupResult("T1-like 1 mm", "hsynex", 0.1, 813, 20, 20, 0.863, 1e-4, 0.953, 1e-6,
                    -0.065, -0.103)
    target = auroc_target("10 % atrophy", g, 0.9)
    assert target.met is False
    assert target.note == ("short by 0.037; 95 % interval 0.75–0.98; mean volume -6.5 % "
                           "(true -10.3 %)")
    assert auroc_target("10 % atrophy", None, 0.9).met is None


# --- the report pipeline ------------------------------------------------------------------------
class _OracleEngine:
    """Stands in for a segmenter: returns the subunits of a known label map (resampled onto
    the image's grid, or a shrunk copy), so every number of the report is predictable."""

    def __init__(self, labels, affine, erode: bool = False):
        self.labels = np.where(np.isin(labels, SUBUNIT_IDS), labels, 0)
        self.affine = affine
        self.erode = erode

    def segment(self, image_path, aseg_path=None, centre_world=None):
        import nibabel as nib

        from mri_hsynex.validate.engines import Segmentation, nearest_onto

        image = nib.load(image_path)
        labels = nearest_onto(self.labels, self.affine, image.shape, image.affine)
        if self.erode:
            labels = np.where(ndimage.binary_erosion(labels > 0), labels, 0)
        voxel = float(abs(np.linalg.det(image.affine[:3, :3])))
        volumes = anatomy.label_volumes(labels, voxel)
        return Segmentation(labels, image.affine, volumes, 0.01)


def _tiny_labels_dir(tmp_path):
    import nibabel as nib

    folder = tmp_path / "labels"
    folder.mkdir()
    labels = np.pad(tiny_label_map((32, 32, 32)), 6)
    affine = tiny_affine()
    nib.save(nib.Nifti1Image(labels, affine), folder / "sub-08_labels.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), folder / "sub-01_labels.nii.gz")
    return folder, labels, affine


def test_report_pipeline_with_stand_in_engines(tmp_path):
    from mri_hsynex.validate.report import Options, run_validation

    folder, labels, affine = _tiny_labels_dir(tmp_path)
    cropped, cropped_affine = contrasts.crop_to_head(labels, affine)
    engines = {"hsynex": _OracleEngine(cropped, cropped_affine),
               "teacher": _OracleEngine(cropped, cropped_affine, erode=True)}
    opts = Options(out_dir=tmp_path / "out", quick=True, labels_dir=folder,
                   holdout=("sub-08",), subjects_dir=tmp_path / "none",
                   cache_dir=tmp_path / "cache", bench_dir=tmp_path / "none")
    path = run_validation(opts, engines=engines)
    text = path.read_text()
    for heading in ("## Targets", "## 1. Synthetic grid", "## 3. Consistency",
                    "## 4. Simulated group study", "## 5. Runtime", "## Closing note",
                    "## Targets (issue 13", "## 6. Paired sensitivity",
                    "## 7. Why the networks' volume", "## 10. Between subjects on renders",
                    "## 11. Slice direction and phase"):
        assert heading in text
    assert (tmp_path / "out" / "figures" / "validation_dice_vs_thickness.png").is_file()
    assert (tmp_path / "out" / "figures" / "validation_qc.png").is_file()
    assert (tmp_path / "out" / "figures" / "validation_group_study.png").is_file()
    import json

    records = json.loads((tmp_path / "cache" / "records.json").read_text())
    grid = [r for r in records if r["kind"] == "grid"]
    assert len(grid) == 4 + 2  # hsynex on 2 contrasts x 2 thicknesses, the teacher on 1 mm
    hsynex_1mm = [r for r in grid if r["engine"] == "hsynex" and r["thickness_mm"] == 1.0]
    assert all(r["dice"]["813"] == pytest.approx(1.0) for r in hsynex_1mm)
    group = [r for r in records if r["kind"] == "group"]
    assert len(group) == 2 * (4 + 4)
    # the oracle follows the undeformed map, so the measured volumes do not see the atrophy
    # while the true ones do
    assert all(r["truth"]["813"] > 0 for r in group)
    targets = json.loads((tmp_path / "out" / "targets.json").read_text())
    assert {t["issue"] for t in targets["targets"]} == {8, 13}
    assert targets["mode"] == "quick"
    # a second run is served from the cache; compared with the first, no status moves
    engines["hsynex"].segment = None
    opts.compare, opts.out_dir = tmp_path / "out", tmp_path / "again"
    text = run_validation(opts, engines=engines).read_text()
    assert "## Against an earlier run" in text and "Status moved on 0 of" in text


def test_missing_holdout_is_a_user_error(tmp_path):
    from mri_hsynex.validate.study import find_holdout_maps

    folder, _, _ = _tiny_labels_dir(tmp_path)
    with pytest.raises(HsynexError, match="no held-out label map"):
        find_holdout_maps(folder, ("sub-99",))
    with pytest.raises(HsynexError, match="not found"):
        find_holdout_maps(tmp_path / "absent", ("sub-08",))


@pytest.mark.slow
@pytest.mark.backend
def test_validate_command_quick_with_random_networks(tmp_path):
    """`mri_hsynex validate --quick` end to end with tiny random-weight networks."""
    import json

    import nibabel as nib
    from helpers_models import write_tiny_models

    from mri_hsynex.cli.validate import main

    models = write_tiny_models(tmp_path / "models")
    labels_dir = tmp_path / "labels"
    labels_dir.mkdir()
    # 2 mm voxels: a head big enough for the localiser's brain-size check
    nib.save(nib.Nifti1Image(np.pad(tiny_label_map((32, 32, 32)), 6), tiny_affine(2.0)),
             labels_dir / "sub-08_labels.nii.gz")
    out = tmp_path / "out"
    argv = ["--quick", "--o", str(out), "--model", str(models), "--labels", str(labels_dir),
            "--no-teacher", "--subjects-dir", str(tmp_path / "none"),
            "--cache", str(tmp_path / "cache"), "--bench", str(tmp_path / "none"),
            "--threads", "2"]
    assert main(argv) == 0
    text = (out / "validation.md").read_text()
    assert "## Closing note" in text and "--quick" in text
    assert "On a crop with no image in it, stage 1 returns" in text
    records = json.loads((tmp_path / "cache" / "records.json").read_text())
    assert sum(r["kind"] == "grid" for r in records) == 4
    assert sum(r["kind"] == "group" for r in records) == 16
    assert list((out / "figures").glob("validation_*.png"))


def test_validate_command_errors(tmp_path, capsys):
    from mri_hsynex.cli.validate import main

    assert main([]) == 1
    assert main(["--o", str(tmp_path / "out"), "--labels", str(tmp_path / "absent"),
                 "--cache", str(tmp_path / "cache"), "--subjects-dir", str(tmp_path / "none")]) == 1
    assert "ERROR: label-map folder not found" in capsys.readouterr().err
    # an earlier run to compare with that is not there fails before anything is measured
    assert main(["--o", str(tmp_path / "out"), "--compare", str(tmp_path / "earlier"),
                 "--cache", str(tmp_path / "cache")]) == 1
    assert "earlier: no such file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_held_out_map_is_built_when_missing(tmp_path, monkeypatch):
    """From a clean clone there is no build/labels: the held-out map is built into the cache
    with `build-labels` (stood in for here) from the subjects folder and the teacher weights."""
    import nibabel as nib

    from mri_hsynex.cli import build_labels
    from mri_hsynex.validate.report import Options, holdout_map_paths

    subject = tmp_path / "subjects" / "sub-08" / "mri"
    subject.mkdir(parents=True)
    for name in ("T1.mgz", "aseg.mgz"):
        (subject / name).write_bytes(b"")
    weights = tmp_path / "teacher.h5"
    weights.write_bytes(b"")
    calls = []

    def fake_build(argv):
        calls.append(argv)
        out = Path(argv[argv.index("--o") + 1])
        out.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(tiny_label_map((16, 16, 16)), tiny_affine()),
                 out / "sub-08_labels.nii.gz")
        return 0

    monkeypatch.setattr(build_labels, "main", fake_build)
    opts = Options(out_dir=tmp_path / "out", labels_dir=tmp_path / "absent",
                   subjects_dir=tmp_path / "subjects", teacher_weights=weights,
                   cache_dir=tmp_path / "cache")
    paths = holdout_map_paths(opts, ("sub-08",))
    assert paths == [tmp_path / "cache" / "labels" / "sub-08_labels.nii.gz"]
    assert calls and calls[0][calls[0].index("--s") + 1] == "sub-08"
    assert holdout_map_paths(opts, ("sub-08",)) == paths and len(calls) == 1  # found, not rebuilt


def test_hsynex_cache_key_follows_the_volume_rules_and_labels(tmp_path, monkeypatch):
    """Cached hsynex records are redone when the networks, the partial-volume correction, the
    labelling rule or the soft-volume rule change, not when an unrelated file of the model
    folder does."""
    from mri_hsynex import volumes
    from mri_hsynex.predict import postprocess, pvc
    from mri_hsynex.validate import study

    (tmp_path / "stage1.keras").write_bytes(b"x")
    key = study.hsynex_fingerprint(tmp_path)
    (tmp_path / "MODEL_CARD.md").write_text("notes")
    assert study.hsynex_fingerprint(tmp_path) == key
    monkeypatch.setattr(pvc, "VERSION", pvc.VERSION + 1)
    assert study.hsynex_fingerprint(tmp_path) != key
    key = study.hsynex_fingerprint(tmp_path)
    monkeypatch.setattr(postprocess, "LABEL_RULE", postprocess.LABEL_RULE + 1)
    assert study.hsynex_fingerprint(tmp_path) != key
    key = study.hsynex_fingerprint(tmp_path)
    monkeypatch.setattr(volumes, "SOFT_VOLUME_RULE", volumes.SOFT_VOLUME_RULE + 1)
    assert study.hsynex_fingerprint(tmp_path) != key


def test_resident_memory_is_remembered_per_set_of_networks(tmp_path):
    from mri_hsynex.validate.study import remembered_rss_mb

    a, b = {"hsynex": "net-1", "teacher": "t"}, {"hsynex": "net-2", "teacher": "t"}
    assert remembered_rss_mb(tmp_path, a, 0.0) == 0.0  # nothing measured yet
    assert remembered_rss_mb(tmp_path, a, 1500.0) == 1500.0
    # a run served from the cache (nothing measured) and a smaller partial run keep the largest
    assert remembered_rss_mb(tmp_path, a, 0.0) == 1500.0
    assert remembered_rss_mb(tmp_path, a, 900.0) == 1500.0
    assert remembered_rss_mb(tmp_path, a, 1600.0) == 1600.0
    # other networks are measured afresh
    assert remembered_rss_mb(tmp_path, b, 0.0) == 0.0
    (tmp_path / "rss.json").write_text("not json")
    assert remembered_rss_mb(tmp_path, a, 0.0) == 0.0
