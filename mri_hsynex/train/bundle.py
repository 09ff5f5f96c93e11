"""What travels to a lent GPU machine and back (``make gpu-bundle``, ``models/device_train.sh``).

    python -m mri_hsynex.train.bundle maps build/labels_fs build/gpu/labels
    python -m mri_hsynex.train.bundle pack runs/gpu OUT 3

``maps``: copy the label maps that carry the ten subunits into the bundle. ``pack``: the run's
networks as model-folder tars (``models_best.tar``; ``models_mean.tar``, the mean of the KEEP
newest kept checkpoints, when there are two or more), each with the shipped ``model.json``'s
settings, small enough to come back from the machine.
"""

from __future__ import annotations

import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

from ..cli.common import user_errors
from ..constants import MODEL_SETTINGS_FILE
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


def pack_networks(run_dir: str | Path, out: str | Path, keep: int = 3) -> list[Path]:
    """Export the run's best checkpoint, and the mean of its ``keep`` newest kept checkpoints
    when there are two or more, each into a tar of a model folder (``stage1/2.keras`` and the
    shipped ``model.json``'s settings with these networks' entries: unpack over a copy of
    ``models/``); returns the tars."""
    from ..predict.networks import find_model_dir
    from .export import export_run, kept_checkpoints

    settings = find_model_dir() / MODEL_SETTINGS_FILE
    steps = list(kept_checkpoints(run_dir, 0))[-keep:]
    jobs = {"models_best.tar": {}}
    if len(steps) >= 2:  # export --average-from
        jobs["models_mean.tar"] = {"average_from": steps[0]}
    tars = []
    for name, options in jobs.items():
        with tempfile.TemporaryDirectory() as folder:
            shutil.copy(settings, folder)
            export_run(run_dir, folder, **options)
            tars.append(Path(out) / name)
            with tarfile.open(tars[-1], "w") as tar:
                for path in sorted(Path(folder).iterdir()):
                    tar.add(path, arcname=path.name)
    return tars


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not ((args[:1] == ["maps"] and len(args) == 3)
            or (args[:1] == ["pack"] and len(args) in (3, 4))):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    return user_errors(lambda: _bundle(args))


def _bundle(args: list[str]) -> None:
    if args[0] == "maps":
        copies = copy_subunit_maps(args[1], args[2])
        print(f"copied {len(copies)} label maps into {args[2]}")
    else:
        for path in pack_networks(args[1], args[2], *(int(k) for k in args[3:])):
            print(f"packed {path}")


if __name__ == "__main__":
    sys.exit(main())
