"""Step 5: a smooth multiplicative bias field, exp of an upsampled coarse Gaussian field.

The coarse grid has ``bias_scale`` cells per input voxel (SynthSeg: 0.025, i.e. one node every
40 mm at 1 mm); the log-field std is U(0, bias_std) per sample.
"""

from __future__ import annotations

import keras
from keras import ops

from .grid import coarse_grid_size, seed_generator, upsample_field


def apply_bias(image, log_field):
    """``image`` (B, X, Y, Z) times exp of ``log_field`` (B, g0, g1, g2) upsampled linearly to
    (X, Y, Z). A zero field is the identity."""
    image = ops.convert_to_tensor(image)
    shape = tuple(int(n) for n in image.shape[1:4])
    field = upsample_field(ops.convert_to_tensor(log_field)[..., None], shape)[..., 0]
    return image * ops.exp(field)


@keras.saving.register_keras_serializable(package="hsynex")
class RandomBiasField(keras.layers.Layer):
    """Multiply (B, X, Y, Z) float32 images by a random smooth positive field."""

    def __init__(self, bias_std: float = 0.7, bias_scale: float = 0.025,
                 voxel_ratio: float = 1.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.bias_std = float(bias_std)
        self.bias_scale = float(bias_scale)
        self.voxel_ratio = float(voxel_ratio)  # output voxel / input voxel
        self.seed = seed
        self.seed_generator = seed_generator(seed)

    def grid_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """Coarse grid nodes per axis for an image of ``shape`` voxels."""
        return tuple(coarse_grid_size(n, self.voxel_ratio, 1.0, self.bias_scale) for n in shape)

    def sample_parameters(self, batch_size: int, shape: tuple[int, int, int]) -> dict:
        """``log_field`` (B, g0, g1, g2): N(0, s^2), s ~ U(0, bias_std) per sample."""
        sg = self.seed_generator
        std = keras.random.uniform((batch_size, 1, 1, 1), 0.0, self.bias_std, seed=sg)
        normal = keras.random.normal((batch_size, *self.grid_shape(shape)), seed=sg)
        return {"log_field": std * normal}

    def apply(self, image, params: dict):
        """The deterministic half: ``apply_bias`` with a given field."""
        return apply_bias(image, params["log_field"])

    def call(self, image):
        if self.bias_std <= 0:
            return image
        shape = tuple(int(n) for n in image.shape[1:4])
        return self.apply(image, self.sample_parameters(ops.shape(image)[0], shape))

    def compute_output_spec(self, image):
        return keras.KerasTensor(image.shape, dtype="float32")

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(bias_std=self.bias_std, bias_scale=self.bias_scale,
                      voxel_ratio=self.voxel_ratio, seed=self.seed)
        return config
