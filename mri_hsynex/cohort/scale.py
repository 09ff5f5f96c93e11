"""Run many subjects: in this process (``jobs=1``) or on Dask distributed workers.

Each worker process builds the segmentation engine once (``subject_run.get_segmenter`` caches it
per process) and runs ``subject_run.run_subject`` for the subjects it is given. A subject's
failure is an outcome, not an exception, so it never stops the others; a worker that dies is
reported as a failure of the subjects it held.

- ``scheduler="tcp://HOST:PORT"``: use a cluster the user already runs (the workers need hsynex
  installed and the same ``SUBJECTS_DIR`` path);
- otherwise, ``jobs > 1``: a ``LocalCluster`` of ``jobs`` worker processes with one task thread
  each, listening on 127.0.0.1 only, closed at the end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .. import constants as C
from ..errors import HsynexError
from .subject_run import (
    DONE,
    FAILED,
    REFUSED,
    SKIPPED,
    STATUSES,
    SubjectOptions,
    SubjectOutcome,
    run_subject,
)

SCHEDULER_TIMEOUT_S = 30.0  # how long to try to reach an existing Dask scheduler


@dataclass
class CohortSummary:
    """The outcomes of a cohort run, in the order the subjects were given."""

    outcomes: list[SubjectOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        """Number of subjects with ``status`` (done, skipped, refused, failed)."""
        return sum(o.status == status for o in self.outcomes)

    @property
    def ok(self) -> bool:
        """True when no subject failed or was refused."""
        return self.count(FAILED) == 0 and self.count(REFUSED) == 0

    def text(self) -> str:
        """A short report: one count line, then one line per subject not done."""
        counts = ", ".join(f"{self.count(s)} {s}" for s in STATUSES)
        lines = [f"{C.TOOL_NAME}: {counts} ({len(self.outcomes)} subjects)"]
        for o in self.outcomes:
            if o.status != DONE:
                lines.append(f"  {o.status:<8s}{o.subject}: {o.reason}")
        return "\n".join(lines)


def _progress(total: int, show: bool, stream: TextIO):
    from tqdm import tqdm

    return tqdm(total=total, disable=not show, file=stream, unit="subject", desc="hsynex",
                dynamic_ncols=True)


def _outcome_line(outcome: SubjectOutcome) -> str:
    line = f"{outcome.subject}: {outcome.status} ({outcome.seconds:.1f} s)"
    return line + (f": {outcome.reason}" if outcome.status != DONE and outcome.reason else "")


def _run_in_process(subjects_dir: Path, subjects: Sequence[str], options: SubjectOptions,
                    report: Callable[[SubjectOutcome], None]) -> dict[str, SubjectOutcome]:
    results = {}
    for subject in subjects:
        results[subject] = run_subject(subjects_dir, subject, options)
        report(results[subject])
    return results


def _local_threads(options: SubjectOptions, jobs: int) -> SubjectOptions:
    """Share the CPU cores between local workers unless ``--threads`` was given."""
    if options.threads:
        return options
    return dataclasses.replace(options, threads=max(1, (os.cpu_count() or 1) // jobs))


def _open_client(scheduler: str | None, jobs: int):
    """A Dask client on ``scheduler``, or on a new loopback ``LocalCluster`` of ``jobs``."""
    import logging

    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout=f"{SCHEDULER_TIMEOUT_S}s")
        except (OSError, TimeoutError) as err:
            raise HsynexError(f"cannot reach the Dask scheduler ({err})", scheduler) from err
    cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None,
                           silence_logs=logging.ERROR)
    return Client(cluster)


def _run_on_dask(subjects_dir: Path, subjects: Sequence[str], options: SubjectOptions,
                 report: Callable[[SubjectOutcome], None], scheduler: str | None,
                 jobs: int) -> dict[str, SubjectOutcome]:
    from dask.distributed import as_completed

    if not scheduler:
        options = _local_threads(options, jobs)
    client = _open_client(scheduler, jobs)
    cluster = None if scheduler else client.cluster
    run_id = uuid.uuid4().hex[:8]
    results: dict[str, SubjectOutcome] = {}
    try:
        futures = {client.submit(run_subject, str(subjects_dir), subject, options,
                                 key=f"hsynex-{run_id}-{i}", pure=False): subject
                   for i, subject in enumerate(subjects)}
        for future in as_completed(futures):
            subject = futures[future]
            try:
                outcome = future.result()
            except (Exception, asyncio.CancelledError) as err:  # noqa: BLE001 - a lost worker
                # fails only the subject it held
                outcome = SubjectOutcome(subject, FAILED, f"worker error: {type(err).__name__}: "
                                                          f"{err}")
            results[subject] = outcome
            report(outcome)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return results


def run_cohort(subjects_dir: str | os.PathLike, subjects: Iterable[str],
               options: SubjectOptions | None = None, jobs: int = 1,
               scheduler: str | None = None, progress: bool = True,
               stream: TextIO | None = None) -> CohortSummary:
    """Process ``subjects`` of ``subjects_dir`` and return their outcomes.

    ``jobs``: number of local worker processes (1: this process, no Dask); ``scheduler``: a
    Dask scheduler address (``tcp://HOST:PORT``) to use instead of a local cluster. A progress
    bar and one line per finished subject go to ``stream`` (default stderr).
    """
    subjects = list(dict.fromkeys(subjects))  # drop repeats, keep order
    if jobs < 1:
        raise HsynexError(f"--jobs must be at least 1, not {jobs}")
    options = options or SubjectOptions()
    stream = stream or sys.stderr
    subjects_dir = Path(os.path.abspath(subjects_dir))
    with _progress(len(subjects), progress, stream) as bar:
        def report(outcome: SubjectOutcome) -> None:
            bar.write(_outcome_line(outcome), file=stream)
            bar.update(1)

        if scheduler is None and jobs == 1:
            results = _run_in_process(subjects_dir, subjects, options, report)
        else:
            results = _run_on_dask(subjects_dir, subjects, options, report, scheduler, jobs)
    return CohortSummary([results[s] for s in subjects])


__all__ = ["CohortSummary", "run_cohort", "DONE", "SKIPPED", "REFUSED", "FAILED"]
