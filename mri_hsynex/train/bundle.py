"""Copy the label maps that carry the ten subunits into a folder that travels to a lent GPU
machine (``make gpu-bundle``; ``models/device_train.sh`` trains from it).

    python -m mri_hsynex.train.bundle build/labels_fs build/gpu/labels
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from ..errors import HsynexError
from ..labels import SUBUNIT_IDS
from .trainer import find_label_maps, with_labels


def copy_subunit_maps(source: str | Path, dest: str | Path) -> list[Path]:
    """Copy the maps in ``source`` that hold any of labels 801-810 into ``dest`` (made here);
    returns the copies. Whole-brain maps without subunits are left out: the cascade's training
    skips them anyway (``require_labels``), and the bundle's size is limited."""
    maps = with_labels(find_label_maps(source), list(SUBUNIT_IDS))
    if not maps:
        raise HsynexError("no label map with hypothalamic subunits (801-810)", source)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(p, dest / p.name)) for p in maps]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        copies = copy_subunit_maps(*args)
    except HsynexError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    print(f"copied {len(copies)} label maps into {args[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
