"""Summaries of the case records: Dice tables, consistency, group statistics, targets.

Records are the dicts written by :mod:`mri_hsynex.validate.study` (label ids as string keys).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..labels import SUBUNIT_IDS, SUBUNIT_NAMES
from .metrics import auroc, auroc_interval, coefficient_of_variation, ranksum_p

ROW_NAMES = {**SUBUNIT_NAMES, 811: "whole left", 812: "whole right", 813: "whole"}
SHORT_NAMES = {i: SUBUNIT_NAMES[i].replace("hypothalamus_", "").replace("_", " ")
               for i in SUBUNIT_IDS}
SHORT_NAMES.update({811: "whole L", 812: "whole R", 813: "whole"})


def mean_subunit_dice(record: dict) -> float:
    """Mean Dice over the ten subunits (NaN entries, absent in both, skipped)."""
    values = [record["dice"][str(i)] for i in SUBUNIT_IDS]
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def nanmean(values: Iterable[float]) -> float:
    x = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(x)) if x else float("nan")


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a markdown table ('–' for missing)."""
    if value is None or not np.isfinite(value):
        return "–"
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def fmt_p(p: float | None) -> str:
    if p is None or not np.isfinite(p):
        return "–"
    return f"{p:.1e}" if p < 0.001 else f"{p:.3f}"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --- section 1: the grid ------------------------------------------------------------------------
def by_engine(records: list[dict], kind: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        if r["kind"] == kind:
            out.setdefault(r["engine"], []).append(r)
    return out


def grid_dice(records: list[dict], engine: str, contrast: str | None = None,
              exclude_contrast: str | None = None, label: int = 813) -> float:
    """Mean Dice of ``label`` (or mean subunit Dice for ``label=0``) over grid records."""
    values = []
    for r in records:
        if r["kind"] != "grid" or r["engine"] != engine:
            continue
        if contrast is not None and r["contrast"] != contrast:
            continue
        if exclude_contrast is not None and r["contrast"] == exclude_contrast:
            continue
        values.append(mean_subunit_dice(r) if label == 0 else r["dice"][str(label)])
    return nanmean(values)


# --- section 3: consistency ---------------------------------------------------------------------
def consistency_rows(records: list[dict], engine: str) -> list[tuple[int, float, float, float]]:
    """Per row id: (id, CV across all grid images, CV across 1 mm contrasts, mean measured /
    true volume - 1) for one engine."""
    grid = [r for r in records if r["kind"] == "grid" and r["engine"] == engine]
    rows = []
    for label in (*SUBUNIT_IDS, 811, 812, 813):
        key = str(label)
        volumes = [r["volumes"][key] for r in grid]
        one_mm = [r["volumes"][key] for r in grid if r["thickness_mm"] <= 1.0]
        bias = nanmean([r["volumes"][key] / r["truth"][key] - 1 for r in grid
                        if r["truth"][key] > 0])
        rows.append((label, coefficient_of_variation(volumes),
                     coefficient_of_variation(one_mm), bias))
    return rows


# --- section 4: group study ---------------------------------------------------------------------
@dataclass
class GroupResult:
    """AUROC / rank-sum p of one row id for one cohort and atrophy fraction."""

    cohort: str
    engine: str
    fraction: float
    label: int
    n_controls: int
    n_patients: int
    auroc: float
    p: float
    auroc_truth: float
    p_truth: float
    change: float  # mean(patients) / mean(controls) - 1, measured
    change_truth: float


def group_results(records: list[dict]) -> list[GroupResult]:
    """Every cohort x engine x fraction x row id (801-813) of the group study."""
    results = []
    group = [r for r in records if r["kind"] == "group"]
    for cohort in dict.fromkeys(r["cohort"] for r in group):
        for engine in dict.fromkeys(r["engine"] for r in group if r["cohort"] == cohort):
            rows = [r for r in group if r["cohort"] == cohort and r["engine"] == engine]
            results += _group_rows(cohort, engine, rows)
    return results


def _group_rows(cohort: str, engine: str, rows: list[dict]) -> list[GroupResult]:
    results = []
    controls = [r for r in rows if r["group"] == "control"]
    for fraction in sorted({r["fraction"] for r in rows if r["group"] == "patient"}):
        patients = [r for r in rows if r["group"] == "patient" and r["fraction"] == fraction]
        for label in (813, 811, 812, *SUBUNIT_IDS):
            key = str(label)
            c = _finite(r["volumes"][key] for r in controls)
            p = _finite(r["volumes"][key] for r in patients)
            if not c or not p:
                continue
            ct = [r["truth"][key] for r in controls]
            pt = [r["truth"][key] for r in patients]
            results.append(GroupResult(
                cohort, engine, fraction, label, len(c), len(p), auroc(c, p), ranksum_p(c, p),
                auroc(ct, pt), ranksum_p(ct, pt), _change(c, p), _change(ct, pt)))
    return results


def _finite(values: Iterable[float]) -> list[float]:
    """Measured volumes of the scans that were segmented (failed ones are NaN)."""
    return [v for v in values if v is not None and np.isfinite(v)]


def _change(controls: Sequence[float], patients: Sequence[float]) -> float:
    mean_c = float(np.mean(controls))
    return float(np.mean(patients)) / mean_c - 1 if mean_c > 0 else float("nan")


def find_group(results: list[GroupResult], cohort_prefix: str, fraction: float,
               label: int = 813, engine: str = "hsynex") -> GroupResult | None:
    for r in results:
        if r.cohort.startswith(cohort_prefix) and abs(r.fraction - fraction) < 1e-9 \
                and r.label == label and r.engine == engine:
            return r
    return None


# --- targets ------------------------------------------------------------------------------------
@dataclass
class Target:
    """One target of issue 8 and where the run stands."""

    what: str
    goal: str
    value: float | None
    met: bool | None
    note: str = ""

    @property
    def status(self) -> str:
        if self.met is None:
            return "not measured"
        return "met" if self.met else "**missed**"


def target_rows(records: list[dict], groups: list[GroupResult]) -> list[Target]:
    """The issue's targets, each with the measured value and whether it is met."""
    targets = []
    real = [r for r in records if r["kind"] == "real" and r.get("variant") == "hsynex+aseg"]
    if not real:
        real = [r for r in records if r["kind"] == "real" and r.get("variant") == "hsynex"]
    whole = nanmean(r["dice"]["813"] for r in real) if real else None
    sub = nanmean(mean_subunit_dice(r) for r in real) if real else None
    targets.append(at_least("real held-out T1: whole Dice vs teacher", whole, 0.85))
    targets.append(at_least("real held-out T1: mean subunit Dice vs teacher", sub, 0.70))
    t1 = grid_dice(records, "hsynex", contrast="T1")
    gaps = {}
    for contrast in sorted({r["contrast"] for r in records if r["kind"] == "grid"} - {"T1"}):
        gaps[contrast] = t1 - grid_dice(records, "hsynex", contrast=contrast)
    if gaps and np.isfinite(t1):
        worst = max(gaps, key=lambda c: gaps[c])
        targets.append(Target("synthetic non-T1 whole Dice within 0.05 of T1-like (worst gap)",
                              "≤ 0.05", gaps[worst], gaps[worst] <= 0.05,
                              f"worst: {worst}; T1-like {t1:.3f}"))
    else:
        targets.append(Target("synthetic non-T1 within 0.05 of T1-like", "≤ 0.05", None, None))
    for prefix, goal in (("T1-like", 0.9), ("FLAIR-like 5", 0.8)):
        g = find_group(groups, prefix, 0.10)
        targets.append(auroc_target(f"10 % atrophy, {prefix.strip()}"
                                    f"{' mm' if '5' in prefix else ''}: AUROC (whole, n = "
                                    f"{g.n_controls if g else '?'} per group)", g, goal))
    teacher_off = grid_dice(records, "teacher", exclude_contrast="T1")
    same_images = {r["acq"] for r in records if r["kind"] == "grid"
                   and r["engine"] == "teacher" and r["contrast"] != "T1"}
    hsynex_off = nanmean(r["dice"]["813"] for r in records if r["kind"] == "grid"
                         and r["engine"] == "hsynex" and r["acq"] in same_images)
    if np.isfinite(teacher_off):
        margin = hsynex_off - teacher_off
        targets.append(Target("teacher clearly worse off-contrast (hsynex − teacher, whole Dice, "
                              "same non-T1 images)", "≥ 0.10", margin, margin >= 0.10,
                              f"hsynex {hsynex_off:.3f}, teacher {teacher_off:.3f}"))
    else:
        targets.append(Target("teacher clearly worse off-contrast", "≥ 0.10", None, None,
                              "teacher not run"))
    return targets


def auroc_target(what: str, g: GroupResult | None, goal: float) -> Target:
    """An atrophy AUROC target, its note giving the AUROC's approximate 95 % interval and the
    measured against the true change of the mean volume."""
    target = at_least(what, g.auroc if g else None, goal)
    if g is not None and np.isfinite(g.auroc):
        lo, hi = auroc_interval(g.auroc, g.n_controls, g.n_patients)
        extra = (f"95 % interval {lo:.2f}–{hi:.2f}; mean volume {g.change * 100:+.1f} % "
                 f"(true {g.change_truth * 100:+.1f} %)")
        target.note = f"{target.note}; {extra}" if target.note else extra
    return target


def at_least(what: str, value: float | None, goal: float) -> Target:
    """A target met when ``value`` >= ``goal`` (unknown when the value is missing)."""
    if value is None or not np.isfinite(value):
        return Target(what, f"≥ {goal:g}", None, None)
    return Target(what, f"≥ {goal:g}", value, value >= goal,
                  "" if value >= goal else f"short by {goal - value:.3f}")
