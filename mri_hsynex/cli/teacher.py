"""``mri_hsynex teacher``: the T1-only teacher (FreeSurfer's 2020 hypothalamic-subunit network)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from . import common

DESCRIPTION = """\
Segment the hypothalamic subunits (labels 801-810) of a T1-weighted scan with the T1-only network
of Billot et al. 2020 (the one behind FreeSurfer's mri_segment_hypothalamic_subunits), rebuilt in
Keras 3. It is hsynex's teacher and T1-only baseline; it is not expected to work on other
contrasts. Its weights (hypothalamus_seg_model.h5) are not shipped with hsynex: give --weights.
Outputs are on the input's voxel grid. Without --crop the whole image is segmented (in 160^3
tiles: minutes on a few CPU cores); on conformed FreeSurfer volumes --crop 160 (a central block)
is several times faster and covers the hypothalamus.

example:
  KERAS_BACKEND=torch mri_hsynex teacher --i mri/T1.mgz --o teacher_seg.mgz \\
      --weights hypothalamus_seg_model.h5 --crop 160
"""


def build_parser() -> argparse.ArgumentParser:
    parser = common.new_parser("mri_hsynex teacher", DESCRIPTION)
    parser.add_argument("--i", required=True, metavar="T1", help="input T1 image")
    parser.add_argument("--o", required=True, metavar="SEG", help="output segmentation")
    parser.add_argument("--post", default=None, metavar="POST",
                        help="output posteriors (4-D, 11 channels: background, 801..810)")
    parser.add_argument("--weights", default=None, metavar="PATH",
                        help="teacher weights file (hypothalamus_seg_model.h5); required")
    parser.add_argument("--crop", type=int, default=None, metavar="N",
                        help="size (voxels at 1 mm, multiple of 8) of the central block the "
                             "network sees (default: the whole image)")
    parser.add_argument("--qc", default=None, metavar="PNG", help="also write a QC figure")
    parser.add_argument("--no-lcc", action="store_true",
                        help="keep every connected component (default: the largest per side)")
    common.add_compute_flags(parser)
    return parser


def _work(args: argparse.Namespace) -> int:
    from ..errors import HsynexError
    from ..io import load_volume, save_volume, suffix

    if args.weights is None:
        raise HsynexError("the teacher needs its weights file: give --weights PATH "
                          "(hypothalamus_seg_model.h5, not shipped with hsynex)")
    if not os.path.isfile(args.weights):
        raise HsynexError("teacher weights file not found", args.weights)
    for out in (args.o, args.post):
        if out is not None and not suffix(out):
            raise HsynexError("unsupported output file type (use .nii, .nii.gz, .mgz)", out)
    image = load_volume(args.i)
    from ..backend import configure

    configure(args.threads, args.cpu)
    from ..teacher.predict import Teacher

    teacher = Teacher(args.weights)
    seg, post = teacher.predict(image, crop=args.crop, lcc=not args.no_lcc,
                                posteriors=args.post is not None)
    save_volume(seg, args.o, kind="labels")
    print(f"wrote {args.o}")
    if args.post:
        save_volume(post, args.post, kind="posteriors")
        print(f"wrote {args.post}")
    if args.qc:
        from ..qc import save_overlay_png

        save_overlay_png(args.qc, image, seg, title=os.path.basename(args.i))
        print(f"wrote {args.qc}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return common.run(build_parser, _work, argv)
