"""``build_generator``: the layers of the method composed, in its order, into one Keras model.

deformation + crop -> left/right flip -> hypothalamus growth/shrinkage -> [hypothalamus resize
with neighbours fixed -> neighbour resize with the hypothalamus fixed] -> [CSF around the brain]
-> conditional GMM ->
[average pooling from the fine grid] -> bias field -> intensity -> resolution / thickness ->
[Rician noise] -> [brain-mask cut] -> normalisation; targets (one-hot or pooled fractions,
signed distance) from the labels. Steps in brackets are off by default (issue 13's
volume-faithful rendering; the CSF: cisterns of maps without extra-cerebral labels; the cut:
skull-stripped scans).
"""

from __future__ import annotations

from .config import GeneratorConfig


def import_layers() -> None:
    """Import (and so register for deserialisation) every generator layer."""
    from . import (  # noqa: F401
        bias,
        csf_shell,
        flip,
        gmm,
        intensity,
        mask_cut,
        morph,
        noise,
        partial_volume,
        resize,
        resolution,
        spatial,
        targets,
    )


def build_generator(cfg: GeneratorConfig, seed: int | None = 0):
    """The synthetic-image generator as a ``keras.Model``.

    Inputs ``{"labels": (B, X, Y, Z) int32 RAS label map at cfg.input_voxel_mm,
    "center": (B, 3) float32 crop centre in input voxels}``; outputs ``{"image":
    (B, n0, n1, n2, 1) float32 in [0, 1], "labels": (B, n0, n1, n2) int32, "target":
    (B, n0, n1, n2, C) float32 one-hot (with ``supersample`` > 1: class fractions),
    "distance": (B, n0, n1, n2, 1) float32 mm}`` (``distance`` only when
    ``cfg.distance_maps``). Every call draws new random parameters; the same ``seed`` gives the
    same sequence of samples (per backend).
    """
    import keras

    labels_in = keras.Input(shape=(None, None, None), dtype="int32", name="labels")
    center_in = keras.Input(shape=(3,), dtype="float32", name="center")
    layers = generator_layers(cfg, seed)
    outputs = apply_generator_layers(layers, cfg, labels_in, center_in)
    return keras.Model({"labels": labels_in, "center": center_in}, outputs,
                       name="hsynex_generator")


def hypothalamus_resize(cfg: GeneratorConfig, prob: float, seed: int | None):
    """``cfg``'s ``RandomHypothalamusResize`` with resize probability ``prob`` (the generator's
    own, or 1 for the same-seed pairs of a config without random resizing)."""
    from .resize import RandomHypothalamusResize

    return RandomHypothalamusResize(
        prob, cfg.resize_max_fraction, cfg.resize_ventricle_prob,
        max_steps=max(1, int(round(cfg.resize_max_mm / cfg.fine_voxel_mm))), seed=seed,
        outer_prob=cfg.resize_outer_prob, name="resize")


def generator_layers(cfg: GeneratorConfig, seed: int | None = 0) -> dict:
    """The generator's layers by step name (``None`` for a step that is off), seeded from
    ``seed``. Shared by ``build_generator`` and ``paired.render_pairs``."""
    from .bias import RandomBiasField
    from .csf_shell import RandomCsfShell
    from .flip import RandomLeftRightFlip
    from .gmm import RandomGMM
    from .grid import derived_seed
    from .intensity import MinMaxNormalise, RandomIntensity
    from .mask_cut import RandomMaskCut
    from .morph import RandomHypothalamusMorph
    from .noise import RandomRicianNoise
    from .partial_volume import PartialVolumeDistance, PoolImage, PoolLabels, SoftTargets
    from .resize import RandomNeighbourResize, RandomTie
    from .resolution import RandomResolution
    from .spatial import RandomDeformCrop
    from .targets import HypothalamusDistance, OneHotTargets

    s = cfg.supersample
    fine_mm = cfg.fine_voxel_mm
    ratio = cfg.output_voxel_mm / cfg.input_voxel_mm
    # the tie is drawn once and shared, so that tied samples never move the invisible boundary
    shared_tie = (cfg.resize_prob > 0 or cfg.morph_prob > 0) and bool(cfg.tie_classes)
    layers: dict = {}
    layers["deform_crop"] = RandomDeformCrop(
        output_shape=cfg.fine_shape, output_voxel_mm=fine_mm,
        input_voxel_mm=cfg.input_voxel_mm, max_label=cfg.max_label,
        scaling_bounds=cfg.scaling_bounds, rotation_bounds_deg=cfg.rotation_bounds_deg,
        shearing_bounds=cfg.shearing_bounds, translation_bounds_mm=cfg.translation_bounds_mm,
        crop_jitter_mm=cfg.crop_jitter_mm, nonlin_std=cfg.nonlin_std,
        nonlin_scale=cfg.nonlin_scale, seed=derived_seed(seed, 0), name="deform_crop")
    layers["flip"] = RandomLeftRightFlip(cfg.flip_prob, cfg.max_label,
                                         seed=derived_seed(seed, 1), name="flip")
    layers["morph"] = RandomHypothalamusMorph(
        cfg.morph_prob, cfg.morph_mean_mm, cfg.morph_field_std_mm, voxel_mm=fine_mm,
        seed=derived_seed(seed, 6), name="morph")
    layers["tie"] = (RandomTie(cfg.tie_classes[0][2], seed=derived_seed(seed, 7), name="tie")
                     if shared_tie else None)
    layers["resize"] = (hypothalamus_resize(cfg, cfg.resize_prob, derived_seed(seed, 8))
                        if cfg.resize_prob > 0 else None)
    layers["neighbours"] = (RandomNeighbourResize(
        cfg.neighbour_prob, max_steps=max(1, int(round(cfg.neighbour_max_mm / fine_mm))),
        seed=derived_seed(seed, 9), name="neighbours") if cfg.neighbour_prob > 0 else None)
    layers["csf"] = (RandomCsfShell(cfg.csf_shell_prob, cfg.csf_shell_mm, voxel_mm=fine_mm,
                                    seed=derived_seed(seed, 12), name="csf")
                     if cfg.csf_shell_prob > 0 else None)
    layers["gmm"] = RandomGMM(
        max_label=cfg.max_label, mean_range=cfg.mean_range, std_range=cfg.std_range,
        share_left_right=cfg.share_left_right, background_zero_prob=cfg.background_zero_prob,
        background_dark_prob=cfg.background_dark_prob,
        background_dark_max=cfg.background_dark_max,
        background_regions=cfg.background_regions,
        background_region_scale=cfg.background_region_scale,
        voxel_ratio=fine_mm / cfg.input_voxel_mm, tie_classes=cfg.tie_classes,
        near_tie_prob=cfg.near_tie_prob, near_tie_contrast=cfg.near_tie_contrast,
        low_contrast_prob=cfg.low_contrast_prob, low_contrast_range=cfg.low_contrast_range,
        noise_scale=float(s) ** 1.5, seed=derived_seed(seed, 2), name="gmm")
    layers["pool"] = PoolImage(s, name="pool") if s > 1 else None
    layers["bias"] = RandomBiasField(cfg.bias_std, cfg.bias_scale, voxel_ratio=ratio,
                                     seed=derived_seed(seed, 3), name="bias")
    layers["intensity"] = RandomIntensity(cfg.clip_max, cfg.gamma_std, cfg.noise_std_max,
                                          seed=derived_seed(seed, 4), name="intensity")
    layers["resolution"] = RandomResolution(
        voxel_mm=cfg.output_voxel_mm, prob_min_res=cfg.prob_min_res, prob_aniso=cfg.prob_aniso,
        max_res_iso=cfg.max_res_iso, max_res_aniso=cfg.max_res_aniso,
        random_thickness=cfg.random_thickness, blur_range=cfg.blur_range,
        prob_blur_only=cfg.prob_blur_only, seed=derived_seed(seed, 5), name="resolution")
    layers["rician"] = (RandomRicianNoise(cfg.rician_std_max, seed=derived_seed(seed, 10),
                                          name="rician") if cfg.rician_std_max > 0 else None)
    layers["cut"] = (RandomMaskCut(cfg.cut_prob, cfg.cut_offset_mm, cfg.cut_max_tilt_deg,
                                   cfg.cut_corner_prob, voxel_mm=cfg.output_voxel_mm,
                                   seed=derived_seed(seed, 11), name="cut")
                     if cfg.cut_prob > 0 else None)
    layers["normalise"] = MinMaxNormalise(name="normalise")
    if s > 1:
        layers["labels_out"] = PoolLabels(s, name="pooled_labels")
        layers["target"] = SoftTargets(cfg.target, cfg.max_label, s, name="target")
        layers["distance"] = (PartialVolumeDistance(cfg.output_voxel_mm, cfg.distance_max_mm,
                                                    cfg.max_label, s, name="distance")
                              if cfg.distance_maps else None)
    else:
        layers["labels_out"] = None
        layers["target"] = OneHotTargets(cfg.target, cfg.max_label, name="target")
        layers["distance"] = (HypothalamusDistance(cfg.output_voxel_mm, cfg.distance_max_mm,
                                                   cfg.max_label, name="distance")
                              if cfg.distance_maps else None)
    return layers


def apply_generator_layers(layers: dict, cfg: GeneratorConfig, labels, center) -> dict:
    """Call the ``generator_layers`` in the order of the method (symbolically or eagerly)."""
    labels = layers["deform_crop"]([labels, center])
    labels = layers["flip"](labels)
    tie = layers["tie"](labels) if layers["tie"] is not None else None
    labels = layers["morph"](labels if tie is None else [labels, tie])
    if layers["resize"] is not None:
        labels = layers["resize"]([labels, tie])
    if layers["neighbours"] is not None:
        labels = layers["neighbours"](labels)
    if layers["csf"] is not None:
        labels = layers["csf"](labels)
    image = layers["gmm"](labels if tie is None else [labels, tie])
    return finish_image_and_targets(layers, cfg, image, labels)


def finish_image_and_targets(layers: dict, cfg: GeneratorConfig, image, labels) -> dict:
    """Pool (with ``supersample``), bias, intensity, resolution, Rician noise, brain-mask cut,
    normalisation; and the targets of the (fine) ``labels``."""
    for step in ("pool", "bias", "intensity", "resolution", "rician"):
        if layers[step] is not None:  # None: off (or applied already, paired.py)
            image = layers[step](image)
    out_labels = labels if layers["labels_out"] is None else layers["labels_out"](labels)
    if layers.get("cut") is not None:
        image = layers["cut"]([image, out_labels])
    image = layers["normalise"](image)
    outputs = {"image": image, "labels": out_labels, "target": layers["target"](labels)}
    if layers["distance"] is not None:
        outputs["distance"] = layers["distance"](labels)
    return outputs
