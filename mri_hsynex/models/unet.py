"""3-D U-Net built from a small JSON-able config (standard Keras layers only: no ``Lambda``).

Every layer is a built-in Keras layer, so the saved ``.keras`` files load in safe mode on every
backend with ``compile=False``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class UNetConfig:
    """Architecture of one network. Sizes are in voxels; features double per level by default."""

    name: str = "unet"
    input_channels: int = 1
    levels: int = 4
    features: int = 16  # filters of the first level
    feature_multiplier: float = 2.0
    convs_per_level: int = 2
    kernel: int = 3
    activation: str = "elu"
    normalisation: str = "instance"  # "instance", "batch" or "none"
    outputs: int = 2  # softmax channels
    regression_outputs: int = 0  # extra tanh channels (e.g. a signed distance map / its clip)
    extra: dict = field(default_factory=dict)  # free notes, kept in the JSON

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown U-Net config keys {sorted(unknown)}")
        return cls(**d)

    @property
    def divisor(self) -> int:
        """Input sizes must be multiples of this (one 2x pooling per level below the top)."""
        return 2 ** (self.levels - 1)


def _normalise(x, kind: str, name: str):
    import keras

    if kind == "batch":
        return keras.layers.BatchNormalization(name=name)(x)
    if kind == "instance":
        return keras.layers.GroupNormalization(groups=-1, name=name)(x)
    if kind == "none":
        return x
    raise ValueError(f"unknown normalisation {kind!r}")


def _conv_block(x, n_filters: int, cfg: UNetConfig, prefix: str):
    import keras

    for i in range(cfg.convs_per_level):
        x = keras.layers.Conv3D(n_filters, cfg.kernel, padding="same",
                                activation=cfg.activation, name=f"{prefix}_conv{i}")(x)
    return _normalise(x, cfg.normalisation, f"{prefix}_norm")


def build_unet(cfg: UNetConfig):
    """A fully convolutional 3-D U-Net; input (B, X, Y, Z, C) with X, Y, Z multiples of ``divisor``.

    Output: (B, X, Y, Z, outputs + regression_outputs): softmax probabilities first, then the
    tanh regression channels.
    """
    import keras

    inputs = keras.Input(shape=(None, None, None, cfg.input_channels), name=f"{cfg.name}_input")
    x = inputs
    skips = []
    n_filters = [int(round(cfg.features * cfg.feature_multiplier**lvl))
                 for lvl in range(cfg.levels)]
    for lvl in range(cfg.levels):
        x = _conv_block(x, n_filters[lvl], cfg, f"{cfg.name}_down{lvl}")
        if lvl < cfg.levels - 1:
            skips.append(x)
            x = keras.layers.MaxPooling3D(2, name=f"{cfg.name}_pool{lvl}")(x)
    for lvl in reversed(range(cfg.levels - 1)):
        x = keras.layers.UpSampling3D(2, name=f"{cfg.name}_up{lvl}")(x)
        x = keras.layers.Concatenate(name=f"{cfg.name}_skip{lvl}")([skips[lvl], x])
        x = _conv_block(x, n_filters[lvl], cfg, f"{cfg.name}_uparm{lvl}")
    probs = keras.layers.Conv3D(cfg.outputs, 1, activation="softmax", dtype="float32",
                                name=f"{cfg.name}_softmax")(x)
    outputs = probs
    if cfg.regression_outputs:
        reg = keras.layers.Conv3D(cfg.regression_outputs, 1, activation="tanh", dtype="float32",
                                  name=f"{cfg.name}_regression")(x)
        outputs = keras.layers.Concatenate(name=f"{cfg.name}_output")([probs, reg])
    return keras.Model(inputs, outputs, name=cfg.name)
