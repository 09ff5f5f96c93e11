"""Small registered layers used to wire the cascade (no ``Lambda``: safe-mode loadable)."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="hsynex")
class ChannelSlice(keras.layers.Layer):
    """Keep channels ``start:stop`` of a channels-last tensor."""

    def __init__(self, start: int, stop: int, **kwargs):
        super().__init__(**kwargs)
        self.start = int(start)
        self.stop = int(stop)

    def call(self, x):
        return x[..., self.start:self.stop]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.stop - self.start)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}
