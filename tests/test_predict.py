"""Pieces of the inference pipeline on tiny synthetic volumes (no trained networks needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic import tiny_affine, tiny_label_map

from mri_hsynex.errors import HsynexError
from mri_hsynex.predict import grid as G
from mri_hsynex.predict import postprocess as P
from mri_hsynex.predict.localise import (
    HYPOTHALAMUS_OFFSET_MM,
    Localisation,
    localise_from_aseg,
    normalise_percentiles,
)
from mri_hsynex.predict.outputs import (
    OutputPaths,
    StagedFiles,
    check_output_paths,
    full_suffix,
    sidecar_path,
    strip_suffix,
)
from mri_hsynex.predict.reference import build_reference, z_scores

LIA = np.array([[-1.0, 0, 0, 16], [0, 0, 1, -16], [0, -1, 0, 16], [0, 0, 0, 1]])


# --- grids: crop and paste back ----------------------------------------------------------------
def test_ras_grid_is_centred_and_snapped():
    image = G.Grid((32, 32, 32), LIA)
    crop = G.ras_grid(np.array([0.3, -0.2, 0.4]), 1.0, (8, 8, 8), snap_to=image)
    centre = crop.world((np.array(crop.shape) - 1) / 2)
    assert np.all(np.abs(centre - [0.3, -0.2, 0.4]) <= 0.5 + 1e-9)
    ijk = image.voxel(crop.world(np.zeros(3)))
    np.testing.assert_allclose(ijk, np.round(ijk), atol=1e-9)  # on scan voxel centres
    np.testing.assert_allclose(crop.affine[:3, :3], np.eye(3))  # RAS axes


@pytest.mark.parametrize("affine", [tiny_affine(1.0), LIA])
def test_crop_and_paste_back_round_trip(affine):
    rng = np.random.default_rng(0)
    data = rng.random((32, 32, 32)).astype(np.float32)
    image = G.Grid(data.shape, affine)
    crop = G.ras_grid(image.world(np.array([15.0, 17.0, 14.0])), 1.0, (16, 16, 16), snap_to=image)
    cropped = G.sample(data, image, crop, order=1)
    start, shape = G.footprint(crop, image)
    assert shape == (16, 16, 16)
    back = G.sample(cropped, crop, G.sub_grid(image, start, shape), order=1)
    region = tuple(slice(s, s + n) for s, n in zip(start, shape))
    np.testing.assert_allclose(back, data[region], atol=1e-5)


@pytest.mark.parametrize("affine", [tiny_affine(1.0), LIA])
def test_sample_aligned_fast_path_matches_interpolation(affine):
    from mri_hsynex.io import Volume, resample_like

    data = np.arange(6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8)
    source = G.Grid(data.shape, affine)
    target = G.sub_grid(source, (-2, 1, 3), (5, 9, 4))  # partly outside: cval
    fast = G.sample(data, source, target, order=1, cval=-1.0)
    slow = resample_like(Volume(data, source.affine), target.shape, target.affine, order=1,
                         fill=-1.0).data
    np.testing.assert_allclose(fast, slow)


def test_footprint_of_disjoint_grids_is_empty():
    a = G.Grid((8, 8, 8), tiny_affine(1.0))
    b = G.Grid((8, 8, 8), np.diag([1.0, 1, 1, 1]) + np.array([[0, 0, 0, 100.0]] * 3 + [[0] * 4]))
    assert not G.overlaps(a, b)
    assert G.overlaps(a, a)


# --- anti-aliased sampling of scans finer than the model grid ----------------------------------
@settings(max_examples=15, deadline=None)
@given(voxel=st.floats(0.3, 0.95))
def test_antialias_sigma_keeps_the_noise_of_a_target_voxel(voxel):
    """Filtering white noise on v mm voxels keeps v / 1 mm of its variance per axis: the noise a
    1 mm voxel averaging 1 / v of them would have."""
    from scipy import ndimage

    sigma = float(G.antialias_sigma([voxel], 1.0)[0])
    noise = np.random.default_rng(0).standard_normal(200_000)
    kept = ndimage.gaussian_filter1d(noise, sigma, mode="wrap").var() / noise.var()
    assert kept == pytest.approx(voxel, rel=0.03)


def test_antialias_sigma_is_zero_for_voxels_not_finer_than_the_target():
    np.testing.assert_array_equal(G.antialias_sigma([1.0, 1.2, 5.0, 0.9999], 1.0), 0.0)
    assert (G.antialias_sigma([0.5, 0.9375], 1.0) > 0).all()


@pytest.mark.parametrize("affine", [tiny_affine(1.0), LIA, tiny_affine(1.5)])
def test_antialiased_sampling_is_plain_sampling_for_coarse_scans(affine):
    data = np.random.default_rng(1).random((20, 22, 18)).astype(np.float32)
    source = G.Grid(data.shape, affine)
    crop = G.ras_grid(source.world(np.array([9.0, 10.0, 8.0])), 1.0, (8, 8, 8), snap_to=source)
    np.testing.assert_array_equal(G.sample_antialiased(data, source, crop),
                                  G.sample(data, source, crop, order=1))


@pytest.mark.parametrize("affine", [tiny_affine(0.5), LIA @ np.diag([0.5, 0.5, 0.5, 1.0])])
def test_a_half_millimetre_scan_sampled_at_1mm_has_the_noise_of_a_1mm_scan(affine):
    """Sampled on a 1 mm grid, white noise on 0.5 mm voxels keeps about 1/8 of its variance (what
    a 1 mm acquisition of the same noise per mm3 has) instead of all of it; a linear ramp in
    world space (the anatomy) stays where it is."""
    rng = np.random.default_rng(2)
    source = G.Grid((80, 80, 80), affine)
    crop = G.ras_grid(source.world(np.array([40.0, 40.0, 40.0])), 1.0, (24, 24, 24),
                      snap_to=source)
    noise = rng.standard_normal(source.shape).astype(np.float32)
    plain = G.sample(noise, source, crop, order=1)
    filtered = G.sample_antialiased(noise, source, crop)
    assert plain.var() > 0.5
    assert filtered.var() == pytest.approx(1.0 / 8.0, rel=0.2)
    xyz = source.world(np.moveaxis(np.indices(source.shape), 0, -1).astype(float))
    ramp = (xyz @ np.array([0.3, -0.2, 0.5])).astype(np.float32)
    expected = crop.world(np.moveaxis(np.indices(crop.shape), 0, -1).astype(float)) \
        @ np.array([0.3, -0.2, 0.5])
    np.testing.assert_allclose(G.sample_antialiased(ramp, source, crop), expected, atol=1e-3)


# --- post-processing ---------------------------------------------------------------------------
def _random_posteriors(shape=(8, 10, 6), seed=0) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=shape + (11,))
    post = np.exp(logits)
    return (post / post.sum(-1, keepdims=True)).astype(np.float32)


def test_tta_swaps_left_and_right_channels():
    post = _random_posteriors()
    assert list(P.SWAP_LR) == [0, 6, 7, 8, 9, 10, 1, 2, 3, 4, 5]
    np.testing.assert_array_equal(P.swap_hemispheres(post)[..., 1], post[..., 6])
    # a network that is exactly mirror-equivariant gives the flipped posteriors for the flip
    mirrored = P.swap_hemispheres(post[::-1])
    np.testing.assert_allclose(P.unflip(mirrored), post)
    np.testing.assert_allclose(P.merge_flip_tta(post, mirrored), post)
    merged = P.merge_flip_tta(post, _random_posteriors(seed=1))
    np.testing.assert_allclose(merged.sum(-1), 1.0, atol=1e-5)


def test_mask_sets_outside_to_background():
    post = _random_posteriors()
    mask = np.zeros(post.shape[:3], bool)
    mask[2:5, 3:7, 1:4] = True
    out = P.mask_posteriors(post, mask)
    np.testing.assert_array_equal(out[mask], post[mask])
    assert np.all(out[~mask][:, 0] == 1) and np.all(out[~mask][:, 1:] == 0)


def test_dilate_by_millimetres():
    mask = np.zeros((21, 21, 21), bool)
    mask[10, 10, 10] = True
    grown = P.dilate(mask, 3.0, 1.0)
    assert grown[10, 10, 13] and not grown[10, 10, 14]
    assert P.dilate(mask, 3.0, 2.0)[10, 10, 11] and not P.dilate(mask, 3.0, 2.0)[10, 10, 12]


def _labelled(shape, boxes) -> np.ndarray:
    """Posteriors (X, Y, Z, 11): certain background except certain label 801 in ``boxes``."""
    post = np.zeros((*shape, 11), np.float32)
    post[..., 0] = 1.0
    for box in boxes:
        post[box + (0,)] = 0.0
        post[box + (1,)] = 1.0
    return post


def test_anatomical_mask_keeps_a_blob_that_continues_the_region_and_drops_a_far_one():
    """The region covers only the back of a 14-voxel-long structure (a localiser that missed its
    front, as under a brain-mask cut): the structure is kept whole, up to MASK_REACH_MM; a blob
    unconnected to the region, as close, still goes; the 3 mm band is always allowed."""
    from mri_hsynex.constants import MASK_REACH_MM, VENTRAL_DC_DILATION_MM

    shape = (40, 40, 40)
    structure = (slice(18, 22), slice(12, 26), slice(18, 22))  # y 12..25: 8.2 mm at most
    stray = (slice(27, 30), slice(23, 26), slice(18, 22))  # x 27..29: 6.3 mm from the region
    region = np.zeros(shape, bool)
    region[18:22, 18:26, 15:18] = True  # under the back of the structure
    post = _labelled(shape, [structure, stray])
    mask = P.anatomical_mask(post, region, None, 1.0)
    inside = np.zeros(shape, bool)
    inside[structure] = True
    # most of it within the 3 mm band: the reach applies (else see the test below)
    assert P.region_agreement(inside, P.dilate(region, 3.0, 1.0)) >= P.MIN_REGION_AGREEMENT
    reach = P.dilate(region, MASK_REACH_MM, 1.0)
    assert not (inside & ~reach).any() and mask[inside].all()
    assert reach[stray].any() and not mask[stray].any()
    assert (mask >= P.dilate(region, VENTRAL_DC_DILATION_MM, 1.0)).all()
    # the plain 3 mm band (the rule before) cut the structure
    band = P.dilate(region, VENTRAL_DC_DILATION_MM, 1.0)
    assert (inside & band).sum() < inside.sum()
    # one voxel of soft edge around the kept blob, never beyond the reach
    edge = P.dilate(inside, 1.0, 1.0) & ~inside & reach
    assert mask[edge].all() and not (mask & ~reach).any()


def test_anatomical_mask_keeps_the_structure_whole_where_the_region_holds_little_of_it():
    """A region that holds less than MIN_REGION_AGREEMENT of the blob continuing it (a field of
    view that ends near the hypothalamus: the localiser puts the ventral DC at the edge) is the
    part that is wrong: the blob is kept whole beyond MASK_REACH_MM, a far unconnected blob
    still goes; a blob larger than a hypothalamus stays within the reach."""
    from mri_hsynex.constants import MASK_REACH_MM, VENTRAL_DC_DILATION_MM

    shape = (40, 40, 50)
    structure = (slice(18, 22), slice(18, 22), slice(8, 38))  # z 8..37, 30 voxels long
    stray = (slice(30, 33), slice(30, 33), slice(30, 33))
    region = np.zeros(shape, bool)
    region[18:22, 18:22, 2:6] = True  # under the structure's first voxels only
    post = _labelled(shape, [structure, stray])
    inside = np.zeros(shape, bool)
    inside[structure] = True
    near = P.dilate(region, VENTRAL_DC_DILATION_MM, 1.0)
    assert P.region_agreement(inside, near) < P.MIN_REGION_AGREEMENT
    reach = P.dilate(region, MASK_REACH_MM, 1.0)
    assert (inside & ~reach).any()  # the reach alone would cut it
    mask = P.anatomical_mask(post, region, None, 1.0)
    assert mask[inside].all() and not mask[stray].any()
    clean, _ = P.clean_posteriors(post, region, None, 1.0)
    np.testing.assert_array_equal(P.hard_channels(clean) > 0, inside)
    # larger than a hypothalamus (e.g. untrained networks): no further than the reach
    huge = (slice(0, 40), slice(10, 30), slice(8, 50))
    assert 40 * 20 * 42 > P.MAX_UNREACHED_MM3
    mask = P.anatomical_mask(_labelled(shape, [huge]), region, None, 1.0)
    labelled = np.zeros(shape, bool)
    labelled[huge] = True
    assert not (mask & ~reach).any() and mask[labelled & reach].all()
    # voxel size counts: at 0.4 mm the same blob is 2,150 mm3, a plausible size
    assert P.anatomical_mask(_labelled(shape, [huge]), region, None, 0.4)[huge].all()


def test_region_agreement():
    near = np.zeros((10, 10, 10), bool)
    near[:5] = True
    seg = np.zeros_like(near)
    assert P.region_agreement(seg, near) == 1.0
    seg[3:7, 0, 0] = True
    assert P.region_agreement(seg, near) == 0.5
    assert P.region_agreement(near, near) == 1.0


def test_clean_posteriors_masks_then_keeps_the_largest_blob():
    shape = (30, 30, 30)
    region = np.zeros(shape, bool)
    region[12:18, 12:18, 8:12] = True
    big, small = (slice(12, 16), slice(12, 18), slice(12, 15)), (slice(12, 14), slice(12, 14),
                                                                   slice(17, 19))
    far = (slice(0, 3), slice(0, 3), slice(25, 28))
    post = _labelled(shape, [big, small, far])
    clean, mask = P.clean_posteriors(post, region, None, 1.0)
    np.testing.assert_array_equal(mask, P.anatomical_mask(post, region, None, 1.0))
    labelled = P.hard_channels(clean) > 0
    assert labelled[big].all() and not labelled[small].any() and not labelled[far].any()
    np.testing.assert_allclose(clean.sum(-1), 1.0, atol=1e-6)


@settings(max_examples=15, deadline=None)
@given(shift=st.tuples(*[st.integers(-3, 3)] * 3), voxel=st.sampled_from([1.0, 0.8]))
def test_anatomical_mask_never_allows_the_excluded_voxels_and_follows_the_region(shift, voxel):
    shape = (30, 30, 30)
    region = np.zeros(shape, bool)
    region[12:18, 12:18, 8:12] = True
    region = np.roll(region, shift, axis=(0, 1, 2))
    exclude = np.zeros(shape, bool)
    exclude[14:16, :, :] = True  # a ventricle-like slab through the middle
    post = _labelled(shape, [(slice(10, 20), slice(10, 20), slice(10, 16))])
    mask = P.anatomical_mask(post, region, exclude, voxel)
    assert not (mask & exclude).any()
    assert (mask >= (P.dilate(region, 3.0, voxel) & ~exclude)).all()
    empty = P.anatomical_mask(_labelled(shape, []), region, exclude, voxel)
    np.testing.assert_array_equal(empty, P.dilate(region, 3.0, voxel) & ~exclude)


def test_largest_component_per_hemisphere():
    post = np.zeros((12, 12, 12, 11), np.float32)
    post[..., 0] = 1.0
    seg = np.zeros((12, 12, 12), int)
    seg[1:4, 1:4, 1:4] = 1  # left, big
    seg[8:10, 8:10, 8:10] = 2  # left, small, separate -> removed
    seg[1:3, 8:11, 1:3] = 6  # right, only blob -> kept
    for k in (1, 2, 6):
        post[seg == k] = 0.0
        post[seg == k, k] = 0.9
        post[seg == k, 0] = 0.1
    out = P.keep_largest_component_per_hemisphere(post)
    hard = out.argmax(-1)
    assert np.all(hard[seg == 1] == 1) and np.all(hard[seg == 6] == 6)
    assert np.all(hard[seg == 2] == 0)
    np.testing.assert_allclose(out.sum(-1), post.sum(-1), atol=1e-6)


def test_hard_channels_whole_decides_whether_subunits_which():
    post = np.zeros((4, 11), np.float32)
    post[0, [0, 1, 2]] = (0.4, 0.3, 0.3)  # whole 0.6 beats background 0.4: labelled
    post[1, [0, 3]] = (0.6, 0.4)  # background wins
    post[2, [0, 6, 7]] = (0.2, 0.5, 0.3)  # plain arg-max case
    post[3, 0] = 1.0
    assert P.hard_channels(post).tolist() == [1, 0, 6, 0]
    # where the arg-max over eleven channels is a subunit, the label is the same
    assert P.hard_channels(post)[2] == post[2].argmax()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_hard_channels_agrees_with_the_whole_and_the_argmax(seed):
    """Labelled exactly where P(background) < 0.5; never drops a voxel the 11-way arg-max
    labels, and then gives it the same subunit."""
    rng = np.random.default_rng(seed)
    post = rng.dirichlet(np.full(11, 0.3), size=(6, 5, 4)).astype(np.float32)
    hard = P.hard_channels(post)
    np.testing.assert_array_equal(hard > 0, post[..., 0] < 0.5)
    argmax = post.argmax(-1)
    assert np.all(hard[argmax > 0] == argmax[argmax > 0])


# --- localisation from an aseg -----------------------------------------------------------------
def test_localise_from_aseg_centre_and_region():
    labels = tiny_label_map((32, 32, 32))
    grid = G.Grid(labels.shape, tiny_affine(1.0))
    loc = localise_from_aseg(labels, grid, grid)
    region = np.isin(labels, (28, 60, 14))
    expected = grid.world(np.argwhere(region).mean(0)) + HYPOTHALAMUS_OFFSET_MM
    np.testing.assert_allclose(loc.centre_world, expected)
    assert loc.method == "aseg"
    np.testing.assert_array_equal(loc.region_on(grid), region)
    np.testing.assert_array_equal(loc.exclude_on(grid), labels == 14)  # 3rd ventricle


def test_localiser_has_no_exclusion():
    grid = G.Grid((4, 4, 4), tiny_affine(1.0))
    loc = Localisation(np.zeros(3), np.ones((4, 4, 4), bool), grid, "localiser")
    assert loc.exclude_on(grid) is None


def test_localise_from_aseg_on_another_grid_is_resampled():
    labels = tiny_label_map((32, 32, 32))
    aseg_grid = G.Grid(labels.shape, tiny_affine(1.0))
    coarse = np.diag([2.0, 2.0, 2.0, 1.0])
    coarse[:3, 3] = -19.5  # 2 mm voxels over the same field of view
    image_grid = G.Grid((16, 16, 16), coarse)
    loc = localise_from_aseg(labels, aseg_grid, image_grid)
    same = localise_from_aseg(labels, aseg_grid, aseg_grid)
    assert loc.details["resampled_aseg"]
    assert np.all(np.abs(loc.centre_world - same.centre_world) < 2.0)


def test_localise_from_aseg_errors():
    labels = tiny_label_map((32, 32, 32))
    grid = G.Grid(labels.shape, tiny_affine(1.0))
    with pytest.raises(HsynexError, match="no ventral DC"):
        localise_from_aseg(np.where(np.isin(labels, (28, 60)), 2, labels), grid, grid, "a.mgz")
    far = G.Grid(labels.shape, tiny_affine(1.0) + np.diag([0, 0, 0, 0]) +
                 np.pad(np.full((3, 1), 500.0), ((0, 1), (3, 0))))
    with pytest.raises(HsynexError, match="does not overlap"):
        localise_from_aseg(labels, far, grid, "a.mgz")


def test_normalise_percentiles():
    x = np.linspace(0, 1000, 1001, dtype=np.float32)
    y = normalise_percentiles(x)
    assert y.min() == 0 and y.max() == 1 and y.dtype == np.float32
    assert np.all(normalise_percentiles(np.ones(10)) == 0)


# --- volumes, reference, outputs ---------------------------------------------------------------
def test_volumes_soft_and_hard():
    from mri_hsynex.predict.localise import Localisation
    from mri_hsynex.predict.result import SegmentationResult

    grid = G.Grid((10, 10, 10), tiny_affine(1.0))
    post = np.zeros((10, 10, 10, 11), np.float32)
    post[..., 0] = 1.0
    post[:2, :, :, 0], post[:2, :, :, 1] = 0.25, 0.75  # 200 voxels of 801 at 0.75
    post[5:6, :, :, 0], post[5:6, :, :, 7] = 0.5, 0.5  # tie -> background wins (argmax)
    loc = Localisation(np.zeros(3), np.ones(grid.shape, bool), grid, "aseg")
    result = SegmentationResult(image=None, image_grid=grid, crop_grid=grid, posteriors=post,
                                stage1=post[..., 1], localisation=loc, resample="model",
                                networks=None, backend="none")
    assert result.volumes[801] == (200, pytest.approx(150.0))
    assert result.volumes[807] == (0, pytest.approx(50.0))
    assert result.volumes[811] == (200, pytest.approx(150.0))
    assert result.volumes[813][1] == pytest.approx(200.0)
    assert result.qc["qc_flag"]
    assert any("subunit missing" in r for r in result.qc["qc_reasons"])
    assert result.qc["region_agreement"] == 1.0
    assert not any("ventral DC" in r for r in result.qc["qc_reasons"])
    row = result.volumes_row("s1")
    assert row["subject"] == "s1" and row["whole"] == pytest.approx(200.0)
    # a localised region far from the segmentation: flagged, with the share in the sidecar
    region = np.zeros(grid.shape, bool)
    region[8:, 8:, 8:] = True
    far = SegmentationResult(image=None, image_grid=grid, crop_grid=grid, posteriors=post,
                             stage1=post[..., 1], localisation=Localisation(
                                 np.zeros(3), region, grid, "localiser"),
                             resample="model", networks=None, backend="none")
    assert far.qc["region_agreement"] < 0.5
    assert any("ventral DC found (localiser) holds only" in r for r in far.qc["qc_reasons"])
    # a brain mask in contact with the segmentation: flagged from 5 %, share kept
    assert result.qc["masked_share"] == 0.0
    no_tissue = np.zeros(grid.shape, bool)
    no_tissue[2, :, :2] = True  # next to 20 of the 200 segmented voxels (x = 1, z < 2)
    cut = SegmentationResult(image=None, image_grid=grid, crop_grid=grid, posteriors=post,
                             stage1=post[..., 1], localisation=loc, resample="model",
                             networks=None, backend="none", no_tissue=no_tissue)
    assert cut.qc["masked_share"] == pytest.approx(0.1)
    assert any(r.startswith("10% of the segmentation lies in or next to voxels where the scan "
                            "holds no tissue") for r in cut.qc["qc_reasons"])
    no_tissue[:] = False
    no_tissue[3:, :, :] = True  # a mask's margin: one voxel of tissue between, no contact
    edge = SegmentationResult(image=None, image_grid=grid, crop_grid=grid, posteriors=post,
                              stage1=post[..., 1], localisation=loc, resample="model",
                              networks=None, backend="none", no_tissue=no_tissue)
    assert edge.qc["masked_share"] == 0.0
    assert not any("no tissue" in r for r in edge.qc["qc_reasons"])


def test_z_limit_is_the_references_prediction_limit():
    """A reference of 8 subjects flags beyond |z| 4.8 (t with 7 degrees of freedom, one new
    subject), of many subjects beyond about 3; a reference without n uses 3."""
    from mri_hsynex.predict.reference import z_limit

    def ref(n):
        return {"volumes": {"a": {"mean": 10.0, "sd": 1.0, "n": n}, "b": {"mean": 5, "sd": 1}}}

    assert z_limit(ref(8)) == pytest.approx(4.80, abs=0.01)
    assert z_limit(ref(20)) == pytest.approx(3.53, abs=0.01)
    assert 3.0 < z_limit(ref(10_000)) < 3.01
    assert z_limit({"volumes": {"a": {"mean": 10.0, "sd": 1.0}}}) == 3.0
    assert z_limit(ref(8)) < z_limit(ref(5)) < z_limit(ref(1)) < np.inf
    # the shipped reference (8 subjects): sub-08's anterior-inferior 31 mm3 against 17.5 +- 4.2
    # is a plausible healthy volume
    from mri_hsynex.predict.reference import load_reference, z_scores

    shipped = load_reference()
    z = z_scores({801: 31.0}, shipped)[801]
    assert 3.0 < z < z_limit(shipped)


def test_reference_z_scores():
    ref = build_reference({"a": {"L_hypothalamus_posterior": 100.0},
                           "b": {"L_hypothalamus_posterior": 140.0}}, "test")
    entry = ref["volumes"]["L_hypothalamus_posterior"]
    assert entry["mean"] == 120.0 and entry["n"] == 2
    assert z_scores({803: 120.0 + entry["sd"]}, ref)[803] == pytest.approx(1.0)
    ref["volumes"]["L_hypothalamus_posterior"]["sd"] = 1.0  # floored at 15 % of the mean
    assert z_scores({803: 138.0}, ref)[803] == pytest.approx(1.0)
    assert "Left-Hypothalamus-Whole" in ref["volumes"]


def test_shipped_reference_volumes_are_complete():
    from mri_hsynex.labels import ALL_OUTPUT_ROWS
    from mri_hsynex.predict.reference import REFERENCE_FILE

    ref = json.loads(REFERENCE_FILE.read_text())
    assert ref["provenance"]
    for row in ALL_OUTPUT_ROWS:
        entry = ref["volumes"][row.name]
        assert entry["mean"] > 0 and entry["sd"] > 0


def test_sidecar_path_and_output_checks(tmp_path):
    assert sidecar_path(tmp_path / "s.nii.gz") == tmp_path / "s.json"
    assert sidecar_path("a/seg.mgz").name == "seg.json"
    image = tmp_path / "in.mgz"
    image.write_bytes(b"x")
    with pytest.raises(HsynexError, match="same as an input"):
        check_output_paths(OutputPaths(seg=image), [image])
    with pytest.raises(HsynexError, match="does not exist"):
        check_output_paths(OutputPaths(seg=tmp_path / "nope" / "s.mgz"), [image])
    with pytest.raises(HsynexError, match="same path"):
        check_output_paths(OutputPaths(seg=tmp_path / "s.mgz", post=tmp_path / "s.mgz"), [])
    with pytest.raises(HsynexError, match="must end in"):
        check_output_paths(OutputPaths(seg=tmp_path / "s.txt"), [])
    # extensions in any case, as the readers and writers take them
    check_output_paths(OutputPaths(seg=tmp_path / "S.MGZ", post=tmp_path / "p.Nii.Gz"), [])


@pytest.mark.parametrize("name, ext, stem", [
    ("a/seg.nii.gz", ".nii.gz", "a/seg"), ("a/SEG.NII.GZ", ".NII.GZ", "a/SEG"),
    ("seg.Mgz", ".Mgz", "seg"), ("x.tar.gz", ".gz", "x.tar"), ("noext", "", "noext")])
def test_full_suffix_keeps_the_written_case(name, ext, stem):
    from mri_hsynex.predict.batch import is_image_path

    assert full_suffix(name) == ext
    assert strip_suffix(name) == Path(stem)
    assert is_image_path(name) == (ext.lower() in (".nii.gz", ".mgz"))


def test_staged_files_all_or_nothing(tmp_path):
    staged = StagedFiles()
    staged.tmp(tmp_path / "a.mgz").write_text("a")
    staged.tmp(tmp_path / "b.csv").write_text("b")
    staged.discard()
    assert list(tmp_path.iterdir()) == []
    staged.tmp(tmp_path / "a.nii.gz").write_text("a")
    assert staged.commit() == [tmp_path / "a.nii.gz"]
    assert [p.name for p in tmp_path.iterdir()] == ["a.nii.gz"]


# --- model folder lookup -----------------------------------------------------------------------
def test_model_dir_lookup_order(tmp_path, monkeypatch):
    from mri_hsynex.constants import MODELS_ENV
    from mri_hsynex.predict.networks import candidate_model_dirs, find_model_dir

    explicit, env = tmp_path / "explicit", tmp_path / "env"
    for folder in (explicit, env):
        folder.mkdir()
        (folder / "stage1.keras").write_text("")
        (folder / "stage2.keras").write_text("")
    monkeypatch.setenv(MODELS_ENV, str(env))
    assert find_model_dir(explicit) == explicit
    assert find_model_dir() == env
    monkeypatch.delenv(MODELS_ENV)
    assert candidate_model_dirs()[0].name == "models"
    with pytest.raises(HsynexError, match="model folder not found"):
        find_model_dir(tmp_path / "missing")
    (explicit / "stage2.keras").unlink()
    with pytest.raises(HsynexError, match="stage2.keras missing"):
        find_model_dir(explicit)


@pytest.mark.realdata
def test_aseg_crop_centre_is_on_the_atlas_hypothalamus(shared_data):
    """On the MNI2009c aparc+aseg, the crop centre falls within 3 mm of the centroid of the
    CIT168 hypothalamus map, and the 64 mm crop holds all of it."""
    import nibabel as nib

    atlases = shared_data / "atlases"
    aseg = nib.load(atlases / "pandora_MNI2009c_aparc+aseg.nii.gz")
    labels = np.rint(np.asarray(aseg.dataobj)).astype(np.int32)
    grid = G.Grid(labels.shape, aseg.affine)
    loc = localise_from_aseg(labels, grid, grid)
    hth = np.asarray(nib.load(atlases / "CIT168toMNI152_prob_atlas_bilat_1mm.nii.gz")
                     .dataobj[..., 13])
    inside = hth > 0.3
    centroid = grid.world((np.argwhere(inside) * hth[inside][:, None]).sum(0) / hth[inside].sum())
    assert np.linalg.norm(loc.centre_world - centroid) < 3.0
    crop = G.ras_grid(loc.centre_world, 1.0, (64, 64, 64), snap_to=grid)
    extent = np.abs(grid.world(np.argwhere(inside)) - loc.centre_world).max(axis=0)
    assert np.all(extent < 31.5), extent
    assert crop.shape == (64, 64, 64)


@pytest.mark.parametrize("order", ["C", "F"])
def test_block_mean_matches_reshaped_mean_and_keeps_world_position(order):
    from mri_hsynex.predict.localise import block_mean

    data = np.asarray(np.random.default_rng(0).random((13, 14, 9)), np.float32, order=order)
    grid = G.Grid(data.shape, LIA @ np.diag([1.0, 1.0, 2.0, 1.0]))  # 1 x 1 x 2 mm voxels
    averaged, coarse = block_mean(data, grid, 3.0)  # blocks of 3 x 3 x 1 voxels
    expected = data[:12, :12, :].reshape(4, 3, 4, 3, 9, 1).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(averaged, expected, atol=1e-6)
    np.testing.assert_allclose(coarse.world(np.zeros(3)), grid.world(np.array([1.0, 1.0, 0.0])))
    np.testing.assert_allclose(coarse.voxel_mm, [3.0, 3.0, 2.0])
