"""``mri_hsynex groupstats``: compare two groups of subjects on their hypothalamic volumes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .common import new_parser, run

DESCRIPTION = """\
Compare two groups on the volumes of a stats table (mri_hsynex table, asegstats2table layout).

Per structure: group mean/SD, eTIV-adjusted volumes (residual method: slope of volume ~ eTIV
fitted in the reference group; or ratio volume/eTIV), Wilcoxon rank-sum (Mann-Whitney U) p with
Benjamini-Hochberg FDR, Cohen's d and AUROC (group B vs the reference A), and with --covariates
an OLS model volume ~ group + eTIV + covariates.

--groups: CSV or TSV with a 'subject' column (else the first column), a 'group' column with
exactly two values, and any covariate columns. Subjects in only one of the two files are named
and left out.

Writes groupstats.tsv, groupstats_adjusted_volumes.tsv and groupstats.png into --o.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("mri_hsynex groupstats", DESCRIPTION)
    parser.add_argument("--table", required=True, metavar="T", help="table from mri_hsynex table")
    parser.add_argument("--groups", required=True, metavar="CSV",
                        help="subject, group (two values) and covariate columns")
    parser.add_argument("--covariates", default="", metavar="A,B",
                        help="comma-separated columns of --groups for the OLS model (e.g. age,sex)")
    parser.add_argument("--adjust", choices=("residual", "ratio", "none"), default="residual",
                        help="eTIV adjustment of the volumes (default: residual)")
    parser.add_argument("--reference", default=None, metavar="GROUP",
                        help="reference group A, e.g. controls (default: the first group named "
                             "in --groups)")
    parser.add_argument("--o", metavar="DIR", default=None,
                        help="output folder (default: the table's folder)")
    return parser


def work(args: argparse.Namespace) -> int:
    from ..cohort.groupstats import run_groupstats

    covariates = [c.strip() for c in args.covariates.split(",") if c.strip()]
    comparison, paths = run_groupstats(args.table, args.groups, args.o, covariates,
                                       args.adjust, args.reference)
    a, b = comparison.groups
    res = comparison.results
    print(f"groupstats: {b} (n={res['n_B'].iloc[0]}) vs {a} (n={res['n_A'].iloc[0]}), "
          f"eTIV adjustment: {comparison.adjust}")
    for _, row in res.iterrows():
        print(f"  {row['structure']:<36s} d={row['cohen_d']:+.2f}  AUROC={row['auroc']:.2f}  "
              f"p={row['p_ranksum']:.3g}  FDR p={row['p_ranksum_fdr']:.3g}")
    for path in paths.values():
        print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser, work, argv)


if __name__ == "__main__":
    sys.exit(main())
