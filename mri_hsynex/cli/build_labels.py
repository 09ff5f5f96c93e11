"""``mri_hsynex build-labels``: training label maps (aseg + teacher subunits; SynthSeg maps)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from . import common

DESCRIPTION = """\
Build the training label maps in one go:
  1. for every subject of --sd (or those of --s) that has mri/aseg.mgz and a T1 (the first of
     mri/norm.mgz, mri/T1.mgz, mri/orig.mgz): run the T1-only teacher on a block around the
     ventral DC / 3rd ventricle, paint its subunits (801-810) over aseg.mgz and write
     OUTDIR/<subject>_labels.nii.gz, OUTDIR/qc/<subject>.png, OUTDIR/subunit_volumes.tsv and
     the plausibility checks OUTDIR/checks.tsv (printed);
  2. rewrite the SynthSeg whole-brain maps of --synthseg as OUTDIR/synthseg_XX_labels.nii.gz
     (int32; they have no subunit labels).
With --transfer, the SynthSeg maps also get subunits voted from the subjects' label maps
(affine alignment on deep-structure centroids) in OUTDIR/transferred/ (with checks and QC;
maps that fail the checks are left out).
Existing label maps are reused (checks, volumes and figures are redone) unless --force.

With --mindboggle DIR instead of --sd, the subjects are Mindboggle-101 folders (e.g. OASIS-TRT-20)
holding t1weighted_brain.nii.gz (skull-stripped T1) and labels.nii.gz (aseg ids, DKT cortical
parcels, no cerebral white matter) on the same grid. Their labels are first made aseg-like:
cortical parcels -> 3/42, 6/45 -> 8/47, vermis 630-632 -> 8/47 of the nearer side, and the
unlabelled part of the brain mask (non-zero T1, holes filled) -> white matter 2/41 by the side of
the nearest labelled left/right structure (CSF-dark voxels and voxels nearest the cerebellum /
brain stem stay 0); ids above 830 are reported and treated as unlabelled. Subjects whose
subunits fail the checks are reported and their label maps left out (QC figure and check rows
are still written); OUTDIR/mindboggle_labels.tsv records the conversion. With --transfer-from
ATLASDIR the subunits are voted from the label maps (with 801-810) in ATLASDIR, as for --transfer,
instead of coming from the teacher (which under-segments the OASIS-TRT-20 T1s). Networks trained on
Mindboggle-derived maps inherit its licence (CC BY-NC-SA 3.0: non-commercial).

The teacher weights (FreeSurfer's hypothalamus_seg_model.h5) are not shipped with hsynex: give
--weights, or keep them in SD/../teacher/ (or DIR/../teacher/); --transfer-from needs none.
With --sd, --synthseg defaults to SD/../synthseg_label_maps when that folder exists.

examples:
  KERAS_BACKEND=torch mri_hsynex build-labels --sd ../shared/data/subjects --o build/labels
  KERAS_BACKEND=torch mri_hsynex build-labels --mindboggle ../shared/data/mindboggle_oasis20 \\
      --transfer-from build/atlases --o build/labels_mindboggle --threads 1
"""

TEACHER_WEIGHTS_NAME = "hypothalamus_seg_model.h5"


def build_parser() -> argparse.ArgumentParser:
    parser = common.new_parser("mri_hsynex build-labels", DESCRIPTION)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--sd", metavar="SUBJECTS_DIR", help="FreeSurfer subjects folder")
    source.add_argument("--mindboggle", metavar="DIR",
                        help="folder of Mindboggle-101 subjects (t1weighted_brain.nii.gz + "
                             "labels.nii.gz each) instead of --sd")
    parser.add_argument("--s", nargs="+", default=None, metavar="SUBJECT",
                        help="only these subjects (default: every usable subject)")
    parser.add_argument("--o", required=True, metavar="OUTDIR", help="output folder")
    parser.add_argument("--weights", default=None, metavar="PATH",
                        help=f"teacher weights ({TEACHER_WEIGHTS_NAME}); default: "
                             f"../teacher/{TEACHER_WEIGHTS_NAME} beside the input folder")
    parser.add_argument("--synthseg", default=None, metavar="DIR",
                        help="SynthSeg label maps to convert (default with --sd: "
                             "SD/../synthseg_label_maps if present)")
    parser.add_argument("--no-synthseg", action="store_true", help="skip the SynthSeg maps")
    parser.add_argument("--transfer", action="store_true",
                        help="also give the SynthSeg maps subunits by multi-atlas registration "
                             "from the subjects (written to OUTDIR/transferred/)")
    parser.add_argument("--transfer-from", default=None, metavar="ATLASDIR",
                        help="with --mindboggle: subunits by multi-atlas transfer from the label "
                             "maps with 801-810 in ATLASDIR instead of the teacher")
    parser.add_argument("--crop", type=int, default=None, metavar="N",
                        help="block (voxels at 1 mm) the teacher sees (default: 160)")
    parser.add_argument("--force", action="store_true", help="rebuild existing label maps")
    common.add_compute_flags(parser)
    return parser


def _default_near(sd: str, relative: str) -> str | None:
    candidate = Path(sd).resolve().parent / relative
    return str(candidate) if candidate.exists() else None


def _atlases(args: argparse.Namespace) -> list:
    """The label maps to transfer subunits from (``--transfer-from``), or []."""
    if not args.transfer_from:
        return []
    from ..errors import HsynexError
    from ..labelmaps.transfer import atlases_in

    if not args.mindboggle:
        raise HsynexError("--transfer-from works with --mindboggle only")
    return atlases_in(args.transfer_from)


def _work(args: argparse.Namespace) -> int:
    from ..backend import configure
    from ..errors import HsynexError
    from ..labelmaps.build import DEFAULT_CROP, LabelMapBuilder, convert_synthseg, find_subjects
    from ..labelmaps.checks import CHECK_COLUMNS
    from ..labelmaps.mindboggle import MindboggleBuilder, find_mindboggle

    source = args.sd or args.mindboggle
    find, builder_class = (find_subjects, LabelMapBuilder) if args.sd else \
        (find_mindboggle, MindboggleBuilder)
    subjects = find(source, args.s)
    atlases = _atlases(args)
    weights = args.weights or _default_near(source, f"teacher/{TEACHER_WEIGHTS_NAME}")
    if atlases:
        weights = None
    elif weights is None:
        raise HsynexError("the teacher needs its weights file: give --weights PATH "
                          f"({TEACHER_WEIGHTS_NAME}, not shipped with hsynex)")
    if weights is not None and not os.path.isfile(weights):
        raise HsynexError("teacher weights file not found", weights)
    synthseg = None if args.no_synthseg else (
        args.synthseg or (args.sd and _default_near(args.sd, "synthseg_label_maps")))
    configure(args.threads, args.cpu)
    out = Path(args.o)
    extra = {"atlases": atlases} if atlases else {}
    builder = builder_class(out, weights, crop=args.crop or DEFAULT_CROP, force=args.force,
                            **extra)
    checks, failures = builder.subjects(subjects)

    print("\nchecks (" + str(out / "checks.tsv") + "):")
    print("\t".join(CHECK_COLUMNS))
    for c in checks:
        print("\t".join(c.row()[k] for k in CHECK_COLUMNS))
    if synthseg:
        print(f"\nSynthSeg label maps from {synthseg}:")
        rows = convert_synthseg(synthseg, out, force=args.force)
        print(f"{len(rows)} maps in {out} (no subunit labels)")
        if args.transfer:
            from ..labelmaps.build import transfer_to_synthseg

            passed = [c.subject for c in checks if c.passed]
            print(f"\nsubunits for the SynthSeg maps voted from {len(passed)} subjects:")
            moved = transfer_to_synthseg(out, passed)
            print("\t".join(CHECK_COLUMNS))
            for c in moved:
                print("\t".join(c.row()[k] for k in CHECK_COLUMNS))
            print(f"{sum(c.passed for c in moved)} of {len(moved)} pass the checks and are "
                  f"written to {out / 'transferred'}/ (the others are left out)")
    print(f"\nlabel maps: {out}/*_labels.nii.gz\nvolumes:    {out / 'subunit_volumes.tsv'}\n"
          f"checks:     {out / 'checks.tsv'}\nQC figures: {out / 'qc'}/")
    failed_checks = [c.subject for c in checks if not c.passed]
    if failed_checks:
        left_out = "" if builder.keep_failed else " (label maps left out)"
        print(f"checks failed for: {', '.join(failed_checks)}{left_out}")
    for name, why in failures:
        print(f"ERROR: {name}: {why}")
    return 1 if failures or failed_checks else 0


def main(argv: Sequence[str] | None = None) -> int:
    return common.run(build_parser, _work, argv)
