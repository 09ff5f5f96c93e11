"""FreeSurfer ``.stats`` files in the layout of ``mri_segstats`` (write and read).

FreeSurfer's ``asegstats2table`` reads every line that does not start with ``#`` as a data row:
whitespace-separated, column 2 SegId, 3 NVoxels, 4 Volume_mm3, 5 StructName. Files written here
follow that rule, and ``read_stats`` reads with it (so it also reads real ``aseg.stats``).
"""

from __future__ import annotations

import getpass
import os
import platform
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import HsynexError
from .io import atomic_path

LUT_PATH = Path(__file__).parent / "data" / "hsynex_LUT.txt"
# eTIV keys across FreeSurfer versions (5.3: IntraCranialVol/ICV in some builds; 6.0 and 7.x:
# EstimatedTotalIntraCranialVol/eTIV).
ETIV_KEYS = ("EstimatedTotalIntraCranialVol", "eTIV", "IntraCranialVol", "ICV")

_TABLE_COLUMNS = (
    ("Index", "Index", "NA"),
    ("SegId", "Segmentation Id", "NA"),
    ("NVoxels", "Number of Voxels", "unitless"),
    ("Volume_mm3", "Volume", "mm^3"),
    ("StructName", "Structure Name", "NA"),
)


@dataclass(frozen=True)
class StatsRow:
    """One data row: NVoxels is a hard voxel count, Volume_mm3 may be a soft (partial) volume."""

    index: int
    seg_id: int
    nvoxels: int
    volume_mm3: float
    name: str


@dataclass(frozen=True)
class Measure:
    """A ``# Measure key, short, description, value, units`` header line."""

    key: str
    short: str
    description: str
    value: float
    units: str = "mm^3"

    def line(self) -> str:
        return (f"# Measure {self.key}, {self.short}, {self.description}, {self.value:f}, "
                f"{self.units}")


@dataclass
class StatsFile:
    """What ``read_stats`` found: ``measures`` by key and by short name, rows, other header."""

    measures: dict[str, float] = field(default_factory=dict)
    rows: list[StatsRow] = field(default_factory=list)
    header: dict[str, str] = field(default_factory=dict)

    @property
    def qc_flag(self) -> bool | None:
        """hsynex's QC flag (``# QCFlag yes|no``); None in files without one (FreeSurfer's,
        older hsynex files)."""
        value = self.header.get("QCFlag")
        return None if value is None else value.split()[0] == "yes"

    @property
    def qc_reasons(self) -> str:
        """The flag's reasons (``# QCReasons``, '; '-separated), '' where none."""
        return self.header.get("QCReasons", "")


def stats_text(rows: Sequence[StatsRow], *, subject: str | None, seg_file: str,
               voxel_volume_mm3: float, cmdline: str, subjects_dir: str | None = None,
               measures: Sequence[Measure] = (), in_vol_file: str | None = None,
               color_table: str | None = None, volume_method: str | None = None,
               qc_reasons: Sequence[str] | None = None) -> str:
    """The text of a stats file (see ``write_stats``).

    Header values are flattened to one line (a newline in, say, the command line would start a
    line without ``#``, which asegstats2table would read as a data row); structure names must be
    single words without ``#``. ``qc_reasons`` (the segmentation's QC flag reasons; empty: not
    flagged) adds ``# QCFlag yes|no`` and, when flagged, ``# QCReasons``.
    """
    for row in rows:
        if not row.name or any(c.isspace() for c in row.name) or "#" in row.name:
            raise ValueError(f"structure name {row.name!r} must be one word without '#'")
    cmdline = _one_line(cmdline)
    subject = _one_line(subject) if subject else subject
    seg_file = _one_line(seg_file)
    subjects_dir = _one_line(subjects_dir) if subjects_dir else subjects_dir
    in_vol_file = _one_line(in_vol_file) if in_vol_file else in_vol_file
    color_table = _one_line(color_table) if color_table else color_table
    lines = [
        "# Title Segmentation Statistics ",
        "# ",
        "# generating_program mri_hsynex",
        f"# cmdline {cmdline}",
        f"# sysname  {platform.system()}",
        f"# hostname {socket.gethostname()}",
        f"# machine  {platform.machine()}",
        f"# user     {_user()}",
        f"# CreationTime {time.strftime('%Y/%m/%d-%H:%M:%S-GMT', time.gmtime())}",
        "# anatomy_type volume",
        "# ",
        f"# SUBJECTS_DIR {subjects_dir or os.environ.get('SUBJECTS_DIR', 'unknown')}",
        f"# subjectname {subject or 'unknown'}",
    ]
    lines += [m.line() for m in measures]
    lines.append(f"# SegVolFile {seg_file} ")
    lines.append(f"# ColorTable {color_table or LUT_PATH} ")
    if in_vol_file:
        lines.append(f"# InVolFile  {in_vol_file} ")
    lines.append("# Only hypothalamic subunits and their groupings are reported ")
    if volume_method:
        lines.append(f"# VolumeMethod {_one_line(volume_method)} ")
    if qc_reasons is not None:
        lines.append(f"# QCFlag {'yes' if qc_reasons else 'no'} ")
        if qc_reasons:
            lines.append(f"# QCReasons {_one_line('; '.join(qc_reasons))} ")
    lines.append(f"# VoxelVolume_mm3 {voxel_volume_mm3:g} ")
    for k, (header, name, units) in enumerate(_TABLE_COLUMNS, start=1):
        lines += [f"# TableCol {k:2d} ColHeader {header} ",
                  f"# TableCol {k:2d} FieldName {name} ",
                  f"# TableCol {k:2d} Units     {units} "]
    lines += [f"# NRows {len(rows)} ", f"# NTableCols {len(_TABLE_COLUMNS)} ",
              "# ColHeaders  " + " ".join(c[0] for c in _TABLE_COLUMNS) + " "]
    for row in rows:
        lines.append(f"{row.index:3d} {row.seg_id:3d} {row.nvoxels:9d} {row.volume_mm3:10.1f}  "
                     f"{row.name:<32s}")
    return "\n".join(lines) + "\n"


def _one_line(value) -> str:
    return " ".join(str(value).splitlines())


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def write_stats(path: str | os.PathLike, rows: Sequence[StatsRow], **header) -> None:
    """Write a ``mri_segstats``-style stats file atomically.

    Keyword arguments: ``subject``, ``seg_file``, ``voxel_volume_mm3``, ``cmdline``, and optionally
    ``subjects_dir``, ``measures`` (e.g. eTIV), ``in_vol_file``, ``color_table``,
    ``volume_method`` (how Volume_mm3 was counted), ``qc_reasons`` (the QC flag's).
    """
    text = stats_text(rows, **header)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def read_stats(path: str | os.PathLike) -> StatsFile:
    """Read a stats file (hsynex's or FreeSurfer's) with asegstats2table's column rules."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise HsynexError("stats file not found", path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise HsynexError(f"cannot read the stats file ({err})", path) from None
    out = StatsFile()
    for line in lines:
        if "#" in line:  # asegstats2table: a line holding '#' anywhere is not a data row
            if not line.lstrip().startswith("#"):
                continue
            body = line.lstrip()[1:].strip()
            if body.startswith("Measure "):
                parts = [p.strip() for p in body[len("Measure "):].split(",")]
                if len(parts) >= 4:
                    try:
                        value = float(parts[3])
                    except ValueError:
                        continue
                    out.measures[parts[0]] = value
                    out.measures[parts[1]] = value
            elif body and " " in body and not body.startswith("TableCol"):
                key, _, value = body.partition(" ")
                out.header.setdefault(key, value.strip())
            continue
        if not line.strip():
            continue
        words = line.split()
        try:
            out.rows.append(StatsRow(int(words[0]), int(words[1]), int(float(words[2])),
                                     float(words[3]), words[4]))
        except (IndexError, ValueError):
            raise HsynexError(f"not a stats row: {line.strip()!r}", path) from None
    return out


def read_etiv(path: str | os.PathLike) -> float:
    """Estimated total intracranial volume (mm^3) from a FreeSurfer ``aseg.stats``."""
    measures = read_stats(path).measures
    for key in ETIV_KEYS:
        if key in measures:
            return measures[key]
    raise HsynexError("no eTIV (EstimatedTotalIntraCranialVol) measure in the stats file", path)
