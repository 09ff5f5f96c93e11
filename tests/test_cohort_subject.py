"""The recon-all-style lifecycle of one subject (mri_hsynex.cohort.subject_run), with a stand-in
engine so that these tests need no networks: input choice, lock, refusal, log rotation,
hardfailure, skip-if-newer, and a cohort that goes on after a failure."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mri_hsynex import constants as C
from mri_hsynex.cohort import subject_run as sr
from mri_hsynex.cohort.scale import run_cohort
from mri_hsynex.errors import HsynexError

# --- a stand-in engine (module level so that Dask workers can unpickle it) --------------------
FAKE_VOLUMES = (41.0, 12.5, 88.0, 30.0, 35.5, 40.0, 13.0, 90.0, 29.0, 36.0)


def fake_stats_text(subject: str, scale: float = 1.0) -> str:
    """A small ``mri_segstats``-layout stats file with the 13 hsynex rows."""
    from mri_hsynex.labels import ALL_OUTPUT_ROWS

    vols = [v * scale for v in FAKE_VOLUMES]
    vols += [sum(vols[:5]), sum(vols[5:]), sum(vols)]
    lines = ["# Title Segmentation Statistics", "# generating_program fake",
             f"# subjectname {subject}", "# NRows 13", "# NTableCols 5",
             "# ColHeaders  Index SegId NVoxels Volume_mm3 StructName"]
    for i, (row, vol) in enumerate(zip(ALL_OUTPUT_ROWS, vols), start=1):
        lines.append(f"{i:3d} {row.id:5d} {round(vol):8d} {vol:10.1f}  {row.name}")
    return "\n".join(lines) + "\n"


class FakeResult:
    def __init__(self, image: Path, subject_scale: float):
        self.image = Path(image)
        self.scale = subject_scale

    def write(self, paths, subject: str, cmdline: str) -> None:
        print(f"fake engine writing {subject}")
        Path(paths.seg).write_bytes(b"seg")
        Path(paths.vol_csv).write_text("subject,whole\n" + f"{subject},1\n")
        Path(paths.stats).write_text(fake_stats_text(subject, self.scale))
        Path(paths.qc).write_bytes(b"png")
        if paths.post is not None:
            Path(paths.post).write_bytes(b"post")


class FakeSegmenter:
    """Raises for subjects whose name contains 'bad'; volumes scale with a digit in the name."""

    built = 0

    def __init__(self, model_dir=None, threads=None, cpu=False, seed=0):
        type(self).built += 1
        self.threads = threads

    def segment(self, image_path, aseg_path=None, resample="native"):
        subject = Path(image_path).parents[1].name
        if "bad" in subject:
            raise RuntimeError("boom in the engine")
        if "usererr" in subject:
            raise HsynexError("image is not 3-D", image_path)
        digits = [int(c) for c in subject if c.isdigit()]
        return FakeResult(image_path, 1.0 + 0.1 * (digits[-1] if digits else 0))


def make_subject(sd: Path, name: str, inputs=("mri/norm.mgz",), aseg: bool = True) -> Path:
    """A subject folder with placeholder input files (the stand-in engine never reads them)."""
    root = sd / name
    (root / "mri").mkdir(parents=True)
    (root / "scripts").mkdir()
    (root / "stats").mkdir()
    for rel in inputs:
        (root / rel).write_bytes(b"image")
    if aseg:
        (root / C.SUBJECT_ASEG).write_bytes(b"aseg")
    return root


def _set_mtime_past(path: Path, seconds: float = 100.0) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


@pytest.fixture()
def fake_options(monkeypatch) -> sr.SubjectOptions:
    monkeypatch.setattr(sr, "_ENGINES", {})
    FakeSegmenter.built = 0
    return sr.SubjectOptions(cmdline="mri_segment_hypothalamus_synex --s x", engine=FakeSegmenter)


def _last_line(path: Path) -> str:
    return path.read_text().rstrip("\n").splitlines()[-1]


# --- tests ----------------------------------------------------------------------------------
def test_choose_input_order(tmp_path):
    root = make_subject(tmp_path, "s1", inputs=("mri/orig.mgz",))
    assert sr.choose_input(root) == root / "mri/orig.mgz"
    (root / "mri/T1.mgz").write_bytes(b"t1")
    assert sr.choose_input(root) == root / "mri/T1.mgz"
    (root / "mri/norm.mgz").write_bytes(b"norm")
    assert sr.choose_input(root) == root / "mri/norm.mgz"
    with pytest.raises(HsynexError, match="no input image"):
        sr.choose_input(make_subject(tmp_path, "s2", inputs=()))


def test_find_subjects_needs_aseg(tmp_path):
    make_subject(tmp_path, "b")
    make_subject(tmp_path, "a")
    make_subject(tmp_path, "noaseg", aseg=False)
    (tmp_path / "afile").write_text("x")
    assert sr.find_subjects(tmp_path) == ["a", "b"]
    with pytest.raises(HsynexError):
        sr.find_subjects(tmp_path / "missing")


def test_done_writes_outputs_log_and_releases_lock(tmp_path, fake_options):
    root = make_subject(tmp_path, "s1")
    out = sr.run_subject(tmp_path, "s1", fake_options)
    assert out.status == sr.DONE, out.reason
    for rel in (C.SUBJECT_SEG, C.SUBJECT_VOLUMES, C.SUBJECT_STATS, C.SUBJECT_QC):
        assert (root / rel).is_file(), rel
    assert not (root / C.SUBJECT_POSTERIORS).exists()
    log = (root / C.SUBJECT_LOG).read_text()
    assert "# cmdline mri_segment_hypothalamus_synex --s x" in log
    assert f"mri_hsynex segment --i {root / 'mri/norm.mgz'} --aseg {root / C.SUBJECT_ASEG}" in log
    assert "fake engine writing s1" in log  # the engine's output is captured in the log
    assert _last_line(root / C.SUBJECT_LOG) == f"{C.TOOL_NAME} done"
    assert not (root / C.SUBJECT_LOCK).exists()
    assert not (root / C.SUBJECT_HARDFAILURE).exists()


def test_post_and_missing_qc_folder(tmp_path, fake_options):
    import dataclasses

    root = make_subject(tmp_path, "s1", inputs=("mri/T1.mgz",))
    assert not (root / "qc").exists()
    out = sr.run_subject(tmp_path, "s1", dataclasses.replace(fake_options, post=True))
    assert out.status == sr.DONE
    assert (root / C.SUBJECT_POSTERIORS).is_file() and (root / C.SUBJECT_QC).is_file()
    assert "--i " + str(root / "mri/T1.mgz") in (root / C.SUBJECT_LOG).read_text()


def test_skip_when_outputs_newer_then_redo(tmp_path, fake_options):
    import dataclasses

    root = make_subject(tmp_path, "s1")
    for rel in ("mri/norm.mgz", C.SUBJECT_ASEG):
        _set_mtime_past(root / rel)
    assert sr.run_subject(tmp_path, "s1", fake_options).status == sr.DONE
    first_log = (root / C.SUBJECT_LOG).read_text()

    again = sr.run_subject(tmp_path, "s1", fake_options)
    assert again.status == sr.SKIPPED and "--force" in again.reason
    assert (root / C.SUBJECT_LOG).read_text() == first_log  # a skip does not touch the log
    assert not (root / (C.SUBJECT_LOG + ".bak")).exists()

    # --post asks for one more output, which does not exist yet: not up to date
    assert sr.run_subject(tmp_path, "s1",
                          dataclasses.replace(fake_options, post=True)).status == sr.DONE
    # --force redoes, and the previous log becomes .bak
    log_before = (root / C.SUBJECT_LOG).read_text()
    assert sr.run_subject(tmp_path, "s1",
                          dataclasses.replace(fake_options, force=True)).status == sr.DONE
    assert (root / (C.SUBJECT_LOG + ".bak")).read_text() == log_before
    # a newer input (aseg edited) makes the outputs out of date
    time.sleep(0.01)
    (root / C.SUBJECT_ASEG).write_bytes(b"edited aseg")
    assert sr.run_subject(tmp_path, "s1", fake_options).status == sr.DONE


def test_outputs_up_to_date_unit(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("in")
    assert not sr.outputs_up_to_date([a], [b])  # missing output
    b.write_text("out")
    _set_mtime_past(a)
    assert sr.outputs_up_to_date([a], [b])
    _set_mtime_past(b, 200)
    assert not sr.outputs_up_to_date([a], [b])


def test_refuses_recon_all_error_without_touching_subject(tmp_path, fake_options):
    root = make_subject(tmp_path, "s1")
    (root / C.SUBJECT_ERROR_FLAG).write_text("recon-all failed\n")
    out = sr.run_subject(tmp_path, "s1", fake_options)
    assert out.status == sr.REFUSED and "recon-all.error" in out.reason
    assert not (root / C.SUBJECT_LOG).exists() and not (root / C.SUBJECT_SEG).exists()
    assert FakeSegmenter.built == 0


def test_refuses_running_lock_and_leaves_it(tmp_path, fake_options):
    root = make_subject(tmp_path, "s1")
    lock = root / C.SUBJECT_LOCK
    # held by a live process on this host (this test process itself)
    lock.write_text(f"host {socket.gethostname()}\npid {os.getpid()}\n")
    out = sr.run_subject(tmp_path, "s1", fake_options)
    assert out.status == sr.REFUSED and "lock" in out.reason and str(lock) in out.reason
    assert lock.exists() and not (root / C.SUBJECT_LOG).exists()
    # held on another host: cannot tell whether it runs, so refuse
    lock.write_text("host some-other-node\npid 1\n")
    assert sr.run_subject(tmp_path, "s1", fake_options).status == sr.REFUSED
    # unreadable content: refuse too
    lock.write_text("garbage")
    assert sr.run_subject(tmp_path, "s1", fake_options).status == sr.REFUSED


def test_stale_lock_is_taken_over(tmp_path, fake_options):
    root = make_subject(tmp_path, "s1")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (root / C.SUBJECT_LOCK).write_text(f"host {socket.gethostname()}\npid {dead.pid}\n")
    out = sr.run_subject(tmp_path, "s1", fake_options)
    assert out.status == sr.DONE, out.reason
    assert not (root / C.SUBJECT_LOCK).exists()


def test_lock_is_held_while_working(tmp_path, fake_options, monkeypatch):
    root = make_subject(tmp_path, "s1")
    seen = {}
    original = FakeSegmenter.segment

    def spy(self, *args, **kwargs):
        lock = root / C.SUBJECT_LOCK
        seen["text"] = lock.read_text() if lock.exists() else None
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FakeSegmenter, "segment", spy, raising=True)
    assert sr.run_subject(tmp_path, "s1", fake_options).status == sr.DONE
    assert seen["text"] is not None and f"pid {os.getpid()}" in seen["text"]
    assert "cmdline mri_segment_hypothalamus_synex" in seen["text"]


def test_engine_failure_hardfailure_and_log(tmp_path, fake_options):
    root = make_subject(tmp_path, "bad1")
    (root / C.SUBJECT_LOG).write_text("old log\n")
    out = sr.run_subject(tmp_path, "bad1", fake_options)
    assert out.status == sr.FAILED and "RuntimeError: boom in the engine" in out.reason
    log = root / C.SUBJECT_LOG
    assert _last_line(log) == f"{C.TOOL_NAME} failed: RuntimeError: boom in the engine"
    assert "Traceback" in log.read_text()
    assert (root / (C.SUBJECT_LOG + ".bak")).read_text() == "old log\n"
    hard = (root / C.SUBJECT_HARDFAILURE).read_text()
    assert "boom in the engine" in hard and "bad1" in hard
    assert not (root / C.SUBJECT_LOCK).exists()
    assert not [p for p in root.rglob("*") if ".tmp" in p.name]


def test_user_error_and_missing_inputs_fail_cleanly(tmp_path, fake_options):
    root = make_subject(tmp_path, "usererr")
    out = sr.run_subject(tmp_path, "usererr", fake_options)
    assert out.status == sr.FAILED and out.reason.startswith("image is not 3-D")
    assert "Traceback" not in (root / C.SUBJECT_LOG).read_text()

    root = make_subject(tmp_path, "noinput", inputs=())
    out = sr.run_subject(tmp_path, "noinput", fake_options)
    assert out.status == sr.FAILED and "no input image" in out.reason
    assert (root / C.SUBJECT_HARDFAILURE).is_file()

    root = make_subject(tmp_path, "noaseg", aseg=False)
    out = sr.run_subject(tmp_path, "noaseg", fake_options)
    assert out.status == sr.FAILED and "aseg" in out.reason
    assert _last_line(root / C.SUBJECT_LOG).startswith(f"{C.TOOL_NAME} failed: no aseg")

    out = sr.run_subject(tmp_path, "nosuch", fake_options)
    assert out.status == sr.FAILED and "no such subject" in out.reason


def test_success_removes_old_hardfailure(tmp_path, fake_options):
    root = make_subject(tmp_path, "s1")
    (root / C.SUBJECT_HARDFAILURE).write_text("from an older run\n")
    assert sr.run_subject(tmp_path, "s1", fake_options).status == sr.DONE
    assert not (root / C.SUBJECT_HARDFAILURE).exists()


def test_cohort_in_process_goes_on_after_failure(tmp_path, fake_options):
    import io

    make_subject(tmp_path, "sub-1")
    make_subject(tmp_path, "bad-2")
    make_subject(tmp_path, "sub-3")
    (make_subject(tmp_path, "sub-4") / C.SUBJECT_ERROR_FLAG).write_text("x")
    stream = io.StringIO()
    summary = run_cohort(tmp_path, ["sub-1", "bad-2", "sub-3", "sub-4", "sub-1"], fake_options,
                         jobs=1, progress=False, stream=stream)
    assert [o.subject for o in summary.outcomes] == ["sub-1", "bad-2", "sub-3", "sub-4"]
    assert [o.status for o in summary.outcomes] == ["done", "failed", "done", "refused"]
    assert not summary.ok
    assert (summary.count("done"), summary.count("failed"), summary.count("refused")) == (2, 1, 1)
    text = summary.text()
    assert text.startswith(f"{C.TOOL_NAME}: 2 done, 0 skipped, 1 refused, 1 failed (4 subjects)")
    assert "bad-2: RuntimeError: boom" in text
    assert FakeSegmenter.built == 1  # the engine is built once per process
    assert "sub-3: done" in stream.getvalue()


def test_cohort_rejects_bad_jobs(tmp_path, fake_options):
    with pytest.raises(HsynexError):
        run_cohort(tmp_path, ["a"], fake_options, jobs=0, progress=False)


def test_subjects_cli_errors(tmp_path, monkeypatch, capsys):
    from mri_hsynex.cli import subjects as cli

    monkeypatch.delenv("SUBJECTS_DIR", raising=False)
    assert cli.main([]) == 1  # help
    assert cli.main(["--s", "bert"]) == 1
    assert "ERROR: no subjects folder" in capsys.readouterr().err
    assert cli.main(["--sd", str(tmp_path / "nope")]) == 1
    assert "SUBJECTS_DIR is not a folder" in capsys.readouterr().err
    assert cli.main(["--sd", str(tmp_path)]) == 1
    assert f"ERROR: no subject with {C.SUBJECT_ASEG} in: {tmp_path}" in capsys.readouterr().err
    make_subject(tmp_path, "s1")
    assert cli.main(["--sd", str(tmp_path), "--threads", "0"]) == 1
    assert cli.main(["--sd", str(tmp_path), "--model", str(tmp_path / "none")]) == 1
    assert "model folder not found" in capsys.readouterr().err


def test_subjects_cli_runs_cohort(tmp_path, monkeypatch, capsys):
    """`mri_hsynex subjects` with the engine replaced: summary on stdout, exit status 1 when a
    subject was refused, 0 when all are done or skipped."""
    from mri_hsynex.cli import subjects as cli

    monkeypatch.setattr(sr, "_ENGINES", {})
    real_options = sr.SubjectOptions

    def options_with_fake(**kwargs):
        return real_options(**kwargs, engine=FakeSegmenter)

    monkeypatch.setattr(sr, "SubjectOptions", options_with_fake)
    make_subject(tmp_path, "s1")
    (make_subject(tmp_path, "s2") / C.SUBJECT_ERROR_FLAG).write_text("x")
    monkeypatch.setenv("SUBJECTS_DIR", str(tmp_path))
    assert cli.main(["--s", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "1 done, 0 skipped, 1 refused, 0 failed (2 subjects)" in out
    log = (tmp_path / "s1" / C.SUBJECT_LOG).read_text()
    assert "# cmdline mri_hsynex subjects --s --no-progress" in log
    assert cli.main(["--s", "s1", "--no-progress", "--cmdline", "wrapper --s s1"]) == 0
    assert "0 done, 1 skipped" in capsys.readouterr().out


def test_no_pv_reaches_the_engine_only_when_asked(monkeypatch):
    """``--no-pv`` (partial_volume False) is passed to the engine; unset, the engine's own
    default (model.json) stands and engines without the argument keep working."""
    seen = []

    class Recording(FakeSegmenter):
        def __init__(self, **kwargs):
            seen.append(kwargs.get("partial_volume", "unset"))
            super().__init__(**{k: v for k, v in kwargs.items() if k != "partial_volume"})

    monkeypatch.setattr(sr, "_ENGINES", {})
    sr.get_segmenter(sr.SubjectOptions(engine=Recording))
    sr.get_segmenter(sr.SubjectOptions(engine=Recording, partial_volume=False))
    sr.get_segmenter(sr.SubjectOptions(engine=FakeSegmenter))  # no such argument: still built
    assert seen == ["unset", False]
