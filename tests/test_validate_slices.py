"""Slice direction and phase (section 11 of validation.md): which images the study renders, its
caching, and its arithmetic end to end with a stand-in engine whose volume is a known function of
the slice phase."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from synthetic import tiny_affine, tiny_label_map

from mri_hsynex.validate import contrasts, slices


def _write_map(tmp_path):
    import nibabel as nib

    path = tmp_path / "sub-08_labels.nii.gz"
    nib.save(nib.Nifti1Image(np.pad(tiny_label_map((40, 40, 40)), 6).astype(np.int32),
                             tiny_affine()), path)
    return path


class _PhaseEngine:
    """Volume 900 + 10 x the slice phase (read from the image's name); posteriors 1,000 mm3
    whatever the phase. Records the slice axis and thickness of every image it sees."""

    def __init__(self):
        self.seen: list[tuple[str, int, float, np.ndarray]] = []

    def segment(self, image_path, aseg_path=None, centre_world=None):
        import nibabel as nib

        from mri_hsynex.validate.engines import Segmentation, _with_groupings

        image = nib.load(image_path)
        sizes = contrasts.voxel_sizes(image.affine)
        phase = float(re.search(r"phase([\d.]+)mm", str(image_path)).group(1))
        self.seen.append((str(image_path), int(np.argmax(sizes)), float(sizes.max()),
                          image.affine.copy()))
        whole = 900.0 + 10.0 * phase
        volumes = _with_groupings({801: whole / 2, 806: whole / 2})
        posterior = _with_groupings({801: 500.0, 806: 500.0})
        return Segmentation(np.zeros((1, 1, 1), np.int32), np.eye(4), volumes, 0.01,
                            variants={"pipeline": volumes, "posterior volume": posterior})


def test_phase_spread_arithmetic():
    spread = slices.phase_spread([900.0, 910.0, 920.0, 930.0, 940.0])
    assert spread["mean"] == pytest.approx(920.0)
    assert spread["cv"] == pytest.approx(np.std([900, 910, 920, 930, 940]) / 920.0)
    assert spread["range"] == pytest.approx(40.0 / 920.0) and spread["n"] == 5
    assert np.isnan(slices.phase_spread([float("nan")])["cv"])


def test_slice_study_end_to_end_with_a_stand_in_engine(tmp_path):
    from mri_hsynex.validate.study import Runner, load_label_map

    lmap = load_label_map(_write_map(tmp_path))
    design = slices.SliceDesign(contrasts=("T1",), orientations=("axial", "sagittal"),
                                phases_mm=(0.0, 2.0, 4.0))
    engine = _PhaseEngine()
    runner = Runner(tmp_path / "cache", {"hsynex": engine}, {"hsynex": "a"},
                    log=lambda msg: None)
    records = slices.run_slices(runner, lmap, design)
    assert [r["acq"] for r in records] == [
        f"T1_5mm_{o}_phase{p}mm" for o in ("axial", "sagittal") for p in (0, 2, 4)]
    # every image has 5 mm slices along the direction's voxel axis, moved by the phase in world
    axes = {o: contrasts.slice_axis(lmap.affine, o) for o in ("axial", "sagittal")}
    for (_, axis, size, _), record in zip(engine.seen, records):
        assert axis == axes[record["orientation"]] and size == pytest.approx(5.0)
    first = {r["orientation"]: a for (_, _, _, a), r in zip(engine.seen, records)
             if r["phase_mm"] == 0.0}
    for (_, _, _, affine), r in zip(engine.seen, records):
        step = lmap.affine[:3, axes[r["orientation"]]]
        assert np.allclose(affine[:3, 3] - first[r["orientation"]][:3, 3], step * r["phase_mm"])

    rows = slices.slice_rows(records)
    assert [(r["orientation"], r["n"]) for r in rows] == [("axial", 3), ("sagittal", 3)]
    expected = slices.phase_spread([900.0, 920.0, 940.0])
    assert rows[0]["cv"] == pytest.approx(expected["cv"])
    assert rows[0]["whole_dice"] == 0.0  # the stand-in labels nothing
    assert slices.slice_rows(records, "posterior volume")[0]["cv"] == pytest.approx(0.0)

    text = slices.slices_section(records, 11)
    assert text.startswith("## 11. Slice direction and phase")
    assert "| sub-08 | T1 | 5 mm sagittal | 3 | 0.000 | 0.000 | 920 (" in text
    assert "| 1.8 % | 4.3 % | 0.0 % | 0.0 % |" in text
    assert slices.slices_section([], 11) == ""

    # a second run is served from the cache: no engine call
    calls = len(engine.seen)
    again = slices.run_slices(runner, lmap, design)
    assert len(engine.seen) == calls
    assert json.dumps(again, sort_keys=True) == json.dumps(records, sort_keys=True)
