"""Export trained networks from a run folder into a model folder (``models/`` is the shipped one).

Each network is re-built from its config and saved without optimiser state, so the files are
compact and load in safe mode with ``compile=False``. ``model.json`` records, per network, its
architecture, working voxel size, crop, classes, and how it was trained.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .. import __version__
from ..constants import MODEL_SETTINGS_FILE
from ..errors import HsynexError
from ..io import atomic_path
from .config import TrainConfig


def _save_network(net, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    net.save(tmp)
    os.replace(tmp, path)


def export_run(run_dir: str | Path, model_dir: str | Path,
               checkpoint: str = "best.keras") -> list[Path]:
    """Write the networks of ``run_dir/checkpoint`` to ``model_dir`` and update ``model.json``."""
    import keras

    from ..models import layers, losses  # noqa: F401  (registers the saved classes)
    from ..models.unet import UNetConfig, build_unet

    run_dir, model_dir = Path(run_dir), Path(model_dir)
    source = run_dir / checkpoint
    if not source.exists():
        raise HsynexError("no checkpoint to export", source)
    cfg = TrainConfig.load(run_dir / "config.json")
    state_path = run_dir / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
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
