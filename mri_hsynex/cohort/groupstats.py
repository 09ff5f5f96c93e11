"""Compare two groups of subjects on the structure volumes of a stats table.

Input: a table in the ``asegstats2table`` layout (``mri_hsynex table``; first cell
``Measure:volume``, a row per subject, a column per structure, plus
``EstimatedTotalIntraCranialVol``) and a groups file (CSV/TSV with a ``subject`` column, a
``group`` column with exactly two values, and optional covariate columns).

Per structure (all volumes in mm^3):

- raw mean and SD per group;
- eTIV-adjusted volumes, by the *residual* method (default): the slope ``b`` of
  ``volume ~ eTIV`` is fitted by OLS in the reference group and every subject gets
  ``volume - b * (eTIV - mean eTIV of all subjects)``, i.e. its volume at the cohort's mean head
  size; or by the *ratio* method (``volume / eTIV``, a fraction, as ``asegstats2table --etiv``);
  or none;
- on the adjusted volumes: the Wilcoxon rank-sum test (Mann-Whitney U, two-sided,
  ``scipy.stats.mannwhitneyu``) with Benjamini-Hochberg FDR over the structures
  (``statsmodels``), Cohen's d = (mean_B - mean_A) / pooled SD, and the AUROC of the volume for
  telling group B from group A (``sklearn.metrics.roc_auc_score``: the probability that a
  random B subject has the larger volume; below 0.5 when B is smaller);
- with covariates: the OLS model ``volume ~ C(group) + eTIV + covariates`` (``statsmodels``
  formula; text covariates are categorical), reporting the group coefficient (B - A, mm^3), its
  t and p (and FDR over structures).

Group A is the reference (``reference``, default the first group named in the groups file).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import HsynexError
from ..labels import ALL_OUTPUT_ROWS
from .files import atomic_output
from .table import ETIV_COLUMN

ADJUST_METHODS = ("residual", "ratio", "none")
RESULTS_NAME = "groupstats.tsv"
ADJUSTED_NAME = "groupstats_adjusted_volumes.tsv"
FIGURE_NAME = "groupstats.png"


@dataclass
class GroupComparison:
    """The per-structure results and what was left out."""

    results: pd.DataFrame  # one row per structure
    adjusted: pd.DataFrame  # subject x structure volumes used for the tests (+ group column)
    groups: tuple[str, str]  # (reference A, group B)
    adjust: str
    only_in_table: list[str] = field(default_factory=list)
    only_in_groups: list[str] = field(default_factory=list)
    covariates: tuple[str, ...] = ()


# --- reading ---------------------------------------------------------------------------------
def _sniff_sep(path: Path) -> str:
    try:
        with open(path) as handle:
            first = handle.readline()
    except OSError as err:
        raise HsynexError(f"cannot read ({err.strerror})", path) from err
    if not first.strip():
        raise HsynexError("empty file", path)
    for sep in ("\t", ",", ";"):
        if sep in first:
            return sep
    return r"\s+"


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A stats table as subject x column floats (index: subject ids as text).

    Accepts tab, comma, semicolon or space delimiters and the ``--transpose`` layout.
    """
    path = Path(path)
    sep = _sniff_sep(path)
    try:
        table = pd.read_csv(path, sep=sep, index_col=0, dtype={0: str}, engine="python")
    except (ValueError, pd.errors.ParserError) as err:
        raise HsynexError(f"not a stats table ({err})", path) from err
    if not str(table.index.name or "").startswith("Measure:"):
        raise HsynexError("not an asegstats2table-style table (first cell is not Measure:...)",
                          path)
    known = {row.name for row in ALL_OUTPUT_ROWS} | {ETIV_COLUMN}
    if not known & set(map(str, table.columns)) and known & set(map(str, table.index)):
        table = table.T  # the --transpose layout: structures as rows
    table.index = table.index.map(str)
    table.columns = table.columns.map(str)
    try:
        return table.astype(float)
    except ValueError as err:
        raise HsynexError(f"the table has non-numeric values ({err})", path) from err


def read_groups(path: str | os.PathLike) -> pd.DataFrame:
    """The groups file as a frame indexed by subject, with a text ``group`` column.

    The subject column is ``subject`` (any case) or else the first column.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, sep=_sniff_sep(path), dtype=str, engine="python")
    except (ValueError, pd.errors.ParserError) as err:
        raise HsynexError(f"cannot read the groups file ({err})", path) from err
    lower = {c.lower(): c for c in frame.columns}
    subject_col = lower.get("subject", frame.columns[0])
    if "group" not in lower:
        raise HsynexError("the groups file needs a 'group' column (columns: "
                          + ", ".join(frame.columns) + ")", path)
    frame = frame.rename(columns={lower["group"]: "group"}).set_index(subject_col)
    frame.index = frame.index.map(lambda s: str(s).strip())
    frame.index.name = "subject"
    if frame.index.duplicated().any():
        dups = sorted(set(frame.index[frame.index.duplicated()]))
        raise HsynexError("subjects listed twice in the groups file: " + ", ".join(dups), path)
    frame["group"] = frame["group"].str.strip()
    for col in frame.columns.drop("group"):  # numbers where every value is a number
        numeric = pd.to_numeric(frame[col], errors="coerce")
        if numeric.notna().sum() == frame[col].notna().sum():
            frame[col] = numeric
    return frame


# --- statistics ------------------------------------------------------------------------------
def adjust_for_etiv(volumes: pd.DataFrame, etiv: pd.Series, reference: pd.Series,
                    method: str = "residual") -> pd.DataFrame:
    """eTIV-adjusted volumes (see the module docstring); ``reference`` marks the subjects whose
    fit gives the residual slope."""
    import statsmodels.api as sm

    if method == "none":
        return volumes.copy()
    if method == "ratio":
        return volumes.div(etiv, axis=0)
    if method != "residual":
        raise HsynexError(f"unknown eTIV adjustment {method!r} (use one of "
                          + ", ".join(ADJUST_METHODS) + ")")
    design = sm.add_constant(etiv[reference].to_numpy(float))
    adjusted = volumes.copy()
    for column in volumes.columns:
        slope = sm.OLS(volumes.loc[reference, column].to_numpy(float), design).fit().params[1]
        adjusted[column] = volumes[column] - slope * (etiv - etiv.mean())
    return adjusted


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """(mean b - mean a) / pooled SD (ddof 1). NaN when the pooled SD is 0."""
    na, nb = len(a), len(b)
    pooled = np.sqrt(((na - 1) * np.var(a, ddof=1) + (nb - 1) * np.var(b, ddof=1))
                     / (na + nb - 2))
    return float((np.mean(b) - np.mean(a)) / pooled) if pooled > 0 else float("nan")


def _tests(values: pd.Series, in_b: pd.Series) -> dict[str, float]:
    from scipy.stats import mannwhitneyu
    from sklearn.metrics import roc_auc_score

    a, b = values[~in_b].to_numpy(float), values[in_b].to_numpy(float)
    test = mannwhitneyu(b, a, alternative="two-sided")
    return {"U": float(test.statistic), "p_ranksum": float(test.pvalue),
            "cohen_d": cohens_d(a, b), "auroc": float(roc_auc_score(in_b, values))}


def _ols(volume: pd.Series, subjects: pd.DataFrame, groups: tuple[str, str],
         covariates: Sequence[str], use_etiv: bool) -> dict[str, float]:
    import statsmodels.formula.api as smf

    data = subjects[["group", *covariates]].copy()
    data["y"] = volume
    terms = [f"C(group, Treatment(reference={groups[0]!r}))"]
    if use_etiv:
        data["etiv"] = subjects[ETIV_COLUMN]
        terms.append("etiv")
    for i, name in enumerate(covariates):  # safe names for the formula
        data[f"cov{i}"] = data[name]
        is_number = pd.api.types.is_numeric_dtype(data[name])
        terms.append(f"cov{i}" if is_number else f"C(cov{i})")
    fit = smf.ols("y ~ " + " + ".join(terms), data=data, missing="drop").fit()
    key = f"{terms[0]}[T.{groups[1]}]"
    return {"ols_beta": float(fit.params[key]), "ols_t": float(fit.tvalues[key]),
            "ols_p": float(fit.pvalues[key]), "ols_n": int(fit.nobs)}


def compare_groups(table: pd.DataFrame, groups: pd.DataFrame, reference: str | None = None,
                   adjust: str = "residual", covariates: Sequence[str] = ()
                   ) -> GroupComparison:
    """Per-structure group statistics (see the module docstring) for two groups."""
    from statsmodels.stats.multitest import multipletests

    names = list(dict.fromkeys(groups["group"].dropna()))
    if len(names) != 2:
        raise HsynexError(f"groupstats needs exactly two groups, the groups file has "
                          f"{len(names)}: " + ", ".join(names))
    if reference is not None and reference not in names:
        raise HsynexError(f"reference group {reference!r} is not one of " + ", ".join(names))
    ref = reference or names[0]
    pair = (ref, names[1] if ref == names[0] else names[0])
    missing_cov = [c for c in covariates if c not in groups.columns]
    if missing_cov:
        raise HsynexError("covariates not in the groups file: " + ", ".join(missing_cov))
    if adjust not in ADJUST_METHODS:
        raise HsynexError(f"unknown eTIV adjustment {adjust!r} (use one of "
                          + ", ".join(ADJUST_METHODS) + ")")

    labelled = groups["group"].dropna()
    only_in_table = sorted(set(table.index) - set(labelled.index))
    only_in_groups = sorted(set(labelled.index) - set(table.index))
    subjects = [s for s in table.index if s in labelled.index]
    data = table.loc[subjects]
    sample = groups.loc[subjects]
    for name in pair:
        if (sample["group"] == name).sum() < 2:
            raise HsynexError(f"group {name!r} has fewer than two subjects in the table")

    has_etiv = ETIV_COLUMN in data.columns and data[ETIV_COLUMN].notna().all()
    if adjust != "none" and not has_etiv:
        raise HsynexError(f"the table has no {ETIV_COLUMN} for every subject: make it with "
                          "stats/aseg.stats present, or use --adjust none")
    structures = [c for c in data.columns if c != ETIV_COLUMN]
    volumes = data[structures]
    in_b = sample["group"] == pair[1]
    etiv = data[ETIV_COLUMN] if has_etiv else None
    adjusted = adjust_for_etiv(volumes, etiv, ~in_b, adjust) if has_etiv else volumes.copy()
    if has_etiv:
        sample = sample.assign(**{ETIV_COLUMN: etiv})

    rows = []
    for structure in structures:
        row: dict[str, object] = {"structure": structure}
        for tag, mask in (("A", ~in_b), ("B", in_b)):
            row[f"n_{tag}"] = int(mask.sum())
            row[f"mean_{tag}"] = float(volumes.loc[mask, structure].mean())
            row[f"sd_{tag}"] = float(volumes.loc[mask, structure].std(ddof=1))
        if adjust != "none":
            for tag, mask in (("A", ~in_b), ("B", in_b)):
                row[f"adj_mean_{tag}"] = float(adjusted.loc[mask, structure].mean())
                row[f"adj_sd_{tag}"] = float(adjusted.loc[mask, structure].std(ddof=1))
        row.update(_tests(adjusted[structure], in_b))
        if covariates:
            row.update(_ols(volumes[structure], sample, pair, covariates, has_etiv))
        rows.append(row)
    results = pd.DataFrame(rows)
    results.insert(1, "group_A", pair[0])
    results.insert(2, "group_B", pair[1])
    results.insert(results.columns.get_loc("p_ranksum") + 1, "p_ranksum_fdr",
                   multipletests(results["p_ranksum"], method="fdr_bh")[1])
    if covariates:
        results.insert(results.columns.get_loc("ols_p") + 1, "ols_p_fdr",
                       multipletests(results["ols_p"], method="fdr_bh")[1])
    adjusted.insert(0, "group", sample["group"])
    return GroupComparison(results, adjusted, pair, adjust, only_in_table, only_in_groups,
                           tuple(covariates))


# --- outputs ---------------------------------------------------------------------------------
def plot_groups(comparison: GroupComparison, path: str | os.PathLike) -> None:
    """Box plots with the subjects as jittered points, one panel per structure (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    structures = list(comparison.results["structure"])
    ncols = min(4, len(structures))
    nrows = -(-len(structures) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.0 * nrows), squeeze=False)
    rng = np.random.default_rng(0)  # fixed jitter: the same figure for the same input
    unit = {"residual": "mm³ (eTIV-adjusted)", "ratio": "volume / eTIV",
            "none": "mm³"}[comparison.adjust]
    for ax, (_, res) in zip(axes.flat, comparison.results.iterrows()):
        values = [comparison.adjusted.loc[comparison.adjusted["group"] == g, res["structure"]]
                  for g in comparison.groups]
        ax.boxplot(values, showfliers=False, widths=0.5)
        ax.set_xticks([1, 2], labels=list(comparison.groups))
        for k, v in enumerate(values, start=1):
            ax.plot(k + rng.uniform(-0.12, 0.12, len(v)), v, "o", ms=3, alpha=0.6)
        ax.set_title(f"{res['structure']}\nFDR p={res['p_ranksum_fdr']:.3g}, "
                     f"d={res['cohen_d']:.2f}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_ylabel(unit, fontsize=7)
    for ax in list(axes.flat)[len(structures):]:
        ax.axis("off")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def write_tsv(frame: pd.DataFrame, path: str | os.PathLike, index: bool = False) -> None:
    """``frame`` as a tab-separated file (6 significant digits), written atomically."""
    with atomic_output(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=index, float_format="%.6g")


def run_groupstats(table_path: str | os.PathLike, groups_path: str | os.PathLike,
                   out_dir: str | os.PathLike | None = None, covariates: Sequence[str] = (),
                   adjust: str = "residual", reference: str | None = None,
                   warn: Callable[[str], None] | None = None
                   ) -> tuple[GroupComparison, dict[str, Path]]:
    """Read the table and groups, compare, and write ``groupstats.tsv``, the adjusted volumes
    and ``groupstats.png`` into ``out_dir`` (default: the table's folder)."""
    warn = warn or (lambda text: print(f"WARNING: {text}", file=sys.stderr))
    table, groups = read_table(table_path), read_groups(groups_path)
    comparison = compare_groups(table, groups, reference, adjust, covariates)
    if comparison.only_in_table:
        warn("subjects in the table but not in the groups file (left out): "
             + ", ".join(comparison.only_in_table))
    if comparison.only_in_groups:
        warn("subjects in the groups file but not in the table (left out): "
             + ", ".join(comparison.only_in_groups))
    out = Path(out_dir) if out_dir is not None else Path(table_path).resolve().parent
    paths = {"results": out / RESULTS_NAME, "adjusted": out / ADJUSTED_NAME,
             "figure": out / FIGURE_NAME}
    write_tsv(comparison.results, paths["results"])
    adjusted = comparison.adjusted.copy()
    adjusted.index.name = "subject"
    write_tsv(adjusted, paths["adjusted"], index=True)
    plot_groups(comparison, paths["figure"])
    return comparison, paths
