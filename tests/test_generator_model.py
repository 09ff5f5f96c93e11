"""The composed generator model: I/O contract, determinism, serialisation, config, label source."""

from __future__ import annotations

import json

import numpy as np
import pytest
from synthetic import tiny_affine, tiny_label_map

from mri_hsynex.errors import HsynexError
from mri_hsynex.generator import GeneratorConfig

SMALL = dict(output_shape=(16, 16, 16), crop_jitter_mm=2.0, distance_max_mm=4.0)


def _inputs(batch: int = 1):
    labels = np.stack([tiny_label_map((32, 32, 32))] * batch)
    center = np.full((batch, 3), 15.5, np.float32)
    return {"labels": labels, "center": center}


def _np(out: dict) -> dict:
    import keras

    return {k: np.asarray(keras.ops.convert_to_numpy(v)) for k, v in out.items()}


# --- config --------------------------------------------------------------------------------------
def test_config_json_round_trip(tmp_path):
    cfg = GeneratorConfig(output_shape=[32, 48, 64], target="stage1", tie_classes=[[28, 801, 1]],
                          mean_range=[10, 20])
    d = json.loads(json.dumps(cfg.to_dict()))
    assert GeneratorConfig.from_dict(d) == cfg
    cfg.save(tmp_path / "gen.json")
    assert GeneratorConfig.load(tmp_path / "gen.json") == cfg
    (tmp_path / "train.json").write_text(json.dumps({"network": "x", "generator": d}))
    assert GeneratorConfig.load(tmp_path / "train.json") == cfg
    assert cfg.n_classes == 2 and GeneratorConfig().n_classes == 11
    assert GeneratorConfig(target="localiser").n_classes == 8


@pytest.mark.parametrize("bad", [{"nope": 1}, {"target": "stage3"}, {"output_shape": [8, 8]},
                                 {"flip_prob": 2.0}, {"mean_range": [5, 1]},
                                 {"output_voxel_mm": 0}, {"tie_classes": [[28, 801]]},
                                 {"morph_prob": -0.1}, {"morph_mean_mm": -1}])
def test_config_errors_are_hsynex_errors(bad):
    with pytest.raises(HsynexError):
        GeneratorConfig.from_dict(bad, "cfg.json")


def test_config_load_missing_file(tmp_path):
    with pytest.raises(HsynexError, match="not found"):
        GeneratorConfig.load(tmp_path / "missing.json")


# --- model ---------------------------------------------------------------------------------------
@pytest.mark.backend
@pytest.mark.parametrize("target,morph", [("stage1", 0.0), ("stage2", 0.0), ("localiser", 0.0),
                                          ("stage2", 1.0)])
def test_outputs_follow_the_contract(target, morph):
    from mri_hsynex.generator import build_generator

    cfg = GeneratorConfig(target=target, morph_prob=morph, **SMALL)
    out = _np(build_generator(cfg, seed=0)(_inputs(2)))
    assert out["image"].shape == (2, 16, 16, 16, 1) and out["image"].dtype == np.float32
    assert out["image"].min() >= 0 and out["image"].max() <= 1
    assert np.allclose(out["image"].reshape(2, -1).max(1), 1.0)
    assert out["labels"].shape == (2, 16, 16, 16) and out["labels"].dtype == np.int32
    assert out["target"].shape == (2, 16, 16, 16, cfg.n_classes)
    np.testing.assert_allclose(out["target"].sum(-1), 1.0)
    dist = out["distance"][..., 0]
    assert dist.shape == (2, 16, 16, 16) and np.abs(dist).max() <= 4.0
    hyp = (out["labels"] >= 801) & (out["labels"] <= 810)
    assert hyp.any() and np.all(dist[hyp] < 0) and np.all(dist[~hyp] > 0)
    if target == "stage2":  # the one-hot follows the labels
        np.testing.assert_array_equal(out["target"].argmax(-1), np.where(hyp, out["labels"] - 800,
                                                                          0))


@pytest.mark.backend
def test_no_distance_output_when_disabled():
    from mri_hsynex.generator import build_generator

    cfg = GeneratorConfig(distance_maps=False, **{**SMALL, "output_shape": (8, 8, 8)})
    out = build_generator(cfg, seed=0)(_inputs())
    assert set(out) == {"image", "labels", "target"}


@pytest.mark.backend
def test_same_seed_same_samples_different_seed_different():
    from mri_hsynex.generator import build_generator

    cfg = GeneratorConfig(**SMALL)
    a1, a2 = (build_generator(cfg, seed=3) for _ in range(2))
    b = build_generator(cfg, seed=4)
    first = [_np(a1(_inputs())) for _ in range(2)]
    second = [_np(a2(_inputs())) for _ in range(2)]
    other = _np(b(_inputs()))
    for x, y in zip(first, second):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert not np.array_equal(first[0]["image"], first[1]["image"])  # a new sample per call
    assert not np.array_equal(first[0]["image"], other["image"])


@pytest.mark.backend
def test_every_layer_round_trips_its_config():
    import keras

    from mri_hsynex.generator import build_generator

    gen = build_generator(GeneratorConfig(**SMALL), seed=0)
    custom = [layer for layer in gen.layers if not isinstance(layer, keras.layers.InputLayer)]
    assert len(custom) == 10
    for layer in custom:
        config = layer.get_config()
        json.dumps(config)  # JSON only
        clone = type(layer).from_config(config)
        assert clone.get_config() == config


@pytest.mark.backend
def test_generator_model_serialises(tmp_path):
    import keras

    from mri_hsynex.generator import build_generator

    gen = build_generator(GeneratorConfig(**SMALL), seed=7)
    clone = keras.Model.from_config(gen.get_config())
    x, y = _np(gen(_inputs())), _np(clone(_inputs()))
    for key in x:  # same config, same seeds: the same first sample
        np.testing.assert_array_equal(x[key], y[key])
    gen.save(tmp_path / "gen.keras")
    loaded = keras.saving.load_model(tmp_path / "gen.keras", safe_mode=True)
    def layer_configs(model):
        return {layer.name: json.loads(json.dumps(layer.get_config())) for layer in model.layers}

    assert layer_configs(loaded) == layer_configs(gen)


# --- label-map source ----------------------------------------------------------------------------
def _save(path, data, affine):
    import nibabel as nib

    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def test_resample_nearest_and_centroid():
    from mri_hsynex.generator.data import label_centroid, resample_nearest

    data = np.arange(4 * 6 * 2).reshape(4, 6, 2)
    same = resample_nearest(data, (1.0, 1.0, 1.0), 1.0)
    assert same is data
    up = resample_nearest(data, (2.0, 1.0, 3.0), 1.0)
    assert up.shape == (8, 6, 6)
    np.testing.assert_array_equal(up[::2, :, ::3], data)
    np.testing.assert_array_equal(up[1::2, :, 1::3], data)
    labels = np.zeros((10, 10, 10), np.int32)
    labels[2:4, 5, 6] = 801
    np.testing.assert_allclose(label_centroid(labels, [801, 802]), [2.5, 5, 6])
    assert label_centroid(labels, [28]) is None


def test_label_map_source(tmp_path):
    pytest.importorskip("mri_hsynex.io")
    from mri_hsynex.generator import LabelMapSource

    labels = tiny_label_map((40, 40, 40))
    a = _save(tmp_path / "a.nii.gz", labels.astype(np.float32), tiny_affine())
    no_hyp = np.where(labels >= 801, 0, labels)
    no_hyp[0, 0, 0] = 2000  # above max_label -> 0
    b = _save(tmp_path / "b.nii.gz", no_hyp.astype(np.int32), tiny_affine())
    # a 2 mm map in LAS: reoriented to RAS and resampled to 1 mm
    las = np.diag([-2.0, 2.0, 2.0, 1.0])
    las[:3, 3] = [19.0, -20.0, -20.0]  # voxel i of c is voxel (39 - 2i, 2j, 2k) of a
    c = _save(tmp_path / "c.nii.gz", labels[::-2, ::2, ::2].astype(np.int32), las)
    source = LabelMapSource([a, b, c], GeneratorConfig(), rng_seed=0)
    assert len(source) == 3
    assert all(m.dtype == np.uint16 for m in source.maps)
    assert source.maps[1].max() <= 830 and source.maps[2].shape == (40, 40, 40)
    hyp = np.argwhere(labels >= 801).mean(0)
    np.testing.assert_allclose(source.centers[0], hyp, atol=1e-4)
    vdc = np.argwhere(np.isin(labels, (28, 60, 14))).mean(0)
    np.testing.assert_allclose(source.centers[1], vdc, atol=1e-4)  # fallback labels
    np.testing.assert_allclose(source.centers[2], hyp, atol=1.5)
    world = [source.affines[i][:3, :3] @ source.centers[i] + source.affines[i][:3, 3]
             for i in (0, 2)]
    np.testing.assert_allclose(world[1], world[0], atol=1.5)  # same place in the world
    lab, center = source.sample()
    assert lab.shape[0] == 1 and lab.dtype == np.int32 and center.shape == (1, 3)
    assert center.dtype == np.float32


@pytest.mark.backend
def test_source_blocks_give_the_same_samples_as_whole_maps(tmp_path):
    pytest.importorskip("mri_hsynex.io")
    from mri_hsynex.generator import LabelMapSource, build_generator
    from mri_hsynex.generator.data import reach_voxels

    path = _save(tmp_path / "a.nii.gz", tiny_label_map((40, 40, 40)), tiny_affine())
    cfg = GeneratorConfig(output_shape=(8, 8, 8), crop_jitter_mm=2.0, nonlin_std=1.0)
    source = LabelMapSource([path], cfg)
    block, center = source.get(0)
    whole, whole_center = source.get(0, whole=True)
    assert block.shape[1:] != whole.shape[1:] and max(block.shape[1:]) <= 2 * reach_voxels(cfg) + 2
    a = _np(build_generator(cfg, seed=1)({"labels": block, "center": center}))
    b = _np(build_generator(cfg, seed=1)({"labels": whole, "center": whole_center}))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_label_map_source_errors(tmp_path):
    from mri_hsynex.generator.data import list_label_maps

    with pytest.raises(HsynexError, match="not found"):
        list_label_maps(tmp_path / "missing")
    with pytest.raises(HsynexError, match="no label maps"):
        list_label_maps(tmp_path)


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.backend
def test_real_label_map_generates_brain_images(shared_data):
    pytest.importorskip("mri_hsynex.io")
    from mri_hsynex.generator import LabelMapSource, build_generator

    path = shared_data / "synthseg_label_maps" / "training_seg_01.nii.gz"
    cfg = GeneratorConfig(output_shape=(32, 32, 32))
    source = LabelMapSource([path], cfg, rng_seed=0)
    assert source.maps[0].shape == (256, 256, 256)
    labels, center = source.sample()
    # no subunits in these maps: the crop centres on the ventral DCs and 3rd ventricle
    assert labels[0][tuple(np.round(center[0]).astype(int))] in (28, 60, 14, 24, 4, 43)
    out = _np(build_generator(cfg, seed=0)({"labels": labels, "center": center}))
    present = set(np.unique(out["labels"]))
    assert {28, 60} & present
    assert out["image"].std() > 0.05
