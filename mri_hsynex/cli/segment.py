"""``mri_hsynex segment``: segment the hypothalamic subunits of one scan or a batch of scans."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import HsynexError
from . import common

DESCRIPTION = """\
Segment the hypothalamus and its ten subunits (FreeSurfer labels 801-810) on a brain MRI of any
contrast and resolution (H-SynEx). Every output except --o is optional; a JSON sidecar with the
run's settings and QC metrics is written next to SEG (seg.mgz -> seg.json).

With --i a folder (every .nii/.nii.gz/.mgz/.mgh in it) or a text file of paths (.txt, one per line),
--o, --post, --stats and --qc are folders and --vol is one CSV with a row per scan; the networks
are loaded once. A scan that fails is reported and skipped; the exit status is then 1.

examples:
  mri_hsynex segment --i T2.nii.gz --o hypo.mgz --vol hypo.csv --qc hypo.png
  mri_hsynex segment --i subj/mri/norm.mgz --aseg subj/mri/aseg.mgz --o hypo.mgz --post post.mgz
  mri_hsynex segment --i scans/ --o segs/ --vol volumes.csv --threads 2
"""


def build_parser() -> argparse.ArgumentParser:
    parser = common.new_parser("mri_hsynex segment", DESCRIPTION)
    parser.add_argument("--i", required=True, metavar="IMG",
                        help="input scan, a folder of scans, or a text file listing scans")
    parser.add_argument("--o", required=True, metavar="SEG",
                        help="output segmentation (.mgz/.nii.gz; a folder for a batch)")
    parser.add_argument("--aseg", metavar="ASEG", default=None,
                        help="aseg of the scan (e.g. recon-all's mri/aseg.mgz): its ventral DC "
                             "and 3rd ventricle localise and mask (default: localiser network)")
    parser.add_argument("--post", metavar="POST", default=None,
                        help="output posteriors, float32 4-D (background + ten subunits)")
    parser.add_argument("--vol", metavar="CSV", default=None,
                        help="output soft volumes (mm3), one row per scan")
    parser.add_argument("--stats", metavar="STATS", default=None,
                        help="output .stats file (mri_segstats layout)")
    parser.add_argument("--qc", metavar="PNG", default=None,
                        help="output QC figure (three views around the hypothalamus)")
    parser.add_argument("--resample", choices=("native", "model"), default="native",
                        help="outputs on the input grid (native, default) or on the 1 mm model "
                             "grid (model)")
    common.add_volume_flag(parser)
    common.add_compute_flags(parser)
    common.add_model_flag(parser)
    common.add_seed_flag(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmdline = " ".join(["mri_hsynex segment"] + [shlex.quote(a) for a in argv])
    return common.run(build_parser, lambda args: _work(args, cmdline), argv)


def _work(args: argparse.Namespace, cmdline: str) -> int:
    from ..predict.batch import is_batch_input, list_batch_inputs

    if is_batch_input(args.i):
        return _run_batch(args, list_batch_inputs(args.i), cmdline)
    return _run_single(args, cmdline)


def _announce_overwrites(paths) -> None:
    for path in paths.as_dict().values():
        if path.exists():
            print(f"overwriting {path}")


def _segmenter(args: argparse.Namespace):
    from ..predict import Segmenter

    return Segmenter(model_dir=args.model, threads=args.threads, cpu=args.cpu, seed=args.seed,
                     partial_volume=args.partial_volume)


def _run_single(args: argparse.Namespace, cmdline: str) -> int:
    from ..predict import OutputPaths
    from ..predict.outputs import check_output_paths

    image = Path(args.i)
    if not image.exists():
        raise HsynexError("file not found", image)
    if args.aseg is not None and not Path(args.aseg).exists():
        raise HsynexError("file not found", args.aseg)
    paths = OutputPaths(seg=args.o, post=args.post, vol_csv=args.vol, stats=args.stats,
                        qc=args.qc)
    inputs = [image] + ([Path(args.aseg)] if args.aseg else [])
    check_output_paths(paths, inputs)
    segmenter = _segmenter(args)
    result = segmenter.segment(image, aseg_path=args.aseg, resample=args.resample)
    _warn_input(result)
    _announce_overwrites(paths)
    written = result.write(paths, cmdline=cmdline)
    for path in written:
        print(f"wrote {path}")
    _print_qc(result)
    print(result.volumes_table())
    return 0


def _warn_input(result) -> None:
    """A WARNING line (stderr) for what the input had that was read in another way, and for
    thick slices, whose volumes are biased (model card, limits)."""
    image = result.image
    if getattr(image, "non_finite", 0):
        print(f"WARNING: {image.non_finite} NaN or infinite voxels read as background (0, or "
              f"the image's lowest value if negative): {image.path}", file=sys.stderr)
    thick = result.thick_slice_mm
    if thick is not None:
        print(f"WARNING: {thick:g} mm slices: partial-volume-corrected volumes of thick-slice "
              f"scans read lower than the same head at 1 mm and move by a few % with where the "
              f"slices fall; compare scans of one slice thickness, or use the sidecar's "
              f"input_voxel_mm as a covariate: {image.path}", file=sys.stderr)


def _print_qc(result) -> None:
    qc = result.qc
    if qc["qc_flag"]:
        print("QC flag:\n" + "\n".join(f"  {reason}" for reason in qc["qc_reasons"]))
    else:
        print(f"QC ok (mean max posterior {qc['mean_max_posterior']:.2f})")


def _run_batch(args: argparse.Namespace, scans: list[Path], cmdline: str) -> int:
    from ..predict.batch import BatchOutputs, write_volume_rows

    if args.aseg is not None:
        raise HsynexError("--aseg takes the aseg of one scan; it cannot be used with a batch",
                          args.aseg)
    outputs = BatchOutputs.from_args(args.o, post=args.post, stats=args.stats, qc=args.qc,
                                     vol_csv=args.vol, inputs=scans)
    segmenter = _segmenter(args)
    rows, summary, failures = [], [], []
    for scan in scans:
        name = outputs.name_of(scan)
        try:
            paths = outputs.paths_for(scan)
            result = segmenter.segment(scan, resample=args.resample)
            _warn_input(result)
            _announce_overwrites(paths)
            result.write(paths, subject=name, cmdline=cmdline)
        except HsynexError as err:
            print(f"ERROR: {err}", file=sys.stderr)
            failures.append((scan, str(err)))
            continue
        rows.append(result.volumes_row(name))
        # keep numbers only: a result holds the scan and its outputs (~150 MB for 256^3)
        summary.append((name, result.volumes, result.qc["qc_flag"]))
        del result
        print(f"segmented {scan} -> {paths.seg}")
    if args.vol is not None and rows:
        if Path(args.vol).exists():
            print(f"overwriting {args.vol}")
        write_volume_rows(args.vol, rows)
        print(f"wrote {args.vol}")
    _print_batch_summary(summary, failures, len(scans))
    return 1 if failures else 0


def _print_batch_summary(summary: list, failures: list, total: int) -> None:
    print(f"{'scan':<32s}{'whole_left':>12s}{'whole_right':>12s}{'whole':>10s}  QC")
    for name, v, flagged in summary:
        flag = "flag" if flagged else "ok"
        print(f"{name:<32s}{v[811][1]:>12.1f}{v[812][1]:>12.1f}{v[813][1]:>10.1f}  {flag}")
    print(f"segmented {len(summary)} of {total} scans")
    if failures:
        print(f"{len(failures)} failed:", file=sys.stderr)
        for scan, reason in failures:
            print(f"  {scan}: {reason}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
