"""Tiny random-weight networks written like ``train/export.py`` writes a model folder.

``write_tiny_models(folder, localiser="vdc")`` writes ``stage1.keras``, ``stage2.keras``,
``localiser.keras`` and ``model.json``. The localiser's last layer is set so that its answer is
known whatever the image: ``"vdc"`` labels everything left ventral DC (brain found, centre =
image centre), ``"nobrain"`` labels everything background, ``"random"`` keeps random weights,
``None`` writes no localiser. ``model.json`` turns the brain-template check off (tiny test images
are not brains) unless ``brain_check``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mri_hsynex.models.unet import UNetConfig

STAGE1 = UNetConfig(name="stage1", levels=2, features=2, outputs=2, regression_outputs=1)
STAGE2 = UNetConfig(name="stage2", input_channels=2, levels=2, features=2, outputs=11)
LOCALISER = UNetConfig(name="localiser", levels=2, features=2, outputs=8)
LOCALISER_CHANNEL = {"vdc": 2, "nobrain": 0}


def _constant_softmax(net, channel: int) -> None:
    layer = net.get_layer(f"{net.name}_softmax")
    kernel, bias = layer.get_weights()
    bias = np.full_like(bias, -10.0)
    bias[channel] = 10.0
    layer.set_weights([np.zeros_like(kernel), bias])


def write_tiny_models(folder: str | Path, localiser: str | None = "vdc", seed: int = 0,
                      brain_check: bool = False) -> Path:
    """Write a model folder of tiny networks (levels 2, 2 features) and return its path."""
    import keras

    from mri_hsynex.models.unet import build_unet

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    settings: dict = {"hsynex_version": "test", "networks": {}, "brain_check": brain_check}
    configs = [("stage1", STAGE1, 1.0), ("stage2", STAGE2, 1.0)]
    if localiser is not None:
        configs.append(("localiser", LOCALISER, 3.0))
    for name, cfg, voxel_mm in configs:
        net = build_unet(cfg)
        if name == "localiser" and localiser in LOCALISER_CHANNEL:
            _constant_softmax(net, LOCALISER_CHANNEL[localiser])
        net.save(folder / f"{name}.keras")
        settings["networks"][name] = {
            "file": f"{name}.keras", "unet": cfg.to_dict(), "voxel_mm": voxel_mm,
            "train_shape": [16, 16, 16], "target": name,
        }
    (folder / "model.json").write_text(json.dumps(settings, indent=1))
    return folder
