"""``mri_hsynex <command>``: dispatch to the command modules (imported only when used)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from .. import __version__

# command -> (module under mri_hsynex.cli, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "segment": ("segment", "segment the hypothalamic subunits of any scan (the main job)"),
    "synth": ("synth", "write synthetic training images made from label maps"),
    "teacher": ("teacher", "run the T1-only teacher network (FreeSurfer's 2020 model)"),
    "build-labels": ("build_labels", "build training label maps with subunits from subjects"),
    "train": ("train", "train a network of the cascade on label maps"),
    "subjects": ("subjects", "segment recon-all subjects (behind mri_segment_hypothalamus_synex)"),
    "table": ("table", "gather hsynex stats of many subjects into one table"),
    "groupstats": ("groupstats", "compare groups of subjects (rank-sum, Cohen's d, AUROC)"),
    "validate": ("validate", "write the validation report (docs/validation.md)"),
}


def _usage() -> str:
    lines = [f"mri_hsynex {__version__}: hypothalamic subunits on MRI of any contrast",
             "", "usage: mri_hsynex <command> [options]   (mri_hsynex <command> --help)", "",
             "commands:"]
    lines += [f"  {name:<14s}{desc}" for name, (_, desc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 1 if not argv else 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"ERROR: unknown command: {command}\n", file=sys.stderr)
        print(_usage(), file=sys.stderr)
        return 2
    module = importlib.import_module(f"mri_hsynex.cli.{COMMANDS[command][0]}")
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
