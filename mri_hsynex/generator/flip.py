"""Step 3: random left/right flip of the cropped labels (RAS axis 0) with the label swap table.

Mirroring an image swaps the subject's sides, so every lateralised label becomes its partner
(801-805 <-> 806-810, 28 <-> 60, ...): ``labels.lr_swap_lut``. The mirror is about the centre of
the crop (the generator centres crops on the hypothalamus, i.e. near the midline).
"""

from __future__ import annotations

import keras
from keras import ops

from .. import labels as label_tables
from .grid import seed_generator


def flip_labels(labels, flip, swap_lut):
    """Labels (B, X, Y, Z) int32 flipped along axis 0 and relabelled with ``swap_lut``
    (1-D int32, index = label) where ``flip`` (B,) is true; unchanged elsewhere."""
    labels = ops.convert_to_tensor(labels)
    mirrored = ops.take(swap_lut, ops.flip(labels, axis=1))
    return ops.where(flip[:, None, None, None], ops.cast(mirrored, "int32"), labels)


@keras.saving.register_keras_serializable(package="hsynex")
class RandomLeftRightFlip(keras.layers.Layer):
    """Flip (B, X, Y, Z) int32 labels along RAS x with probability ``flip_prob`` per sample.
    Labels must already be in [0, max_label]."""

    def __init__(self, flip_prob: float = 0.5, max_label: int = 830, seed: int | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.flip_prob = float(flip_prob)
        self.max_label = int(max_label)
        self.seed = seed
        self.seed_generator = seed_generator(seed)
        self.swap_lut = ops.convert_to_tensor(label_tables.lr_swap_lut(self.max_label),
                                              dtype="int32")

    def sample_parameters(self, batch_size: int) -> dict:
        """``flip`` (B,) bool."""
        u = keras.random.uniform((batch_size,), 0.0, 1.0, seed=self.seed_generator)
        return {"flip": u < self.flip_prob}

    def apply(self, labels, params: dict):
        """The deterministic half: ``flip_labels`` with given flips."""
        return flip_labels(labels, params["flip"], self.swap_lut)

    def call(self, labels):
        return self.apply(labels, self.sample_parameters(ops.shape(labels)[0]))

    def compute_output_spec(self, labels):
        return keras.KerasTensor(labels.shape, dtype="int32")

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(flip_prob=self.flip_prob, max_label=self.max_label, seed=self.seed)
        return config
