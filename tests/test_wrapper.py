"""The bash wrapper ``mri_segment_hypothalamus_synex``: flag checking, how it delegates to
``mri_hsynex`` (with a recording stand-in), and the "Must show" end-to-end runs on a temporary
SUBJECTS_DIR (a tiny synthetic one always; one built from ../shared/data/subjects when present)
with the real engine and tiny random-weight networks."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mri_hsynex import constants as C

REPO = Path(__file__).resolve().parents[1]
WRAPPER = REPO / "freesurfer_wrappers" / "mri_segment_hypothalamus_synex"
VENV_BIN = Path(sys.executable).parent
SYSTEM_PATH = "/usr/bin:/bin"


def run_wrapper(args, env=None, cwd=None, wrapper=WRAPPER, timeout=600):
    full_env = {**os.environ, "PATH": f"{VENV_BIN}:{SYSTEM_PATH}"}
    full_env.update(env or {})
    return subprocess.run(["bash", str(wrapper), *map(str, args)], env=full_env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


# --- flags, without the engine -------------------------------------------------------------
def test_help_on_no_args_exits_1():
    res = run_wrapper([])
    assert res.returncode == 1 and "--s SUBJ" in res.stdout and "--i IMG --o DIR" in res.stdout
    assert run_wrapper(["--help"]).returncode == 0


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unknown option"),
    (["--threads", "0"], "--threads needs a positive integer: 0"),
    (["--threads", "two"], "--threads needs a positive integer: two"),
    (["--jobs", "-1"], "--jobs needs a positive integer: -1"),
    (["--jobs", "1.5"], "--jobs needs a positive integer"),
    (["--dask-scheduler", "localhost"], "--dask-scheduler needs an address"),
    (["--model", "/no/such/models"], "model folder not found: /no/such/models"),
    (["--sd"], "--sd needs a value"),
    (["--i", "x.nii.gz"], "--i IMG needs --o DIR"),
    (["--o", "out"], "--o DIR needs --i IMG"),
    (["--i", "/no/such.nii.gz", "--o", "out"], "input image not found: /no/such.nii.gz"),
    (["--sd", "/no/such/dir"], "SUBJECTS_DIR is not a folder: /no/such/dir"),
])
def test_bad_flags(args, message, tmp_path):
    res = run_wrapper(args, cwd=tmp_path)
    assert res.returncode == 1
    assert res.stderr.startswith("ERROR: ") and message in res.stderr, res.stderr


def test_clinical_and_subject_flags_do_not_mix(tmp_path):
    img = tmp_path / "scan.nii.gz"
    img.write_bytes(b"x")
    res = run_wrapper(["--i", img, "--o", tmp_path / "out", "--s", "bert"])
    assert res.returncode == 1 and "cannot be combined" in res.stderr


def test_needs_subjects_dir(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SUBJECTS_DIR"}
    res = subprocess.run(["bash", str(WRAPPER), "--s", "bert"], env=env, capture_output=True,
                         text=True)
    assert res.returncode == 1 and "SUBJECTS_DIR" in res.stderr
    res = run_wrapper(["--sd", tmp_path, "--s", "../etc"])
    assert res.returncode == 1 and "not a path" in res.stderr


def test_clinical_names_match_constants():
    text = WRAPPER.read_text()
    names = dict(re.findall(r"^(OUT_\w+)=(\S+)$", text, re.M))
    assert names == {
        "OUT_SEG": Path(C.SUBJECT_SEG).name, "OUT_POST": Path(C.SUBJECT_POSTERIORS).name,
        "OUT_VOL": Path(C.SUBJECT_VOLUMES).name, "OUT_STATS": Path(C.SUBJECT_STATS).name,
        "OUT_QC": Path(C.SUBJECT_QC).name,
    }


FAKE_HSYNEX = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$FAKE_ARGS_OUT"
echo "SUBJECTS_DIR=${SUBJECTS_DIR:-}" >> "$FAKE_ARGS_OUT"
exit 3
"""


def _install_copy(folder: Path, with_fake: bool) -> Path:
    """The wrapper copied into ``folder`` (an installed bin/), optionally with a recording
    stand-in for mri_hsynex next to it."""
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / WRAPPER.name
    shutil.copy(WRAPPER, wrapper)
    if with_fake:
        fake = folder / "mri_hsynex"
        fake.write_text(FAKE_HSYNEX)
        fake.chmod(0o755)
    return wrapper


def test_delegates_subject_mode(tmp_path):
    wrapper = _install_copy(tmp_path / "bin", with_fake=True)
    sd = tmp_path / "my subjects"
    sd.mkdir()
    record = tmp_path / "args.txt"
    res = run_wrapper(["--s", "bert", "sub 2", "--sd", sd, "--threads", "2", "--cpu", "--post",
                       "--force", "--jobs", "3", "--dask-scheduler", "tcp://127.0.0.1:8786"],
                      env={"FAKE_ARGS_OUT": str(record)}, wrapper=wrapper)
    assert res.returncode == 3  # the exit status of mri_hsynex is passed on
    args = record.read_text().splitlines()
    assert args[:7] == ["subjects", "--sd", str(sd), "--s", "bert", "sub 2", "--post"]
    assert args[7:14] == ["--force", "--jobs", "3", "--dask-scheduler", "tcp://127.0.0.1:8786",
                          "--threads", "2"]
    assert args[14] == "--cpu" and args[15] == "--cmdline"
    assert args[16].startswith("mri_segment_hypothalamus_synex --s bert sub\\ 2 --sd ")
    assert args[-1] == f"SUBJECTS_DIR={sd}"


def test_delegates_all_subjects_from_environment(tmp_path):
    wrapper = _install_copy(tmp_path / "bin", with_fake=True)
    record = tmp_path / "args.txt"
    run_wrapper(["--force"], env={"FAKE_ARGS_OUT": str(record), "SUBJECTS_DIR": str(tmp_path)},
                wrapper=wrapper)
    args = record.read_text().splitlines()
    assert args[:4] == ["subjects", "--sd", str(tmp_path), "--force"] and "--s" not in args


def test_no_pv_is_passed_on_in_both_modes(tmp_path):
    wrapper = _install_copy(tmp_path / "bin", with_fake=True)
    img = tmp_path / "t2.nii.gz"
    img.write_bytes(b"x")
    for argv in (["--no-pv"], ["--i", img, "--o", tmp_path / "out", "--no-pv"]):
        record = tmp_path / "args.txt"
        run_wrapper(argv, env={"FAKE_ARGS_OUT": str(record), "SUBJECTS_DIR": str(tmp_path)},
                    wrapper=wrapper)
        assert "--no-pv" in record.read_text().splitlines()


def test_delegates_clinical_mode(tmp_path):
    wrapper = _install_copy(tmp_path / "bin", with_fake=True)
    img = tmp_path / "flair 5mm.nii.gz"
    img.write_bytes(b"x")
    out = tmp_path / "out" / "deep"
    record = tmp_path / "args.txt"
    res = run_wrapper(["--i", img, "--o", out, "--post", "--threads", "1"],
                      env={"FAKE_ARGS_OUT": str(record)}, wrapper=wrapper)
    assert res.returncode == 3 and out.is_dir()
    args = record.read_text().splitlines()
    assert args[:3] == ["segment", "--i", str(img)]
    pairs = dict(zip(args[3:13:2], args[4:13:2]))
    assert pairs == {"--o": str(out / Path(C.SUBJECT_SEG).name),
                     "--vol": str(out / Path(C.SUBJECT_VOLUMES).name),
                     "--stats": str(out / Path(C.SUBJECT_STATS).name),
                     "--qc": str(out / Path(C.SUBJECT_QC).name),
                     "--post": str(out / Path(C.SUBJECT_POSTERIORS).name)}
    assert args[13:15] == ["--threads", "1"] and "--aseg" not in args


def test_finds_mri_hsynex_on_path(tmp_path):
    wrapper = _install_copy(tmp_path / "alone", with_fake=False)
    fake_bin = tmp_path / "elsewhere"
    _install_copy(fake_bin, with_fake=True)
    record = tmp_path / "args.txt"
    res = subprocess.run(["bash", str(wrapper), "--sd", str(tmp_path)], capture_output=True,
                         text=True, cwd=tmp_path,
                         env={"PATH": f"{fake_bin}:{SYSTEM_PATH}", "FAKE_ARGS_OUT": str(record)})
    assert res.returncode == 3 and record.read_text().startswith("subjects\n")
    # nothing to find: a clear error
    res = subprocess.run(["bash", str(wrapper), "--sd", str(tmp_path)], capture_output=True,
                         text=True, cwd=tmp_path, env={"PATH": SYSTEM_PATH})
    assert res.returncode == 1 and "cannot find mri_hsynex" in res.stderr


# --- end to end with the real engine -------------------------------------------------------
def _engine_or_skip():
    try:
        from mri_hsynex.predict import OutputPaths, Segmenter  # noqa: F401
    except ImportError as err:
        pytest.skip(f"the segmentation engine is not available yet ({err})")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> Path:
    _engine_or_skip()
    from helpers_models import write_tiny_models

    return write_tiny_models(tmp_path_factory.mktemp("models"))


def _aseg_stats(etiv: float) -> str:
    return ("# Title Segmentation Statistics\n"
            "# Measure EstimatedTotalIntraCranialVol, eTIV, Estimated Total Intracranial "
            f"Volume, {etiv:.6f}, mm^3\n"
            "  1  28   100   100.0  Left-VentralDC\n")


def make_synthetic_subject(sd: Path, name: str, seed: int, etiv: float,
                           voxel_mm: float = 1.0) -> None:
    """A 32^3 subject: mri/norm.mgz (intensities from the tiny label map), mri/aseg.mgz
    (the label map with the subunits merged into the ventral DC, as in a real aseg) and
    stats/aseg.stats with an eTIV line."""
    import nibabel as nib
    from synthetic import tiny_affine, tiny_label_map

    from mri_hsynex.labels import LEFT_SUBUNIT_IDS, RIGHT_SUBUNIT_IDS

    labels = tiny_label_map((32, 32, 32))
    rng = np.random.default_rng(seed)
    means = {0: 5, 2: 110, 41: 110, 28: 90, 60: 90, 14: 30, 10: 95, 49: 95}
    image = np.full(labels.shape, 80.0)
    for label, mean in means.items():
        image[labels == label] = mean
    image[labels >= 801] = 75
    image += rng.normal(0, 3, labels.shape)
    aseg = labels.copy()
    aseg[np.isin(aseg, LEFT_SUBUNIT_IDS)] = 28
    aseg[np.isin(aseg, RIGHT_SUBUNIT_IDS)] = 60
    root = sd / name
    for folder in ("mri", "stats", "scripts"):
        (root / folder).mkdir(parents=True)
    affine = tiny_affine(voxel_mm)
    nib.save(nib.MGHImage(np.clip(image, 0, 255).astype(np.uint8), affine),
             root / "mri/norm.mgz")
    nib.save(nib.MGHImage(aseg.astype(np.int32), affine), root / C.SUBJECT_ASEG)
    (root / C.SUBJECT_ASEG_STATS).write_text(_aseg_stats(etiv))


def link_real_subject(shared_data: Path, sd: Path, name: str) -> None:
    """Symlink the recon-all inputs of a real subject into a fresh subject folder."""
    src = shared_data / "subjects" / name
    for folder in ("mri", "stats", "scripts"):
        (sd / name / folder).mkdir(parents=True)
    for rel in (*C.SUBJECT_INPUTS, C.SUBJECT_ASEG, C.SUBJECT_ASEG_STATS):
        if (src / rel).is_file():
            (sd / name / rel).symlink_to(src / rel)


def check_cohort_end_to_end(sd: Path, first: list[str], refused: str, second: list[str],
                            models: Path, tmp_path: Path) -> None:
    """The "Must show" sequence: wrapper on two subjects + one with recon-all.error, then two
    more; logs, stats; `mri_hsynex table` (with eTIV); `groupstats` on a made-up grouping."""
    from mri_hsynex.cli import groupstats as groupstats_cli
    from mri_hsynex.cli import table as table_cli
    from mri_hsynex.cohort.table import read_structure_values
    from mri_hsynex.labels import ALL_OUTPUT_ROWS

    (sd / refused / C.SUBJECT_ERROR_FLAG).write_text("recon-all failed\n")
    common = ["--sd", sd, "--threads", "1", "--cpu", "--model", models]
    res = run_wrapper(["--s", *first, refused, *common])
    assert res.returncode == 1, res.stderr
    assert "2 done, 0 skipped, 1 refused, 0 failed (3 subjects)" in res.stdout, res.stdout
    assert f"refused {refused}: recon-all failed" in res.stdout.replace("  ", " ")
    assert not (sd / refused / C.SUBJECT_LOG).exists()
    assert not (sd / refused / C.SUBJECT_SEG).exists()

    res = run_wrapper(["--s", *first, *second, *common])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 done, 2 skipped, 0 refused, 0 failed (4 subjects)" in res.stdout, res.stdout

    names = [row.name for row in ALL_OUTPUT_ROWS]
    for subject in first + second:
        root = sd / subject
        log = (root / C.SUBJECT_LOG).read_text()
        assert log.rstrip().splitlines()[-1] == f"{C.TOOL_NAME} done"
        assert "# cmdline mri_segment_hypothalamus_synex --s" in log
        assert " mri_hsynex segment --i " in log
        for rel in (C.SUBJECT_SEG, C.SUBJECT_VOLUMES, C.SUBJECT_STATS, C.SUBJECT_QC):
            assert (root / rel).is_file(), (subject, rel)
        assert not (root / C.SUBJECT_LOCK).exists()
        assert not (root / C.SUBJECT_HARDFAILURE).exists()
        # asegstats2table's column rules: SegId 2, NVoxels 3, Volume_mm3 4, StructName 5,
        # applied literally to every line that does not start with '#'
        rows = [line.split() for line in (root / C.SUBJECT_STATS).read_text().splitlines()
                if line.strip() and not line.startswith("#")]
        assert [(int(r[1]), r[4]) for r in rows] == [(row.id, row.name) for row in ALL_OUTPUT_ROWS]
        assert all(int(r[2]) >= 0 and float(r[3]) >= 0 for r in rows)
        volumes = read_structure_values(root / C.SUBJECT_STATS)
        nvoxels = read_structure_values(root / C.SUBJECT_STATS, "nvoxels")
        assert list(volumes) == names
        assert all(float(v).is_integer() and v >= 0 for v in nvoxels.values())
        assert volumes["Hypothalamus-Whole"] == pytest.approx(
            volumes["Left-Hypothalamus-Whole"] + volumes["Right-Hypothalamus-Whole"], abs=0.2)

    table = tmp_path / "hypothalamus_table.txt"
    assert table_cli.main(["--sd", str(sd), "--subjects", *first, *second, refused,
                           "--skip", "--tablefile", str(table)]) == 0
    lines = table.read_text().splitlines()
    header = lines[0].split("\t")
    assert header[0] == "Measure:volume" and header[1:] == names + [
        "EstimatedTotalIntraCranialVol"]
    assert [line.split("\t")[0] for line in lines[1:]] == first + second
    assert all(float(line.split("\t")[-1]) > 1000 for line in lines[1:])  # eTIV present

    groups = tmp_path / "groups.csv"
    groups.write_text("subject,group,age\n" + "".join(
        f"{s},{'A' if s in first else 'B'},{40 + 7 * i}\n"
        for i, s in enumerate(first + second)))
    out = tmp_path / "groupstats"
    assert groupstats_cli.main(["--table", str(table), "--groups", str(groups),
                                "--o", str(out)]) == 0
    results = (out / "groupstats.tsv").read_text().splitlines()
    assert len(results) == 1 + len(names) and "p_ranksum_fdr" in results[0]
    assert (out / "groupstats.png").stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.backend
def test_end_to_end_synthetic_subjects(tmp_path, tiny_models):
    sd = tmp_path / "subjects"
    for k, name in enumerate(["subj-a", "subj-b", "subj-c", "subj-d", "subj-e"]):
        make_synthetic_subject(sd, name, seed=k, etiv=1.4e6 + 5e4 * k)
    check_cohort_end_to_end(sd, ["subj-a", "subj-b"], "subj-c", ["subj-d", "subj-e"],
                            tiny_models, tmp_path)


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.backend
def test_end_to_end_real_subjects(shared_data, tmp_path, tiny_models):
    sd = tmp_path / "subjects"
    for name in ("sub-01", "bert", "sub-03", "sub-04", "sub-06"):
        link_real_subject(shared_data, sd, name)
    check_cohort_end_to_end(sd, ["sub-01", "bert"], "sub-03", ["sub-04", "sub-06"],
                            tiny_models, tmp_path)
    # the real subjects' inputs were only read
    assert (sd / "bert/mri/norm.mgz").is_symlink()
    assert "--i " + str(sd / "bert/mri/norm.mgz") in (sd / "bert" / C.SUBJECT_LOG).read_text()
    assert "--i " + str(sd / "sub-01/mri/T1.mgz") in (sd / "sub-01" / C.SUBJECT_LOG).read_text()


@pytest.mark.slow
@pytest.mark.backend
def test_clinical_mode_end_to_end(tmp_path, tiny_models):
    # 3 mm voxels: a low-resolution scan whose 96 mm field of view holds the tiny "brain"
    # (the localiser refuses anything smaller than a brain)
    sd = tmp_path / "subjects"
    make_synthetic_subject(sd, "scan", seed=7, etiv=1.5e6, voxel_mm=3.0)
    out = tmp_path / "out"
    res = run_wrapper(["--i", sd / "scan/mri/norm.mgz", "--o", out, "--threads", "1", "--cpu",
                       "--model", tiny_models])
    assert res.returncode == 0, res.stdout + res.stderr
    for rel in (C.SUBJECT_SEG, C.SUBJECT_VOLUMES, C.SUBJECT_STATS, C.SUBJECT_QC):
        assert (out / Path(rel).name).is_file(), rel
