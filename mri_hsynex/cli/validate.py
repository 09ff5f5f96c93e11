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
`make bench` (bench_out/*.json); (6) a paired sensitivity study (the held-out map and the same
map shrunk by 10/20 % next to the 3rd ventricle or into the ventral DC, identical contrast and
noise: measured / true change of the volume), (7) the same with each post-processing step off
and stage 1's own volume, (8) hsynex's volumes against the teacher's across real T1 scans,
(9) blank and noise inputs, (10) renders of every held-out map (and of --between-maps):
measured against true volumes across the maps. DIR/targets.json holds the target rows;
--compare sets an earlier run's beside them. Segmentations are cached in --cache, so an
interrupted run resumes. The full run takes under an hour on 2 CPU cores; --quick checks the
machinery.

example:
  KERAS_BACKEND=torch mri_hsynex validate --o docs
  KERAS_BACKEND=torch mri_hsynex validate --quick --o validate_out --model runs/models
  KERAS_BACKEND=torch mri_hsynex validate --sensitivity-only --o ckpt_out --model runs/models
  KERAS_BACKEND=torch mri_hsynex validate --o cand_out --model runs/models --compare docs
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
    parser.add_argument("--sensitivity-only", action="store_true",
                        help="run only the paired sensitivity study, its post-processing "
                             "read-outs and the blank/noise check; write DIR/sensitivity.md "
                             "(a few minutes: for comparing checkpoints)")
    parser.add_argument("--real-extra", nargs="+", default=(), metavar="NAME",
                        help="more real T1 scans for sections 2 and 8 (subject names in the "
                             "subjects folder or ../shared/data/mindboggle_oasis20): scans of "
                             "subjects the networks were not trained on")
    parser.add_argument("--real-reference", nargs="+", default=(), metavar="DIR",
                        help="folders of label maps with subunits (<subject>_labels.nii.gz) of "
                             "the real subjects: a second reference for section 8 beside the "
                             "teacher (the --labels folder is always searched)")
    parser.add_argument("--between-maps", nargs="+", default=(), metavar="DIR",
                        help="folders of label maps the networks were never trained on: "
                             "rendered beside the held-out map(s) for section 10 (between "
                             "subjects, against the maps' own volumes)")
    parser.add_argument("--compare", default=None, metavar="DIR",
                        help="an earlier run's report folder (or its targets.json): the report "
                             "gets a section with its targets beside this run's (every run "
                             "writes DIR/targets.json)")
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
        use_teacher=not args.no_teacher, sensitivity_only=args.sensitivity_only,
        real_extra=tuple(args.real_extra),
        real_reference_dirs=tuple(Path(d) for d in args.real_reference),
        between_dirs=tuple(Path(d) for d in args.between_maps),
        compare=Path(args.compare) if args.compare else None,
    )
    path = run_validation(opts)
    print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return common.run(build_parser, _work, argv)
