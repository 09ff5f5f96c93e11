"""Rician (non-central chi, two channels) noise of a magnitude MR image (hsynex, issue 13).

An MR magnitude image is |signal + complex Gaussian noise|: sqrt((x + s n1)^2 + (s n2)^2) with
n1, n2 standard normal. Dark tissue and air get a positive noise floor (mean s sqrt(pi/2) where
x = 0, a Rayleigh distribution) and the noise is nearly Gaussian where x >> s. Added after the
partial-volume pooling, bias and resolution steps (where acquisition noise lives), not to the
fine-grid GMM whose own std is tissue texture.
"""

from __future__ import annotations

import keras
from keras import ops

from .grid import seed_generator


def rician_noise(image, std, normal_real, normal_imag):
    """|image + std (n1 + i n2)| for (B, X, Y, Z) ``image``, per-sample ``std`` (B,) and standard
    normal ``normal_real``/``normal_imag`` (B, X, Y, Z). ``std`` 0 is the identity for
    image >= 0."""
    image = ops.convert_to_tensor(image)
    s = ops.reshape(ops.convert_to_tensor(std, dtype="float32"), (-1, 1, 1, 1))
    return ops.sqrt(ops.square(image + s * normal_real) + ops.square(s * normal_imag))


@keras.saving.register_keras_serializable(package="hsynex")
class RandomRicianNoise(keras.layers.Layer):
    """Rician noise with std U(0, ``std_max``) per sample on (B, X, Y, Z) images in about [0, 1]."""

    def __init__(self, std_max: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.std_max = float(std_max)
        self.seed = seed
        self.seed_generator = seed_generator(seed)

    def sample_parameters(self, batch_size: int, shape: tuple[int, int, int]) -> dict:
        """``std`` (B,), ``normal_real`` and ``normal_imag`` (B, X, Y, Z)."""
        sg = self.seed_generator
        return {"std": keras.random.uniform((batch_size,), 0.0, self.std_max, seed=sg),
                "normal_real": keras.random.normal((batch_size, *shape), seed=sg),
                "normal_imag": keras.random.normal((batch_size, *shape), seed=sg)}

    def apply(self, image, params: dict):
        """The deterministic half: ``rician_noise`` with given parameters."""
        return rician_noise(image, params["std"], params["normal_real"], params["normal_imag"])

    def call(self, image):
        if self.std_max <= 0:
            return image
        shape = tuple(int(n) for n in image.shape[1:4])
        return self.apply(image, self.sample_parameters(ops.shape(image)[0], shape))

    def compute_output_spec(self, image):
        return keras.KerasTensor(image.shape, dtype="float32")

    def get_config(self) -> dict:
        return {**super().get_config(), "std_max": self.std_max, "seed": self.seed}
