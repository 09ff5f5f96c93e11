"""``build_generator``: the layers of the method composed, in its order, into one Keras model.

deformation + crop -> left/right flip -> hypothalamus growth/shrinkage -> conditional GMM
-> bias field -> intensity -> resolution / thickness -> normalisation; targets (one-hot,
signed distance) from the labels.
"""

from __future__ import annotations

from .config import GeneratorConfig


def import_layers() -> None:
    """Import (and so register for deserialisation) every generator layer."""
    from . import bias, flip, gmm, intensity, morph, resolution, spatial, targets  # noqa: F401


def build_generator(cfg: GeneratorConfig, seed: int | None = 0):
    """The synthetic-image generator as a ``keras.Model``.

    Inputs ``{"labels": (B, X, Y, Z) int32 RAS label map at cfg.input_voxel_mm,
    "center": (B, 3) float32 crop centre in input voxels}``; outputs ``{"image":
    (B, n0, n1, n2, 1) float32 in [0, 1], "labels": (B, n0, n1, n2) int32, "target":
    (B, n0, n1, n2, C) float32 one-hot, "distance": (B, n0, n1, n2, 1) float32 mm}``
    (``distance`` only when ``cfg.distance_maps``). Every call draws new random parameters;
    the same ``seed`` gives the same sequence of samples (per backend).
    """
    import keras

    from .bias import RandomBiasField
    from .flip import RandomLeftRightFlip
    from .gmm import RandomGMM
    from .grid import derived_seed
    from .intensity import MinMaxNormalise, RandomIntensity
    from .morph import RandomHypothalamusMorph
    from .resolution import RandomResolution
    from .spatial import RandomDeformCrop
    from .targets import HypothalamusDistance, OneHotTargets

    ratio = cfg.output_voxel_mm / cfg.input_voxel_mm
    labels_in = keras.Input(shape=(None, None, None), dtype="int32", name="labels")
    center_in = keras.Input(shape=(3,), dtype="float32", name="center")
    labels = RandomDeformCrop(
        output_shape=cfg.output_shape, output_voxel_mm=cfg.output_voxel_mm,
        input_voxel_mm=cfg.input_voxel_mm, max_label=cfg.max_label,
        scaling_bounds=cfg.scaling_bounds, rotation_bounds_deg=cfg.rotation_bounds_deg,
        shearing_bounds=cfg.shearing_bounds, translation_bounds_mm=cfg.translation_bounds_mm,
        crop_jitter_mm=cfg.crop_jitter_mm, nonlin_std=cfg.nonlin_std,
        nonlin_scale=cfg.nonlin_scale, seed=derived_seed(seed, 0),
        name="deform_crop")([labels_in, center_in])
    labels = RandomLeftRightFlip(cfg.flip_prob, cfg.max_label, seed=derived_seed(seed, 1),
                                 name="flip")(labels)
    labels = RandomHypothalamusMorph(
        cfg.morph_prob, cfg.morph_mean_mm, cfg.morph_field_std_mm,
        voxel_mm=cfg.output_voxel_mm, seed=derived_seed(seed, 6), name="morph")(labels)
    image = RandomGMM(
        max_label=cfg.max_label, mean_range=cfg.mean_range, std_range=cfg.std_range,
        share_left_right=cfg.share_left_right, background_zero_prob=cfg.background_zero_prob,
        background_dark_prob=cfg.background_dark_prob,
        background_dark_max=cfg.background_dark_max,
        background_regions=cfg.background_regions,
        background_region_scale=cfg.background_region_scale, voxel_ratio=ratio,
        tie_classes=cfg.tie_classes, seed=derived_seed(seed, 2), name="gmm")(labels)
    image = RandomBiasField(cfg.bias_std, cfg.bias_scale, voxel_ratio=ratio,
                            seed=derived_seed(seed, 3), name="bias")(image)
    image = RandomIntensity(cfg.clip_max, cfg.gamma_std, cfg.noise_std_max,
                            seed=derived_seed(seed, 4), name="intensity")(image)
    image = RandomResolution(
        voxel_mm=cfg.output_voxel_mm, prob_min_res=cfg.prob_min_res, prob_aniso=cfg.prob_aniso,
        max_res_iso=cfg.max_res_iso, max_res_aniso=cfg.max_res_aniso,
        random_thickness=cfg.random_thickness, blur_range=cfg.blur_range,
        seed=derived_seed(seed, 5), name="resolution")(image)
    image = MinMaxNormalise(name="normalise")(image)
    outputs = {"image": image, "labels": labels,
               "target": OneHotTargets(cfg.target, cfg.max_label, name="target")(labels)}
    if cfg.distance_maps:
        outputs["distance"] = HypothalamusDistance(cfg.output_voxel_mm, cfg.distance_max_mm,
                                                   cfg.max_label, name="distance")(labels)
    return keras.Model({"labels": labels_in, "center": center_in}, outputs,
                       name="hsynex_generator")
