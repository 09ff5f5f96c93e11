"""Export trained networks from a run folder into a model folder (``models/`` is the shipped one).

    python -m mri_hsynex.train.export mix OUT DIR:WEIGHT DIR:WEIGHT [...]
        OUT's networks = the weighted mean of the folders' (mix_networks)

Each network is re-built from its config and saved without optimiser state, so the files are
compact and load in safe mode with ``compile=False``. ``model.json`` records, per network, its
architecture, working voxel size, crop, classes, and how it was trained.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from .. import __version__
from ..cli.common import user_errors
from ..constants import MODEL_SETTINGS_FILE
from ..errors import HsynexError
from ..io import atomic_path
from .config import KEPT_DIR, TrainConfig, kept_step


def _save_network(net, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    net.save(tmp)
    os.replace(tmp, path)


def kept_checkpoints(run_dir: str | Path, first_step: int) -> dict[int, Path]:
    """The run's kept checkpoints (``keep_every``) from ``first_step`` on, by step."""
    kept = {}
    for path in (Path(run_dir) / KEPT_DIR).glob("step_*.keras"):
        step = kept_step(path)
        if step is not None and step >= first_step:
            kept[step] = path
    return dict(sorted(kept.items()))


def averaged_model(paths: list[Path], weights: list[float] | None = None):
    """The first checkpoint's model with the mean of all the checkpoints' weights (the runs here
    fine-tune with batch 1, so consecutive checkpoints scatter around a better point; instance
    normalisation has no running statistics, so a plain mean is the whole job). ``weights``
    (one per path, normalised to sum 1) makes it a weighted mean."""
    import keras

    share = np.ones(len(paths)) if weights is None else np.asarray(weights, np.float64)
    if share.shape != (len(paths),) or np.any(share < 0) or share.sum() <= 0:
        raise HsynexError(f"need one non-negative weight per network, not {weights}")
    share = share / share.sum()
    model = keras.saving.load_model(paths[0], compile=False)
    total = [share[0] * np.asarray(w, np.float64) for w in model.get_weights()]
    for path, part in zip(paths[1:], share[1:]):
        other = keras.saving.load_model(path, compile=False).get_weights()
        if [w.shape for w in other] != [t.shape for t in total]:
            raise HsynexError("not the same architecture as the first network", path)
        total = [t + part * np.asarray(w, np.float64) for t, w in zip(total, other)]
    model.set_weights([t.astype(np.float32) for t in total])
    return model


def mix_networks(model_dirs: list[str | Path], weights: list[float],
                 out_dir: str | Path) -> list[Path]:
    """A new model folder whose networks are the weighted mean of the same networks in
    ``model_dirs`` (e.g. the shipped ones and a run fine-tuned from them: a mix can keep part of
    what each measures well). The first folder's ``model.json`` is kept, with the mix recorded
    as each network's checkpoint. ``out_dir`` must not exist yet (no model folder is
    overwritten); it is built under a temporary name and renamed when complete."""
    dirs, out = [Path(d) for d in model_dirs], Path(out_dir)
    if len(dirs) < 2 or len(weights) != len(dirs):
        raise HsynexError(f"need two or more model folders, one weight each ({len(dirs)} "
                          f"folders, {len(weights)} weights)")
    if out.exists():
        raise HsynexError("output folder exists already (give a new one: nothing is "
                          "overwritten)", out)
    settings_path = dirs[0] / MODEL_SETTINGS_FILE
    try:
        settings = json.loads(settings_path.read_text())
        networks = settings["networks"]
    except (OSError, ValueError, KeyError) as err:
        raise HsynexError(f"not a model folder ({err})", settings_path) from None
    sources = {name: [d / info["file"] for d in dirs] for name, info in networks.items()}
    missing = [p for paths in sources.values() for p in paths if not p.is_file()]
    if missing:
        raise HsynexError("network file not found", missing[0])
    recipe = " + ".join(f"{w:g} x {d}" for w, d in zip(weights, dirs))
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name, paths in sources.items():
            target = tmp / networks[name]["file"]
            if all(p.read_bytes() == paths[0].read_bytes() for p in paths[1:]):
                shutil.copyfile(paths[0], target)  # the same network everywhere: copied
            else:
                averaged_model(paths, weights).save(target)
                networks[name]["checkpoint"] = f"weight mix: {recipe}"
        (tmp / MODEL_SETTINGS_FILE).write_text(json.dumps(settings, indent=1))
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [out / networks[name]["file"] for name in sources]



def export_run(run_dir: str | Path, model_dir: str | Path, checkpoint: str = "best.keras",
               average_from: int | None = None) -> list[Path]:
    """Write the networks of ``run_dir/checkpoint`` to ``model_dir`` and update ``model.json``.
    With ``average_from``, the networks are the mean of the weights of every kept checkpoint
    (``kept/``) from that step on instead."""
    import keras

    from ..models import layers, losses  # noqa: F401  (registers the saved classes)
    from ..models.unet import UNetConfig, build_unet

    run_dir, model_dir = Path(run_dir), Path(model_dir)
    cfg = TrainConfig.load(run_dir / "config.json")
    state_path = run_dir / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if average_from is not None:
        kept = kept_checkpoints(run_dir, average_from)
        if not kept:
            raise HsynexError(f"no kept checkpoints from step {average_from} on (set keep_every "
                              "in the training config)", run_dir / KEPT_DIR)
        trained = averaged_model(list(kept.values()))
        steps = list(kept)
        checkpoint = f"mean of {len(steps)} kept checkpoints, steps {steps[0]}-{steps[-1]}"
    else:
        source = run_dir / checkpoint
        if not source.exists():
            raise HsynexError("no checkpoint to export", source)
        trained = keras.saving.load_model(source, compile=False)
    model_dir.mkdir(parents=True, exist_ok=True)
    settings_path = model_dir / MODEL_SETTINGS_FILE
    settings = json.loads(settings_path.read_text()) if settings_path.exists() else {}
    settings["hsynex_version"] = __version__
    if cfg.network in ("cascade", "stage1"):  # how run_cascade combines the stages (issue 13)
        if cfg.cascade_mode != "independent":
            settings["cascade_mode"] = cfg.cascade_mode
        else:
            settings.pop("cascade_mode", None)
    settings.setdefault("networks", {})
    names = {"cascade": ["stage1", "stage2"], "stage1": ["stage1"]}.get(cfg.network,
                                                                        ["localiser"])
    written = []
    for name in names:
        unet_cfg = UNetConfig.from_dict(getattr(cfg, name))
        net = build_unet(unet_cfg)
        layer = trained if cfg.network == "localiser" else trained.get_layer(unet_cfg.name)
        net.set_weights(layer.get_weights())
        path = model_dir / f"{name}.keras"
        _save_network(net, path)
        written.append(path)
        settings["networks"][name] = {
            "file": path.name,
            "unet": unet_cfg.to_dict(),
            "voxel_mm": cfg.generator.get("output_voxel_mm", 1.0),
            "train_shape": cfg.generator.get("output_shape"),
            "target": cfg.generator.get("target"),
            "trained_steps": state.get("step"),
            "best_step": state.get("best_step"),
            "best_validation_score": state.get("best_score"),
            "train_seconds": state.get("seconds"),
            "backend": keras.backend.backend(),
            "checkpoint": checkpoint,
        }
        settings["networks"][name]["generator"] = cfg.generator
    with atomic_path(settings_path) as tmp:
        Path(tmp).write_text(json.dumps(settings, indent=1))
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] != ["mix"] or len(args) < 4:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    return user_errors(lambda: _mix(args[1], args[2:]))


def _mix(out: str, folders: list[str]) -> None:
    parts = [a.rsplit(":", 1) for a in folders]
    if any(len(p) != 2 for p in parts):
        raise HsynexError("each model folder needs its weight: DIR:WEIGHT")
    try:
        weights = [float(w) for _, w in parts]
    except ValueError:
        raise HsynexError(f"weights must be numbers: {folders}") from None
    for path in mix_networks([d for d, _ in parts], weights, out):
        print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
