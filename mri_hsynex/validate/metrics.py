"""Overlap and group statistics of the validation report (Dice, CV, AUROC, rank-sum p)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import HsynexError
from ..labels import GROUPINGS, SUBUNIT_IDS


def dice(truth: np.ndarray, pred: np.ndarray, ids: Iterable[int]) -> float:
    """Dice overlap of the voxels whose label is in ``ids`` (same grid); NaN if both are empty."""
    ids = list(ids)
    if np.shape(truth) != np.shape(pred):
        raise HsynexError(f"Dice needs one grid, got shapes {np.shape(truth)} and {np.shape(pred)}")
    a = np.isin(truth, ids)
    b = np.isin(pred, ids)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def dice_table(truth: np.ndarray, pred: np.ndarray) -> dict[int, float]:
    """Dice of each subunit 801-810 and of the groupings 811 (left), 812 (right), 813 (whole)."""
    scores = {i: dice(truth, pred, [i]) for i in SUBUNIT_IDS}
    for group, ids in GROUPINGS.items():
        scores[group] = dice(truth, pred, ids)
    return scores


def coefficient_of_variation(values: Sequence[float]) -> float:
    """Sample standard deviation / mean (ddof = 1); NaN for fewer than 2 values or zero mean."""
    x = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if x.size < 2 or x.mean() == 0:
        return float("nan")
    return float(x.std(ddof=1) / x.mean())


def auroc(controls: Sequence[float], patients: Sequence[float]) -> float:
    """Area under the ROC curve for telling patients by a *smaller* value (atrophy): the
    probability that a random control exceeds a random patient (ties count one half)."""
    from sklearn.metrics import roc_auc_score

    c = np.asarray(controls, dtype=float)
    p = np.asarray(patients, dtype=float)
    if c.size == 0 or p.size == 0:
        raise HsynexError("AUROC needs at least one control and one patient")
    y = np.r_[np.zeros(c.size), np.ones(p.size)]
    return float(roc_auc_score(y, -np.r_[c, p]))


def auroc_interval(value: float, n_controls: int, n_patients: int,
                   z: float = 1.96) -> tuple[float, float]:
    """Approximate 95 % interval of an AUROC from its value and the group sizes (Hanley and
    McNeil 1982: the standard error of the Mann-Whitney statistic under the exponential model),
    clipped to [0, 1]. With 20 scans per group and an AUROC near 0.85 it is about ±0.12: a
    difference of a few hundredths between two runs is rank noise."""
    a = float(value)
    if not np.isfinite(a) or n_controls < 1 or n_patients < 1:
        return float("nan"), float("nan")
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_patients - 1) * (q1 - a * a)
           + (n_controls - 1) * (q2 - a * a)) / (n_controls * n_patients)
    half = z * float(np.sqrt(max(var, 0.0)))
    return max(0.0, a - half), min(1.0, a + half)


def ranksum_p(controls: Sequence[float], patients: Sequence[float]) -> float:
    """Two-sided Wilcoxon rank-sum (Mann-Whitney U) p-value of controls vs patients."""
    from scipy.stats import mannwhitneyu

    c = np.asarray(controls, dtype=float)
    p = np.asarray(patients, dtype=float)
    if c.size == 0 or p.size == 0:
        raise HsynexError("rank-sum test needs at least one control and one patient")
    return float(mannwhitneyu(c, p, alternative="two-sided").pvalue)
