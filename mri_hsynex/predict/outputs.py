"""Output paths of one segmentation, their checks, and all-or-nothing writing."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

from ..constants import SIDECAR_SUFFIX
from ..errors import HsynexError
from ..io import SUFFIXES as IMAGE_EXTENSIONS  # the volume files hsynex reads and writes
from ..io import suffix


def full_suffix(path: str | os.PathLike) -> str:
    """The file's extension as written, including ``.nii.gz`` (any case: ``io.suffix``);
    ``""`` when none."""
    name = Path(path).name
    image = suffix(name)
    return name[len(name) - len(image):] if image else Path(path).suffix


def strip_suffix(path: str | os.PathLike) -> Path:
    """``path`` without its (image) extension: ``a/seg.nii.gz`` -> ``a/seg``."""
    path = Path(path)
    suffix = full_suffix(path)
    return path.with_name(path.name[: len(path.name) - len(suffix)] if suffix else path.name)


def sidecar_path(seg: str | os.PathLike) -> Path:
    """The JSON sidecar next to SEG: ``seg.mgz`` -> ``seg.json``."""
    stem = strip_suffix(seg)
    return stem.with_name(stem.name + SIDECAR_SUFFIX)


@dataclass
class OutputPaths:
    """Where to write: SEG (required) and the optional posteriors, volumes CSV, .stats, QC PNG."""

    seg: Path
    post: Path | None = None
    vol_csv: Path | None = None
    stats: Path | None = None
    qc: Path | None = None

    def __post_init__(self) -> None:
        if self.seg is None:
            raise HsynexError("an output segmentation path is required")
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                setattr(self, f.name, Path(value))

    @property
    def sidecar(self) -> Path:
        return sidecar_path(self.seg)

    def as_dict(self) -> dict[str, Path]:
        """Requested outputs (name -> path), the sidecar included."""
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if getattr(self, f.name) is not None}
        out["sidecar"] = self.sidecar
        return out


def check_output_paths(paths: OutputPaths, inputs: list[Path]) -> None:
    """HsynexError before any work when an output equals an input, two outputs collide, or an
    output folder is missing or not writable."""
    resolved_inputs = {_resolve(p) for p in inputs if str(p)}
    seen: dict[Path, str] = {}
    for name, path in paths.as_dict().items():
        resolved = _resolve(path)
        if resolved in resolved_inputs:
            raise HsynexError("output path is the same as an input", path)
        if resolved in seen:
            raise HsynexError(f"two outputs ({seen[resolved]}, {name}) have the same path", path)
        seen[resolved] = name
        if path.is_dir():
            raise HsynexError("output path is a folder", path)
        check_writable_folder(path.parent if str(path.parent) else Path("."), path)
    for name in ("seg", "post"):
        path = getattr(paths, name)
        if path is not None and not suffix(path):
            raise HsynexError(f"output {name} must end in {', '.join(IMAGE_EXTENSIONS)}", path)


def check_writable_folder(folder: Path, path: Path | None = None) -> None:
    """HsynexError naming ``path`` (or the folder) unless ``folder`` exists and is writable."""
    folder = Path(folder) if str(folder) else Path(".")
    if not folder.is_dir():
        raise HsynexError("output folder does not exist", path or folder)
    try:  # a real probe: os.access says yes to root even on read-only file systems
        fd, probe = tempfile.mkstemp(prefix=".hsynex-probe-", dir=folder)
    except OSError:
        raise HsynexError("output folder is not writable", path or folder) from None
    os.close(fd)
    os.unlink(probe)


def _resolve(path: Path) -> Path:
    try:
        return Path(path).resolve()
    except OSError:
        return Path(os.path.abspath(path))


class StagedFiles:
    """Temporary files next to their final paths, renamed all together by ``commit``."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def tmp(self, final: Path) -> Path:
        """A fresh temporary path in ``final``'s folder with the same extension."""
        final = Path(final)
        fd, name = tempfile.mkstemp(prefix=".hsynex-tmp-", suffix=full_suffix(final) or ".tmp",
                                    dir=final.parent if str(final.parent) else ".")
        os.close(fd)
        self._pending.append((Path(name), final))
        return Path(name)

    def commit(self) -> list[Path]:
        """Rename every temporary file onto its final path; returns the final paths."""
        done = []
        for tmp, final in self._pending:
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
            done.append(final)
        self._pending = []
        return done

    def discard(self) -> None:
        """Remove every temporary file not yet committed."""
        for tmp, _ in self._pending:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self._pending = []
