"""The between-subject study on renders (issue 13, section 10 of validation.md): which maps it
renders, its caching, and its arithmetic end to end with stand-in engines whose volumes are a
known function of each map's true volume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from synthetic import tiny_affine, tiny_label_map

from mri_hsynex.validate import anatomy, between
from mri_hsynex.validate.contrasts import Acquisition

FRACTIONS = {"sub-08": 0.0, "oasis-a": 0.15, "oasis-b": 0.3}


def _write_maps(tmp_path):
    """sub-08 in labels/, two smaller hypothalami (15 %, 30 % removed) in more/."""
    import nibabel as nib

    base = np.pad(tiny_label_map((40, 40, 40)), 6)
    paths = {}
    for name, fraction in FRACTIONS.items():
        folder = tmp_path / ("labels" if name == "sub-08" else "more")
        folder.mkdir(exist_ok=True)
        labels = anatomy.shrink_hypothalamus(base, fraction, kind="ventricle")
        paths[name] = folder / f"{name}_labels.nii.gz"
        nib.save(nib.Nifti1Image(labels.astype(np.int32), tiny_affine()), paths[name])
    (tmp_path / "more" / "checks.tsv").write_text("not a map\n")
    return paths


class _LinearEngine:
    """Returns ``slope`` x the true volume of the map an image was rendered from (known from
    the image's folder, ``images/<map>/``) + 100 mm3; ``constant``: 900 mm3 whatever the map."""

    def __init__(self, truth: dict[str, float], slope: float = 0.8, constant: bool = False):
        self.truth, self.slope, self.constant = truth, slope, constant
        self.calls = 0

    def segment(self, image_path, aseg_path=None, centre_world=None):
        from pathlib import Path

        from mri_hsynex.validate.engines import Segmentation, _with_groupings

        self.calls += 1
        whole = 900.0 if self.constant else \
            self.slope * self.truth[Path(image_path).parent.name] + 100.0
        # left and right halves, so the per-side fits have something to regress
        volumes = _with_groupings({801: whole / 2, 806: whole / 2})
        return Segmentation(np.zeros((1, 1, 1), np.int32), np.eye(4), volumes, 0.01)


def test_between_map_paths_puts_held_out_first_once(tmp_path):
    paths = _write_maps(tmp_path)
    found = between.between_map_paths([paths["sub-08"]], [tmp_path / "more",
                                                          tmp_path / "missing"])
    assert [between.map_name(p) for p in found] == ["sub-08", "oasis-a", "oasis-b"]
    # a held-out map also present in a folder is rendered once
    again = between.between_map_paths([paths["oasis-a"]], [tmp_path / "more"])
    assert [between.map_name(p) for p in again] == ["oasis-a", "oasis-b"]


def test_between_study_end_to_end_with_stand_in_engines(tmp_path):
    from mri_hsynex.validate.study import Runner, load_label_map

    paths = _write_maps(tmp_path)
    maps = [load_label_map(p) for p in paths.values()]
    truth = {m.name: float(anatomy.label_volumes(m.labels, m.voxel_mm3)[813]) for m in maps}
    assert truth["sub-08"] > truth["oasis-a"] > truth["oasis-b"]
    design = between.BetweenDesign(acquisitions=(Acquisition("T1"),
                                                 Acquisition("FLAIR", 5.0, "axial")))
    engines = {"hsynex": _LinearEngine(truth), "teacher": _LinearEngine(truth, constant=True)}
    runner = Runner(tmp_path / "cache", engines, {"hsynex": "a", "teacher": "b"},
                    log=lambda msg: None)
    records = [r for m in maps for r in between.run_between(runner, m, design)]
    # the teacher only on the T1-like 1 mm renders
    # T1 1 mm also skull-stripped (the default design's names), for hsynex only
    assert sorted((r["engine"], r["acq"]) for r in records if r["map"] == "sub-08") == \
        [("hsynex", "FLAIR_5mm_axial"), ("hsynex", "T1_1mm"), ("hsynex", "T1_1mm_stripped"),
         ("teacher", "T1_1mm")]
    assert {r["source"] for r in records} == {"labels", "more"}
    fit = between.between_fit(records, "hsynex", "T1_1mm")
    assert fit["n"] == 3 and fit["r"] == pytest.approx(1.0) and fit["slope"] == \
        pytest.approx(0.8)
    expected = np.mean([(0.8 * t + 100.0) / t for t in truth.values()])
    assert fit["ratio"] == pytest.approx(expected)
    assert np.isnan(between.between_fit(records, "teacher", "T1_1mm")["r"])  # no spread
    assert between.between_fit(records, "hsynex", "T1_1mm", source="more")["n"] == 2
    summary = between.between_summary(records)
    assert summary["worst_r"] == pytest.approx(1.0) and summary["n_acq"] == 3
    # the stand-in ignores the image, so stripping changes nothing
    (strip,) = between.stripping_changes(records)
    assert strip["acq"] == "T1_1mm_stripped" and strip["n"] == 3
    assert strip["mean_abs"] == pytest.approx(0.0)

    text = between.between_section(records, 10)
    assert text.startswith("## 10. Between subjects on renders")
    assert "| hsynex | T1_1mm | all | 3 | 1.00 | 0.80 |" in text
    assert "| teacher | T1_1mm | all | 3 | – | – |" in text
    assert "| hsynex | T1_1mm_stripped | 3 | +0.0 % | 0.0 % | +0.0 % |" in text
    assert between.between_section([], 10) == ""

    # a second run is served from the cache: no engine is called
    calls = engines["hsynex"].calls
    again = [r for m in maps for r in between.run_between(runner, m, design)]
    assert engines["hsynex"].calls == calls and len(again) == len(records)
    assert json.dumps(again, sort_keys=True) == json.dumps(records, sort_keys=True)


def test_skull_strip_keeps_the_brain_in_world_space(tmp_path):
    """The stripped image keeps every voxel of the brain (and one voxel around it) on the
    image's own, thicker grid, zeroes the head shells beyond, and never touches the values."""
    from mri_hsynex.labels import SUBUNIT_IDS
    from mri_hsynex.validate import contrasts
    from mri_hsynex.validate.engines import nearest_onto
    from mri_hsynex.validate.study import load_label_map

    lmap = load_label_map(_write_maps(tmp_path)["sub-08"])
    assert np.isin(lmap.labels, (9000, 9001, 9002)).any()  # shells drawn around the brain
    image, affine = contrasts.synthesize(lmap.labels, lmap.affine,
                                         Acquisition("T2", 3.0, "axial"), seed=3)
    stripped = contrasts.skull_strip(image, affine, lmap.labels, lmap.affine)
    assert stripped.shape == image.shape and stripped.dtype == image.dtype
    on_image = nearest_onto(lmap.labels, lmap.affine, image.shape, affine)
    hyp = np.isin(on_image, SUBUNIT_IDS)
    assert hyp.any() and np.array_equal(stripped[hyp], image[hyp])
    scalp = on_image == 9002
    assert scalp.any() and not stripped[scalp].any()
    kept = stripped != 0
    assert np.array_equal(stripped[kept], image[kept])
