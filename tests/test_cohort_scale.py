"""The cohort runner on Dask distributed: a 2-worker LocalCluster on loopback, the default
local cluster of ``--jobs 2`` and an existing scheduler given by address (stand-in engine)."""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import pytest
from test_cohort_subject import FakeSegmenter, make_subject

from mri_hsynex import constants as C
from mri_hsynex.cohort.scale import run_cohort
from mri_hsynex.cohort.subject_run import SubjectOptions
from mri_hsynex.errors import HsynexError

BUILT_ENV = "HSYNEX_TEST_ENGINE_BUILT_DIR"


class CountingSegmenter(FakeSegmenter):
    """Leaves one file per construction (pid in the name) in $HSYNEX_TEST_ENGINE_BUILT_DIR."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        folder = Path(os.environ[BUILT_ENV])
        (folder / f"{os.getpid()}-{uuid.uuid4().hex[:6]}-threads{kwargs.get('threads')}").touch()


def _cohort(sd: Path) -> list[str]:
    names = ["sub-1", "sub-2", "bad-3", "sub-4", "sub-5"]
    for name in names:
        make_subject(sd, name)
    (sd / "sub-4" / C.SUBJECT_ERROR_FLAG).write_text("x")
    return names


def _check(summary, sd: Path, built: Path) -> None:
    status = {o.subject: o.status for o in summary.outcomes}
    assert status == {"sub-1": "done", "sub-2": "done", "bad-3": "failed",
                      "sub-4": "refused", "sub-5": "done"}
    assert not summary.ok
    for name in ("sub-1", "sub-2", "sub-5"):
        assert (sd / name / C.SUBJECT_STATS).is_file()
        assert (sd / name / C.SUBJECT_LOG).read_text().rstrip().endswith(f"{C.TOOL_NAME} done")
    assert (sd / "bad-3" / C.SUBJECT_HARDFAILURE).is_file()
    pids = {p.name.split("-")[0] for p in built.iterdir()}
    assert str(os.getpid()) not in pids  # the work ran in the workers
    # one engine per worker process, never one per subject
    assert len(pids) == len(list(built.iterdir())) <= 2


@pytest.mark.slow
def test_local_cluster_two_jobs(tmp_path, monkeypatch):
    sd, built = tmp_path / "sd", tmp_path / "built"
    sd.mkdir()
    built.mkdir()
    monkeypatch.setenv(BUILT_ENV, str(built))
    names = _cohort(sd)
    stream = io.StringIO()
    summary = run_cohort(sd, names, SubjectOptions(engine=CountingSegmenter), jobs=2,
                         progress=True, stream=stream)
    _check(summary, sd, built)
    assert "5/5" in stream.getvalue()  # the progress bar reached the end
    # without --threads, the local workers share the cores
    threads = {p.name.split("threads")[1] for p in built.iterdir()}
    assert threads == {str(max(1, (os.cpu_count() or 1) // 2))}


@pytest.mark.slow
def test_existing_scheduler_on_loopback(tmp_path, monkeypatch):
    from dask.distributed import LocalCluster

    sd, built = tmp_path / "sd", tmp_path / "built"
    sd.mkdir()
    built.mkdir()
    monkeypatch.setenv(BUILT_ENV, str(built))
    names = _cohort(sd)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        summary = run_cohort(sd, names, SubjectOptions(engine=CountingSegmenter, threads=1),
                             scheduler=address, progress=False)
        assert len(cluster.workers) == 2  # the user's cluster is left running
    _check(summary, sd, built)


def test_unreachable_scheduler_is_a_user_error(tmp_path, monkeypatch):
    from mri_hsynex.cohort import scale

    monkeypatch.setattr(scale, "SCHEDULER_TIMEOUT_S", 2.0)
    make_subject(tmp_path, "s1")
    with pytest.raises(HsynexError, match="cannot reach the Dask scheduler"):
        run_cohort(tmp_path, ["s1"], SubjectOptions(engine=FakeSegmenter),
                   scheduler="tcp://127.0.0.1:9", progress=False)


@pytest.mark.slow
@pytest.mark.backend
def test_real_engine_on_two_local_workers(tmp_path):
    """The real Segmenter built inside each Dask worker (tiny random-weight networks)."""
    try:
        from mri_hsynex.predict import Segmenter  # noqa: F401
    except ImportError as err:
        pytest.skip(f"the segmentation engine is not available yet ({err})")
    from helpers_models import write_tiny_models
    from test_wrapper import make_synthetic_subject

    models = write_tiny_models(tmp_path / "models")
    sd = tmp_path / "sd"
    for k, name in enumerate(["s1", "s2", "s3"]):
        make_synthetic_subject(sd, name, seed=k, etiv=1.5e6)
    options = SubjectOptions(threads=1, cpu=True, model_dir=str(models), cmdline="test")
    summary = run_cohort(sd, ["s1", "s2", "s3"], options, jobs=2, progress=False)
    assert summary.ok and summary.count("done") == 3, summary.text()
    for name in ("s1", "s2", "s3"):
        assert (sd / name / C.SUBJECT_SEG).is_file() and (sd / name / C.SUBJECT_STATS).is_file()
