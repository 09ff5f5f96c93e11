"""One FreeSurfer subject, processed like a recon-all module.

For ``$SUBJECTS_DIR/<subject>`` this module

1. refuses the subject when ``scripts/recon-all.error`` exists or another run holds the
   ``scripts/IsRunning.hypothalamic_subunits.synex`` lock (a lock left by a dead process on this
   host is taken over);
2. takes the lock (created exclusively, so two runs can never both hold it);
3. picks the input (``mri/norm.mgz``, then ``mri/T1.mgz``, then ``mri/orig.mgz``) and
   ``mri/aseg.mgz`` (for the ventral-DC mask);
4. skips the subject when every output exists and is newer than both inputs (unless forced);
5. otherwise moves an old log to ``.bak``, writes a new log that echoes the command line and the
   equivalent ``mri_hsynex segment`` command, runs the engine with its output captured in the log,
   and ends the log with ``hypothalamic_subunits.synex done`` or ``... failed: <reason>``;
   a failure also writes ``scripts/hypothalamic_subunits.synex.hardfailure.txt``;
6. releases the lock.

Every error of one subject is caught and returned as a ``SubjectOutcome`` so that a cohort run
goes on with the other subjects. All paths follow ``mri_hsynex.constants``.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shlex
import socket
import sys
import time
import traceback
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .. import __version__
from .. import constants as C
from ..errors import HsynexError
from .files import write_text_atomic

DONE, SKIPPED, REFUSED, FAILED = "done", "skipped", "refused", "failed"
STATUSES = (DONE, SKIPPED, REFUSED, FAILED)
LOG_DONE_LINE = f"{C.TOOL_NAME} done"
LOG_FAILED_PREFIX = f"{C.TOOL_NAME} failed"

EngineFactory = Callable[..., Any]


@dataclass(frozen=True)
class SubjectOptions:
    """How to process each subject (the same for the whole cohort).

    ``engine`` builds the segmentation engine as ``engine(model_dir=, threads=, cpu=, seed=)``;
    ``None`` means ``mri_hsynex.predict.Segmenter``. It must be picklable (a module-level
    callable) to be sent to Dask workers. ``partial_volume`` (None: as model.json says) is
    passed to the engine only when set (``--no-pv``).
    """

    post: bool = False
    force: bool = False
    threads: int | None = None
    cpu: bool = False
    model_dir: str | None = None
    partial_volume: bool | None = None
    cmdline: str = ""
    engine: EngineFactory | None = field(default=None, compare=False)


@dataclass(frozen=True)
class SubjectOutcome:
    """What happened to one subject: ``status`` is one of done/skipped/refused/failed."""

    subject: str
    status: str
    reason: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class SubjectLayout:
    """The files of one subject that this module reads or writes (absolute paths)."""

    root: Path

    @property
    def aseg(self) -> Path:
        return self.root / C.SUBJECT_ASEG

    @property
    def log(self) -> Path:
        return self.root / C.SUBJECT_LOG

    @property
    def lock(self) -> Path:
        return self.root / C.SUBJECT_LOCK

    @property
    def error_flag(self) -> Path:
        return self.root / C.SUBJECT_ERROR_FLAG

    @property
    def hardfailure(self) -> Path:
        return self.root / C.SUBJECT_HARDFAILURE

    def outputs(self, post: bool) -> dict[str, Path]:
        """Output kind -> path: seg, vol_csv, stats, qc, and post when ``post``."""
        paths = {
            "seg": self.root / C.SUBJECT_SEG,
            "vol_csv": self.root / C.SUBJECT_VOLUMES,
            "stats": self.root / C.SUBJECT_STATS,
            "qc": self.root / C.SUBJECT_QC,
        }
        if post:
            paths["post"] = self.root / C.SUBJECT_POSTERIORS
        return paths


def find_subjects(subjects_dir: str | os.PathLike) -> list[str]:
    """Names of the subjects in ``subjects_dir`` that have ``mri/aseg.mgz`` (sorted)."""
    root = Path(subjects_dir)
    if not root.is_dir():
        raise HsynexError("SUBJECTS_DIR is not a folder", root)
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and (p / C.SUBJECT_ASEG).is_file())


def choose_input(subject_dir: str | os.PathLike) -> Path:
    """The image to segment: the first of ``constants.SUBJECT_INPUTS`` that exists."""
    root = Path(subject_dir)
    for name in C.SUBJECT_INPUTS:
        if (root / name).is_file():
            return root / name
    raise HsynexError("no input image (" + ", ".join(C.SUBJECT_INPUTS) + ") in subject",
                      root)


def outputs_up_to_date(inputs: list[Path], outputs: list[Path]) -> bool:
    """True when every output exists and none is older than any input (modification times)."""
    try:
        newest_input = max(p.stat().st_mtime_ns for p in inputs)
        oldest_output = min(p.stat().st_mtime_ns for p in outputs)
    except FileNotFoundError:
        return False
    return oldest_output >= newest_input


# --- lock ------------------------------------------------------------------------------------
def _lock_text(cmdline: str) -> str:
    return (f"host {socket.gethostname()}\npid {os.getpid()}\n"
            f"started {time.strftime('%Y-%m-%d %H:%M:%S')}\ncmdline {cmdline}\n")


def _lock_owner(lock: Path) -> tuple[str, int] | None:
    """(host, pid) written in a lock file, or None when it cannot be read."""
    try:
        fields = dict(line.split(" ", 1) for line in lock.read_text().splitlines() if " " in line)
        return fields["host"].strip(), int(fields["pid"])
    except (OSError, KeyError, ValueError):
        return None


def lock_is_stale(lock: Path) -> bool:
    """True when ``lock`` was written on this host by a process that no longer exists."""
    owner = _lock_owner(lock)
    if owner is None or owner[0] != socket.gethostname():
        return False
    try:
        os.kill(owner[1], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by someone else
        return False
    return False


def acquire_lock(lock: Path, cmdline: str) -> str | None:
    """Create ``lock`` exclusively. Returns None when taken, else why it is held by another run.

    A stale lock (same host, dead process) is removed and taken over.
    """
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _attempt in range(2):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if _attempt == 0 and lock_is_stale(lock):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
                continue
            owner = _lock_owner(lock)
            who = f" (host {owner[0]}, pid {owner[1]})" if owner else ""
            return (f"another run holds the lock{who}; delete {lock} if no run is active")
        with os.fdopen(fd, "w") as handle:
            handle.write(_lock_text(cmdline))
        return None
    return f"could not take the lock {lock}"  # pragma: no cover - lost a race twice


def release_lock(lock: Path) -> None:
    """Remove ``lock`` if this process wrote it."""
    owner = _lock_owner(lock)
    if owner == (socket.gethostname(), os.getpid()):
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


# --- log -------------------------------------------------------------------------------------
def rotate_log(log: Path) -> None:
    """Move an existing log to ``<log>.bak`` (replacing an older ``.bak``)."""
    if log.exists():
        os.replace(log, log.with_name(log.name + ".bak"))


@contextlib.contextmanager
def captured_output(stream: TextIO) -> Iterator[None]:
    """Send this process's Python-level stdout and stderr to ``stream`` while inside."""
    sys.stdout.flush()
    sys.stderr.flush()
    with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
        yield


def segment_command(image: Path, aseg: Path, outputs: dict[str, Path], options: SubjectOptions
                    ) -> str:
    """The ``mri_hsynex segment`` command equivalent to this module's work (for the log)."""
    words = ["mri_hsynex", "segment", "--i", str(image), "--aseg", str(aseg),
             "--o", str(outputs["seg"])]
    flags = {"post": "--post", "vol_csv": "--vol", "stats": "--stats", "qc": "--qc"}
    for kind, flag in flags.items():
        if kind in outputs:
            words += [flag, str(outputs[kind])]
    if options.threads:
        words += ["--threads", str(options.threads)]
    if options.cpu:
        words.append("--cpu")
    if options.model_dir:
        words += ["--model", options.model_dir]
    return shlex.join(words)


# --- engine ----------------------------------------------------------------------------------
_ENGINES: dict[tuple, Any] = {}


def get_segmenter(options: SubjectOptions) -> Any:
    """The segmentation engine for ``options``, built once per process and then reused."""
    key = (options.engine, options.model_dir, options.threads, options.cpu,
           options.partial_volume)
    if key not in _ENGINES:
        factory = options.engine
        if factory is None:
            from ..predict import Segmenter as factory
        extra = {} if options.partial_volume is None else {"partial_volume": options.partial_volume}
        _ENGINES[key] = factory(model_dir=options.model_dir, threads=options.threads,
                                cpu=options.cpu, seed=0, **extra)
    return _ENGINES[key]


def _output_paths(outputs: dict[str, Path], options: SubjectOptions) -> Any:
    values = {"seg": outputs["seg"], "post": outputs.get("post"), "vol_csv": outputs["vol_csv"],
              "stats": outputs["stats"], "qc": outputs["qc"]}
    if options.engine is None:
        from ..predict import OutputPaths

        return OutputPaths(**values)
    return types.SimpleNamespace(**values)


def _segment(image: Path, aseg: Path, outputs: dict[str, Path], subject: str,
             options: SubjectOptions) -> None:
    for path in outputs.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    segmenter = get_segmenter(options)
    result = segmenter.segment(image, aseg_path=aseg, resample="native")
    result.write(_output_paths(outputs, options), subject=subject,
                 cmdline=options.cmdline or "mri_segment_hypothalamus_synex")


# --- the module ------------------------------------------------------------------------------
def _log_header(subject: str, subjects_dir: Path, options: SubjectOptions) -> str:
    return "\n".join([
        f"#--- {C.TOOL_NAME} (mri_hsynex {__version__}) ---",
        f"# started {time.strftime('%a %b %d %H:%M:%S %Z %Y')}",
        f"# host {socket.gethostname()}  user {_user()}  pid {os.getpid()}",
        f"# SUBJECTS_DIR {subjects_dir}",
        f"# subject {subject}",
        f"# cmdline {options.cmdline}",
        "",
    ]) + "\n"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _one_line(err: BaseException) -> str:
    """A one-line reason: the message of an ``HsynexError``, else ``Type: first line``."""
    lines = str(err).strip().splitlines()
    if isinstance(err, HsynexError):
        return lines[0] if lines else "error"
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _hardfailure_text(subject: str, reason: str, layout: SubjectLayout,
                      options: SubjectOptions) -> str:
    return (f"{C.TOOL_NAME} failed for subject {subject}\n"
            f"reason: {reason}\n"
            f"date: {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
            f"host: {socket.gethostname()}\n"
            f"cmdline: {options.cmdline}\n"
            f"log: {layout.log}\n")


def run_subject(subjects_dir: str | os.PathLike, subject: str,
                options: SubjectOptions | None = None) -> SubjectOutcome:
    """Process one subject of ``subjects_dir`` (see the module docstring). Never raises for a
    problem of this subject: the outcome says done, skipped, refused or failed and why."""
    options = options or SubjectOptions()
    start = time.monotonic()
    subjects_dir = Path(os.path.abspath(subjects_dir))
    layout = SubjectLayout(subjects_dir / subject)

    def outcome(status: str, reason: str = "") -> SubjectOutcome:
        return SubjectOutcome(subject, status, reason, round(time.monotonic() - start, 3))

    if not layout.root.is_dir():
        return outcome(FAILED, f"no such subject folder: {layout.root}")
    if layout.error_flag.exists():
        return outcome(REFUSED, f"recon-all failed for this subject ({C.SUBJECT_ERROR_FLAG})")
    try:
        held = acquire_lock(layout.lock, options.cmdline)
    except OSError as err:
        return outcome(FAILED, f"cannot write the lock {layout.lock}: {err.strerror}")
    if held is not None:
        return outcome(REFUSED, held)
    try:
        return _run_locked(subjects_dir, subject, layout, options, outcome)
    finally:
        release_lock(layout.lock)


def _run_locked(subjects_dir: Path, subject: str, layout: SubjectLayout,
                options: SubjectOptions, outcome: Callable[..., SubjectOutcome]
                ) -> SubjectOutcome:
    outputs = layout.outputs(options.post)
    image: Path | None = None
    with contextlib.suppress(HsynexError):
        image = choose_input(layout.root)
    if (not options.force and image is not None and layout.aseg.is_file()
            and outputs_up_to_date([image, layout.aseg], list(outputs.values()))):
        return outcome(SKIPPED, "outputs are newer than the inputs (use --force to redo)")
    try:
        rotate_log(layout.log)
        log = open(layout.log, "w", buffering=1)
    except OSError as err:
        return outcome(FAILED, f"cannot write the log {layout.log}: {err.strerror}")
    with log:
        log.write(_log_header(subject, subjects_dir, options))
        with contextlib.suppress(FileNotFoundError):
            layout.hardfailure.unlink()  # an old failure no longer describes this run
        try:
            _work(log, layout, image, outputs, subject, options)
        except Exception as err:  # noqa: BLE001 - one subject's failure must not stop a cohort
            return outcome(FAILED, _record_failure(err, log, layout, subject, options))
        seconds = outcome(DONE).seconds
        log.write(f"\n# finished {time.strftime('%a %b %d %H:%M:%S %Z %Y')} "
                  f"({seconds:.1f} s)\n{LOG_DONE_LINE}\n")
        return outcome(DONE)


def _work(log: TextIO, layout: SubjectLayout, image: Path | None, outputs: dict[str, Path],
          subject: str, options: SubjectOptions) -> None:
    """Check the inputs, echo the equivalent command and segment, engine output in the log."""
    if image is None:
        choose_input(layout.root)  # raises with the reason
    if not layout.aseg.is_file():
        raise HsynexError("no aseg (needed for the ventral-DC mask)", layout.aseg)
    log.write(f" {segment_command(image, layout.aseg, outputs, options)}\n\n")
    log.flush()
    with captured_output(log):
        _segment(image, layout.aseg, outputs, subject, options)


def _record_failure(err: Exception, log: TextIO, layout: SubjectLayout, subject: str,
                    options: SubjectOptions) -> str:
    """Finish the log with the failure and write the hardfailure file; returns the reason."""
    reason = _one_line(err)
    if not isinstance(err, HsynexError):  # unexpected: keep the traceback for a bug report
        log.write("".join(traceback.format_exception(err)))
    log.write(f"\n{LOG_FAILED_PREFIX}: {reason}\n")
    try:
        write_text_atomic(layout.hardfailure, _hardfailure_text(subject, reason, layout, options))
    except (OSError, HsynexError) as write_err:
        reason += f" (and the hardfailure file could not be written: {write_err})"
    return reason
