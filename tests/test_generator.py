"""Generator layers: each applying function with fixed parameters, measured on tiny volumes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mri_hsynex import labels as label_tables

keras = pytest.importorskip("keras")
ops = keras.ops

pytestmark = pytest.mark.backend


def to_np(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def blobs(shape=(32, 32, 32)) -> np.ndarray:
    """Three ball-shaped labels (28 left, 60 right, 801 in the middle) in a 32^3 map."""
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"))
    out = np.zeros(shape, np.int32)
    for label, centre, radius in ((28, (10, 15, 16), 5.5), (60, (22, 15, 16), 5.5),
                                  (801, (16, 18, 15), 4.0)):
        r = np.sqrt(((grid - np.array(centre)[:, None, None, None]) ** 2).sum(0))
        out[r <= radius] = label
    return out


def big_balls() -> np.ndarray:
    """A ball of radius 12 split into left (2) and right (41) halves, holding a ball of radius 6
    (10), in a 32^3 map: labels large enough for nearest-neighbour volumes to be accurate."""
    grid = np.stack(np.meshgrid(*[np.arange(32.0)] * 3, indexing="ij"))
    out = np.zeros((32, 32, 32), np.int32)
    ball = np.sqrt(((grid - 15.5) ** 2).sum(0)) <= 12
    out[ball & (grid[0] < 15.5)] = 2
    out[ball & (grid[0] >= 15.5)] = 41
    inner = np.array([15.5, 18.0, 14.0])[:, None, None, None]
    out[np.sqrt(((grid - inner) ** 2).sum(0)) <= 6] = 10
    return out


def spatial_params(b=1, scaling=(1.0, 1.0, 1.0), rotation=(0.0, 0.0, 0.0), shift=(0, 0, 0)):
    return {"rotation_deg": ops.convert_to_tensor([rotation] * b, "float32"),
            "scaling": ops.convert_to_tensor([scaling] * b, "float32"),
            "shearing": ops.zeros((b, 6)),
            "shift_mm": ops.convert_to_tensor([shift] * b, "float32"),
            "elastic": None}


# --- deformation + crop --------------------------------------------------------------------------
@settings(max_examples=12, deadline=None)
@given(center=st.tuples(*[st.floats(8.0, 24.0)] * 3), n=st.sampled_from([8, 11, 16]))
def test_zero_deformation_is_an_exact_crop(center, n):
    from mri_hsynex.generator.spatial import deform_and_crop

    labels = np.random.default_rng(0).integers(0, 900, (32, 32, 32)).astype(np.int32)
    out = to_np(deform_and_crop(labels[None], np.array([center], np.float32), spatial_params(),
                                (n, n, n), 1.0, 1.0, max_label=830))[0]
    start = np.round(np.array(center, np.float32) - np.float32((n - 1) / 2)).astype(int)
    expected = np.zeros((n, n, n), np.int32)
    src = [slice(max(s, 0), min(s + n, 32)) for s in start]
    dst = [slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start)]
    expected[tuple(dst)] = labels[tuple(src)]
    expected[expected > 830] = 0
    np.testing.assert_array_equal(out, expected)


def test_zero_deformation_layer_and_coarser_output_voxels():
    from mri_hsynex.generator.spatial import RandomDeformCrop, deform_and_crop

    labels = blobs()
    layer = RandomDeformCrop((16, 16, 16), scaling_bounds=0, rotation_bounds_deg=0,
                             shearing_bounds=0, crop_jitter_mm=0, nonlin_std=0, seed=1)
    out = to_np(layer([labels[None], np.array([[16.0, 16.0, 16.0]], np.float32)]))[0]
    np.testing.assert_array_equal(out, labels[8:24, 8:24, 8:24])
    # 2 mm output voxels from a 1 mm map: every second voxel
    out = to_np(deform_and_crop(labels[None], np.array([[15.0, 15.0, 15.0]], np.float32),
                                spatial_params(), (16, 16, 16), 2.0, 1.0, 830))[0]
    np.testing.assert_array_equal(out, labels[0:32:2, 0:32:2, 0:32:2])


@pytest.mark.parametrize("scaling", [(0.8, 0.8, 0.8), (1.2, 1.2, 1.2), (0.9, 1.1, 1.2),
                                     (1.2, 0.8, 1.0)])
def test_scaling_changes_volumes_by_the_determinant(scaling):
    from mri_hsynex.generator.spatial import deform_and_crop

    labels = big_balls()
    out = to_np(deform_and_crop(labels[None], np.array([[16.0, 16.0, 16.0]], np.float32),
                                spatial_params(scaling=scaling), (32, 32, 32), 1.0, 1.0, 830))[0]
    # output mm p reads input mm A p: volumes in the output are the input's / det(A)
    expected_ratio = 1.0 / np.prod(scaling)
    for label in (2, 41, 10):
        ratio = (out == label).sum() / (labels == label).sum()
        assert abs(ratio / expected_ratio - 1) < 0.05, (label, ratio, expected_ratio)


def test_rotation_preserves_volumes_and_moves_centroids():
    from mri_hsynex.generator.spatial import deform_and_crop

    labels = blobs()
    out = to_np(deform_and_crop(labels[None], np.array([[16.0, 16.0, 16.0]], np.float32),
                                spatial_params(rotation=(0.0, 0.0, 90.0)), (32, 32, 32),
                                1.0, 1.0, 830))[0]
    for label in (28, 60, 801):
        assert abs((out == label).sum() / (labels == label).sum() - 1) < 0.05
    # 90 degrees about z around the crop centre 15.5: output (x, y) reads input
    # (31 - y, x), so the left ball at input (10, 15) appears at output (15, 21)
    centroid = np.argwhere(out == 28).mean(0)
    np.testing.assert_allclose(centroid[:2], [15, 21], atol=0.5)


def test_elastic_displacement_is_smooth_and_bounded():
    from mri_hsynex.generator.grid import upsample_field

    coarse = keras.random.normal((1, 3, 3, 3, 3), seed=0) * 4.0
    field = to_np(upsample_field(coarse, (16, 16, 16)))
    c = to_np(coarse)
    assert field.shape == (1, 16, 16, 16, 3)
    np.testing.assert_allclose(field[0, 0, 0, 0], c[0, 0, 0, 0], atol=1e-5)  # corners aligned
    np.testing.assert_allclose(field[0, -1, -1, -1], c[0, -1, -1, -1], atol=1e-5)
    assert np.abs(field).max() <= np.abs(c).max() + 1e-5  # linear: no overshoot
    assert np.abs(np.diff(field, axis=1)).max() < np.abs(c).max()  # smooth between nodes


def test_labels_above_max_label_become_background():
    from mri_hsynex.generator.spatial import deform_and_crop

    labels = np.full((1, 8, 8, 8), 2000, np.int32)
    labels[0, :4] = 17
    out = to_np(deform_and_crop(labels, np.array([[3.5, 3.5, 3.5]], np.float32),
                                spatial_params(), (8, 8, 8), 1.0, 1.0, 830))[0]
    assert set(np.unique(out)) == {0, 17}


# --- flip ----------------------------------------------------------------------------------------
def test_flip_swaps_labels_and_mirrors_centroids():
    from mri_hsynex.generator.flip import flip_labels

    labels = blobs()
    lut = ops.convert_to_tensor(label_tables.lr_swap_lut(830))
    both = np.stack([labels, labels])
    out = to_np(flip_labels(both, ops.convert_to_tensor([True, False]), lut))
    np.testing.assert_array_equal(out[1], labels)  # not flipped
    flipped = out[0]
    n = labels.shape[0]
    for left, right in ((28, 60), (801, 806)):
        assert (flipped == right).sum() == (labels == left).sum()
        if (labels == left).any():
            c_before = np.argwhere(labels == left).mean(0)
            c_after = np.argwhere(flipped == right).mean(0)
            np.testing.assert_allclose(c_after, [n - 1 - c_before[0], *c_before[1:]])
    assert (flipped == 801).sum() == 0


def test_flip_layer_probabilities():
    from mri_hsynex.generator.flip import RandomLeftRightFlip

    labels = np.stack([blobs()] * 4)
    always = to_np(RandomLeftRightFlip(1.0, seed=0)(labels))
    never = to_np(RandomLeftRightFlip(0.0, seed=0)(labels))
    np.testing.assert_array_equal(never, labels)
    assert (always == 806).sum() == 4 * (labels[0] == 801).sum()


# --- GMM -----------------------------------------------------------------------------------------
def test_gmm_class_statistics_match_the_parameters():
    from mri_hsynex.generator.gmm import gmm_image

    rng = np.random.default_rng(0)
    classes = rng.integers(0, 3, (1, 24, 24, 24)).astype(np.int32)
    means = np.array([[10.0, 120.0, 240.0]], np.float32)
    stds = np.array([[0.0, 5.0, 30.0]], np.float32)
    normal = keras.random.normal((1, 24, 24, 24), seed=3)
    image = to_np(gmm_image(classes, means, stds, normal))[0]
    for k in range(3):
        values = image[classes[0] == k]
        n = values.size
        se_mean = max(stds[0, k], 1e-3) / np.sqrt(n)
        assert abs(values.mean() - means[0, k]) < 4 * se_mean + 1e-4
        se_std = max(stds[0, k], 1e-3) / np.sqrt(2 * n)
        assert abs(values.std() - stds[0, k]) < 4 * se_std + 1e-4


def test_gmm_layer_classes_ties_and_background():
    from mri_hsynex.generator.gmm import RandomGMM

    labels = np.zeros((1, 16, 16, 16), np.int32)
    labels[0, 2:6] = 28
    labels[0, 6:8] = 60
    labels[0, 8:10, :8] = 801
    labels[0, 8:10, 8:] = 808
    labels[0, 10:14] = 2
    common = dict(std_range=(0.0, 0.0), background_regions=1, background_dark_prob=0.0)
    image = to_np(RandomGMM(tie_classes=[[28, 801, 1.0]], background_zero_prob=1.0,
                            seed=0, **common)(np.concatenate([labels] * 3)))
    for img in image:  # std 0: one value per class
        assert np.all(img[labels[0] == 0] == 0)  # background "zero" mode
        assert np.unique(img[labels[0] == 801]).size == 1
        assert img[labels[0] == 801][0] == img[labels[0] == 808][0]  # subunits share a class
        assert img[labels[0] == 28][0] == img[labels[0] == 60][0]  # L/R partners share a class
        assert img[labels[0] == 801][0] == img[labels[0] == 28][0]  # tied to the ventral DC
        assert img[labels[0] == 2][0] != img[labels[0] == 28][0]
    untied = to_np(RandomGMM(tie_classes=[[28, 801, 0.0]], background_zero_prob=0.0, seed=0,
                             **common)(labels))[0]
    assert untied[labels[0] == 801][0] != untied[labels[0] == 28][0]
    assert untied[labels[0] == 0][0] != 0


def test_gmm_near_tie_gives_a_small_contrast_of_either_sign():
    from mri_hsynex.generator.gmm import RandomGMM

    labels = np.zeros((1, 8, 8, 8), np.int32)
    labels[0, :4] = 28
    labels[0, 4:] = 801
    layer = RandomGMM(tie_classes=[[28, 801, 0.0]], near_tie_prob=1.0,
                      near_tie_contrast=(0.05, 0.2), std_range=(0.0, 10.0), background_regions=1,
                      mean_range=(50.0, 250.0), seed=3)
    params = layer.sample_parameters(64, (8, 8, 8))
    means, stds = to_np(params["means"]), to_np(params["stds"])
    vdc, hyp = layer._ties[0][0], layer._ties[0][1]
    contrast = means[:, hyp] / means[:, vdc] - 1.0
    assert np.all((np.abs(contrast) >= 0.05 - 1e-5) & (np.abs(contrast) <= 0.2 + 1e-5))
    assert (contrast > 0).any() and (contrast < 0).any()
    np.testing.assert_allclose(stds[:, hyp], stds[:, vdc])
    # exact ties win over near ties
    tied = RandomGMM(tie_classes=[[28, 801, 1.0]], near_tie_prob=1.0, seed=3)
    m = to_np(tied.sample_parameters(8, (8, 8, 8))["means"])
    np.testing.assert_array_equal(m[:, hyp], m[:, vdc])
    config = layer.get_config()
    assert RandomGMM.from_config(config).near_tie_contrast == (0.05, 0.2)


def test_gmm_low_contrast_pulls_every_mean_toward_the_average_and_keeps_the_stds():
    from mri_hsynex.generator.gmm import RandomGMM

    kwargs = dict(tie_classes=[], background_regions=1, background_zero_prob=0.0,
                  background_dark_prob=0.0)
    plain = RandomGMM(seed=5, **kwargs).sample_parameters(32, (4, 4, 4))
    low = RandomGMM(seed=5, low_contrast_prob=1.0, low_contrast_range=(0.2, 0.3),
                    **kwargs).sample_parameters(32, (4, 4, 4))
    m0, m1 = to_np(plain["means"]), to_np(low["means"])
    # per sample, the spread of the class means shrinks by the drawn factor, in [0.2, 0.3]
    ratio = m1.std(axis=1) / m0.std(axis=1)
    assert np.all((ratio > 0.2 - 1e-4) & (ratio < 0.3 + 1e-4))
    np.testing.assert_allclose(m1.mean(axis=1), m0.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(to_np(low["stds"]), to_np(plain["stds"]))
    # the order of the tissues is kept: the contrast shrinks, it does not change sign
    assert np.all(np.argsort(m1, axis=1) == np.argsort(m0, axis=1))
    layer = RandomGMM(low_contrast_prob=0.4, low_contrast_range=(0.2, 0.3))
    assert RandomGMM.from_config(layer.get_config()).low_contrast_range == (0.2, 0.3)
    assert "low_contrast_prob" not in RandomGMM().get_config()


def test_gmm_background_regions_split_label_zero():
    from mri_hsynex.generator.gmm import RandomGMM

    labels = np.zeros((1, 32, 32, 32), np.int32)
    labels[0, 12:20, 12:20, 12:20] = 2
    layer = RandomGMM(std_range=(0.0, 0.0), background_regions=4, background_zero_prob=0.0,
                      background_dark_prob=0.0, background_region_scale=0.2, seed=5)
    image = to_np(layer(labels))[0]
    assert np.unique(image[labels[0] == 0]).size > 1  # several smooth regions
    assert np.unique(image[labels[0] == 2]).size == 1  # labelled tissue untouched


# --- bias ----------------------------------------------------------------------------------------
def test_bias_with_zero_std_is_identity():
    from mri_hsynex.generator.bias import RandomBiasField, apply_bias

    image = np.random.default_rng(1).uniform(0, 200, (2, 16, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(to_np(apply_bias(image, ops.zeros((2, 3, 3, 3)))), image,
                               rtol=1e-6)
    np.testing.assert_array_equal(to_np(RandomBiasField(bias_std=0.0, seed=0)(image)), image)


def test_bias_field_is_smooth_and_positive():
    from mri_hsynex.generator.bias import RandomBiasField

    image = np.ones((1, 32, 32, 32), np.float32)
    out = to_np(RandomBiasField(bias_std=0.7, bias_scale=0.05, seed=2)(image))[0]
    assert out.min() > 0
    log = np.log(out)
    assert np.abs(np.diff(log, axis=0)).max() < 0.5 * (log.max() - log.min()) + 1e-6


# --- intensity -----------------------------------------------------------------------------------
def test_intensity_normalises_and_applies_gamma():
    from mri_hsynex.generator.intensity import augment_intensity, minmax_normalise

    image = np.linspace(-10, 400, 16**3, dtype=np.float32).reshape(1, 16, 16, 16)
    out = to_np(augment_intensity(image, ops.convert_to_tensor([2.0]), ops.zeros_like(image),
                                  300.0))
    clipped = np.clip(image, 0, 300) / 300
    np.testing.assert_allclose(out, clipped**2, atol=1e-5)
    norm = to_np(minmax_normalise(image * 3 + 7))
    assert norm.min() == 0 and abs(norm.max() - 1) < 1e-6


# --- resolution ----------------------------------------------------------------------------------
def _gradient_energy(image, axis):
    return float((np.diff(image, axis=axis) ** 2).mean())


@pytest.mark.parametrize("shape", [(32, 32, 32), (24, 32, 20)])  # cubic: batched matrices
def test_resolution_5mm_axis_blurs_that_axis_only(shape):
    from mri_hsynex.generator.resolution import degrade_resolution

    # f(x) + g(y) + h(z): the gradient along an axis only sees that axis's profile
    rng = np.random.default_rng(0)
    f, g, h = (rng.normal(size=n) for n in shape)
    image = (f[:, None, None] + g[None, :, None] + h[None, None, :])[None].astype(np.float32)
    ones = ops.ones((1, 3))
    res = ops.convert_to_tensor([[1.0, 5.0, 1.0]])
    out = to_np(degrade_resolution(image, res, res, ops.zeros((1, 3)), ones, 1.0))[0]
    before = [_gradient_energy(image[0], a) for a in range(3)]
    after = [_gradient_energy(out, a) for a in range(3)]
    assert after[1] < 0.1 * before[1]  # the 5 mm axis lost its fine detail
    np.testing.assert_allclose([after[0], after[2]], [before[0], before[2]], rtol=1e-4)
    # undegraded axes are untouched
    same = to_np(degrade_resolution(image, ones, ones, ops.zeros((1, 3)), ones, 1.0))[0]
    np.testing.assert_allclose(same, image[0], atol=1e-5)


def test_resolution_matrices_preserve_constants():
    from mri_hsynex.generator.resolution import resolution_matrix

    f = ops.convert_to_tensor([1.0, 2.5, 7.0, 40.0])
    m = to_np(resolution_matrix(32, f, ops.convert_to_tensor([0.0, 1.0, 3.0, 5.0]),
                                ops.convert_to_tensor([0.0, 0.3, 0.9, 0.5])))
    np.testing.assert_allclose(m.sum(-1), 1.0, atol=1e-5)
    assert m.min() >= 0
    np.testing.assert_allclose(m[0], np.eye(32), atol=1e-6)


def test_resolution_layer_keeps_shape_and_range():
    from mri_hsynex.generator.resolution import RandomResolution

    image = np.random.default_rng(2).uniform(0, 1, (3, 16, 16, 16)).astype(np.float32)
    out = to_np(RandomResolution(seed=0, prob_min_res=0.0)(image))
    assert out.shape == image.shape
    assert out.min() >= -1e-5 and out.max() <= 1 + 1e-5


# --- targets -------------------------------------------------------------------------------------
def test_one_hot_targets_follow_the_class_tables():
    from mri_hsynex.generator.targets import OneHotTargets

    labels = np.array([[0, 801, 805, 810, 28, 17]], np.int32).reshape(1, 6, 1, 1)
    stage2 = to_np(OneHotTargets("stage2")(labels))
    np.testing.assert_array_equal(stage2.argmax(-1).ravel(), [0, 1, 5, 10, 0, 0])
    stage1 = to_np(OneHotTargets("stage1")(labels))
    np.testing.assert_array_equal(stage1.argmax(-1).ravel(), [0, 1, 1, 1, 0, 0])
    loc = to_np(OneHotTargets("localiser")(labels))
    np.testing.assert_array_equal(loc.argmax(-1).ravel(), [0, 2, 2, 3, 2, 1])
    assert np.all(loc.sum(-1) == 1)


def test_signed_distance_approximates_euclidean():
    from scipy import ndimage

    from mri_hsynex.generator.targets import signed_distance

    grid = np.stack(np.meshgrid(*[np.arange(32.0)] * 3, indexing="ij"))
    mask = np.sqrt(((grid - 15.5) ** 2).sum(0)) <= 7.0
    for voxel_mm in (1.0, 2.0):
        dist = to_np(signed_distance(mask[None], voxel_mm, 6.0))[0, ..., 0]
        exact = (ndimage.distance_transform_edt(~mask) - ndimage.distance_transform_edt(mask))
        exact = np.clip(exact + np.where(mask, 0.5, -0.5), -6 / voxel_mm, 6 / voxel_mm)
        exact = exact * voxel_mm
        assert np.all(dist[mask] < 0) and np.all(dist[~mask] > 0)
        band = np.abs(exact) < 6.0 - voxel_mm
        err = np.abs(dist - exact)[band]
        assert err.mean() < 0.35 * voxel_mm and err.max() <= 1.5 * voxel_mm
    empty = to_np(signed_distance(np.zeros((1, 8, 8, 8), bool), 1.0, 4.0))
    assert np.all(empty == 4.0)


# --- hypothalamus growth / shrinkage -------------------------------------------------------------
def hypothalamus_pair() -> np.ndarray:
    """Left (801/803) and right (806/808) hypothalamus balls of radius 5 inside ventral-DC balls
    of radius 8 (28 / 60), separated by a 3rd-ventricle slab (14), in a 40^3 map."""
    grid = np.stack(np.meshgrid(*[np.arange(40.0)] * 3, indexing="ij"))
    out = np.zeros((40, 40, 40), np.int32)
    for vdc, (front, back), cx in ((28, (801, 803), 11.0), (60, (806, 808), 29.0)):
        r = np.sqrt(((grid - np.array([cx, 20, 20])[:, None, None, None]) ** 2).sum(0))
        out[r <= 8] = vdc
        out[(r <= 5) & (grid[1] >= 20)] = front
        out[(r <= 5) & (grid[1] < 20)] = back
    out[(grid[0] >= 19) & (grid[0] <= 21) & (np.abs(grid[1] - 20) < 12)] = 14
    return out


def _hyp_volume(labels, ids=label_tables.SUBUNIT_IDS) -> int:
    return int(np.isin(labels, ids).sum())


def test_morph_zero_offset_is_identity():
    from mri_hsynex.generator.morph import morph_hypothalamus

    labels = hypothalamus_pair()[None]
    out = to_np(morph_hypothalamus(labels, np.zeros((1, 40, 40, 40, 2), np.float32)))
    np.testing.assert_array_equal(out, labels)


def test_morph_moves_one_surface_layer_per_side_within_the_ventral_dc():
    from mri_hsynex.generator.morph import morph_hypothalamus

    labels = hypothalamus_pair()[None]
    offset = np.zeros((1, 40, 40, 40, 2), np.float32)
    offset[..., 0] = -0.9  # shrink the left
    offset[..., 1] = 0.9  # grow the right
    out = to_np(morph_hypothalamus(labels, offset))
    left, right = label_tables.LEFT_SUBUNIT_IDS, label_tables.RIGHT_SUBUNIT_IDS
    assert _hyp_volume(out, left) < 0.75 * _hyp_volume(labels, left)
    assert _hyp_volume(out, right) > 1.25 * _hyp_volume(labels, right)
    changed = out != labels
    # voxels that left become the left ventral DC; voxels that joined were the right ventral DC
    assert set(np.unique(out[changed & np.isin(labels, left)])) == {28}
    assert set(np.unique(labels[changed & np.isin(out, right)])) == {60}
    # nothing else changes: 3rd ventricle, background and the right side's other labels
    np.testing.assert_array_equal(out[labels == 14], 14)
    np.testing.assert_array_equal(out[labels == 0], 0)
    # grown voxels take the adjacent subunit: front stays front, back stays back
    grid_y = np.arange(40)[None, None, :, None] + np.zeros_like(labels)
    grown = changed & np.isin(out, right)
    assert np.all(out[grown & (grid_y >= 21)] == 806) and np.all(out[grown & (grid_y <= 18)] == 808)


def test_morph_partial_offset_changes_volume_continuously():
    from mri_hsynex.generator.morph import morph_hypothalamus

    labels = hypothalamus_pair()[None]
    v0 = _hyp_volume(labels)
    volumes = []
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):  # fraction of the map where the offset is -0.9
        offset = np.zeros((1, 40, 40, 40, 2), np.float32)
        offset[:, :, : int(round(40 * fraction))] = -0.9
        volumes.append(_hyp_volume(to_np(morph_hypothalamus(labels, offset))))
    assert volumes[0] == v0
    assert all(a >= b for a, b in zip(volumes, volumes[1:])) and volumes[2] < v0 < 2 * volumes[2]


def test_morph_layer_probability_and_range():
    from mri_hsynex.generator.morph import RandomHypothalamusMorph

    labels = ops.convert_to_tensor(np.repeat(hypothalamus_pair()[None], 8, axis=0))
    off = RandomHypothalamusMorph(prob=0.0, seed=1)
    np.testing.assert_array_equal(to_np(off(labels)), to_np(labels))
    layer = RandomHypothalamusMorph(prob=1.0, seed=3)
    out = to_np(layer(labels))
    v0 = _hyp_volume(hypothalamus_pair())
    changes = np.array([_hyp_volume(o) / v0 - 1 for o in out])
    assert np.any(changes != 0) and np.all(np.abs(changes) < 0.75)
    params = layer.sample_parameters(2, (40, 40, 40))
    assert np.all(np.abs(to_np(params["offset_mm"])) <= 0.95 + 1e-6)
    # only hypothalamus and ventral-DC voxels ever change
    moved = out != to_np(labels)
    assert set(np.unique(to_np(labels)[moved])) <= set(label_tables.SUBUNIT_IDS) | {28, 60}


def test_morph_leaves_tied_samples_unchanged():
    """Issue 13: where the hypothalamus has the ventral DC's intensity the boundary is invisible,
    so moving it would teach the network to ignore it; tied samples keep their labels."""
    from mri_hsynex.generator.morph import RandomHypothalamusMorph

    labels = ops.convert_to_tensor(np.repeat(hypothalamus_pair()[None], 4, axis=0))
    tie = np.array([1.0, 0.0, 1.0, 0.0], np.float32)
    out = to_np(RandomHypothalamusMorph(prob=1.0, seed=3)([labels, ops.convert_to_tensor(tie)]))
    v0 = _hyp_volume(hypothalamus_pair())
    for sample, tied in zip(out, tie):
        if tied:
            np.testing.assert_array_equal(sample, hypothalamus_pair())
        else:
            assert _hyp_volume(sample) != v0


def test_generator_shares_the_tie_between_morph_and_gmm():
    from mri_hsynex.generator.builder import generator_layers
    from mri_hsynex.generator.config import GeneratorConfig

    layers = generator_layers(GeneratorConfig(morph_prob=0.8), seed=0)
    assert layers["tie"] is not None  # drawn once, given to the morph and to the GMM
    assert generator_layers(GeneratorConfig(morph_prob=0.0), seed=0)["tie"] is None


# --- brain-mask cut ------------------------------------------------------------------------------
def _cut_params(b=1, normal=(0.0, 0.0, -1.0), offset=2.0, corner=0.0,
                corner_normal=(0.0, 1.0, 0.0), fraction=0.0, on=1.0) -> dict:
    def rows(v):
        return ops.convert_to_tensor([list(v)] * b, "float32")
    return {"on": ops.full((b,), on), "normal": rows(normal), "offset_mm": ops.full((b,), offset),
            "corner": ops.full((b,), corner), "corner_normal": rows(corner_normal),
            "corner_fraction": ops.full((b,), fraction)}


@pytest.mark.parametrize("voxel_mm", [1.0, 0.5])
def test_mask_cut_zeroes_exactly_the_tissue_below_the_plane(voxel_mm):
    """An axial plane ``offset`` mm under the hypothalamus' lowest voxel: every voxel centre
    further down is 0, everything else (the hypothalamus included) keeps its value."""
    from mri_hsynex.generator.mask_cut import cut_mask

    labels = blobs()
    z = np.arange(32) * voxel_mm
    lowest = z[np.nonzero((labels == 801).any(axis=(0, 1)))[0].min()]
    cut = to_np(cut_mask(ops.convert_to_tensor(labels[None]), _cut_params(offset=3.0),
                         voxel_mm))[0]
    below = (z < lowest - 3.0 - 1e-6)[None, None, :] & np.ones((32, 32, 1), bool)
    np.testing.assert_array_equal(cut, below)
    assert not cut[labels == 801].any()


def test_mask_cut_corner_cuts_only_in_front_of_the_second_plane():
    from mri_hsynex.generator.mask_cut import cut_mask

    labels = blobs()
    plain = to_np(cut_mask(ops.convert_to_tensor(labels[None]), _cut_params(offset=0.0)))[0]
    boxed = to_np(cut_mask(ops.convert_to_tensor(labels[None]),
                           _cut_params(offset=0.0, corner=1.0, fraction=0.0)))[0]
    back = np.nonzero((labels == 801).any(axis=(0, 2)))[0].min()  # posterior end (axis 1 = A)
    np.testing.assert_array_equal(boxed, plain & (np.arange(32) > back)[None, :, None])
    assert 0 < boxed.sum() < plain.sum()


def test_mask_cut_needs_a_hypothalamus_and_its_switch():
    from mri_hsynex.generator.mask_cut import cut_mask

    no_hyp = np.where(blobs() == 801, 0, blobs())
    assert not to_np(cut_mask(ops.convert_to_tensor(no_hyp[None]), _cut_params())).any()
    assert not to_np(cut_mask(ops.convert_to_tensor(blobs()[None]), _cut_params(on=0.0))).any()


@settings(max_examples=15, deadline=None)
@given(tilt=st.tuples(st.floats(-0.6, 0.6), st.floats(-0.6, 0.6)), offset=st.floats(0.0, 8.0),
       corner=st.sampled_from([0.0, 1.0]), fraction=st.floats(0.0, 0.5))
def test_mask_cut_never_removes_the_hypothalamus_and_shrinks_with_the_offset(tilt, offset, corner,
                                                                             fraction):
    """Whatever the plane: the structure (the target) stays visible, and a plane further down
    removes a subset of what a closer one removes."""
    from mri_hsynex.generator.mask_cut import RandomMaskCut

    labels = ops.convert_to_tensor(blobs()[None])
    image = ops.ones((1, 32, 32, 32))
    normal = np.array([tilt[0], tilt[1], -1.0]) / np.linalg.norm([tilt[0], tilt[1], -1.0])
    layer = RandomMaskCut(prob=1.0)
    near, far = (to_np(layer.apply([image, labels], _cut_params(
        normal=normal, offset=o, corner=corner, fraction=fraction)))[0] == 0
        for o in (offset, offset + 2.0))
    assert not near[blobs() == 801].any()
    assert near.any() and not (far & ~near).any()


def test_mask_cut_layer_probability_config_and_serialisation():
    from mri_hsynex.errors import HsynexError
    from mri_hsynex.generator.config import GeneratorConfig
    from mri_hsynex.generator.mask_cut import RandomMaskCut

    labels = ops.convert_to_tensor(np.repeat(blobs()[None], 6, axis=0))
    image = ops.ones((6, 32, 32, 32))
    assert (to_np(RandomMaskCut(prob=0.0, seed=1)([image, labels])) == 1).all()
    cut = to_np(RandomMaskCut(prob=1.0, offset_mm=(0.0, 4.0), seed=1)([image, labels])) == 0
    assert all(sample.any() for sample in cut)
    layer = RandomMaskCut(prob=0.3, offset_mm=(1.0, 5.0), max_tilt_deg=20.0, seed=4)
    clone = RandomMaskCut.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    for bad in ({"cut_prob": 1.5}, {"cut_offset_mm": [5.0, 1.0]}, {"cut_max_tilt_deg": -1.0}):
        with pytest.raises(HsynexError):
            GeneratorConfig(**bad)


def test_generator_cut_changes_the_image_only():
    """Same seed with and without the cut: identical labels and targets; the cut adds zeros and
    never inside the hypothalamus."""
    from mri_hsynex.generator.builder import build_generator
    from mri_hsynex.generator.config import GeneratorConfig

    labels = ops.convert_to_tensor(blobs()[None])
    center = ops.convert_to_tensor([[16.0, 17.0, 15.0]])
    kw = dict(output_shape=(24, 24, 24), crop_jitter_mm=0.0, prob_min_res=1.0, flip_prob=0.0,
              background_zero_prob=0.0, background_dark_prob=0.0, distance_maps=False)
    plain = build_generator(GeneratorConfig(**kw), seed=5)({"labels": labels, "center": center})
    cut = build_generator(GeneratorConfig(cut_prob=1.0, cut_offset_mm=(0.0, 1.0), **kw), seed=5)(
        {"labels": labels, "center": center})
    np.testing.assert_array_equal(to_np(plain["labels"]), to_np(cut["labels"]))
    np.testing.assert_array_equal(to_np(plain["target"]), to_np(cut["target"]))
    hyp = to_np(cut["labels"])[0] == 801
    zeros = to_np(cut["image"])[0, ..., 0] == 0
    assert (zeros & ~hyp).sum() > (to_np(plain["image"])[0, ..., 0] == 0).sum()
    assert hyp.any() and not zeros[hyp].any()


# --- CSF around the brain -------------------------------------------------------------------------
def _shell(labels: np.ndarray, thickness: float, on: float = 1.0, voxel_mm: float = 1.0,
           max_mm: float = 4.0) -> np.ndarray:
    from mri_hsynex.generator.csf_shell import RandomCsfShell

    layer = RandomCsfShell(prob=1.0, thickness_mm=(0.5, max_mm), voxel_mm=voxel_mm)
    params = {"on": ops.convert_to_tensor([on]), "thickness_mm": ops.convert_to_tensor([thickness])}
    return to_np(layer.apply(ops.convert_to_tensor(labels[None]), params))[0]


def test_csf_shell_is_a_band_of_background_around_the_labels():
    """Only label-0 voxels change, all to 24, and exactly those within the chamfer distance:
    the 6 face neighbours at 1 mm; at 2 mm the cross dilated by the cube (27 + 6 x 9 voxels)."""
    labels = np.zeros((15, 15, 15), np.int32)
    labels[7, 7, 7] = 801
    one = _shell(labels, 1.0)
    assert one[7, 7, 7] == 801 and (one == 24).sum() == 6 and one[6, 7, 7] == 24
    two = _shell(labels, 2.0)
    assert (two == 24).sum() == 27 + 6 * 9 - 1
    np.testing.assert_array_equal(_shell(labels, 2.0, on=0.0), labels)
    from scipy import ndimage

    point = labels > 0  # 0.5 mm voxels: four steps for 2 mm (cross, cube, cross, cube)
    for k in range(4):
        structure = ndimage.generate_binary_structure(3, 1 + 2 * (k % 2))
        point = ndimage.binary_dilation(point, structure)
    half = _shell(labels, 2.0, voxel_mm=0.5, max_mm=2.0)
    np.testing.assert_array_equal(half == 24, point & (labels == 0))
    ball = blobs()
    shelled = _shell(ball, 3.0)
    changed = shelled != ball
    assert (ball[changed] == 0).all() and (shelled[changed] == 24).all()
    distance = ndimage.distance_transform_edt(ball == 0)
    assert (distance[changed] <= 3.0 * np.sqrt(3) + 1e-6).all()  # chamfer never beyond cube
    assert (shelled[(distance <= 3.0) & (ball == 0)] == 24).all()  # nor short of the ball


@settings(max_examples=15, deadline=None)
@given(thin=st.floats(0.5, 3.0), extra=st.floats(0.0, 3.0))
def test_csf_shell_grows_with_its_thickness_and_keeps_the_targets(thin, extra):
    """A thicker shell contains a thinner one; labelled voxels (so every target) never change."""
    ball = blobs()
    a, b = _shell(ball, thin, max_mm=6.0), _shell(ball, thin + extra, max_mm=6.0)
    assert not ((a == 24) & (b != 24)).any()
    np.testing.assert_array_equal(a[ball > 0], ball[ball > 0])


def test_csf_shell_layer_probability_config_and_serialisation():
    from mri_hsynex.errors import HsynexError
    from mri_hsynex.generator.config import GeneratorConfig
    from mri_hsynex.generator.csf_shell import RandomCsfShell

    labels = ops.convert_to_tensor(np.repeat(blobs()[None], 6, axis=0))
    np.testing.assert_array_equal(to_np(RandomCsfShell(prob=0.0, seed=1)(labels)), to_np(labels))
    out = to_np(RandomCsfShell(prob=1.0, thickness_mm=(1.0, 2.0), seed=1)(labels))
    assert all((sample == 24).any() for sample in out)
    layer = RandomCsfShell(prob=0.4, thickness_mm=(1.0, 3.0), voxel_mm=0.5, seed=4)
    clone = RandomCsfShell.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    for bad in ({"csf_shell_prob": 1.5}, {"csf_shell_mm": [3.0, 1.0]}, {"csf_shell_mm": [0, 2]}):
        with pytest.raises(HsynexError):
            GeneratorConfig(**bad)


def test_generator_csf_shell_gives_the_cistern_the_ventricle_s_intensity():
    """In the generator, with the tie row [14, 24, 1]: the background next to the brain is CSF
    with the 3rd ventricle's intensity; targets are those of the map without it."""
    from mri_hsynex.generator.builder import build_generator
    from mri_hsynex.generator.config import GeneratorConfig

    ball = blobs()
    ball[16:19, 14:17, 19:22] = 14  # a 3rd ventricle beside the hypothalamus
    labels = ops.convert_to_tensor(ball[None])
    center = ops.convert_to_tensor([[16.0, 17.0, 15.0]])
    kw = dict(output_shape=(24, 24, 24), crop_jitter_mm=0.0, prob_min_res=1.0, flip_prob=0.0,
              background_zero_prob=0.0, background_dark_prob=0.0, distance_maps=False,
              bias_std=0.0, gamma_std=0.0, noise_std_max=0.0, std_range=(0.0, 0.0),
              scaling_bounds=0.0, rotation_bounds_deg=0.0, shearing_bounds=0.0, nonlin_std=0.0)
    ties = ((28, 801, 0.0), (14, 24, 1.0))
    plain = build_generator(GeneratorConfig(tie_classes=ties, **kw), seed=5)(
        {"labels": labels, "center": center})
    shell = build_generator(GeneratorConfig(tie_classes=ties, csf_shell_prob=1.0, **kw), seed=5)(
        {"labels": labels, "center": center})
    out = to_np(shell["labels"])[0]
    image = to_np(shell["image"])[0, ..., 0]
    np.testing.assert_array_equal(to_np(plain["target"]), to_np(shell["target"]))
    assert (out == 24).any() and (out == 14).any()
    np.testing.assert_allclose(image[out == 24], image[out == 14].mean(), atol=1e-4)
