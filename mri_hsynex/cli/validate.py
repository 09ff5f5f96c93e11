"""``mri_hsynex validate``: write the validation report (issue 8) and its figures."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from . import common

DESCRIPTION = """\
Measure hsynex the way the H-SynEx paper does and write DIR/validation.md with figures in
DIR/figures/: (1) Dice on synthetic images of the held-out label map in six contrasts and
1/3/5/7 mm slices, against the T1-only teacher; (2) Dice against the teacher on real held-out
T1 scans; (3) consistency of the volumes across contrasts and resolutions; (4) a simulated group
study (hypothalamic atrophy of 5/10/15 %, AUROC and rank-sum p); (5) runtime and memory from
`make bench` (bench_out/*.json). Segmentations are cached in --cache, so an interrupted run
resumes. The full run takes under an hour on 2 CPU cores; --quick checks the machinery.

example:
  KERAS_BACKEND=torch mri_hsynex validate --o docs
  KERAS_BACKEND=torch mri_hsynex validate --quick --o validate_out --model runs/models
"""


def build_parser() -> argparse.ArgumentParser:
    parser = common.new_parser("mri_hsynex validate", DESCRIPTION)
    parser.add_argument("--o", required=True, metavar="DIR",
                        help="output folder: DIR/validation.md and DIR/figures/validation_*.png")
    parser.add_argument("--quick", action="store_true",
                        help="2 contrasts x 2 thicknesses, n = 4 per group (a few minutes)")
    common.add_model_flag(parser)
    parser.add_argument("--labels", default="build/labels", metavar="DIR",
                        help="folder of training label maps holding the held-out one(s) "
                             "(default: build/labels)")
    parser.add_argument("--holdout", nargs="+", default=None, metavar="NAME",
                        help="held-out label-map names (default: the 'holdout' of "
                             "models/train_cascade.json)")
    parser.add_argument("--teacher-weights", default=None, metavar="PATH",
                        help="weights of the T1-only teacher (default: "
                             "../shared/data/teacher/hypothalamus_seg_model.h5 if present; "
                             "without them the teacher columns are skipped)")
    parser.add_argument("--no-teacher", action="store_true",
                        help="do not run the teacher (faster; no baseline columns)")
    parser.add_argument("--subjects-dir", default=None, metavar="DIR",
                        help="SUBJECTS_DIR holding the real held-out subjects (default: "
                             "../shared/data/subjects if present)")
    parser.add_argument("--cache", default="build/validate", metavar="DIR",
                        help="cache of segmented cases (default: build/validate)")
    parser.add_argument("--bench", default="bench_out", metavar="DIR",
                        help="folder of `make bench` results (default: bench_out)")
    common.add_seed_flag(parser)
    common.add_compute_flags(parser)
    return parser


def _work(args: argparse.Namespace) -> int:
    from ..backend import configure

    configure(args.threads, cpu=True)
    from ..validate.report import Options, run_validation

    opts = Options(
        out_dir=Path(args.o), quick=args.quick,
        model_dir=Path(args.model) if args.model else None,
        labels_dir=Path(args.labels),
        teacher_weights=Path(args.teacher_weights) if args.teacher_weights else None,
        subjects_dir=Path(args.subjects_dir) if args.subjects_dir else None,
        holdout=tuple(args.holdout or ()), threads=args.threads, seed=args.seed,
        cache_dir=Path(args.cache), bench_dir=Path(args.bench),
        use_teacher=not args.no_teacher,
    )
    path = run_validation(opts)
    print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return common.run(build_parser, _work, argv)
