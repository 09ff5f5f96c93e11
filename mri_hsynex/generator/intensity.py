"""Step 6: intensity augmentation (clip, min-max normalise, random gamma, noise), and the final
min-max normalisation of the image to [0, 1]."""

from __future__ import annotations

import keras
from keras import ops

from .grid import seed_generator

EPS = 1e-6


def minmax_normalise(image):
    """Per-sample min-max normalisation of (B, ...) images to [0, 1] (a constant image -> 0)."""
    image = ops.convert_to_tensor(image)
    axes = tuple(range(1, len(image.shape)))
    lo = ops.min(image, axis=axes, keepdims=True)
    hi = ops.max(image, axis=axes, keepdims=True)
    return (image - lo) / ops.maximum(hi - lo, EPS)


def augment_intensity(image, gamma, noise, clip_max: float):
    """Clip (B, X, Y, Z) to [0, clip_max], normalise to [0, 1], raise to ``gamma`` (B,), add
    ``noise`` (B, X, Y, Z) (already scaled), and clip at 0."""
    image = minmax_normalise(ops.clip(ops.convert_to_tensor(image), 0.0, clip_max))
    image = ops.power(ops.maximum(image, EPS), gamma[:, None, None, None])
    return ops.maximum(image + noise, 0.0)


@keras.saving.register_keras_serializable(package="hsynex")
class RandomIntensity(keras.layers.Layer):
    """Clip, normalise, gamma exp(N(0, gamma_std)), Gaussian noise with std U(0, noise_std_max)."""

    def __init__(self, clip_max: float = 300.0, gamma_std: float = 0.5,
                 noise_std_max: float = 0.02, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.clip_max = float(clip_max)
        self.gamma_std = float(gamma_std)
        self.noise_std_max = float(noise_std_max)
        self.seed = seed
        self.seed_generator = seed_generator(seed)

    def sample_parameters(self, batch_size: int, shape: tuple[int, int, int]) -> dict:
        """``gamma`` (B,) and ``noise`` (B, X, Y, Z) (scaled by a per-sample std)."""
        sg = self.seed_generator
        gamma = ops.exp(keras.random.normal((batch_size,), 0.0, self.gamma_std, seed=sg))
        if self.noise_std_max > 0:
            std = keras.random.uniform((batch_size, 1, 1, 1), 0.0, self.noise_std_max, seed=sg)
            noise = std * keras.random.normal((batch_size, *shape), seed=sg)
        else:
            noise = ops.zeros((batch_size, *shape))
        return {"gamma": gamma, "noise": noise}

    def apply(self, image, params: dict):
        """The deterministic half: ``augment_intensity`` with given parameters."""
        return augment_intensity(image, params["gamma"], params["noise"], self.clip_max)

    def call(self, image):
        shape = tuple(int(n) for n in image.shape[1:4])
        return self.apply(image, self.sample_parameters(ops.shape(image)[0], shape))

    def compute_output_spec(self, image):
        return keras.KerasTensor(image.shape, dtype="float32")

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(clip_max=self.clip_max, gamma_std=self.gamma_std,
                      noise_std_max=self.noise_std_max, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="hsynex")
class MinMaxNormalise(keras.layers.Layer):
    """(B, X, Y, Z) image -> (B, X, Y, Z, 1) float32 in [0, 1] (per-sample min-max)."""

    def call(self, image):
        return minmax_normalise(image)[..., None]

    def compute_output_spec(self, image):
        return keras.KerasTensor((*image.shape, 1), dtype="float32")
