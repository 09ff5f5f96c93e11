"""Batches: ``--i`` as a folder of scans or a text file of paths; per-scan output names."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..constants import BATCH_POST_SUFFIX, BATCH_QC_SUFFIX, BATCH_SEG_SUFFIX
from ..errors import HsynexError
from ..io import suffix
from .outputs import IMAGE_EXTENSIONS, OutputPaths, check_writable_folder, strip_suffix

BATCH_STATS_SUFFIX = ".hypothalamic_subunits.synex.stats"


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether the name ends in an image extension (.nii, .nii.gz, .mgz, .mgh)."""
    return bool(suffix(path))


LIST_SUFFIXES = ("", ".txt", ".list", ".lst")


def is_batch_input(path: str | os.PathLike) -> bool:
    """A folder, or an existing text file of paths (``.txt``, ``.list``, ``.lst`` or no
    extension). Anything else is read as one scan (and refused if it is not one)."""
    path = Path(path)
    return path.is_dir() or (path.is_file() and path.suffix.lower() in LIST_SUFFIXES)


def list_batch_inputs(path: str | os.PathLike) -> list[Path]:
    """The scans of a batch: image files of a folder (sorted), or the lines of a text file
    (blank lines and ``#`` comments skipped; relative paths are relative to the current folder).
    HsynexError when there is none."""
    from ..io import CONVERT_HINT, foreign_format, unsupported_file_message

    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        scans = [p for p in files if is_image_path(p)]
        if not scans:
            formats = sorted({f for f in map(foreign_format, files) if f})
            hint = f"; it holds {' and '.join(formats)} files: {CONVERT_HINT}" if formats else ""
            raise HsynexError(f"no scans ({', '.join(IMAGE_EXTENSIONS)}) in the folder{hint}",
                              path)
        return scans
    if foreign_format(path):  # e.g. a DICOM file without a suffix, taken for a list of scans
        raise HsynexError(unsupported_file_message(path), path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise HsynexError(f"cannot read the list of scans ({type(err).__name__})", path) from None
    scans = [Path(line.strip()) for line in text.splitlines()
             if line.strip() and not line.strip().startswith("#")]
    if not scans:
        raise HsynexError("the list of scans is empty", path)
    return scans


def _output_folder(path: str | os.PathLike | None, flag: str) -> Path | None:
    """A batch output folder: created if missing (its parent must exist and be writable)."""
    if path is None:
        return None
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise HsynexError(f"with a batch input, {flag} must be a folder", folder)
    if not folder.exists():
        check_writable_folder(folder.parent if str(folder.parent) else Path("."), folder)
        folder.mkdir()
    check_writable_folder(folder)
    return folder


@dataclass
class BatchOutputs:
    """Output folders of a batch and the per-scan names (``<scan name><suffix>``)."""

    seg: Path
    post: Path | None
    stats: Path | None
    qc: Path | None
    names: dict[Path, str]

    @classmethod
    def from_args(cls, seg, post=None, stats=None, qc=None, vol_csv=None,
                  inputs: list[Path] | None = None) -> BatchOutputs:
        """Check (and create) the folders before any work; names made unique per scan."""
        if vol_csv is not None:
            vol_csv = Path(vol_csv)
            if vol_csv.is_dir():
                raise HsynexError("--vol is one CSV file, not a folder", vol_csv)
            check_writable_folder(vol_csv.parent if str(vol_csv.parent) else Path("."), vol_csv)
        names: dict[Path, str] = {}
        used: set[str] = set()
        for scan in inputs or []:
            base = strip_suffix(scan).name
            name, k = base, 2
            while name in used:
                name, k = f"{base}_{k}", k + 1
            used.add(name)
            names[scan] = name
        return cls(_output_folder(seg, "--o"), _output_folder(post, "--post"),
                   _output_folder(stats, "--stats"), _output_folder(qc, "--qc"), names)

    def name_of(self, scan: Path) -> str:
        return self.names.get(scan, strip_suffix(scan).name)

    def paths_for(self, scan: Path) -> OutputPaths:
        """The outputs of one scan (the volumes CSV of a batch is written once, at the end)."""
        name = self.name_of(scan)
        return OutputPaths(
            seg=self.seg / f"{name}{BATCH_SEG_SUFFIX}",
            post=None if self.post is None else self.post / f"{name}{BATCH_POST_SUFFIX}",
            stats=None if self.stats is None else self.stats / f"{name}{BATCH_STATS_SUFFIX}",
            qc=None if self.qc is None else self.qc / f"{name}{BATCH_QC_SUFFIX}",
        )


def write_volume_rows(path: str | os.PathLike, rows: list[dict]) -> None:
    """One volumes CSV (``subject,<ten LUT names>,whole_left,whole_right,whole``), atomically."""
    from ..volumes import write_volumes_csv

    write_volumes_csv(path, rows)
