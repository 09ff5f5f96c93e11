"""Reference volumes (mean and SD per structure, mm³) for the QC z-scores of the sidecar.

``mri_hsynex/data/reference_volumes.json`` holds ``{"provenance": ..., "volumes": {name:
{"mean": mm3, "sd": mm3, "n": subjects}}}`` with names from ``labels.ALL_OUTPUT_ROWS``.
``build_reference`` derives it from a table of per-subject volumes (e.g. the teacher's volumes
on real subjects, ``build/labels/subunit_volumes.tsv``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import HsynexError
from ..labels import ALL_OUTPUT_ROWS

REFERENCE_FILE = Path(__file__).resolve().parents[1] / "data" / "reference_volumes.json"
ROW_NAMES = {row.id: row.name for row in ALL_OUTPUT_ROWS}
SD_FLOOR_FRACTION = 0.15


def load_reference(path: str | os.PathLike = REFERENCE_FILE) -> dict:
    """The reference table; an empty one (no z-scores) if the file is missing."""
    path = Path(path)
    if not path.exists():
        return {"provenance": "none (reference file missing)", "volumes": {}}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise HsynexError(f"cannot read reference volumes ({err})", path) from None


def z_scores(volumes_mm3: dict[int, float], reference: dict) -> dict[int, float]:
    """Label id -> (volume - mean) / SD for every structure the reference knows.

    The SD used is at least ``sd_floor_fraction`` (reference key, default 0.15) of the mean: a
    handful of subjects underestimates the population spread, and different tools (and soft vs
    hard volumes) differ systematically.
    """
    table = reference.get("volumes", {})
    floor = float(reference.get("sd_floor_fraction", SD_FLOOR_FRACTION))
    out: dict[int, float] = {}
    for label, volume in volumes_mm3.items():
        ref = table.get(ROW_NAMES.get(label, ""))
        if not ref:
            continue
        sd = max(float(ref.get("sd", 0)), floor * abs(float(ref["mean"])))
        if sd > 0:
            out[label] = (float(volume) - float(ref["mean"])) / sd
    return out


# two-sided tail of the QC's implausible-volume test: what |z| > 3 would give if the reference
# were the whole population
Z_TAIL = 0.0027
Z_LIMIT_KNOWN_POPULATION = 3.0


def z_limit(reference: dict, tail: float = Z_TAIL) -> float:
    """|z| above which a volume is implausible, for a reference of ``n`` subjects: the
    two-sided ``tail`` prediction limit of one new subject, t(n - 1) x sqrt(1 + 1/n) (4.8 for
    n = 8, 3.5 for 20, -> 3 for many); 3.0 where the reference does not say its ``n``.

    With a handful of subjects a z-score's |z| > 3 is common in healthy scans (sub-03 and
    sub-08 flagged for an anterior subunit of 41 and 31 mm3 against 24 +- 5.3 and 17.5 +- 4.2,
    n = 8): the mean and SD are themselves uncertain."""
    ns = [int(v["n"]) for v in reference.get("volumes", {}).values() if v.get("n")]
    if not ns:
        return Z_LIMIT_KNOWN_POPULATION
    n = max(min(ns), 2)  # an SD needs two subjects (build_reference writes no row with fewer)
    from scipy import stats

    return float(stats.t.ppf(1.0 - tail / 2.0, n - 1) * np.sqrt(1.0 + 1.0 / n))


def build_reference(per_subject: dict[str, dict[str, float]], provenance: str) -> dict:
    """Mean/SD (ddof 1) per structure from ``{subject: {structure name: mm3}}``; the whole-
    hypothalamus rows (811-813) are summed from the subunits when absent."""
    names = [row.name for row in ALL_OUTPUT_ROWS]
    columns: dict[str, list[float]] = {n: [] for n in names}
    for volumes in per_subject.values():
        volumes = dict(volumes)
        left = sum(volumes.get(ROW_NAMES[i], 0.0) for i in range(801, 806))
        right = sum(volumes.get(ROW_NAMES[i], 0.0) for i in range(806, 811))
        volumes.setdefault(ROW_NAMES[811], left)
        volumes.setdefault(ROW_NAMES[812], right)
        volumes.setdefault(ROW_NAMES[813], left + right)
        for name in names:
            if name in volumes:
                columns[name].append(float(volumes[name]))
    table = {}
    for name, values in columns.items():
        if len(values) >= 2:
            table[name] = {"mean": round(float(np.mean(values)), 1),
                           "sd": round(float(np.std(values, ddof=1)), 1), "n": len(values)}
    return {"provenance": provenance, "sd_floor_fraction": SD_FLOOR_FRACTION, "volumes": table}


def reference_from_tsv(path: str | os.PathLike) -> dict:
    """Reference from a volumes TSV (``subject``, the ten LUT names, ``whole_left``,
    ``whole_right``, ``whole``; e.g. ``build/labels/subunit_volumes.tsv``)."""
    import csv

    from ..labels import VOLUME_COLUMNS

    names = dict(zip(VOLUME_COLUMNS, [row.name for row in ALL_OUTPUT_ROWS]))
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except OSError as err:
        raise HsynexError(f"cannot read volumes table ({err.strerror})", path) from None
    per_subject = {r["subject"]: {names[c]: float(r[c]) for c in VOLUME_COLUMNS if r.get(c)}
                   for r in rows}
    return build_reference(per_subject, f"mean and SD (ddof 1) of the teacher's volumes "
                           f"(Billot et al. 2020 network, FreeSurfer's "
                           f"mri_segment_hypothalamic_subunits) on {len(per_subject)} real "
                           f"subjects: {', '.join(sorted(per_subject))} ({path.name})")


def main(argv: list[str] | None = None) -> int:
    """``python -m mri_hsynex.predict.reference TSV``: rewrite the shipped reference file."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m mri_hsynex.predict.reference build/labels/subunit_volumes.tsv",
              file=sys.stderr)
        return 1
    from ..io import atomic_path

    reference = reference_from_tsv(argv[0])
    REFERENCE_FILE.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(REFERENCE_FILE) as tmp:
        Path(tmp).write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {REFERENCE_FILE} ({reference['provenance']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
