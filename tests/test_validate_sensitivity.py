"""The paired sensitivity study (issue 13): fine patches, the two kinds of shrinkage, paired
rendering, the sensitivity arithmetic, and the study end to end with stand-in engines."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from synthetic import tiny_affine, tiny_label_map

from mri_hsynex.errors import HsynexError
from mri_hsynex.labels import LEFT_SUBUNIT_IDS, RIGHT_SUBUNIT_IDS, SUBUNIT_IDS
from mri_hsynex.validate import anatomy, contrasts, sensitivity
from mri_hsynex.validate.contrasts import Acquisition

SIDES = ((LEFT_SUBUNIT_IDS, 28), (RIGHT_SUBUNIT_IDS, 60))
# an oblique-free LIA-like affine with anisotropic voxels: voxel axes -> (-x, -z, +y)
ANISO = np.array([[-0.9, 0, 0, 30], [0, 0, 1.1, -25], [0, -1.0, 0, 25], [0, 0, 0, 1]])


def _world_centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return affine[:3, :3] @ np.argwhere(mask).mean(axis=0) + affine[:3, 3]


def _fine_affine(patch: anatomy.FinePatch, affine: np.ndarray) -> np.ndarray:
    """World affine of the fine grid: fine voxel k of coarse voxel i sits at i + (k - 1) / 3."""
    f = patch.factor
    start = np.array([s.start for s in patch.box], float) - (f - 1) / (2.0 * f)
    out = np.array(affine, float)
    out[:3, :3] = affine[:3, :3] / f
    out[:3, 3] = affine[:3, :3] @ start + affine[:3, 3]
    return out


@pytest.fixture(scope="module")
def tiny():
    labels = tiny_label_map((40, 40, 40))
    patch = anatomy.fine_patch(labels, ANISO, factor=3)
    return labels, patch


def test_fine_patch_keeps_volumes_and_world_positions(tiny):
    labels, patch = tiny
    assert patch.labels.shape == tuple(3 * (s.stop - s.start) for s in patch.box)
    assert np.allclose(patch.voxel_mm, np.array([0.9, 1.0, 1.1]) / 3)
    coarse_mm3 = float(abs(np.linalg.det(ANISO[:3, :3])))
    coarse = anatomy.label_volumes(labels, coarse_mm3)
    fine = patch.volumes()
    for label in (811, 812, 813):
        assert fine[label] == pytest.approx(coarse[label], rel=0.10)
    fine_affine = _fine_affine(patch, ANISO)
    for ids, _ in SIDES:  # each side's hypothalamus stays where it was in the world (mm)
        a = _world_centroid(np.isin(labels, ids), ANISO)
        b = _world_centroid(np.isin(patch.labels, ids), fine_affine)
        assert np.abs(a - b).max() < 0.35
    # pooling a constant gives the constant; pooling the fine labels' indicator gives fractions
    assert np.allclose(patch.pooled(np.ones(patch.labels.shape)), 1.0)
    fractions = patch.pooled(np.isin(patch.labels, SUBUNIT_IDS).astype(float))
    assert fractions.shape == labels[patch.box].shape
    assert ((fractions > 0) & (fractions < 1)).any()  # partial volume at the boundary


@pytest.mark.parametrize("kind", ["ventricle", "vdc"])
@pytest.mark.parametrize("fraction", [0.10, 0.20])
def test_shrink_kinds_remove_the_requested_fraction(tiny, kind, fraction):
    _, patch = tiny
    shrunk = anatomy.shrink_hypothalamus(patch.labels, fraction, patch.voxel_mm, kind=kind)
    changed = patch.labels != shrunk
    assert np.isin(patch.labels[changed], SUBUNIT_IDS).all()  # only hypothalamus is lost
    for ids, vdc in SIDES:
        before = np.isin(patch.labels, ids).sum()
        after = np.isin(shrunk, ids).sum()
        assert abs((before - after) / before - fraction) < 0.002
        removed = np.isin(patch.labels, ids) & ~np.isin(shrunk, ids)
        assert (shrunk[removed] == (14 if kind == "ventricle" else vdc)).all()
    v0 = patch.volumes()[813]
    v1 = patch.with_labels(shrunk).volumes()[813]
    assert v1 / v0 - 1 == pytest.approx(-fraction, abs=0.002)


def test_ventricle_kind_widens_the_ventricle_and_vdc_kind_keeps_it(tiny):
    _, patch = tiny
    world = _fine_affine(patch, ANISO)
    ventricle0 = patch.labels == 14
    midline_x = _world_centroid(ventricle0, world)[0]
    wide = anatomy.shrink_hypothalamus(patch.labels, 0.2, patch.voxel_mm, kind="ventricle")
    outer = anatomy.shrink_hypothalamus(patch.labels, 0.2, patch.voxel_mm, kind="vdc")
    # the ventricle kind: the new ventricle voxels touch the old ventricle (a widening, not
    # scattered holes), and each side's hypothalamus moves away from the midline (world x)
    new_ventricle = (wide == 14) & ~ventricle0
    labelled, n = ndimage.label(wide == 14, structure=np.ones((3, 3, 3), bool))
    assert new_ventricle.any() and n == 1
    # the vdc kind leaves the ventricle alone and keeps most of the hypothalamus' border with it
    # (it loses only the border's rim at the outer surface); the ventricle kind takes it all
    assert ((outer == 14) == ventricle0).all()
    touching = ndimage.binary_dilation(ventricle0) & np.isin(patch.labels, SUBUNIT_IDS)
    assert np.isin(outer[touching], SUBUNIT_IDS).mean() > 0.6
    assert not np.isin(wide[touching], SUBUNIT_IDS).any()
    for ids, _ in SIDES:
        d0 = abs(_world_centroid(np.isin(patch.labels, ids), world)[0] - midline_x)
        d_wide = abs(_world_centroid(np.isin(wide, ids), world)[0] - midline_x)
        d_outer = abs(_world_centroid(np.isin(outer, ids), world)[0] - midline_x)
        assert d_wide > d0 + 0.1 > d_outer + 0.1  # mm: away from / toward the midline


def test_shrink_kind_errors():
    labels = tiny_label_map((24, 24, 24))
    with pytest.raises(HsynexError):
        anatomy.shrink_hypothalamus(labels, 0.1, kind="thalamus")
    with pytest.raises(HsynexError):
        anatomy.shrink_hypothalamus(np.where(labels == 14, 2, labels), 0.1, kind="ventricle")
    assert (anatomy.shrink_hypothalamus(labels, 0.0, kind="ventricle") == labels).all()


def test_pair_members_share_contrast_bias_and_noise(tiny):
    labels, patch = tiny
    shrunk = patch.with_labels(anatomy.shrink_hypothalamus(patch.labels, 0.2, patch.voxel_mm,
                                                           kind="ventricle"))
    acq = Acquisition("T2", 5.0, "axial")
    a, affine_a = contrasts.synthesize(labels, ANISO, acq, seed=7, fine=patch)
    b, affine_b = contrasts.synthesize(labels, ANISO, acq, seed=7, fine=shrunk)
    c, _ = contrasts.synthesize(labels, ANISO, acq, seed=8, fine=patch)
    assert np.array_equal(affine_a, affine_b)
    differs = a != b
    assert differs.any() and not np.array_equal(a, c)
    # differences only near the hypothalamus (world mm), none elsewhere: same noise and bias
    ijk = np.argwhere(differs)
    world = ijk @ affine_a[:3, :3].T + affine_a[:3, 3]
    centre = _world_centroid(np.isin(labels, SUBUNIT_IDS), ANISO)
    assert np.abs(world - centre).max() < 15.0


def test_sensitivity_arithmetic():
    assert sensitivity.sensitivity(990.0, 1000.0, 800.0, 1000.0) == pytest.approx(0.05)
    assert sensitivity.sensitivity(800.0, 1000.0, 800.0, 1000.0) == pytest.approx(1.0)
    assert sensitivity.sensitivity(1010.0, 1000.0, 900.0, 1000.0) == pytest.approx(-0.1)
    assert np.isnan(sensitivity.sensitivity(1.0, 0.0, 800.0, 1000.0))
    assert np.isnan(sensitivity.sensitivity(1.0, 1.0, 1000.0, 1000.0))
    assert np.isnan(sensitivity.sensitivity(float("nan"), 1.0, 900.0, 1000.0))

    def rec(engine, acq, shrink, fraction, measured, true, variants=None):
        return {"kind": "sensitivity", "engine": engine, "map": "m", "acq": acq, "seed": 0,
                "contrast": acq.split("_")[0], "thickness_mm": 1.0, "shrink": shrink,
                "fraction": fraction, "volumes": {"813": measured}, "truth": {"813": true},
                "variants": variants or {}}

    records = [rec("e", "T1_1mm", "none", 0.0, 1000.0, 1000.0, {"stage 1": {"813": 500.0}}),
               rec("e", "T1_1mm", "vdc", 0.2, 900.0, 800.0, {"stage 1": {"813": 500.0}}),
               rec("e", "T2_1mm", "none", 0.0, 500.0, 1000.0),
               rec("e", "T2_1mm", "vdc", 0.2, 500.0, 800.0),
               rec("e", "PD_1mm", "vdc", 0.2, 1.0, 800.0)]  # no original: not a pair
    changes = sensitivity.paired_changes(records)
    assert [c["sensitivity"] for c in changes] == pytest.approx([0.5, 0.0])
    assert sensitivity.mean_sensitivity(records, "e") == pytest.approx(0.25)
    assert sensitivity.mean_sensitivity(records, "e", contrast="T1") == pytest.approx(0.5)
    assert sensitivity.mean_sensitivity(records, "e", "stage 1") == pytest.approx(0.0)
    rows = sensitivity.sensitivity_rows(records)
    assert {(r["contrast"], r["n"]) for r in rows} == {("T1", 1), ("T2", 1)}
    r, slope, n = sensitivity.fit_line([1, 2, 3, 4], [3, 5, 7, 9])
    assert (r, slope, n) == (pytest.approx(1.0), pytest.approx(2.0), 4)
    assert np.isnan(sensitivity.fit_line([1, 2], [1, 2])[0])
    # within each acquisition: T1 moves 100 for 200 (slope 0.5), T2 not at all (slope 0)
    r, slope, n = sensitivity.within_acquisition_fit(records[:4], "e")
    assert n == 4 and slope == pytest.approx(0.25)


class _WindowEngine:
    """Stands in for a segmenter that reads the image: the volume of the voxels within 10 mm
    of ``centre_world``, each weighted by how close its intensity is to the T1-like
    hypothalamus mean (a stand-in that must see the loss)."""

    def __init__(self, constant: bool = False):
        self.constant = constant

    def segment(self, image_path, aseg_path=None, centre_world=None):
        import nibabel as nib

        from mri_hsynex.validate.engines import Segmentation, _with_groupings

        image = nib.load(image_path)
        data = np.asarray(image.dataobj)
        hyp = 0.72 * 255.0 / (contrasts.CONTRASTS["T1"]["brainstem"] * 1.2)
        voxel = float(abs(np.linalg.det(image.affine[:3, :3])))
        ijk = np.stack(np.meshgrid(*[np.arange(n) for n in data.shape], indexing="ij"), -1)
        near = np.linalg.norm(ijk @ image.affine[:3, :3].T + image.affine[:3, 3]
                              - np.asarray(centre_world), axis=-1) < 10.0
        membership = np.clip(1.0 - np.abs(data[near] - hyp) / 25.0, 0.0, 1.0)
        volume = 900.0 if self.constant else float(membership.sum()) * voxel
        return Segmentation(np.zeros((1, 1, 1), np.int32), np.eye(4),
                            _with_groupings({801: volume}), 0.01)


def _tiny_map(tmp_path):
    import nibabel as nib

    from mri_hsynex.validate.study import load_label_map

    path = tmp_path / "sub-08_labels.nii.gz"
    nib.save(nib.Nifti1Image(np.pad(tiny_label_map((40, 40, 40)), 6), tiny_affine()), path)
    return load_label_map(path)


def test_paired_sensitivity_end_to_end_with_stand_in_engines(tmp_path):
    lmap = _tiny_map(tmp_path)
    design = sensitivity.SensitivityDesign(contrasts=("T1",), thicknesses_mm=(1.0,),
                                           fractions=(0.2,), with_aseg=False)
    assert design.n_images() == 3
    reading = sensitivity.paired_sensitivity(_WindowEngine(), [lmap], design)
    blind = sensitivity.paired_sensitivity(_WindowEngine(constant=True), [lmap], design,
                                           cache_dir=tmp_path / "cache")
    assert {r["shrink"] for r in reading} == {"ventricle", "vdc"}
    assert all(r["n"] == 1 and r["true_change"] == pytest.approx(-0.2, abs=0.002)
               for r in reading)
    assert all(r["sensitivity"] > 0.05 for r in reading)  # diluted by its neighbours
    assert all(r["sensitivity"] == 0.0 for r in blind)
    assert list((tmp_path / "cache" / "cases").glob("hsynex-*.json"))


def test_report_sensitivity_only_with_stand_in_engines(tmp_path):
    import nibabel as nib

    from mri_hsynex.validate.report import Options, run_validation

    folder = tmp_path / "labels"
    folder.mkdir()
    nib.save(nib.Nifti1Image(np.pad(tiny_label_map((40, 40, 40)), 6), tiny_affine()),
             folder / "sub-08_labels.nii.gz")
    engines = {"hsynex": _WindowEngine(), "teacher": _WindowEngine(constant=True)}
    opts = Options(out_dir=tmp_path / "out", quick=True, labels_dir=folder,
                   holdout=("sub-08",), subjects_dir=tmp_path / "none",
                   cache_dir=tmp_path / "cache", bench_dir=tmp_path / "none",
                   sensitivity_only=True)
    path = run_validation(opts, engines=engines)
    assert path.name == "sensitivity.md"
    text = path.read_text()
    assert "## 6. Paired sensitivity" in text and "## 7. Why the networks' volume" in text
    assert "| teacher | 1 mm | 0.00 | 0.00 | 0.00 |" in text


def test_between_subject_fit_skips_implausible_teacher_volumes():
    from mri_hsynex.validate import volume_report

    def real(subject, variant, whole):
        return {"kind": "real", "subject": subject, "variant": variant,
                "volumes": {"813": whole, "811": whole / 2, "812": whole / 2}}

    records = []
    for k, (teacher, hsynex) in enumerate([(700, 720), (800, 790), (900, 910), (1000, 980),
                                           (150, 900)]):  # the last: the teacher failed
        records += [real(f"s{k}", "teacher", teacher), real(f"s{k}", "hsynex", hsynex)]
    r, slope, n = volume_report.real_fit(records, "hsynex", 813)
    assert n == 4 and r > 0.95 and slope == pytest.approx(0.87, abs=0.05)
    r_all, _, n_all = volume_report.real_fit(records, "hsynex", 813, plausible_only=False)
    assert n_all == 5 and r_all < 0.5
    text = volume_report.between_subject_section(records)
    assert "implausible on 1 of 5" in text and "| s4 |" in text


def test_mask_removed_share_reads_the_scan_in_world_space(tmp_path):
    """The share of a label map's hypothalamus where the scan's brain mask removed the tissue
    (its border-connected minimum), on a scan stored in another axis order and grid; enclosed
    zeros (a nulled ventricle) are tissue; the section names the masked scans."""
    import nibabel as nib

    from mri_hsynex.validate import volume_report
    from mri_hsynex.validate.report import mask_removed_share

    labels = np.zeros((20, 20, 20), np.int32)
    labels[8:12, 8:12, 8:12] = 801  # 64 voxels
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = (-10.0, -10.0, -10.0)
    scan = np.full((20, 20, 20), 50.0, np.float32)
    scan[:, :, :9] = 0.0  # the mask cuts the lowest slice of the hypothalamus (z = 8)
    scan[9, 9, 10] = 0.0  # an enclosed zero: tissue
    # the scan stored with its first two axes swapped and the second flipped (same world)
    swap = np.array([[0.0, 1.0, 0.0, -10.0], [-1.0, 0.0, 0.0, 9.0], [0.0, 0.0, 1.0, -10.0],
                     [0.0, 0.0, 0.0, 1.0]])
    stored = np.flip(np.transpose(scan, (1, 0, 2)), axis=0)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(stored), swap), path)
    np.testing.assert_allclose(swap @ [19, 0, 0, 1], affine @ [0, 0, 0, 1])  # same world
    assert mask_removed_share(labels, affine, path) == pytest.approx(16 / 64)
    assert mask_removed_share(np.zeros_like(labels), affine, path) is None

    def real(subject, variant, whole, **extra):
        return {"kind": "real", "subject": subject, "variant": variant,
                "volumes": {"813": whole, "811": whole / 2, "812": whole / 2}, **extra}

    records = [real("a", "teacher", 800), real("a", "hsynex", 820),
               real("a", "label map", 790, masked=0.25),
               real("b", "teacher", 900), real("b", "hsynex", 880),
               real("b", "label map", 910, masked=0.0)]
    text = volume_report.between_subject_section(records)
    assert "| hypothalamus masked in the scan |" in text and "| 25% |" in text
    assert "On 1 of 2 scans it is 5% or more (25%–25%)" in text
    # the fits against the label maps split by the mask's share (n < 3: NaN)
    assert "| label map | hsynex | whole | mask removed < 20% | 1 |" in text
    assert "| label map | hsynex | whole | mask removed ≥ 20% | 1 |" in text
    assert "masked in the scan" not in volume_report.between_subject_section(records[:2])
    # the real-T1 r target's note gives r over the scans the mask spared (3 of them here)
    for k, (truth, mine) in enumerate([(700, 710), (800, 805), (900, 890)]):
        records += [real(f"c{k}", "teacher", 300), real(f"c{k}", "hsynex", mine),
                    real(f"c{k}", "label map", truth, masked=0.1)]
    r, _, n = volume_report.masked_split_fit(records, "hsynex", below=True)
    assert n == 4 and r > 0.9
    target = next(t for t in volume_report.target_rows(records, [], None)
                  if "r of whole volume" in t.what)
    assert "on the 4 scans whose brain mask removed less than 20% of the hypothalamus" \
        in target.note


def test_demo_target_reads_the_ratio_and_where_the_volumes_differ():
    """make demo's target: met only with ten subunits, no QC flag and 0.8-1.2 x the teacher's
    whole volume; the note splits the difference into the inferior subunits and the others."""
    from mri_hsynex.validate import volume_report

    def volumes(inferior, other):
        v = {i: (inferior if i in volume_report.INFERIOR else other) for i in SUBUNIT_IDS}
        v[813] = sum(v[i] for i in SUBUNIT_IDS)
        return v

    demo = {"hsynex": volumes(100.0, 110.0), "teacher": volumes(25.0, 110.0), "present": 10,
            "qc_flag": False}
    target = volume_report.demo_target(demo)
    assert target.value == pytest.approx(1060.0 / 760.0) and target.met is False
    assert "the four inferior subunits 400 vs 100, the other six 660 vs 660" in target.note
    demo["teacher"] = volumes(90.0, 110.0)
    assert volume_report.demo_target(demo).met is True
    assert volume_report.demo_target({**demo, "qc_flag": True}).met is False
    assert volume_report.demo_target({**demo, "present": 9}).met is False
    assert volume_report.demo_target(None).met is None


def test_demo_check_reads_both_engines_and_survives_a_refusal(tmp_path):
    """demo_check runs the template through both engines (the teacher centred on hsynex's
    localisation) and reads volumes, subunits present and the QC flag; a refusal, or no
    teacher, gives None (the target row then says 'not run'); the template is not left behind."""
    from types import SimpleNamespace

    pytest.importorskip("nilearn")
    from mri_hsynex.validate import volume_report

    centre = np.array([1.0, -2.0, -10.0])
    seen = {}
    volumes = {i: (5, 50.0) for i in SUBUNIT_IDS}
    volumes[804] = (0, 0.0)
    volumes.update({811: (20, 200.0), 812: (25, 250.0), 813: (45, 450.0)})
    result = SimpleNamespace(volumes=volumes, localisation=SimpleNamespace(centre_world=centre),
                             qc={"qc_flag": False})

    def teacher_segment(path, centre_world=None):
        seen["centre"] = centre_world
        return SimpleNamespace(volumes={i: 40.0 for i in SUBUNIT_IDS} | {813: 400.0})

    hsynex = SimpleNamespace(segmenter=SimpleNamespace(segment=lambda path: result))
    teacher = SimpleNamespace(segment=teacher_segment)
    demo = volume_report.demo_check(hsynex, teacher, tmp_path)
    assert demo["present"] == 9 and demo["qc_flag"] is False
    assert demo["hsynex"][813] == 450.0 and demo["teacher"][813] == 400.0
    np.testing.assert_array_equal(seen["centre"], centre)
    assert not list(tmp_path.iterdir())
    assert volume_report.demo_check(hsynex, None, tmp_path) is None

    def refuse(path):
        raise HsynexError("no brain found", path)

    refused = SimpleNamespace(segmenter=SimpleNamespace(segment=refuse))
    assert volume_report.demo_check(refused, teacher, tmp_path) is None
    assert not list(tmp_path.iterdir())
