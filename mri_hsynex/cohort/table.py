"""Gather the hsynex stats of many subjects into one table, in the ``asegstats2table`` layout.

The table's first cell is ``Measure:volume`` (or ``Measure:nvoxels``); there is a row per
subject and a column per ``StructName`` of the stats files (the ten subunits and the whole
left/right/total rows), then ``EstimatedTotalIntraCranialVol`` (mm^3) read from the subject's
``stats/aseg.stats``. Stats rows are read with asegstats2table's rules (every line not starting
with ``#`` is a row; column 2 SegId, 3 NVoxels, 4 Volume_mm3, 5 StructName). A structure missing
from one subject's file is written as 0, like ``asegstats2table --all-segs``.

``etiv=True`` divides every structure volume by eTIV (a fraction, as ``asegstats2table
--etiv``; the eTIV column itself is kept in mm^3). Subjects without the stats file are named;
the table is written only with ``skip=True`` then (as ``asegstats2table --skip``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import constants as C
from ..errors import HsynexError
from .files import atomic_output

ETIV_COLUMN = "EstimatedTotalIntraCranialVol"
MEASURES = {"volume": "Volume_mm3", "nvoxels": "NVoxels"}
DELIMITERS = {"tab": "\t", "comma": ",", "space": " ", "semicolon": ";"}
DEFAULT_STATSFILE = Path(C.SUBJECT_STATS).name


@dataclass
class SubjectTable:
    """A built table: ``frame`` (subjects x columns, floats) and the subjects left out."""

    frame: object  # pandas.DataFrame (pandas is imported lazily)
    meas: str
    missing: dict[str, str] = field(default_factory=dict)  # subject -> why it is missing
    no_etiv: list[str] = field(default_factory=list)  # subjects kept without eTIV
    # subject -> the reasons of the QC flag its stats file carries (kept in the table)
    flagged: dict[str, str] = field(default_factory=dict)


def read_subjects_file(path: str | os.PathLike) -> list[str]:
    """Subject names from a text file: one per line (or separated by spaces), blank lines and
    ``#`` comments ignored."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise HsynexError(f"cannot read the subjects file ({err.strerror})", path) from err
    names = [w for line in text.splitlines() for w in line.split("#")[0].split()]
    if not names:
        raise HsynexError("no subject names in the subjects file", path)
    return names


def subjects_with_stats(subjects_dir: str | os.PathLike,
                        statsfile: str = DEFAULT_STATSFILE) -> list[str]:
    """Subjects of ``subjects_dir`` that have ``stats/<statsfile>`` (sorted)."""
    root = Path(subjects_dir)
    if not root.is_dir():
        raise HsynexError("SUBJECTS_DIR is not a folder", root)
    return sorted(p.name for p in root.iterdir() if (p / "stats" / statsfile).is_file())


def read_structure_values(path: str | os.PathLike, meas: str = "volume") -> dict[str, float]:
    """StructName -> Volume_mm3 (``meas="volume"``) or NVoxels of a stats file, read with
    asegstats2table's rules (``mri_hsynex.stats.read_stats``: every line not starting with ``#``
    is a row, column 2 SegId, 3 NVoxels, 4 Volume_mm3, 5 StructName)."""
    from ..stats import read_stats

    return _structure_values(read_stats(path), path, meas)


def _structure_values(stats, path, meas: str) -> dict[str, float]:
    """``read_structure_values`` of an already read ``stats.StatsFile``."""
    rows = stats.rows
    if not rows:
        raise HsynexError("no rows in the stats file", path)
    if meas == "nvoxels":
        return {row.name: float(row.nvoxels) for row in rows}
    return {row.name: float(row.volume_mm3) for row in rows}


def _etiv(subject_dir: Path) -> float | None:
    """eTIV (mm^3) from the subject's ``stats/aseg.stats``, None when that file is absent."""
    from ..stats import read_etiv

    path = subject_dir / C.SUBJECT_ASEG_STATS
    return read_etiv(path) if path.is_file() else None


def build_table(subjects_dir: str | os.PathLike, subjects: list[str], meas: str = "volume",
                etiv: bool = False, statsfile: str = DEFAULT_STATSFILE) -> SubjectTable:
    """The table of ``subjects`` (see the module docstring); missing subjects are listed in
    ``SubjectTable.missing`` and left out of the frame; those whose stats file carries hsynex's
    QC flag are kept and listed in ``SubjectTable.flagged``."""
    import pandas as pd

    from ..stats import read_stats

    if meas not in MEASURES:
        raise HsynexError(f"unknown measure {meas!r} (use volume or nvoxels)")
    if etiv and meas != "volume":
        raise HsynexError("--etiv divides volumes: use it with --meas volume")
    root = Path(subjects_dir)
    if not root.is_dir():
        raise HsynexError("SUBJECTS_DIR is not a folder", root)
    rows: dict[str, dict[str, float]] = {}
    missing: dict[str, str] = {}
    no_etiv: list[str] = []
    flagged: dict[str, str] = {}
    for subject in dict.fromkeys(subjects):
        subject_dir = root / subject
        path = subject_dir / "stats" / statsfile
        if not subject_dir.is_dir():
            missing[subject] = "no such subject folder"
            continue
        if not path.is_file():
            missing[subject] = f"no {Path('stats') / statsfile}"
            continue
        try:
            stats = read_stats(path)
            values = _structure_values(stats, path, meas)
            head = _etiv(subject_dir)
        except HsynexError as err:
            missing[subject] = str(err)
            continue
        if stats.qc_flag:
            flagged[subject] = stats.qc_reasons
        if head is None:
            if etiv:
                missing[subject] = f"no {C.SUBJECT_ASEG_STATS} (needed by --etiv)"
                continue
            no_etiv.append(subject)
        if etiv:
            values = {name: v / head for name, v in values.items()}
        values[ETIV_COLUMN] = float("nan") if head is None else head
        rows[subject] = values
    columns = list(dict.fromkeys(n for v in rows.values() for n in v if n != ETIV_COLUMN))
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=columns + [ETIV_COLUMN])
    frame[columns] = frame[columns].fillna(0.0)
    frame.index.name = f"Measure:{meas}"
    return SubjectTable(frame, meas, missing, no_etiv, flagged)


def format_table(table: SubjectTable, delimiter: str = "tab", transpose: bool = False) -> str:
    """The table as text: first cell ``Measure:<meas>``; ``transpose`` puts subjects in
    columns. Values use up to 10 significant digits."""
    if delimiter not in DELIMITERS:
        raise HsynexError(f"unknown delimiter {delimiter!r} (use " + ", ".join(DELIMITERS) + ")")
    sep = DELIMITERS[delimiter]
    frame = table.frame.T if transpose else table.frame
    lines = [sep.join([f"Measure:{table.meas}", *map(str, frame.columns)])]
    for name, values in frame.iterrows():
        lines.append(sep.join([str(name), *(_number(v) for v in values)]))
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return "nan" if value != value else format(float(value), ".10g")


def write_table(table: SubjectTable, path: str | os.PathLike, delimiter: str = "tab",
                transpose: bool = False) -> None:
    """Write ``format_table(...)`` to ``path`` atomically."""
    text = format_table(table, delimiter, transpose)
    with atomic_output(path) as tmp:
        tmp.write_text(text)
