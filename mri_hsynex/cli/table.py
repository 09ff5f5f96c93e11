"""``mri_hsynex table``: the hsynex stats of many subjects in one asegstats2table-style table."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import constants as C
from ..errors import HsynexError
from .common import new_parser, run

DESCRIPTION = f"""\
Gather {C.SUBJECT_STATS} of many subjects into one table, in the layout of
FreeSurfer's asegstats2table: first cell Measure:volume, a row per subject, a column per
structure (the ten subunits, whole left, whole right, whole), then
EstimatedTotalIntraCranialVol read from each subject's {C.SUBJECT_ASEG_STATS}.

--etiv divides the volumes by eTIV (a fraction; the eTIV column stays in mm^3).
Subjects without a stats file are named and the table is not written (exit 1), unless --skip.
With no --subjects/--subjectsfile: every subject of --sd that has the stats file.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("mri_hsynex table", DESCRIPTION)
    parser.add_argument("--sd", metavar="DIR", default=None,
                        help="SUBJECTS_DIR (default: $SUBJECTS_DIR)")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--subjects", nargs="+", metavar="SUBJ", default=None, help="subjects")
    who.add_argument("--subjectsfile", metavar="F", default=None,
                     help="text file with one subject per line")
    parser.add_argument("--meas", choices=("volume", "nvoxels"), default="volume",
                        help="Volume_mm3 (default) or NVoxels")
    parser.add_argument("--etiv", action="store_true", help="divide the volumes by eTIV")
    parser.add_argument("--delimiter", "-d", choices=("tab", "comma", "space", "semicolon"),
                        default="tab", help="column delimiter (default: tab)")
    parser.add_argument("--skip", action="store_true",
                        help="leave out subjects without stats instead of failing")
    parser.add_argument("--transpose", action="store_true",
                        help="structures as rows, subjects as columns")
    parser.add_argument("--statsfile", default=None, metavar="NAME",
                        help=f"stats file name inside each subject's stats/ "
                             f"(default: {os.path.basename(C.SUBJECT_STATS)})")
    parser.add_argument("--tablefile", "-t", required=True, metavar="OUT", help="output table")
    return parser


def work(args: argparse.Namespace) -> int:
    from ..cohort.table import (
        DEFAULT_STATSFILE,
        build_table,
        read_subjects_file,
        subjects_with_stats,
        write_table,
    )

    sd = args.sd or os.environ.get("SUBJECTS_DIR")
    if not sd:
        raise HsynexError("no subjects folder: give --sd or set SUBJECTS_DIR")
    statsfile = args.statsfile or DEFAULT_STATSFILE
    if args.subjects:
        subjects = args.subjects
    elif args.subjectsfile:
        subjects = read_subjects_file(args.subjectsfile)
    else:
        subjects = subjects_with_stats(sd, statsfile)
        if not subjects:
            raise HsynexError(f"no subject with stats/{statsfile} in", sd)
    table = build_table(sd, subjects, args.meas, args.etiv, statsfile)
    for subject, why in table.missing.items():
        print(f"{'WARNING' if args.skip else 'ERROR'}: missing subject {subject}: {why}",
              file=sys.stderr)
    if table.missing and not args.skip:
        raise HsynexError(f"{len(table.missing)} subject(s) missing (use --skip to leave them "
                          "out); table not written", args.tablefile)
    if table.frame.empty:
        raise HsynexError("no subject left for the table", args.tablefile)
    for subject in table.no_etiv:
        print(f"WARNING: no {C.SUBJECT_ASEG_STATS} for {subject}: eTIV left empty (nan)",
              file=sys.stderr)
    for subject, reasons in table.flagged.items():
        print(f"WARNING: QC flag raised for {subject} (kept in the table; look at its QC figure "
              f"before using its volumes): {reasons or 'no reason recorded'}", file=sys.stderr)
    write_table(table, args.tablefile, args.delimiter, args.transpose)
    rows, cols = table.frame.shape
    print(f"wrote {args.tablefile} ({rows} subjects, {cols - 1} structures + eTIV)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser, work, argv)


if __name__ == "__main__":
    sys.exit(main())
