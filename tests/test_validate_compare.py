"""validate.compare: the targets of a run as data and the before / after table of two runs."""

from __future__ import annotations

import json

import pytest

from mri_hsynex.errors import HsynexError
from mri_hsynex.validate import compare
from mri_hsynex.validate.tables import Target


def _record(rows, networks="net"):
    return compare.targets_record({13: [Target(*r) for r in rows]}, networks, "full",
                                  "2026-12-07 22:00 UTC")


BEFORE = _record([("sensitivity", "≥ 0.8", 0.85, True), ("AUROC", "≥ 0.9", 0.863, False),
                  ("demo", "0.8–1.2", None, None), ("old row", "≥ 1", 1.0, True)], "shipped")
AFTER = _record([("sensitivity", "≥ 0.8", 0.75, False), ("AUROC", "≥ 0.9", 0.91, True),
                 ("demo", "0.8–1.2", 1.4, False), ("new row", "≥ 1", float("nan"), None)],
                "candidate")


def test_rows_follow_each_target_and_its_status():
    rows = {r[1]: r for r in compare.comparison_rows(BEFORE, AFTER)}
    assert rows["sensitivity"][3:] == ("0.850 (met)", "0.750 (missed)", "-0.100",
                                       "**now missed**")
    assert rows["AUROC"][5:] == ("+0.047", "**now met**")
    assert rows["demo"][3:] == ("– (not measured)", "1.400 (missed)", "–", "**now missed**")
    assert rows["new row"][3:] == ("–", "– (not measured)", "–", "new")
    assert rows["old row"][-1] == "gone"
    # the later run's order first, then the rows it no longer has
    assert [r[1] for r in compare.comparison_rows(BEFORE, AFTER)][-1] == "old row"


def test_same_run_moves_nothing():
    assert {r[-1] for r in compare.comparison_rows(AFTER, AFTER)} == {"same"}
    section = compare.comparison_section(AFTER, AFTER, "docs")
    assert "Status moved on 0 of 4 targets" in section


def test_targets_file_round_trip(tmp_path):
    path = compare.write_targets(tmp_path / compare.TARGETS_FILE, AFTER)
    assert not list(tmp_path.glob(".tmp-*"))
    loaded = compare.load_targets(tmp_path)  # the folder finds its targets.json
    assert loaded == json.loads(path.read_text())
    assert loaded["targets"][3]["value"] is None  # NaN is written as null (valid JSON)


def test_numpy_values_are_written_as_json(tmp_path):
    import numpy as np

    record = _record([("AUROC", "≥ 0.9", np.float64(0.91), np.bool_(True))])
    compare.write_targets(tmp_path / "t.json", record)
    assert compare.load_targets(tmp_path / "t.json")["targets"][0]["met"] is True


def test_bad_targets_files_are_user_errors(tmp_path):
    with pytest.raises(HsynexError, match="no such file"):
        compare.load_targets(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(HsynexError, match="cannot read"):
        compare.load_targets(bad)
    bad.write_text(json.dumps({"targets": []}))
    with pytest.raises(HsynexError, match="not a targets file"):
        compare.load_targets(bad)


def test_command_prints_the_table_or_one_error_line(tmp_path, capsys):
    compare.write_targets(tmp_path / "a.json", BEFORE)
    compare.write_targets(tmp_path / "b.json", AFTER)
    assert compare.main([str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| issue | target |") and "**now met**" in out
    assert compare.main([str(tmp_path / "a.json"), str(tmp_path / "absent")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ERROR: ") and "absent" in err[0]


def test_compare_is_refused_with_sensitivity_only(tmp_path):
    from mri_hsynex.validate.report import Options, run_validation

    compare.write_targets(tmp_path / "targets.json", BEFORE)
    opts = Options(out_dir=tmp_path / "out", sensitivity_only=True, compare=tmp_path)
    with pytest.raises(HsynexError, match="--compare"):
        run_validation(opts, engines={})
    assert not (tmp_path / "out").exists()
