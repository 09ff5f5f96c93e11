"""The targets of a validation run as data (``targets.json``); a before / after table of two.

Every ``mri_hsynex validate`` run writes ``<out>/targets.json`` beside ``validation.md``: the
target rows of issues 13 and 8 (what, goal, measured value, met) and the networks measured.
``mri_hsynex validate --compare DIR`` adds a section to the new report that sets its targets
beside those of an earlier run (``DIR`` or ``DIR/targets.json``), row by row; the same table is
printed by ``python -m mri_hsynex.validate.compare BEFORE AFTER``. That is how a candidate set of
networks is weighed against the shipped ones before it replaces them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..cli.common import run
from ..errors import HsynexError
from .tables import Target, fmt, md_table

TARGETS_FILE = "targets.json"
FORMAT = "hsynex-validate-targets/1"


def targets_record(groups: dict[int, list[Target]], networks: str, mode: str,
                   generated: str) -> dict:
    """What ``targets.json`` holds: each issue's target rows, the networks and the run mode."""
    return {
        "format": FORMAT, "generated": generated, "mode": mode, "networks": networks,
        "targets": [{"issue": issue, "what": t.what, "goal": t.goal,
                     "value": _finite(t.value), "met": None if t.met is None else bool(t.met),
                     "note": t.note}
                    for issue, rows in groups.items() for t in rows],
    }


def write_targets(path: Path, record: dict) -> Path:
    """Write ``record`` to ``path`` through a temporary name (no partial file is left)."""
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def load_targets(source: str | Path) -> dict:
    """A run's targets from its report folder or its ``targets.json``."""
    path = Path(source)
    if path.is_dir():
        path = path / TARGETS_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise HsynexError(f"{path}: no such file (a folder written by `mri_hsynex validate` "
                          f"holds {TARGETS_FILE})") from None
    except (OSError, ValueError) as err:
        raise HsynexError(f"{path}: cannot read the targets ({err})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise HsynexError(f"{path}: not a targets file of `mri_hsynex validate` "
                          f"(format {FORMAT!r} expected)")
    return record


def comparison_rows(before: dict, after: dict) -> list[tuple]:
    """One row per target of either run, in the later run's order: issue, target, goal, the
    value and status before and after, the change, and whether its status moved."""
    old = {(t["issue"], t["what"]): t for t in before["targets"]}
    new = {(t["issue"], t["what"]): t for t in after["targets"]}
    keys = list(new) + [k for k in old if k not in new]
    rows = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        goal = (b or a)["goal"]
        change = "–"
        if a and b and a["value"] is not None and b["value"] is not None:
            change = f"{b['value'] - a['value']:+.3f}"
        rows.append((key[0], key[1], goal, _cell(a), _cell(b), change, _moved(a, b)))
    return rows


def comparison_table(before: dict, after: dict) -> str:
    """The markdown table of :func:`comparison_rows`."""
    return md_table(["issue", "target", "goal", "before", "after", "change", "status"],
                    comparison_rows(before, after))


def comparison_section(before: dict, after: dict, source: str) -> str:
    """The report's section for ``--compare``."""
    moved = [r for r in comparison_rows(before, after) if r[-1] not in ("", "same")]
    return "\n\n".join([
        "## Against an earlier run",
        f"Before: `{source}` ({before.get('mode', '?')} run of {before.get('generated', '?')}; "
        f"networks {before.get('networks', '?')}). After: this run (networks "
        f"{after.get('networks', '?')}). Status moved on {len(moved)} of "
        f"{len(comparison_rows(before, after))} targets. A difference within the spread of "
        "single checkpoints or seeds (about ±0.015 whole Dice on one real scan, ±0.05 AUROC "
        "with 20 scans per group) is not a change.",
        comparison_table(before, after)])


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _cell(target: dict | None) -> str:
    if target is None:
        return "–"
    status = {True: "met", False: "missed", None: "not measured"}[target["met"]]
    return f"{fmt(target['value'])} ({status})"


def _moved(a: dict | None, b: dict | None) -> str:
    if a is None:
        return "new"
    if b is None:
        return "gone"
    if a["met"] == b["met"]:
        return "same"
    return {True: "**now met**", False: "**now missed**", None: "not measured now"}[b["met"]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mri_hsynex.validate.compare",
        description="Print a before / after table of the targets of two `mri_hsynex validate` "
                    "runs (their report folders or targets.json files).")
    parser.add_argument("before", help="the earlier run: folder or targets.json")
    parser.add_argument("after", help="the later run: folder or targets.json")
    return parser


def _work(args: argparse.Namespace) -> int:
    print(comparison_table(load_targets(args.before), load_targets(args.after)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser, _work, argv)  # the commands' help / ERROR line / exit statuses


if __name__ == "__main__":
    sys.exit(main())
