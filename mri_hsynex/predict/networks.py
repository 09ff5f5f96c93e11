"""Find the model folder, read ``model.json`` and load the three networks once.

A model folder holds ``stage1.keras``, ``stage2.keras``, ``localiser.keras`` and ``model.json``
(written by ``mri_hsynex.train.export``). The localiser is optional: without it only scans with
an aseg (``--aseg``) can be segmented.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..constants import (
    LOCALISER_FILE,
    LOCALISER_VOXEL_MM,
    MODEL_SETTINGS_FILE,
    MODELS_ENV,
    STAGE1_FILE,
    STAGE2_FILE,
    STAGE_VOXEL_MM,
)
from ..errors import HsynexError

NETWORK_FILES = {"stage1": STAGE1_FILE, "stage2": STAGE2_FILE, "localiser": LOCALISER_FILE}
DEFAULT_VOXEL_MM = {"stage1": STAGE_VOXEL_MM, "stage2": STAGE_VOXEL_MM,
                    "localiser": LOCALISER_VOXEL_MM}


def candidate_model_dirs(model_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where networks are looked for, in order: ``model_dir`` > ``$HSYNEX_MODELS`` > the
    repository's ``models/`` > ``sys.prefix/share/mri_hsynex/models`` (non-editable installs)."""
    if model_dir is not None:
        return [Path(model_dir)]
    if os.environ.get(MODELS_ENV):
        return [Path(os.environ[MODELS_ENV])]
    import mri_hsynex

    return [Path(mri_hsynex.__file__).resolve().parents[1] / "models",
            Path(sys.prefix) / "share" / "mri_hsynex" / "models"]


def find_model_dir(model_dir: str | os.PathLike | None = None) -> Path:
    """The first candidate folder holding both stage networks; HsynexError naming it if none."""
    candidates = candidate_model_dirs(model_dir)
    for folder in candidates:
        if all((folder / NETWORK_FILES[n]).is_file() for n in ("stage1", "stage2")):
            return folder
    folder = candidates[0]
    if not folder.is_dir():
        raise HsynexError("model folder not found", folder)
    missing = [NETWORK_FILES[n] for n in ("stage1", "stage2")
               if not (folder / NETWORK_FILES[n]).is_file()]
    raise HsynexError(f"no trained networks ({', '.join(missing)} missing) in the model folder "
                      f"(train and export them, or give --model DIR)", folder)


def sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class NetworkInfo:
    """One network's settings from ``model.json``: working voxel size (mm) and size divisor."""

    name: str
    path: Path
    voxel_mm: float
    divisor: int
    outputs: int
    sha256: str
    settings: dict = field(default_factory=dict)


@dataclass
class Networks:
    """The loaded networks (Keras models) with their settings; ``localiser`` may be None."""

    folder: Path
    stage1: object
    stage2: object
    localiser: object | None
    info: dict[str, NetworkInfo]
    settings: dict

    def hashes(self) -> dict[str, str]:
        """File name -> sha256 of every loaded ``.keras`` file."""
        return {i.path.name: i.sha256 for i in self.info.values()}


def read_settings(folder: Path) -> dict:
    """``model.json`` of a model folder (empty dict when absent); HsynexError if unreadable."""
    path = folder / MODEL_SETTINGS_FILE
    if not path.exists():
        return {}
    try:
        settings = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise HsynexError(f"cannot read model settings ({err})", path) from None
    if not isinstance(settings, dict):
        raise HsynexError("model settings are not a JSON object", path)
    return settings


def _network_info(name: str, path: Path, settings: dict) -> NetworkInfo:
    entry = settings.get("networks", {}).get(name, {})
    unet = entry.get("unet", {})
    levels = int(unet.get("levels", 4))
    return NetworkInfo(
        name=name, path=path,
        voxel_mm=float(entry.get("voxel_mm") or DEFAULT_VOXEL_MM[name]),
        divisor=2 ** (levels - 1), outputs=int(unet.get("outputs", 0)),
        sha256=sha256(path), settings=entry,
    )


def _load_keras(path: Path):
    import keras

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise HsynexError(f"cannot load network ({type(err).__name__}: {err})", path) from None


def load_networks(model_dir: str | os.PathLike | None = None) -> Networks:
    """Load stage 1, stage 2 and (when present) the localiser from the model folder.

    Call ``mri_hsynex.backend.configure`` first: this imports keras.
    """
    folder = find_model_dir(model_dir)
    settings = read_settings(folder)
    info: dict[str, NetworkInfo] = {}
    nets: dict[str, object | None] = {}
    for name, file_name in NETWORK_FILES.items():
        path = folder / file_name
        if not path.is_file():
            nets[name] = None
            continue
        info[name] = _network_info(name, path, settings)
        nets[name] = _load_keras(path)
    _check_outputs(nets, info, folder)
    return Networks(folder=folder, stage1=nets["stage1"], stage2=nets["stage2"],
                    localiser=nets["localiser"], info=info, settings=settings)


def _check_outputs(nets: dict, info: dict[str, NetworkInfo], folder: Path) -> None:
    """The channel counts the pipeline relies on (stage 1: 2 softmax + distance; stage 2: 11;
    localiser: 8)."""
    expected = {"stage1": (3, 2), "stage2": (11,), "localiser": (8,)}
    for name, net in nets.items():
        if net is None:
            continue
        channels = int(net.output_shape[-1])
        if channels not in expected[name]:
            raise HsynexError(f"{name} network has {channels} output channels, expected "
                              f"{expected[name][0]}", folder / NETWORK_FILES[name])
        info[name].outputs = channels
