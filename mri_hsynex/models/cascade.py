"""The two-stage cascade of H-SynEx: stage 1 (whole hypothalamus) feeds stage 2 (subunits).

Training uses one model that nests both stages, so one synthetic image trains both; the stages
are saved as separate networks and chained by ``run_cascade`` at inference.
"""

from __future__ import annotations

import numpy as np

from .unet import UNetConfig, build_unet

STAGE1_POSTERIOR = 1  # channel of stage 1's softmax that holds the whole hypothalamus
# How the subunit posteriors are made (``model.json`` "cascade_mode"):
# "independent": stage 2's softmax as it is (the shipped networks);
# "product": stage 1's hypothalamus posterior x stage 2's distribution over the ten subunits
# (issue 13: one owner of the volume; the subunits add up to stage 1's whole).
CASCADE_MODES = ("independent", "product")


def check_mode(mode: str) -> str:
    """``mode`` if it is one of ``CASCADE_MODES``, else ValueError."""
    if mode not in CASCADE_MODES:
        raise ValueError(f"cascade mode must be one of {CASCADE_MODES}, not {mode!r}")
    return mode


def build_cascade_for_training(stage1: UNetConfig, stage2: UNetConfig,
                               mode: str = "independent"):
    """Model: image (B,X,Y,Z,1) -> {"stage1": (..., 2 + 1 distance), "stage2": (..., 11)}.

    Stage 2's input is the image concatenated with stage 1's hypothalamus posterior. With
    ``mode`` "product" the "stage2" output is ``layers.SubunitProduct`` of both stages (what
    the subunit loss then trains).
    """
    import keras

    from .layers import ChannelSlice, SubunitProduct

    check_mode(mode)

    if stage2.input_channels != 2:
        raise ValueError("stage 2 takes 2 channels: the image and stage 1's posterior")
    net1, net2 = build_unet(stage1), build_unet(stage2)
    image = keras.Input(shape=(None, None, None, 1), name="image")
    out1 = net1(image)
    posterior = ChannelSlice(STAGE1_POSTERIOR, STAGE1_POSTERIOR + 1, name="stage1_posterior")(out1)
    both = keras.layers.Concatenate(name="image_and_posterior")([image, posterior])
    out2 = net2(both)
    if mode == "product":
        out2 = SubunitProduct(STAGE1_POSTERIOR, name="subunit_product")([out1, out2])
    return keras.Model(image, {"stage1": out1, "stage2": out2}, name="cascade")


def build_stage1_for_training(stage1: UNetConfig):
    """Model: image (B,X,Y,Z,1) -> {"stage1": (..., 2 + 1 distance)} (stage 1 alone)."""
    import keras

    net1 = build_unet(stage1)
    image = keras.Input(shape=(None, None, None, 1), name="image")
    return keras.Model(image, {"stage1": net1(image)}, name="stage1_only")


def run_cascade(stage1, stage2, image: np.ndarray,
                mode: str = "independent") -> tuple[np.ndarray, np.ndarray]:
    """Chain the two networks on a batch of images (B,X,Y,Z,1), each side a multiple of 8.

    Returns (stage-1 output, stage-2 posteriors), numpy float32; with ``mode`` "product" the
    posteriors are stage 1's hypothalamus posterior x stage 2's subunit distribution.
    """
    import keras

    check_mode(mode)
    out1 = keras.ops.convert_to_numpy(stage1(image, training=False)).astype(np.float32)
    both = np.concatenate([image, out1[..., STAGE1_POSTERIOR:STAGE1_POSTERIOR + 1]], axis=-1)
    out2 = keras.ops.convert_to_numpy(stage2(both, training=False)).astype(np.float32)
    if mode == "product":
        p = out1[..., STAGE1_POSTERIOR:STAGE1_POSTERIOR + 1]
        share = out2[..., 1:] / (out2[..., 1:].sum(-1, keepdims=True) + 1e-7)
        out2 = np.concatenate([1.0 - p, p * share], axis=-1).astype(np.float32)
    return out1, out2
