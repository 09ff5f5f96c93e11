"""Issue 13's volume-faithful generator steps: render finer then pool (soft targets, sub-voxel
distance), hypothalamus / neighbour resizing, the shared tie, Rician noise, blur without
downsampling; and the generator contract with ``supersample`` > 1. Tiny volumes only."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic import tiny_affine, tiny_label_map

from mri_hsynex import labels as label_tables
from mri_hsynex.generator import GeneratorConfig

keras = pytest.importorskip("keras")
ops = keras.ops

pytestmark = pytest.mark.backend

LEFT, RIGHT = label_tables.LEFT_SUBUNIT_IDS, label_tables.RIGHT_SUBUNIT_IDS


def to_np(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def volume(labels, ids=label_tables.SUBUNIT_IDS) -> int:
    return int(np.isin(labels, ids).sum())


def fine_map() -> np.ndarray:
    """tiny_label_map at 60^3 (inner structures 1.5x larger): hypothalami of ~1,000 voxels per
    side beside a 3rd ventricle, ventral DCs below and lateral."""
    return tiny_label_map((60, 60, 60))[None]


# --- pooling and soft targets --------------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(factor=st.sampled_from([2, 3]), seed=st.integers(0, 10_000))
def test_pooling_preserves_each_labels_volume_exactly(factor, seed):
    from mri_hsynex.generator.partial_volume import soft_targets
    from mri_hsynex.generator.targets import target_lut

    rng = np.random.default_rng(seed)
    ids = np.array([0, 14, 28, 801, 802, 806, 810])
    labels = ids[rng.integers(0, len(ids), (2, 4 * factor, 3 * factor, 2 * factor))]
    lut = ops.convert_to_tensor(target_lut("stage2", 830), "int32")
    soft = to_np(soft_targets(ops.convert_to_tensor(labels, "int32"), lut, 11, factor))
    assert soft.shape == (2, 4, 3, 2, 11)
    np.testing.assert_allclose(soft.sum(-1), 1.0, atol=1e-6)
    channel = target_lut("stage2", 830)[labels]
    for c in range(11):  # pooled fractions x s^3 = fine voxel counts, per sample
        counts = (channel == c).reshape(2, -1).sum(1)
        np.testing.assert_allclose(soft[..., c].reshape(2, -1).sum(1) * factor**3, counts,
                                   atol=1e-3)


def test_pool_image_is_the_block_mean_and_labels_the_block_centre():
    from mri_hsynex.generator.partial_volume import PoolImage, PoolLabels

    x = np.arange(6**3, dtype=np.float32).reshape(1, 6, 6, 6)
    pooled = to_np(PoolImage(3)(ops.convert_to_tensor(x)))
    assert pooled.shape == (1, 2, 2, 2)
    np.testing.assert_allclose(pooled[0, 0, 0, 0], x[0, :3, :3, :3].mean(), rtol=1e-6)
    centre = to_np(PoolLabels(3)(ops.convert_to_tensor(x.astype(np.int32))))
    assert centre[0, 1, 0, 1] == int(x[0, 4, 1, 4])


def test_partial_volume_distance_moves_with_the_fraction():
    from mri_hsynex.generator.partial_volume import partial_volume_distance

    fraction = np.zeros((1, 12, 12, 12), np.float32)
    fraction[:, 3:9, 3:9, 3:9] = 1.0
    base = to_np(partial_volume_distance(ops.convert_to_tensor(fraction), 1.0, 4.0))[..., 0]
    assert base[0, 5, 5, 5] < -1.0 and base[0, 0, 0, 0] > 1.0
    assert base[0, 3, 5, 5] == pytest.approx(-0.5) and base[0, 2, 5, 5] == pytest.approx(0.5)
    for f in (0.2, 0.5, 0.8):  # a partly filled outside neighbour: its distance is 0.5 - f
        part = fraction.copy()
        part[:, 2, 5, 5] = f
        d = to_np(partial_volume_distance(ops.convert_to_tensor(part), 1.0, 4.0))[0, ..., 0]
        assert d[2, 5, 5] == pytest.approx(0.5 - f, abs=1e-6)


# --- hypothalamus resize ------------------------------------------------------------------------
def _resize(labels, fraction, kind, seed=0):
    from mri_hsynex.generator.resize import resize_hypothalamus

    u = np.random.default_rng(seed).uniform(size=labels.shape).astype(np.float32)
    return to_np(resize_hypothalamus(ops.convert_to_tensor(labels, "int32"),
                                     np.asarray([fraction], np.float32), np.asarray([kind]), u))


def test_resize_zero_fraction_is_identity():
    labels = fine_map()
    for kind in (0, 1, 2):
        np.testing.assert_array_equal(_resize(labels, (0.0, 0.0), kind), labels)


@pytest.mark.parametrize("kind,neighbour", [(0, 14), (1, None), (2, None)])
@pytest.mark.parametrize("fraction", [-0.2, -0.1, 0.1, 0.2])
def test_resize_changes_volume_by_the_requested_amount_with_neighbours_fixed(kind, neighbour,
                                                                             fraction):
    labels = fine_map()
    v0 = volume(labels, LEFT)
    # the share of the last distance level is random: exact in expectation, within about
    # sqrt(level size) voxels per draw (sd ~1 % of these 540-voxel hypothalami)
    changes = [volume(_resize(labels, (fraction, 0.0), kind, seed), LEFT) / v0 - 1
               for seed in range(10)]
    assert np.mean(changes) == pytest.approx(fraction, abs=0.012)
    assert np.all(np.abs(np.array(changes) - fraction) < 0.04)
    out = _resize(labels, (fraction, 0.0), kind)
    assert volume(out, RIGHT) == volume(labels, RIGHT)  # the other side is untouched
    changed = out != labels
    touched = set(np.unique(labels[changed])) | set(np.unique(out[changed]))
    neighbour = neighbour or 28
    assert touched <= set(LEFT) | {neighbour}
    # everything that is neither the hypothalamus nor the moving neighbour stays
    keep = ~np.isin(labels, list(LEFT) + [neighbour])
    np.testing.assert_array_equal(out[keep], labels[keep])


@pytest.mark.parametrize("medial", [14, 806])
def test_resize_outer_kind_erodes_every_surface_but_the_ventricle_wall(medial):
    """The outer kind takes what the validation's "vdc" atrophy takes: voxels on surfaces that
    touch neither the ventral DC nor the 3rd ventricle go too, the ventricle wall stays (also
    where the other side's hypothalamus takes the ventricle's place: the sides never erode each
    other), and the lost voxels become ventral DC; the ventral-DC kind moves only its own
    boundary."""
    from scipy import ndimage

    labels = fine_map()
    labels[labels == 14] = medial
    hyp = np.isin(labels[0], LEFT)
    shell = hyp & ~ndimage.binary_erosion(hyp)
    near = {lab: ndimage.binary_dilation(labels[0] == lab) for lab in (medial, 28)}
    wall, vdc_face = shell & near[medial], shell & near[28]
    free = shell & ~near[medial] & ~near[28]  # facing background or the other structures
    assert free.sum() >= 20
    lost = {}
    for kind in (1, 2):
        out = _resize(labels, (-0.2, 0.0), kind)[0]
        gone = hyp & ~np.isin(out, LEFT)
        assert np.all(out[gone] == 28)
        lost[kind] = gone
    # the wall goes only where it is also near the outside (a diagonal step: chamfer distance)
    assert (lost[2] & wall & ~vdc_face).sum() <= 0.05 * wall.sum()
    assert (lost[2] & free).sum() >= 0.4 * free.sum()
    assert not (lost[1] & free).any()


def test_resize_layer_draws_the_outer_kind_only_when_asked_and_never_when_tied():
    from mri_hsynex.generator.resize import RandomHypothalamusResize

    tie = np.tile(np.array([1, 0], np.float32), 50)
    kinds = to_np(RandomHypothalamusResize(prob=1.0, ventricle_prob=0.0, outer_prob=0.5, seed=4)
                  .sample_parameters(100, (4, 4, 4), tie)["kind"])
    np.testing.assert_array_equal(kinds[::2], 0)
    assert set(kinds[1::2]) == {1, 2}
    plain = RandomHypothalamusResize(prob=1.0, ventricle_prob=0.5, seed=4)
    assert 2 not in set(to_np(plain.sample_parameters(100, (4, 4, 4), 0 * tie)["kind"]))
    layer = RandomHypothalamusResize(prob=1.0, outer_prob=0.3, seed=4)
    assert RandomHypothalamusResize.from_config(layer.get_config()).outer_prob == 0.3


def test_resize_grown_voxels_take_the_adjacent_subunit():
    labels = fine_map()
    out = _resize(labels, (0.0, 0.2), 0)
    grown = (out != labels) & np.isin(out, RIGHT)
    assert grown.any() and np.all(labels[grown] == 14)
    y = np.arange(60)[None, None, :, None] + np.zeros_like(labels)
    # the most anterior subunit (806, y >= 2s) keeps the front, the posterior ones the back
    assert np.all(out[grown & (y >= 36)] == 806)


def test_resize_layer_never_uses_the_ventral_dc_kind_when_tied():
    from mri_hsynex.generator.resize import RandomHypothalamusResize

    layer = RandomHypothalamusResize(prob=1.0, ventricle_prob=0.0, seed=3)
    params = layer.sample_parameters(6, (4, 4, 4), np.array([1, 0, 1, 0, 1, 0], np.float32))
    kind = to_np(params["kind"])
    np.testing.assert_array_equal(kind[::2], 0)
    np.testing.assert_array_equal(kind[1::2], 1)
    assert np.all(np.abs(to_np(params["fraction"])) <= 0.25)
    off = RandomHypothalamusResize(prob=0.0, seed=3)
    labels = ops.convert_to_tensor(fine_map(), "int32")
    np.testing.assert_array_equal(to_np(off([labels, ops.zeros((1,))])), to_np(labels))


def test_gmm_follows_the_shared_tie():
    from mri_hsynex.generator.gmm import RandomGMM

    gmm = RandomGMM(seed=1, tie_classes=((28, 801, 0.0),))  # never tied on its own
    tie = np.array([1.0, 0.0], np.float32)
    params = gmm.sample_parameters(2, (4, 4, 4), tie)
    lut = label_tables.generation_class_lut(830, True)
    means = to_np(params["means"])
    assert means[0, lut[801]] == means[0, lut[28]]
    assert means[1, lut[801]] != means[1, lut[28]]


# --- neighbours ---------------------------------------------------------------------------------
def test_neighbour_resize_keeps_the_hypothalamus_and_moves_the_neighbours():
    from mri_hsynex.generator.resize import NEIGHBOUR_GROUPS, resize_neighbours

    labels = fine_map()
    zero = np.zeros((1, len(NEIGHBOUR_GROUPS)), np.float32)
    np.testing.assert_array_equal(to_np(resize_neighbours(labels, zero)), labels)
    hyp = np.isin(labels, label_tables.SUBUNIT_IDS)
    for g, ids in enumerate(NEIGHBOUR_GROUPS[:2]):  # 3rd ventricle, ventral DCs
        for sign in (1.0, -1.0):
            steps = zero.copy()
            steps[0, g] = 2 * sign
            out = to_np(resize_neighbours(labels, steps, max_steps=2))
            np.testing.assert_array_equal(out[hyp], labels[hyp])
            assert not np.isin(out[~hyp], label_tables.SUBUNIT_IDS).any()
            change = np.isin(out, ids).sum() - np.isin(labels, ids).sum()
            assert np.sign(change) == sign
            np.testing.assert_array_equal(out[labels == 0], 0)  # never grows into background


# --- Rician noise -------------------------------------------------------------------------------
def test_rician_noise_statistics():
    from mri_hsynex.generator.noise import rician_noise

    rng = np.random.default_rng(0)
    n = (2, 40, 40, 40)
    image = np.zeros(n, np.float32)
    image[1] = 1.0
    std = np.array([0.1, 0.1], np.float32)
    def normal():
        return ops.convert_to_tensor(rng.standard_normal(n).astype(np.float32))

    image_t = ops.convert_to_tensor(image)
    out = to_np(rician_noise(image_t, std, normal(), normal()))
    assert out.min() >= 0
    # signal 0: Rayleigh, mean s sqrt(pi/2), var (2 - pi/2) s^2
    assert out[0].mean() == pytest.approx(0.1 * np.sqrt(np.pi / 2), rel=0.02)
    assert out[0].var() == pytest.approx((2 - np.pi / 2) * 0.01, rel=0.05)
    # signal 1 >> s: nearly Gaussian, mean sqrt(1 + s^2), std s
    assert out[1].mean() == pytest.approx(np.sqrt(1.01), rel=0.01)
    assert out[1].std() == pytest.approx(0.1, rel=0.05)
    zero = to_np(rician_noise(image_t, np.zeros(2, np.float32), normal(), normal()))
    np.testing.assert_allclose(zero, image, atol=1e-6)


# --- resolution: blur without downsampling ------------------------------------------------------
def test_blur_only_keeps_the_resolution_and_blurs():
    from mri_hsynex.generator.resolution import RandomResolution

    layer = RandomResolution(voxel_mm=1.0, prob_min_res=0.0, prob_blur_only=1.0, seed=2)
    params = layer.sample_parameters(8)
    np.testing.assert_allclose(to_np(params["resolution_mm"]), 1.0)
    thickness = to_np(params["thickness_mm"])
    assert np.all(thickness >= 1.0) and thickness.max() > 2.0
    image = np.zeros((8, 16, 16, 16), np.float32)
    image[:, 8:] = 1.0
    out = to_np(layer.apply(ops.convert_to_tensor(image), params))
    assert np.abs(out - image).max() > 0.05  # blurred
    np.testing.assert_allclose(out[:, 0], 0.0, atol=0.02)  # 8 voxels away: barely reached


# --- the whole generator with supersample > 1 ---------------------------------------------------
VOLUME_CFG = dict(output_shape=(16, 16, 16), crop_jitter_mm=2.0, distance_max_mm=4.0,
                  supersample=2, resize_prob=1.0, neighbour_prob=1.0, rician_std_max=0.03,
                  prob_blur_only=0.2, morph_prob=0.0)


def _inputs(batch: int = 1):
    labels = np.stack([tiny_label_map((32, 32, 32))] * batch)
    return {"labels": labels, "center": np.full((batch, 3), 15.5, np.float32)}


def _np(out: dict) -> dict:
    return {k: to_np(v) for k, v in out.items()}


@pytest.mark.parametrize("target", ["stage1", "stage2"])
def test_supersampled_outputs_follow_the_contract(target):
    from mri_hsynex.generator import build_generator

    cfg = GeneratorConfig(target=target, **VOLUME_CFG)
    out = _np(build_generator(cfg, seed=0)(_inputs(2)))
    assert out["image"].shape == (2, 16, 16, 16, 1) and out["image"].dtype == np.float32
    assert out["image"].min() >= 0 and out["image"].max() <= 1
    assert out["labels"].shape == (2, 16, 16, 16) and out["labels"].dtype == np.int32
    target_ = out["target"]
    assert target_.shape == (2, 16, 16, 16, cfg.n_classes) and target_.dtype == np.float32
    np.testing.assert_allclose(target_.sum(-1), 1.0, atol=1e-5)
    fraction = 1.0 - target_[..., 0]
    assert ((fraction > 0.01) & (fraction < 0.99)).any()  # partial volume at the boundary
    dist = out["distance"][..., 0]
    assert np.all(dist[fraction > 0.5] <= 0) and np.all(dist[fraction < 0.5] >= 0)
    assert np.abs(dist).max() <= 4.0


def test_supersampled_generator_is_reproducible_and_serialises(tmp_path):
    from mri_hsynex.generator import build_generator

    cfg = GeneratorConfig(**VOLUME_CFG)
    a = _np(build_generator(cfg, seed=5)(_inputs()))
    b = _np(build_generator(cfg, seed=5)(_inputs()))
    c = _np(build_generator(cfg, seed=6)(_inputs()))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["image"], c["image"])
    gen = build_generator(cfg, seed=7)
    gen.save(tmp_path / "gen.keras")
    loaded = keras.saving.load_model(tmp_path / "gen.keras", safe_mode=True)

    def layer_configs(model):
        return {layer.name: json.loads(json.dumps(layer.get_config())) for layer in model.layers}

    assert layer_configs(loaded) == layer_configs(gen)


def test_volume_config_round_trip_and_errors():
    from mri_hsynex.errors import HsynexError

    cfg = GeneratorConfig(**VOLUME_CFG)
    assert GeneratorConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.fine_shape == (32, 32, 32) and cfg.fine_voxel_mm == 0.5
    for bad in ({"supersample": 5}, {"resize_prob": 1.5}, {"rician_std_max": -1},
                {"resize_max_fraction": 2.0}):
        with pytest.raises(HsynexError):
            GeneratorConfig.from_dict(bad)


def test_probe_pairs_depend_only_on_their_seed(tmp_path):
    """``generator_probe --first-seed``: probing seeds 1.. renders exactly the pairs that seeds
    0.. rendered from seed 1 on, so a checkpoint chosen on a run's validation pairs (seeds
    0..n-1) can be probed on pairs it was not chosen on."""
    import nibabel as nib

    from mri_hsynex.validate.generator_probe import probe_config, render_pairs

    path = tmp_path / "sub-a_labels.nii.gz"
    nib.save(nib.Nifti1Image(tiny_label_map((40, 40, 40)), tiny_affine()), path)
    cfg = probe_config({"output_shape": [16, 16, 16], "target": "stage2", "supersample": 2,
                        "distance_maps": False, "rician_std_max": 0.03, "noise_std_max": 0.0})
    both = render_pairs(cfg, [path], [0, 1], kinds=(0,))
    later = render_pairs(cfg, [path], [1], kinds=(0,))
    assert [p.seed for p in both] == [0, 1] and later[0].seed == 1
    np.testing.assert_array_equal(later[0].images, both[1].images)
    np.testing.assert_array_equal(later[0].true_mm3, both[1].true_mm3)
    assert not np.array_equal(both[0].images, both[1].images)
    assert later[0].true_mm3[1] < later[0].true_mm3[0]  # the second member is the shrunk one


def _pair(cfg: dict, seed: int = 2, **render):
    from mri_hsynex.generator.paired import PairRenderer

    inputs = _inputs()
    renderer = PairRenderer(GeneratorConfig(**{**VOLUME_CFG, **cfg}), seed=seed)
    return renderer.render(inputs["labels"], inputs["center"], [(0.0, 0.0), (0.0, 0.0)],
                           kind=0, **render)


def test_pairs_morph_respects_the_tie_only_when_asked():
    """``respect_tie=False`` lets every shape change move the hidden boundary (the probe's
    blind-boundary control); by default a tied pair keeps the morph off."""
    plain = to_np(_pair({}, tie_value=1.0)["fine_labels"])
    kept = to_np(_pair({"morph_prob": 1.0}, tie_value=1.0)["fine_labels"])
    moved = to_np(_pair({"morph_prob": 1.0}, tie_value=1.0, respect_tie=False)["fine_labels"])
    np.testing.assert_array_equal(kept, plain)
    assert volume(moved[0]) != volume(plain[0])


def test_pairs_share_the_brain_mask_cut():
    """Two members with the same anatomy get the same cut: identical images, zeros included."""
    out = _pair({"cut_prob": 1.0, "cut_offset_mm": (0.0, 1.0), "resize_prob": 0.0,
                 "neighbour_prob": 0.0})
    images = to_np(out["image"])[..., 0]
    np.testing.assert_array_equal(images[0], images[1])
    assert (images[0] == 0).mean() > 0.05


def test_pairs_share_the_csf_around_the_brain():
    """The CSF shell is drawn once per pair: both members get the same cistern, and a pair that
    differs in the hypothalamus differs in nothing else of its labels."""
    from mri_hsynex.generator.paired import PairRenderer

    inputs = _inputs()
    labels = np.where(np.isin(inputs["labels"], (10, 49)), 0, inputs["labels"])  # a gap above
    cfg = GeneratorConfig(**{**VOLUME_CFG, "csf_shell_prob": 1.0, "neighbour_prob": 0.0})
    out = PairRenderer(cfg, seed=2).render(labels, inputs["center"],
                                           [(0.0, 0.0), (-0.2, -0.2)], kind=0)
    fine = to_np(out["fine_labels"])
    assert (fine[0] == 24).sum() > 0
    np.testing.assert_array_equal(fine[0] == 24, fine[1] == 24)
    assert volume(fine[1]) < volume(fine[0])
