"""``mri_hsynex subjects``: segment the hypothalamic subunits of recon-all subjects.

The worker behind ``mri_segment_hypothalamus_synex`` (the bash wrapper validates the flags and
calls this). Each subject is processed like a recon-all module (see
``mri_hsynex.cohort.subject_run``); subjects run in this process or on Dask workers.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence

from .. import constants as C
from ..errors import HsynexError
from .common import add_compute_flags, add_model_flag, add_volume_flag, new_parser, run

DESCRIPTION = f"""\
Segment the hypothalamic subunits of FreeSurfer subjects after recon-all.

Input per subject: {C.SUBJECT_INPUTS[0]} (else {C.SUBJECT_INPUTS[1]}, else {C.SUBJECT_INPUTS[2]})
and {C.SUBJECT_ASEG} (ventral-DC mask). Outputs: {C.SUBJECT_SEG},
{C.SUBJECT_VOLUMES}, {C.SUBJECT_STATS}, {C.SUBJECT_QC}
(and {C.SUBJECT_POSTERIORS} with --post); log in {C.SUBJECT_LOG}.
A subject with {C.SUBJECT_ERROR_FLAG} or a running lock is refused; a subject whose outputs are
newer than its inputs is skipped unless --force. Exit status 1 if any subject failed or was
refused.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("mri_hsynex subjects", DESCRIPTION)
    parser.add_argument("--sd", metavar="DIR", default=None,
                        help="SUBJECTS_DIR (default: $SUBJECTS_DIR)")
    parser.add_argument("--s", metavar="SUBJ", nargs="*", default=None,
                        help="subjects (no names or no --s: every subject with mri/aseg.mgz)")
    parser.add_argument("--post", action="store_true", help="also write the posteriors")
    parser.add_argument("--force", action="store_true",
                        help="redo subjects whose outputs are newer than their inputs")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="subjects processed in parallel on a local Dask cluster "
                             "(default 1: in this process)")
    parser.add_argument("--dask-scheduler", metavar="ADDR", default=None,
                        help="use an existing Dask cluster, e.g. tcp://HOST:8786")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_volume_flag(parser)
    add_compute_flags(parser)
    add_model_flag(parser)
    # The command line to echo into each subject's log (the wrapper passes its own).
    parser.add_argument("--cmdline", default=None, help=argparse.SUPPRESS)
    return parser


def _subjects_dir(args: argparse.Namespace) -> str:
    sd = args.sd or os.environ.get("SUBJECTS_DIR")
    if not sd:
        raise HsynexError("no subjects folder: give --sd or set SUBJECTS_DIR")
    if not os.path.isdir(sd):
        raise HsynexError("SUBJECTS_DIR is not a folder", sd)
    return sd


def work(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from ..cohort.scale import run_cohort
    from ..cohort.subject_run import SubjectOptions, find_subjects

    sd = _subjects_dir(args)
    if args.threads is not None and args.threads < 1:
        raise HsynexError(f"--threads must be at least 1, not {args.threads}")
    if args.model and not os.path.isdir(args.model):
        raise HsynexError("model folder not found", args.model)
    subjects = args.s or find_subjects(sd)
    if not subjects:
        raise HsynexError(f"no subject with {C.SUBJECT_ASEG} in", sd)
    options = SubjectOptions(
        post=args.post, force=args.force, threads=args.threads, cpu=args.cpu,
        model_dir=os.path.abspath(args.model) if args.model else None,
        partial_volume=args.partial_volume,
        cmdline=args.cmdline or shlex.join(["mri_hsynex", "subjects", *argv]),
    )
    summary = run_cohort(sd, subjects, options, jobs=args.jobs,
                         scheduler=args.dask_scheduler, progress=not args.no_progress)
    print(summary.text())
    sys.stdout.flush()
    return 0 if summary.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run(build_parser, lambda args: work(args, argv), argv)


if __name__ == "__main__":
    sys.exit(main())
