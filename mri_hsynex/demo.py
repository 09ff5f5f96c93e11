"""``python -m mri_hsynex.demo [OUTDIR]`` (``make demo``): segment a real scan with no user input.

The scan is the MNI152 2009 T1 template bundled with nilearn (``load_mni152_template``; no
download). It is saved into OUTDIR (default ``demo_out``) and segmented with every output of
``mri_hsynex segment``; the paths and the volumes are printed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .cli import common
from .errors import HsynexError

TEMPLATE_NAME = "mni152_2009_t1.nii.gz"
OUTPUTS = {
    "--o": "hypothalamic_subunits_seg.mgz",
    "--post": "hypothalamic_subunits_posteriors.mgz",
    "--vol": "hypothalamic_subunits_volumes.csv",
    "--stats": "hypothalamic_subunits.stats",
    "--qc": "hypothalamic_subunits_qc.png",
}


def build_parser() -> argparse.ArgumentParser:
    parser = common.new_parser("python -m mri_hsynex.demo", __doc__)
    parser.add_argument("outdir", nargs="?", default="demo_out",
                        help="output folder (default: demo_out)")
    common.add_model_flag(parser)
    common.add_compute_flags(parser)
    return parser


def save_template(outdir: Path) -> Path:
    """Write nilearn's MNI152 2009 T1 template (1 mm) into ``outdir``; returns its path."""
    try:
        from nilearn import datasets
    except ImportError:
        raise HsynexError("the demo needs nilearn for its bundled MNI152 template "
                          "(pip install nilearn)") from None
    import numpy as np

    from .io import Volume, save_volume

    template = datasets.load_mni152_template()
    path = outdir / TEMPLATE_NAME
    save_volume(Volume(np.asarray(template.get_fdata(), np.float32), template.affine), path)
    return path


def run_demo(args: argparse.Namespace) -> int:
    """Save the template and run ``mri_hsynex segment`` on it with every output."""
    from .cli import segment

    outdir = Path(args.outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HsynexError(f"cannot create the output folder ({err.strerror})", outdir) from None
    image = save_template(outdir)
    print(f"demo scan: {image} (MNI152 2009 T1 template bundled with nilearn)")
    argv = ["--i", str(image)]
    for flag, name in OUTPUTS.items():
        argv += [flag, str(outdir / name)]
    if args.model:
        argv += ["--model", args.model]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if args.cpu:
        argv.append("--cpu")
    if args.debug:
        argv.append("--debug")
    status = segment.main(argv)
    if status == 0:
        print(f"\ndemo outputs in {outdir}/:")
        for path in sorted(outdir.iterdir()):
            print(f"  {path}")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    return common.run(build_parser, run_demo, argv if argv is not None else sys.argv[1:] or
                      ["demo_out"])


if __name__ == "__main__":
    sys.exit(main())
