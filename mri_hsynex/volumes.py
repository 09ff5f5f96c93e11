"""Volumes of a hypothalamic-subunit segmentation: per label, the groupings, CSV rows."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from .errors import HsynexError
from .io import atomic_path
from .labels import ALL_OUTPUT_ROWS, GROUPINGS, SUBUNIT_IDS, VOLUME_COLUMNS
from .stats import StatsRow

# bump when soft volumes are summed differently (validation records are redone; 2: each
# structure's volume floored at 0)
SOFT_VOLUME_RULE = 2


def channel_volumes(posteriors: np.ndarray, voxel_volume_mm3: float) -> dict[int, float]:
    """Soft volume (mm^3) of each of 801-810 from posteriors (..., 11; channel k holds label
    800 + k): the channel's sum x voxel volume, never below 0. The partial-volume correction's
    fractions may fall a little below 0 (``predict.pvc.LOWEST_FRACTION``), so a subunit that
    holds almost nothing can sum to a small negative amount; no structure has a negative
    volume."""
    posteriors = np.asarray(posteriors)
    sums = posteriors.reshape(-1, posteriors.shape[-1]).sum(axis=0, dtype=np.float64)
    return {label: max(0.0, float(sums[k]) * voxel_volume_mm3)
            for k, label in enumerate(SUBUNIT_IDS, start=1)}


def structure_volumes(seg: np.ndarray, posteriors: np.ndarray | None,
                      voxel_volume_mm3: float) -> dict[int, tuple[int, float]]:
    """``{label id: (NVoxels, volume mm^3)}`` for 801-810 and the groupings 811-813.

    NVoxels counts ``seg`` voxels; the volume is the soft volume (``channel_volumes``: the sum of
    the label's posterior channel x voxel volume, never below 0; channel k holds label 800 + k)
    or, without posteriors, the count x voxel volume.
    """
    seg = np.asarray(seg)
    if posteriors is not None:
        channels = len(SUBUNIT_IDS) + 1
        if posteriors.ndim != seg.ndim + 1 or posteriors.shape[:-1] != seg.shape or \
                posteriors.shape[-1] != channels:
            raise ValueError(f"posteriors of shape {posteriors.shape} do not match a "
                             f"segmentation of shape {seg.shape} with {channels} channels")
    volumes: dict[int, tuple[int, float]] = {}
    soft = None if posteriors is None else channel_volumes(posteriors, voxel_volume_mm3)
    for label in SUBUNIT_IDS:
        count = int(np.count_nonzero(seg == label))
        volumes[label] = (count, count * voxel_volume_mm3 if soft is None else soft[label])
    for group, members in GROUPINGS.items():
        volumes[group] = (sum(volumes[m][0] for m in members),
                          sum(volumes[m][1] for m in members))
    return volumes


def stats_rows(volumes: dict[int, tuple[int, float]]) -> list[StatsRow]:
    """Rows of a stats file, in LUT order, with LUT names."""
    return [StatsRow(i, row.id, volumes[row.id][0], volumes[row.id][1], row.name)
            for i, row in enumerate(ALL_OUTPUT_ROWS, start=1)]


def volumes_csv_row(subject: str, volumes: dict[int, tuple[int, float]]) -> dict:
    """``{"subject": ..., <LUT name>: mm^3, ..., "whole_left", "whole_right", "whole"}``."""
    ids = SUBUNIT_IDS + tuple(GROUPINGS)
    return {"subject": subject,
            **{name: round(volumes[i][1], 3) for name, i in zip(VOLUME_COLUMNS, ids)}}


def write_volumes_csv(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write volume rows (``volumes_csv_row``) as CSV, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["subject", *VOLUME_COLUMNS])
        writer.writeheader()
        writer.writerows(rows)


def read_volumes_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a volumes CSV, volumes as floats (mm^3)."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = reader.fieldnames or []
    except FileNotFoundError:
        raise HsynexError("volumes CSV not found", path) from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise HsynexError(f"cannot read the volumes CSV ({err})", path) from None
    missing = [c for c in ("subject", *VOLUME_COLUMNS) if c not in columns]
    if missing:
        raise HsynexError(f"volumes CSV lacks columns {missing}", path)
    out = []
    for number, row in enumerate(rows, start=2):
        try:
            out.append({k: (v if k == "subject" else float(v)) for k, v in row.items()
                        if k is not None})
        except (TypeError, ValueError):
            raise HsynexError(f"volumes CSV line {number} has a value that is not a number",
                              path) from None
    return out
