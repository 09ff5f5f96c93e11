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


@keras.saving.register_keras_serializable(package="hsynex")
class SubunitProduct(keras.layers.Layer):
    """One owner of the volume: ``[stage 1 output (..., >= 2), stage 2 softmax (..., 1 + K)]``
    -> (..., 1 + K) posteriors ``[1 - p, p * q_1, ..., p * q_K]``, where p is stage 1's
    hypothalamus posterior (channel ``posterior_channel``) and q stage 2's distribution over the
    K subunits (its channels 1..K renormalised; its background channel is ignored). The whole
    volume is stage 1's and the subunits add up to it exactly."""

    def __init__(self, posterior_channel: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.posterior_channel = int(posterior_channel)

    def call(self, inputs):
        stage1, stage2 = inputs
        return subunit_product(stage1[..., self.posterior_channel:self.posterior_channel + 1],
                               stage2)

    def compute_output_shape(self, input_shapes):
        return tuple(input_shapes[1])

    def get_config(self):
        return {**super().get_config(), "posterior_channel": self.posterior_channel}


def subunit_product(posterior, stage2, eps: float = 1e-7):
    """(..., 1) whole-hypothalamus posterior x stage 2's subunit distribution (channels 1.. of
    the (..., 1 + K) ``stage2`` softmax, renormalised) -> (..., 1 + K); works on tensors of any
    backend and on NumPy arrays."""
    from keras import ops

    posterior = ops.cast(posterior, "float32")
    subunits = ops.cast(stage2[..., 1:], "float32")
    share = subunits / (ops.sum(subunits, axis=-1, keepdims=True) + eps)
    return ops.concatenate([1.0 - posterior, posterior * share], axis=-1)
