"""mri_hsynex.stats: the mri_segstats layout, asegstats2table's column rules, eTIV across versions.

``asegstats_rows`` below re-implements FreeSurfer's asegstats2table rule on its own (it does not
use ``read_stats``): every line without '#' is a data row, whitespace-separated, column 2 SegId,
3 NVoxels, 4 Volume_mm3, 5 StructName.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from mri_hsynex.errors import HsynexError
from mri_hsynex.labels import ALL_OUTPUT_ROWS, GROUPINGS, SUBUNIT_IDS
from mri_hsynex.stats import (
    LUT_PATH,
    Measure,
    StatsRow,
    read_etiv,
    read_stats,
    stats_text,
    write_stats,
)
from mri_hsynex.volumes import stats_rows, structure_volumes

# header lines of mri_segstats, in the order it writes them
HEADER_ORDER = ("# Title", "# generating_program", "# cmdline", "# sysname", "# hostname",
                "# user", "# anatomy_type volume", "# SUBJECTS_DIR", "# subjectname",
                "# Measure", "# SegVolFile", "# ColorTable", "# VoxelVolume_mm3", "# TableCol",
                "# NRows", "# NTableCols", "# ColHeaders")
ETIV = 1543210.987654


def asegstats_rows(text: str) -> list[tuple[int, int, float, str]]:
    """(SegId, NVoxels, Volume_mm3, StructName) of every line without '#' (asegstats2table)."""
    rows = []
    for line in text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"):
        if "#" in line:
            continue
        fields = line.split()
        assert len(fields) >= 5, f"data row with fewer than 5 columns: {line!r}"
        rows.append((int(fields[1]), int(fields[2]), float(fields[3]), fields[4]))
    return rows


def header_value(text: str, key: str) -> str:
    match = re.search(rf"^# {key}\s+(.*?)\s*$", text, flags=re.MULTILINE)
    assert match, f"no '# {key}' line"
    return match.group(1)


def tiny_outputs() -> tuple[np.ndarray, np.ndarray]:
    """A segmentation with every subunit and matching soft posteriors (11 channels)."""
    rng = np.random.default_rng(0)
    seg = np.zeros((12, 12, 12), np.int32)
    for k, label in enumerate(SUBUNIT_IDS):
        seg[k, : k + 2, :3] = label
    post = rng.random((12, 12, 12, 11)).astype(np.float32)
    post /= post.sum(axis=-1, keepdims=True)
    return seg, post


def write_example(path: Path, measures=(Measure("EstimatedTotalIntraCranialVol", "eTIV",
                                                "Estimated Total Intracranial Volume", ETIV),),
                  voxel_mm3: float = 0.125) -> dict[int, tuple[int, float]]:
    seg, post = tiny_outputs()
    volumes = structure_volumes(seg, post, voxel_mm3)
    write_stats(path, stats_rows(volumes), subject="sub-01", seg_file="mri/seg.synex.mgz",
                voxel_volume_mm3=voxel_mm3, cmdline="mri_hsynex segment --i a.nii.gz --o b.mgz",
                subjects_dir="/data/subjects", measures=measures, in_vol_file="mri/norm.mgz")
    return volumes


# --- files written by hsynex ----------------------------------------------------------------------
def test_written_file_parses_with_asegstats2table_rules(tmp_path):
    path = tmp_path / "hypothalamic_subunits.synex.v1.stats"
    volumes = write_example(path)
    text = path.read_text()
    rows = asegstats_rows(text)
    assert [r[0] for r in rows] == list(range(801, 814))
    assert [r[3] for r in rows] == [row.name for row in ALL_OUTPUT_ROWS]
    for seg_id, nvoxels, volume, _ in rows:
        assert nvoxels == volumes[seg_id][0]
        assert volume == pytest.approx(volumes[seg_id][1], abs=0.05 + 1e-9)
    # real voxel counts: subunit k has (k + 2) * 3 voxels
    assert [r[1] for r in rows[:10]] == [(k + 2) * 3 for k in range(10)]
    # groupings are the sums of their members (voxels exactly, volumes to the printed 0.1)
    by_id = {r[0]: r for r in rows}
    for group, members in GROUPINGS.items():
        assert by_id[group][1] == sum(by_id[m][1] for m in members)
        assert by_id[group][2] == pytest.approx(sum(volumes[m][1] for m in members), abs=0.05)


def test_written_file_has_every_segstats_header_line(tmp_path):
    path = tmp_path / "x.stats"
    write_example(path)
    text = path.read_text()
    lines = text.splitlines()
    positions = []
    for prefix in HEADER_ORDER:
        found = [i for i, line in enumerate(lines) if line.startswith(prefix)]
        assert found, f"missing header line {prefix!r}"
        positions.append(found[0])
    assert positions == sorted(positions), "header lines out of mri_segstats order"
    assert header_value(text, "Title") == "Segmentation Statistics"
    assert header_value(text, "subjectname") == "sub-01"
    assert header_value(text, "SUBJECTS_DIR") == "/data/subjects"
    assert header_value(text, "SegVolFile") == "mri/seg.synex.mgz"
    assert header_value(text, "ColorTable") == str(LUT_PATH)
    assert header_value(text, "VoxelVolume_mm3") == "0.125"
    assert header_value(text, "cmdline").startswith("mri_hsynex segment")
    n_rows = len(asegstats_rows(text))
    assert int(header_value(text, "NRows")) == n_rows == 13
    col_headers = header_value(text, "ColHeaders").split()
    assert col_headers[:5] == ["Index", "SegId", "NVoxels", "Volume_mm3", "StructName"]
    assert int(header_value(text, "NTableCols")) == len(col_headers)
    table_cols = re.findall(r"^# TableCol\s+(\d+) ColHeader (\S+)", text, flags=re.MULTILINE)
    assert [(int(k), name) for k, name in table_cols] == list(enumerate(col_headers, start=1))
    # the data rows have as many columns as ColHeaders, and Index counts 1..NRows
    data = [line.split() for line in lines if "#" not in line]
    assert all(len(fields) == len(col_headers) for fields in data)
    assert [int(fields[0]) for fields in data] == list(range(1, n_rows + 1))


def test_measure_lines_only_when_given(tmp_path):
    with_etiv, without = tmp_path / "a.stats", tmp_path / "b.stats"
    write_example(with_etiv)
    write_example(without, measures=())
    measure = [line for line in with_etiv.read_text().splitlines()
               if line.startswith("# Measure")]
    assert measure == ["# Measure EstimatedTotalIntraCranialVol, eTIV, Estimated Total "
                       f"Intracranial Volume, {ETIV:f}, mm^3"]
    assert "# Measure" not in without.read_text()
    assert read_etiv(with_etiv) == pytest.approx(ETIV, abs=1e-6)
    with pytest.raises(HsynexError):
        read_etiv(without)


def test_read_stats_round_trip(tmp_path):
    path = tmp_path / "x.stats"
    volumes = write_example(path)
    parsed = read_stats(path)
    assert [r.seg_id for r in parsed.rows] == list(range(801, 814))
    for row in parsed.rows:
        assert row.nvoxels == volumes[row.seg_id][0]
        assert row.volume_mm3 == pytest.approx(volumes[row.seg_id][1], abs=0.05 + 1e-9)
    assert parsed.measures["eTIV"] == parsed.measures["EstimatedTotalIntraCranialVol"]
    assert parsed.header["subjectname"] == "sub-01"
    assert parsed.header["NRows"] == "13"
    # the same rows as the independent asegstats2table rule
    assert [(r.seg_id, r.nvoxels, r.volume_mm3, r.name) for r in parsed.rows] == \
        asegstats_rows(path.read_text())


def test_qc_flag_lines_round_trip(tmp_path):
    """The segmentation's QC flag travels in the header (# QCFlag, # QCReasons on one line), the
    rows still parse with asegstats2table's rule, and files without it read as None."""
    seg, post = tiny_outputs()
    rows = stats_rows(structure_volumes(seg, post, 1.0))
    flagged, clean, old = tmp_path / "f.stats", tmp_path / "c.stats", tmp_path / "o.stats"
    common = dict(subject="s", seg_file="seg.mgz", voxel_volume_mm3=1.0, cmdline="x")
    write_stats(flagged, rows, qc_reasons=["subunit missing: L_hypothalamus_posterior",
                                           "12% of the segmentation lies\nnext to zeros"],
                **common)
    write_stats(clean, rows, qc_reasons=[], **common)
    write_stats(old, rows, **common)
    assert read_stats(flagged).qc_flag is True
    assert read_stats(flagged).qc_reasons == ("subunit missing: L_hypothalamus_posterior; 12% of "
                                              "the segmentation lies next to zeros")
    assert read_stats(clean).qc_flag is False and read_stats(clean).qc_reasons == ""
    assert read_stats(old).qc_flag is None and "QCFlag" not in old.read_text()
    assert asegstats_rows(flagged.read_text()) == asegstats_rows(old.read_text())


def test_header_values_stay_on_one_line():
    rows = [StatsRow(1, 801, 3, 2.5, "L_hypothalamus_anterior_inferior")]
    text = stats_text(rows, subject="odd\nname", seg_file="a\nb.mgz", voxel_volume_mm3=1.0,
                      cmdline="mri_hsynex segment --i 'two\nlines.nii'")
    assert len(asegstats_rows(text)) == 1
    assert header_value(text, "subjectname") == "odd name"


@pytest.mark.parametrize("name", ["two words", "has#hash", ""])
def test_structure_names_must_parse(name):
    with pytest.raises(ValueError):
        stats_text([StatsRow(1, 801, 1, 1.0, name)], subject="s", seg_file="seg.mgz",
                   voxel_volume_mm3=1.0, cmdline="x")


def test_empty_rows_and_defaults():
    text = stats_text([], subject=None, seg_file="seg.mgz", voxel_volume_mm3=1.0, cmdline="x")
    assert asegstats_rows(text) == []
    assert header_value(text, "NRows") == "0"
    assert header_value(text, "subjectname") == "unknown"


def test_write_stats_errors_and_atomicity(tmp_path):
    with pytest.raises(HsynexError):
        write_stats(tmp_path / "missing" / "x.stats", [], subject="s", seg_file="seg.mgz",
                    voxel_volume_mm3=1.0, cmdline="x")
    target = tmp_path / "x.stats"
    target.write_text("old")
    with pytest.raises(ValueError):
        write_stats(target, [StatsRow(1, 801, 1, 1.0, "bad name")], subject="s",
                    seg_file="seg.mgz", voxel_volume_mm3=1.0, cmdline="x")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.stats"]


# --- reading -------------------------------------------------------------------------------------
def test_read_stats_errors(tmp_path):
    with pytest.raises(HsynexError) as info:
        read_stats(tmp_path / "none.stats")
    assert info.value.path == str(tmp_path / "none.stats")
    bad = tmp_path / "bad.stats"
    bad.write_text("# Title Segmentation Statistics\n  1  801  12\n")
    with pytest.raises(HsynexError):
        read_stats(bad)
    binary = tmp_path / "binary.stats"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 20)
    with pytest.raises(HsynexError):
        read_stats(binary)
    with pytest.raises(HsynexError):
        read_stats(tmp_path)  # a directory


@pytest.mark.parametrize("line,expected", [
    # FreeSurfer 6.0 and 7.x
    ("# Measure EstimatedTotalIntraCranialVol, eTIV, Estimated Total Intracranial Volume, "
     "1602572.131295, mm^3", 1602572.131295),
    # FreeSurfer 5.x (before eTIV got its long name)
    ("# Measure IntraCranialVol, ICV, Intracranial Volume, 1418367.420000, mm^3", 1418367.42),
    ("# Measure eTIV, eTIV, Estimated Total Intracranial Volume, 1500000, mm^3", 1500000.0),
])
def test_etiv_variants(tmp_path, line, expected):
    path = tmp_path / "aseg.stats"
    path.write_text("# Title Segmentation Statistics \n"
                    "# Measure BrainSegVol-to-eTIV, BrainSegVol-to-eTIV, Ratio of BrainSegVol "
                    "to eTIV, 0.760740, unitless\n"
                    f"{line}\n# NRows 1 \n  1   4     11076     3926.1  Left-Lateral-Ventricle\n")
    assert read_etiv(path) == pytest.approx(expected)
    assert read_stats(path).rows[0] == StatsRow(1, 4, 11076, 3926.1, "Left-Lateral-Ventricle")


# --- real FreeSurfer files (../shared/data) ------------------------------------------------------
def real_stats_files(shared_data: Path) -> list[Path]:
    files = sorted((shared_data / "lut").glob("example_aseg_FS*.stats"))
    files += sorted((shared_data / "subjects").glob("*/stats/aseg.stats"))
    return files


@pytest.mark.realdata
def test_real_aseg_stats_parse_and_etiv(shared_data):
    files = real_stats_files(shared_data)
    assert len(files) >= 3
    versions = {p.name for p in files if p.name.startswith("example_aseg_FS")}
    assert versions >= {"example_aseg_FS5.3-HCP.stats", "example_aseg_FS6.0.stats",
                        "example_aseg_FS7.2.stats"}
    for path in files:
        text = path.read_text()
        rows = asegstats_rows(text)
        assert len(rows) == int(header_value(text, "NRows")), path
        assert len({r[0] for r in rows}) == len(rows), path  # one row per SegId
        assert all(r[1] >= 0 and r[2] >= 0 for r in rows), path
        names = {r[3] for r in rows}
        assert {"Left-Lateral-Ventricle", "Left-VentralDC", "3rd-Ventricle"} <= names, path
        parsed = read_stats(path)
        assert [(r.seg_id, r.nvoxels, r.volume_mm3, r.name) for r in parsed.rows] == rows, path
        # eTIV, found here independently with a regex on the Measure line
        match = re.search(r"^# Measure EstimatedTotalIntraCranialVol, eTIV, [^,]*, ([0-9.]+),",
                          text, flags=re.MULTILINE)
        assert match, path
        assert read_etiv(path) == pytest.approx(float(match.group(1)), rel=1e-12), path
        assert 1.0e6 < read_etiv(path) < 2.2e6, path


@pytest.mark.realdata
def test_hsynex_file_reads_like_a_real_one(shared_data, tmp_path):
    """Our file and FreeSurfer's give the same kind of records to the same parser."""
    real = real_stats_files(shared_data)[0]
    ours = tmp_path / "ours.stats"
    write_example(ours)
    for path in (real, ours):
        text = path.read_text()
        assert header_value(text, "ColHeaders").split()[:5] == \
            ["Index", "SegId", "NVoxels", "Volume_mm3", "StructName"]
        assert header_value(text, "anatomy_type") == "volume"
        assert asegstats_rows(text)
