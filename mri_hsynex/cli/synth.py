"""``mri_hsynex synth``: write synthetic training images made from label maps."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from . import common

DESCRIPTION = """\
Write the synthetic images the networks are trained on: each sample is a crop of a label map,
randomly deformed and flipped, filled with a random contrast (Gaussian mixture), bias field,
gamma, noise, resolution and slice thickness. Outputs in DIR: sample_000_image.nii.gz
(float32 in [0, 1]), sample_000_labels.nii.gz (int32 label ids), ... and montage.png (the
mid-slices of up to 12 samples, label boundaries in colour). The same --seed writes the same
files; the backend comes from KERAS_BACKEND.

example:
  mri_hsynex synth --labels build/labels --n 8 --o synth_out
  mri_hsynex synth --labels seg.nii.gz --n 4 --o synth_out --config models/train_cascade.json
"""


def build_parser() -> argparse.ArgumentParser:
    parser = common.new_parser("mri_hsynex synth", DESCRIPTION)
    parser.add_argument("--labels", required=True, metavar="PATH_OR_DIR",
                        help="a label map (.nii/.nii.gz/.mgz/.mgh) or a folder of them")
    parser.add_argument("--n", type=int, default=8, metavar="N",
                        help="number of samples (default: 8)")
    parser.add_argument("--o", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--config", metavar="CFG", default=None,
                        help="generator config (JSON; a training config's 'generator' entry "
                             "is used too); default: the built-in defaults")
    parser.add_argument("--no-montage", action="store_true", help="do not write montage.png")
    common.add_seed_flag(parser)
    common.add_compute_flags(parser)
    return parser


def _work(args: argparse.Namespace) -> int:
    from ..backend import configure

    configure(args.threads, args.cpu)
    from ..generator.config import GeneratorConfig
    from ..generator.synth import synthesise

    cfg = GeneratorConfig.load(args.config) if args.config else GeneratorConfig()
    written = synthesise(args.labels, args.n, args.o, cfg, seed=args.seed,
                         montage=not args.no_montage)
    print(f"wrote {args.n} samples ({len(written)} files) to {args.o}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return common.run(build_parser, _work, argv)
