"""Step 3e: the cerebrospinal fluid around the brain (label maps without extra-cerebral labels).

hsynex addition (not in SynthSeg or the paper). Under and in front of the hypothalamus lie the
basal cisterns: CSF, the same fluid as the 3rd ventricle, so in every real scan it has the
ventricle's intensity (bright on T2 and PD, dark on T1 and FLAIR). A recon-all aseg
leaves that space unlabelled (0), so the generator painted it as background: zero, dark, or
random smooth regions unrelated to the ventricle. Networks trained so learnt T1's cue (the
hypothalamus ends where the image gets dark below it): measured (2026-12-06) on renders of the
held-out sub-08 with the shipped networks, 76 % of the 235 false-positive background voxels of
a PD-like 1 mm image lay under the hypothalamus, in the bright cistern (73 % of 89 on T2-like;
15 voxels on T1-like, where CSF is dark), and PD-like whole Dice was 0.62 against 0.84 on T1.

With probability ``prob`` per sample, label-0 voxels within U(``thickness_mm``) of any labelled
voxel become ``csf_label`` (24, aseg's extra-ventricular CSF). Whether that CSF also looks like
the ventricle is the GMM's tie (``tie_classes`` row ``[14, 24, p]``), not this layer's choice.
The distance is in chamfer steps (``resize.distance_levels``: cross and cube dilations
alternating); labels > 0 are never changed, so the targets are unchanged. Applied to the (fine)
label crop just before the GMM.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from .grid import seed_generator
from .resize import distance_levels

CSF_LABEL = 24  # aseg's "CSF" (extra-ventricular)


@keras.saving.register_keras_serializable(package="hsynex")
class RandomCsfShell(keras.layers.Layer):
    """Relabel the background next to the brain of (B, X, Y, Z) int32 label crops as CSF, with
    probability ``prob`` per sample, to a depth U(``thickness_mm``) (see the module docstring).
    ``voxel_mm``: the crop's voxel size (the fine grid's with supersampling)."""

    def __init__(self, prob: float = 0.0, thickness_mm: tuple[float, float] = (1.0, 4.0),
                 voxel_mm: float = 1.0, csf_label: int = CSF_LABEL, seed: int | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.prob = float(prob)
        self.thickness_mm = tuple(float(v) for v in thickness_mm)
        self.voxel_mm = float(voxel_mm)
        self.csf_label = int(csf_label)
        self.seed = seed
        self.seed_generator = seed_generator(seed)
        self.max_steps = max(1, int(math.ceil(self.thickness_mm[1] / self.voxel_mm)))

    def sample_parameters(self, batch_size) -> dict:
        """Per sample: ``on`` (B,) float 1/0 and ``thickness_mm`` (B,) U(thickness_mm)."""
        sg = self.seed_generator
        on = keras.random.uniform((batch_size,), 0.0, 1.0, seed=sg) < self.prob
        return {"on": ops.cast(on, "float32"),
                "thickness_mm": keras.random.uniform((batch_size,), *self.thickness_mm,
                                                     seed=sg)}

    def apply(self, labels, params: dict):
        """The deterministic half: label-0 voxels at most ``thickness_mm`` (in dilation steps of
        ``voxel_mm``) from the labelled ones become ``csf_label`` where ``on``."""
        labels = ops.convert_to_tensor(labels, "int32")
        depth_mm = distance_levels(labels > 0, self.max_steps) * self.voxel_mm
        limit = (params["thickness_mm"] * params["on"])[:, None, None, None]
        shell = ops.logical_and(depth_mm > 0.0, depth_mm <= limit + 1e-3)
        return ops.where(shell, self.csf_label, labels)

    def call(self, labels):
        if self.prob <= 0:
            return labels
        return self.apply(labels, self.sample_parameters(ops.shape(labels)[0]))

    def compute_output_spec(self, labels):
        return keras.KerasTensor(labels.shape, dtype="int32")

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(prob=self.prob, thickness_mm=list(self.thickness_mm),
                      voxel_mm=self.voxel_mm, csf_label=self.csf_label, seed=self.seed)
        return config
