"""`mri_hsynex table`: the asegstats2table layout over many subjects (mri_hsynex.cohort.table)."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pandas as pd
import pytest
from test_cohort_subject import FAKE_VOLUMES, fake_stats_text

from mri_hsynex import constants as C
from mri_hsynex.cli import table as cli
from mri_hsynex.cohort import groupstats as gs
from mri_hsynex.cohort import table as tb
from mri_hsynex.errors import HsynexError
from mri_hsynex.labels import ALL_OUTPUT_ROWS

STRUCTS = [row.name for row in ALL_OUTPUT_ROWS]
ETIVS = {"s1": 1.5e6, "s2": 1.6e6, "s3": 1.4e6}


def aseg_stats_text(etiv: float) -> str:
    return ("# Title Segmentation Statistics\n"
            "# Measure BrainSeg, BrainSegVol, Brain Segmentation Volume, 1200000.0, mm^3\n"
            f"# Measure EstimatedTotalIntraCranialVol, eTIV, Estimated Total Intracranial "
            f"Volume, {etiv:.6f}, mm^3\n"
            "# ColHeaders  Index SegId NVoxels Volume_mm3 StructName\n"
            "  1   4      7347     7347.0  Left-Lateral-Ventricle\n")


@pytest.fixture()
def sd(tmp_path):
    root = tmp_path / "subjects"
    for k, (name, etiv) in enumerate(ETIVS.items(), start=1):
        (root / name / "stats").mkdir(parents=True)
        (root / name / C.SUBJECT_STATS).write_text(fake_stats_text(name, scale=float(k)))
        (root / name / C.SUBJECT_ASEG_STATS).write_text(aseg_stats_text(etiv))
    (root / "fsaverage" / "mri").mkdir(parents=True)  # not a subject with hsynex stats
    return root


def test_layout_and_values(sd):
    table = tb.build_table(sd, ["s1", "s2", "s3"])
    text = tb.format_table(table)
    header = text.splitlines()[0].split("\t")
    assert header[0] == "Measure:volume"
    assert header[1:] == STRUCTS + ["EstimatedTotalIntraCranialVol"]
    assert [line.split("\t")[0] for line in text.splitlines()[1:]] == ["s1", "s2", "s3"]
    frame = pd.read_csv(io.StringIO(text), sep="\t", index_col=0)
    assert frame.loc["s2", STRUCTS[0]] == pytest.approx(FAKE_VOLUMES[0] * 2, abs=0.05)
    assert frame.loc["s3", "Hypothalamus-Whole"] == pytest.approx(sum(FAKE_VOLUMES) * 3,
                                                                  abs=0.2)
    assert frame.loc["s1", "EstimatedTotalIntraCranialVol"] == pytest.approx(1.5e6)


def test_etiv_divides_and_nvoxels(sd):
    vol = tb.build_table(sd, ["s1", "s2"]).frame
    ratio = tb.build_table(sd, ["s1", "s2"], etiv=True).frame
    np.testing.assert_allclose(ratio[STRUCTS], vol[STRUCTS].div(vol[tb.ETIV_COLUMN], axis=0))
    np.testing.assert_allclose(ratio[tb.ETIV_COLUMN], vol[tb.ETIV_COLUMN])
    nvox = tb.build_table(sd, ["s1"], meas="nvoxels")
    assert tb.format_table(nvox).startswith("Measure:nvoxels\t")
    assert nvox.frame.loc["s1", STRUCTS[0]] == round(FAKE_VOLUMES[0])
    with pytest.raises(HsynexError, match="--meas volume"):
        tb.build_table(sd, ["s1"], meas="nvoxels", etiv=True)


def test_missing_subjects_named(sd, tmp_path, capsys):
    out = tmp_path / "t.txt"
    code = cli.main(["--sd", str(sd), "--subjects", "s1", "ghost", "s3", "--tablefile", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "missing subject ghost: no such subject folder" in err
    assert "table not written" in err and not out.exists()
    (sd / "s3" / C.SUBJECT_STATS).unlink()
    assert cli.main(["--sd", str(sd), "--subjects", "s1", "ghost", "s3", "--skip",
                     "--tablefile", str(out)]) == 0
    err = capsys.readouterr().err
    assert "WARNING: missing subject ghost" in err and "missing subject s3: no stats/" in err
    assert [line.split("\t")[0] for line in out.read_text().splitlines()] == [
        "Measure:volume", "s1"]


def test_no_aseg_stats_gives_nan_etiv_or_missing_with_etiv(sd, tmp_path, capsys):
    (sd / "s2" / C.SUBJECT_ASEG_STATS).unlink()
    table = tb.build_table(sd, ["s1", "s2"])
    assert table.no_etiv == ["s2"] and np.isnan(table.frame.loc["s2", tb.ETIV_COLUMN])
    assert "\tnan" in tb.format_table(table).splitlines()[2]
    with_etiv = tb.build_table(sd, ["s1", "s2"], etiv=True)
    assert "aseg.stats" in with_etiv.missing["s2"] and list(with_etiv.frame.index) == ["s1"]
    assert cli.main(["--sd", str(sd), "--subjects", "s1", "s2",
                     "--tablefile", str(tmp_path / "x.txt")]) == 0
    assert "WARNING: no stats/aseg.stats for s2" in capsys.readouterr().err


def test_qc_flagged_subjects_are_kept_and_named(sd, tmp_path, capsys):
    """A subject whose stats file carries hsynex's QC flag stays in the table (the user decides)
    and is named with the reasons; a file with '# QCFlag no' or none is not."""
    path = sd / "s2" / C.SUBJECT_STATS
    path.write_text(path.read_text().replace(
        "# NRows", "# QCFlag yes \n# QCReasons 20% of the segmentation lies next to zeros \n"
        "# NRows"))
    path = sd / "s3" / C.SUBJECT_STATS
    path.write_text(path.read_text().replace("# NRows", "# QCFlag no \n# NRows"))
    table = tb.build_table(sd, ["s1", "s2", "s3"])
    assert table.flagged == {"s2": "20% of the segmentation lies next to zeros"}
    assert list(table.frame.index) == ["s1", "s2", "s3"]
    assert cli.main(["--sd", str(sd), "--subjects", "s1", "s2", "s3",
                     "--tablefile", str(tmp_path / "t.txt")]) == 0
    err = capsys.readouterr().err
    assert "WARNING: QC flag raised for s2 (kept in the table" in err
    assert "20% of the segmentation lies next to zeros" in err and "for s3" not in err


def test_cli_options(sd, tmp_path, monkeypatch):
    out = tmp_path / "t.csv"
    monkeypatch.setenv("SUBJECTS_DIR", str(sd))
    # no subject list: every subject with the stats file (fsaverage has none)
    assert cli.main(["--delimiter", "comma", "--tablefile", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("Measure:volume,") and [x.split(",")[0] for x in lines[1:]] == [
        "s1", "s2", "s3"]
    listing = tmp_path / "subjects.txt"
    listing.write_text("# cohort\ns3\n\ns1\n")
    assert cli.main(["--subjectsfile", str(listing), "--transpose", "--tablefile", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "Measure:volume\ts3\ts1"
    assert [x.split("\t")[0] for x in lines[1:]] == STRUCTS + [tb.ETIV_COLUMN]
    assert cli.main([]) == 1
    with pytest.raises(SystemExit):  # --subjects and --subjectsfile together: usage error
        cli.main(["--subjects", "s1", "--subjectsfile", str(listing), "--tablefile", str(out)])


def test_table_feeds_groupstats(sd, tmp_path):
    for k in range(4, 9):  # more subjects so that each group has a few
        name = f"s{k}"
        (sd / name / "stats").mkdir(parents=True)
        (sd / name / C.SUBJECT_STATS).write_text(fake_stats_text(name, scale=1 + 0.1 * k))
        (sd / name / C.SUBJECT_ASEG_STATS).write_text(aseg_stats_text(1.5e6 + 1e4 * k))
    out = tmp_path / "t.txt"
    assert cli.main(["--sd", str(sd), "--tablefile", str(out)]) == 0
    groups = tmp_path / "groups.csv"
    groups.write_text("subject,group\n" + "".join(
        f"s{k},{'a' if k % 2 else 'b'}\n" for k in range(1, 9)))
    comp, paths = gs.run_groupstats(out, groups, tmp_path / "g")
    assert list(comp.results["structure"]) == STRUCTS and paths["figure"].is_file()


def test_stats_parse_errors(tmp_path):
    bad = tmp_path / "bad.stats"
    bad.write_text("# header only\n")
    with pytest.raises(HsynexError, match="no rows"):
        tb.read_structure_values(bad)
    bad.write_text("1 801 x y\n")
    with pytest.raises(HsynexError, match="not a stats row"):
        tb.read_structure_values(bad)


@pytest.mark.realdata
def test_real_aseg_stats_etiv_and_rows(shared_data, tmp_path):
    """eTIV of the real FreeSurfer 6.0 and 7.2 subjects, and asegstats2table's row rules on
    their aseg.stats."""
    sd = tmp_path / "sd"
    expected = {}
    for name in ("sub-01", "bert"):
        src = shared_data / "subjects" / name / C.SUBJECT_ASEG_STATS
        (sd / name / "stats").mkdir(parents=True)
        shutil.copy(src, sd / name / C.SUBJECT_ASEG_STATS)
        (sd / name / C.SUBJECT_STATS).write_text(fake_stats_text(name))
        line = [x for x in src.read_text().splitlines() if "EstimatedTotalIntraCranialVol" in x]
        expected[name] = float(line[0].split(",")[3])
        rows = tb.read_structure_values(src)
        assert rows["Left-Lateral-Ventricle"] > 1000 and "Brain-Stem" in rows
    table = tb.build_table(sd, ["sub-01", "bert"])
    assert table.frame.loc["sub-01", tb.ETIV_COLUMN] == pytest.approx(1516267.932629)
    assert table.frame.loc["bert", tb.ETIV_COLUMN] == pytest.approx(1520021.264474)
    for name, value in expected.items():
        assert table.frame.loc[name, tb.ETIV_COLUMN] == pytest.approx(value)
