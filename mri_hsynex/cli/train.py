"""``mri_hsynex train``: train a network of the cascade on synthetic images of label maps."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..errors import HsynexError
from . import common

DESCRIPTION = """\
Train the cascade (stage 1 + stage 2) or the localiser on synthetic images generated on the fly
from label maps (any contrast, resolution and slice thickness). The backend comes from
KERAS_BACKEND (torch is the fastest on CPU). Interrupt at any time and continue with --resume.

example:
  KERAS_BACKEND=torch mri_hsynex train --config models/train_cascade.json \\
      --labels build/labels --o runs/cascade --steps 5000
  mri_hsynex train --config models/train_cascade.json --labels build/labels \\
      --o runs/cascade --resume --export models
"""


def build_parser() -> argparse.ArgumentParser:
    parser = common.new_parser("mri_hsynex train", DESCRIPTION)
    parser.add_argument("--config", required=True, metavar="CFG", help="training config (JSON)")
    parser.add_argument("--labels", required=True, metavar="DIR",
                        help="folder of label maps (.nii/.nii.gz/.mgz)")
    parser.add_argument("--o", required=True, metavar="RUNDIR",
                        help="run folder (logs, checkpoints)")
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="train until this many steps in total (default: the config's)")
    parser.add_argument("--minutes", type=float, default=None, metavar="M",
                        help="stop after M minutes of this run's wall-clock time (the step "
                             "reached is validated and checkpointed; continue with --resume)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in RUNDIR from its last checkpoint")
    parser.add_argument("--init", metavar="DIR", default=None,
                        help="start from the networks in this model folder (e.g. models/)")
    parser.add_argument("--export", metavar="DIR", default=None,
                        help="after training, export the best networks into this model folder")
    parser.add_argument("--average-from", type=int, default=None, metavar="STEP",
                        help="with --export: export the mean weights of the checkpoints kept "
                             "(config keep_every) from this step on, instead of the best one")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    common.add_seed_flag(parser)
    common.add_compute_flags(parser)
    return parser


def _work(args: argparse.Namespace) -> int:
    from ..backend import configure

    configure(args.threads, args.cpu)
    from ..train.config import TrainConfig
    from ..train.export import export_run
    from ..train.trainer import Trainer

    if args.average_from is not None and not args.export:
        raise HsynexError("--average-from works with --export only")
    if args.minutes is not None and args.minutes < 0:
        raise HsynexError(f"--minutes must be 0 or more, not {args.minutes}")
    cfg = TrainConfig.load(args.config)
    trainer = Trainer(cfg, args.labels, args.o, seed=args.seed, resume=args.resume,
                      init_dir=args.init)
    total = args.steps if args.steps is not None else cfg.steps
    state = trainer.run(total, progress=not args.no_progress, minutes=args.minutes)
    print(f"trained {state['step']} steps in {state['seconds'] / 60:.1f} min; "
          f"best validation score {state['best_score']:.3f} at step {state.get('best_step')}")
    if state["step"] < total:
        print(f"stopped at the --minutes limit, {total - state['step']} steps short of {total}; "
              f"continue with --resume")
    if args.export:
        for path in export_run(args.o, args.export, average_from=args.average_from):
            print(f"exported {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return common.run(build_parser, _work, argv)
