"""The T1-only teacher: FreeSurfer's 2020 hypothalamic-subunit U-Net, rebuilt in Keras 3.

Billot et al., NeuroImage 2020 (the network behind ``mri_segment_hypothalamic_subunits``).
Only the weights are stored in the HDF5 file (Keras-2 ``save_weights`` layout, no model config),
so the architecture is rebuilt here from the facts in ``../shared/data/teacher/README.md``:
3 levels, 2 convolutions (3x3x3, ELU, ``same`` padding) per level, one BatchNorm per level after
its convolutions, 2x2x2 max-pooling down, nearest 2x upsampling up, skip concatenation, a 1x1x1
convolution to 11 channels and a softmax.

The skip wiring is not recorded in the file. The default (skip taken from the level's last
convolution *before* its BatchNorm; concatenation order skip, then upsampled) is the one that
gives anatomical results (see ``docs/training_data.md``); the other three wirings can be built
for that comparison.

Standard Keras layers only, no backend-specific code: the model runs on every Keras backend.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import HsynexError

N_CLASSES = 11  # background + 10 subunits (channel k <-> label 800 + k)
N_PARAMETERS = 795_515  # trainable + BatchNorm statistics, as stored in the HDF5 file
LEVELS = 3
FEATURES = (24, 48, 96)  # filters per level, top to bottom
CONVS_PER_LEVEL = 2
DIVISOR = 2 ** (LEVELS - 1)  # input sizes (voxels) must be multiples of this; we use 8 (README)


@dataclass(frozen=True)
class Wiring:
    """How the decoder's skip connections are wired (not stored in the weights file).

    ``skip_before_bn``: the skip is the output of the level's last convolution (True) or of its
    BatchNorm (False). ``skip_first``: concatenate ``[skip, upsampled]`` (True) or
    ``[upsampled, skip]`` (False).
    """

    skip_before_bn: bool = True
    skip_first: bool = True

    @property
    def label(self) -> str:
        where = "before BN" if self.skip_before_bn else "after BN"
        order = "skip, then upsampled" if self.skip_first else "upsampled, then skip"
        return f"{where} / {order}"


DEFAULT_WIRING = Wiring()
ALL_WIRINGS = (
    Wiring(True, True), Wiring(False, True), Wiring(True, False), Wiring(False, False),
)


def build_teacher_network(wiring: Wiring = DEFAULT_WIRING):
    """The teacher U-Net (random weights) with the layer names of the HDF5 file.

    Input: ``(batch, X, Y, Z, 1)`` float32 intensities in [0, 1], voxel axes along R, A, S at
    1 mm, each of X, Y, Z a multiple of 4 (8 in practice). Output: ``(batch, X, Y, Z, 11)``
    softmax posteriors (channel 0 background, channel k subunit 800 + k).
    """
    import keras
    from keras import layers

    def conv(x, filters: int, name: str):
        return layers.Conv3D(filters, 3, padding="same", activation="elu", name=name)(x)

    inputs = keras.Input(shape=(None, None, None, 1), name="unet_input")
    x = inputs
    skips = []
    for level in range(LEVELS):
        for i in range(CONVS_PER_LEVEL):
            x = conv(x, FEATURES[level], f"unet_conv_downarm_{level}_{i}")
        before_bn = x
        x = layers.BatchNormalization(name=f"unet_bn_down_{level}")(x)
        if level < LEVELS - 1:
            skips.append(before_bn if wiring.skip_before_bn else x)
            x = layers.MaxPooling3D(2, name=f"unet_maxpool_{level}")(x)
    for j in range(LEVELS - 1):
        level = LEVELS + j  # decoder layers are numbered 3, 4 in the file
        skip = skips[LEVELS - 2 - j]
        up = layers.UpSampling3D(2, name=f"unet_up_{level}")(x)
        pair = [skip, up] if wiring.skip_first else [up, skip]
        x = layers.Concatenate(axis=-1, name=f"unet_merge_{level}")(pair)
        for i in range(CONVS_PER_LEVEL):
            x = conv(x, FEATURES[LEVELS - 2 - j], f"unet_conv_uparm_{level}_{i}")
        x = layers.BatchNormalization(name=f"unet_bn_up_{j}")(x)
    x = layers.Conv3D(N_CLASSES, 1, name="unet_likelihood")(x)
    outputs = layers.Softmax(axis=-1, name="unet_prediction")(x)
    return keras.Model(inputs, outputs, name="hypothalamus_teacher")


def read_weight_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every weight array of a Keras-2 ``save_weights`` HDF5 file, keyed ``layer/variable``.

    Variable names drop the ``:0`` suffix (``unet_bn_down_0/moving_mean``).
    """
    import h5py

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise HsynexError("teacher weights file not found", path)
    arrays: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            for layer_name in root:
                group = root[layer_name]
                names = [n.decode() if isinstance(n, bytes) else str(n)
                         for n in group.attrs.get("weight_names", [])]
                for name in names:
                    var = name.split("/")[-1].split(":")[0]
                    arrays[f"{layer_name}/{var}"] = np.asarray(group[name])
    except (OSError, KeyError) as err:
        raise HsynexError(f"cannot read teacher weights ({err})", path) from err
    return arrays


def load_teacher_weights(model, path: str | os.PathLike) -> int:
    """Copy the HDF5 weights into ``model`` by layer name; return the number of values loaded.

    Raises ``HsynexError`` naming the file if any model variable has no array in the file, an
    array of the file is not used, or a shape differs.
    """
    arrays = read_weight_arrays(path)
    unused = set(arrays)
    missing: list[str] = []
    wrong: list[str] = []
    pending = []
    for layer in model.layers:
        for var in layer.weights:
            key = f"{layer.name}/{var.name.split('/')[-1].split(':')[0]}"
            if key not in arrays:
                missing.append(key)
                continue
            unused.discard(key)
            value = arrays[key]
            if tuple(value.shape) != tuple(var.shape):
                wrong.append(f"{key} {tuple(value.shape)} vs {tuple(var.shape)}")
                continue
            pending.append((var, value))
    problems = []
    if missing:
        problems.append(f"missing arrays {sorted(missing)}")
    if unused:
        problems.append(f"unused arrays {sorted(unused)}")
    if wrong:
        problems.append(f"shape mismatch {wrong}")
    if problems:
        raise HsynexError("teacher weights do not fit the network: " + "; ".join(problems),
                          os.fspath(path))
    for var, value in pending:
        var.assign(value.astype("float32"))
    return int(sum(v.size for _, v in pending))


def load_teacher(path: str | os.PathLike, wiring: Wiring = DEFAULT_WIRING):
    """Build the teacher network and load its weights from ``path`` (``load_teacher_weights``)."""
    model = build_teacher_network(wiring)
    load_teacher_weights(model, path)
    return model


def save_teacher_weights(model, path: str | os.PathLike) -> None:
    """Write ``model``'s weights in the Keras-2 ``save_weights`` HDF5 layout that
    ``load_teacher_weights`` reads (for tests and stand-in teachers; atomic write)."""
    import h5py
    import keras

    from ..io import atomic_path

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["layer_names"] = np.array([layer.name.encode() for layer in model.layers])
        f.attrs["backend"] = b"keras3"
        for layer in model.layers:
            group = f.create_group(layer.name)
            names = [f"{layer.name}/{v.name.split('/')[-1]}:0" for v in layer.weights]
            group.attrs["weight_names"] = np.array([n.encode() for n in names])
            for name, var in zip(names, layer.weights):
                group.create_dataset(name, data=np.asarray(keras.ops.convert_to_numpy(var.value),
                                                          np.float32))
