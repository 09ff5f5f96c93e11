"""Partial-volume-corrected soft volumes (predict/pvc.py): the volume follows the tissue the image
shows, whatever the networks' posteriors say at the boundary."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mri_hsynex.predict import pvc
from mri_hsynex.predict.pvc import corrected_posteriors, slab_axis, tissue_fraction

SHAPE = (40, 40, 40)
FINE = 4  # render 4x finer, then block-average: true partial volume


def _ellipsoid_fraction(radii_mm, centre=(20.0, 20.0, 20.0)) -> np.ndarray:
    """Volume fraction (on the 1 mm grid) of an ellipsoid, from a 4x finer grid."""
    n = SHAPE[0] * FINE
    c = (np.arange(n) + 0.5) / FINE
    x, y, z = np.meshgrid(c, c, c, indexing="ij")
    inside = (((x - centre[0]) / radii_mm[0]) ** 2 + ((y - centre[1]) / radii_mm[1]) ** 2
              + ((z - centre[2]) / radii_mm[2]) ** 2) <= 1.0
    return inside.reshape(SHAPE[0], FINE, SHAPE[1], FINE, SHAPE[2], FINE).mean(axis=(1, 3, 5))


def _posteriors(radii_mm, left_share=0.6) -> np.ndarray:
    """A network's posteriors: a hard ellipsoid (here larger than the truth), split between
    two subunit channels (801 and 806)."""
    prob = (_ellipsoid_fraction(radii_mm) > 0.5).astype(np.float32) * 0.95
    post = np.zeros(SHAPE + (11,), np.float32)
    post[..., 1] = prob * left_share
    post[..., 6] = prob * (1 - left_share)
    post[..., 0] = 1 - prob
    return post


def _image(fraction, tissue=0.7, neighbour=0.3, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return fraction * tissue + (1 - fraction) * neighbour + noise * rng.standard_normal(SHAPE)


def _volume(post) -> float:
    return float(post[..., 1:].sum())


def test_volume_is_the_tissue_not_the_posterior():
    true = _ellipsoid_fraction((6.0, 8.0, 5.0))
    post = _posteriors((7.0, 9.0, 6.0))  # the network over-segments by ~1 mm
    corrected = corrected_posteriors(post, _image(true))
    assert _volume(post) > 1.3 * true.sum()
    assert _volume(corrected) == pytest.approx(true.sum(), rel=0.03)


def _paired_sensitivity(noise: float, neighbour: float = 0.3, seed: int = 0) -> float:
    """Paired: the same posteriors (a blind network, ~1 mm too large), the tissue shrunk by
    20 %; measured relative change over the true one."""
    post = _posteriors((7.0, 9.0, 6.0))
    big = _ellipsoid_fraction((6.0, 8.0, 5.0))
    small = _ellipsoid_fraction(tuple(r * 0.8 ** (1 / 3) for r in (6.0, 8.0, 5.0)))
    v_big = _volume(corrected_posteriors(post, _image(big, neighbour=neighbour, noise=noise,
                                                      seed=seed)))
    v_small = _volume(corrected_posteriors(post, _image(small, neighbour=neighbour, noise=noise,
                                                        seed=seed)))
    return (v_small / v_big - 1) / (small.sum() / big.sum() - 1)


@pytest.mark.parametrize("noise", [0.0, 0.04])
def test_shrinkage_is_measured_with_the_same_posteriors(noise):
    assert 0.8 <= _paired_sensitivity(noise) <= 1.15


@pytest.mark.parametrize("seed", [0, 1])
def test_noise_does_not_hide_a_low_contrast_loss(seed, monkeypatch):
    """Contrast 0.1 against noise 0.04 (the ventral DC's against a PD-like image's): with the
    fractions clipped at 0 (pvc v7) the noise of the emptied voxels counted as tissue."""
    measured = _paired_sensitivity(0.04, 0.6, seed)
    assert 0.85 <= measured <= 1.15
    monkeypatch.setattr(pvc, "LOWEST_FRACTION", 0.0)
    assert _paired_sensitivity(0.04, 0.6, seed) < measured - 0.05


@settings(max_examples=15, deadline=None)
@given(a=st.floats(-5.0, 5.0).filter(lambda v: abs(v) > 0.05), b=st.floats(-100.0, 100.0))
def test_any_contrast_and_scaling_give_the_same_volume(a, b):
    true = _ellipsoid_fraction((6.0, 8.0, 5.0))
    post = _posteriors((7.0, 9.0, 6.0))
    image = _image(true, noise=0.02)
    reference = corrected_posteriors(post, image)
    scaled = corrected_posteriors(post, a * image + b)
    assert _volume(scaled) == pytest.approx(_volume(reference), rel=1e-4)


def test_no_contrast_keeps_the_networks_posteriors():
    post = _posteriors((7.0, 9.0, 6.0))
    flat = _image(_ellipsoid_fraction((6.0, 8.0, 5.0)), tissue=0.5, neighbour=0.5, noise=0.03)
    corrected = corrected_posteriors(post, flat)
    zone_mass = _volume(post)
    assert _volume(corrected) == pytest.approx(zone_mass, rel=0.02)


def test_subunits_keep_their_shares_and_add_up():
    true = _ellipsoid_fraction((6.0, 8.0, 5.0))
    post = _posteriors((7.0, 9.0, 6.0), left_share=0.6)
    out = corrected_posteriors(post, _image(true, noise=0.02))
    assert np.allclose(out.sum(axis=-1), 1.0, atol=1e-5)
    # the tissue fraction may fall a little below 0 (pvc.LOWEST_FRACTION), never above 1
    fraction = out[..., 1:].sum(axis=-1)
    assert fraction.min() >= pvc.LOWEST_FRACTION - 1e-6 and fraction.max() <= 1 + 1e-6
    assert out[..., 1].sum() / _volume(out) == pytest.approx(0.6, abs=1e-3)
    # nothing counts beyond one voxel outside the segmentation
    far = _ellipsoid_fraction((9.5, 11.5, 8.5)) == 0
    assert out[far, 1:].sum() == 0


def test_mask_limits_what_counts():
    true = _ellipsoid_fraction((6.0, 8.0, 5.0))
    post = _posteriors((7.0, 9.0, 6.0))
    allowed = np.zeros(SHAPE, bool)
    allowed[:20] = True
    out = corrected_posteriors(post, _image(true), allowed)
    assert out[20:, ..., 1:].sum() == 0
    assert _volume(out) == pytest.approx(true[:20].sum(), rel=0.05)


def test_tiny_or_empty_segmentation_is_left_alone():
    post = np.zeros(SHAPE + (11,), np.float32)
    post[..., 0] = 1
    post[20, 20, 20] = 0
    post[20, 20, 20, 3] = 1
    image = np.random.default_rng(0).random(SHAPE)
    assert np.array_equal(corrected_posteriors(post, image), post)
    assert tissue_fraction(image, 1 - post[..., 0], post[..., 0] < 0.5) is None


def test_a_crop_filling_segmentation_is_left_alone():
    # untrained networks can call most of the crop hypothalamus: there is no neighbour ring to
    # read, so the posteriors stand
    post = np.zeros(SHAPE + (11,), np.float32)
    post[..., 3] = 0.9
    post[..., 0] = 0.1
    image = _image(_ellipsoid_fraction((6.0, 5.0, 4.0)), noise=0.02)
    assert np.array_equal(corrected_posteriors(post, image), post)


def test_near_tied_subunits_do_not_move_the_volume():
    # the region is the whole hypothalamus' posterior > 0.5, not the 11-class arg-max: 0.6 split
    # over six subunits (background's 0.4 wins the arg-max) counts as 0.6 in one subunit does
    truth = _ellipsoid_fraction((6.0, 5.0, 4.0))
    image = _image(truth, noise=0.02)
    inside = _ellipsoid_fraction((7.0, 6.0, 5.0)) > 0.5
    one = np.zeros(SHAPE + (11,), np.float32)
    one[..., 0] = np.where(inside, 0.4, 1.0)
    one[..., 1] = np.where(inside, 0.6, 0.0)
    split = one.copy()
    split[..., 1] = 0.0
    split[..., 1:7] = np.where(inside, 0.1, 0.0)[..., None]
    assert not np.any(np.argmax(split, axis=-1) > 0)
    corrected = _volume(corrected_posteriors(split, image))
    assert corrected > 0.5 * truth.sum()  # corrected, not left as a tiny segmentation
    assert corrected == pytest.approx(_volume(corrected_posteriors(one, image)), rel=1e-5)


# --- thick slices ------------------------------------------------------------------------------
@pytest.mark.parametrize("thickness, expected", [
    (None, None), ((1.0, 1.0, 1.0), None), ((2.0, 2.0, 2.0), None), ((1.0, 1.0, 1.4), None),
    ((3.0, 3.0, 4.0), None), ((1.0, 1.0, 5.0), (2, 2)), ((0.9, 0.9, 5.0), (2, 2)),
    ((1.0, 7.0, 1.0), (1, 3)), ((1.0, 1.0, 3.0), (2, 1))])
def test_slab_axis_is_the_thick_slice_axis(thickness, expected):
    assert slab_axis(thickness) == expected


@pytest.mark.parametrize("thickness", [(1.0, 1.0, 1.0), (2.0, 2.0, 2.0), (0.5, 0.5, 0.5)])
def test_scans_without_thick_slices_keep_one_tissue_intensity(thickness):
    true = _ellipsoid_fraction((6.0, 8.0, 5.0))
    post = _posteriors((7.0, 9.0, 6.0))
    image = _image(true, noise=0.03)
    np.testing.assert_array_equal(corrected_posteriors(post, image, thickness=thickness),
                                  corrected_posteriors(post, image))


def test_slices_that_mix_the_tissue_differently_do_not_change_its_volume():
    """Thick slices mix the hypothalamus with what lies above and below it, differently in each
    slice: the tissue's own intensity then differs from slice to slice (here 0.7 and 0.5 in
    alternate 5 mm slices, the neighbour 0.3). One intensity for the whole structure reads that
    as tissue lost or gained; the per-slice one does not."""
    true = _ellipsoid_fraction((6.0, 8.0, 7.0))
    post = _posteriors((6.0, 8.0, 7.0))
    z = np.arange(SHAPE[2])
    tissue = np.where(((z - 13) // 5) % 2 == 0, 0.7, 0.5)[None, None, :]
    image = true * tissue + (1 - true) * 0.3
    assert abs(_volume(corrected_posteriors(post, image)) / true.sum() - 1) > 0.05
    assert _volume(corrected_posteriors(post, image, thickness=(1.0, 1.0, 5.0))) \
        == pytest.approx(true.sum(), rel=0.02)
    # the slice axis is read from the thickness: the same slices along y
    swapped = np.swapaxes(image, 1, 2)
    assert _volume(corrected_posteriors(np.swapaxes(post, 1, 2), swapped,
                                        thickness=(1.0, 5.0, 1.0))) \
        == pytest.approx(true.sum(), rel=0.02)


@pytest.mark.parametrize("thickness", [3.0, 5.0, 7.0])
def test_per_slice_intensity_keeps_the_sensitivity_on_thick_slices(thickness):
    """Paired: the same blind posteriors, the tissue shrunk by 20 %, both imaged with thick axial
    slices (Gaussian slice profile, linear interpolation back to 1 mm). Thick slices blur part of
    the change beyond what the correction reads (sensitivity ~0.7 at 3 mm, ~0.5 at 5-7 mm here,
    one intensity or per slice); the per-slice intensity must not lose any of what is left."""
    from mri_hsynex.predict.grid import Grid, sample
    from mri_hsynex.validate.contrasts import acquire_thick_slices

    def thick(image):  # the validation renders' acquisition, back on the 1 mm grid (trilinear)
        low, affine = acquire_thick_slices(image, np.eye(4), thickness, "axial")
        return sample(low, Grid(low.shape, affine), Grid(SHAPE, np.eye(4)), order=1)

    post = _posteriors((7.0, 9.0, 6.0))
    big = _ellipsoid_fraction((6.0, 8.0, 5.0))
    small = _ellipsoid_fraction(tuple(r * 0.8 ** (1 / 3) for r in (6.0, 8.0, 5.0)))
    images = [thick(_image(f, noise=0.02)) for f in (big, small)]
    true_change = small.sum() / big.sum() - 1

    def sensitivity(th):
        v = [_volume(corrected_posteriors(post, im, thickness=th)) for im in images]
        return (v[1] / v[0] - 1) / true_change

    per_slice, one = sensitivity((1.0, 1.0, thickness)), sensitivity(None)
    assert per_slice >= 0.45
    assert per_slice >= one - 0.05


def _stripped_below(image, z_mm=14.0):
    """``image`` zeroed at every voxel centre below ``z_mm`` (a brain mask that ends 1 mm under
    the ellipsoid's lowest point, 15 mm), and that zeroed region."""
    z = np.arange(SHAPE[2])[None, None, :] + 0.5
    cut = np.broadcast_to(z < z_mm, SHAPE)
    return np.where(cut, 0.0, image), cut


@pytest.mark.parametrize("noise", [0.0, 0.04])
def test_zeroed_background_is_no_neighbour(noise):
    """A skull-stripping mask that removes the CSF under the structure: the zeros read as a far
    darker neighbour, so the boundary voxels (tissue and CSF) count as mostly tissue. Told where
    the scan holds no tissue, the correction counts none there and keeps the posterior next to
    it, which brings the stripped volume back toward the unstripped one."""
    true = _ellipsoid_fraction((6.0, 8.0, 5.0))
    post = _posteriors((6.0, 8.0, 5.0))
    head = _image(true, noise=noise)
    stripped, cut = _stripped_below(head)
    v_head = _volume(corrected_posteriors(post, head))
    v_blind = _volume(corrected_posteriors(post, stripped))
    fixed = corrected_posteriors(post, stripped, no_tissue=cut)
    assert v_blind > v_head + 20  # the zeros inflate the boundary layer
    assert abs(_volume(fixed) - v_head) < 0.5 * abs(v_blind - v_head)
    assert not fixed[cut][:, 1:].any()
    # the voxels next to the zeros carry the networks' posterior (here one 1 mm too large)
    big = _posteriors((7.0, 9.0, 6.0))
    near = (np.arange(SHAPE[2]) == 14)[None, None, :] & (big[..., 0] < 0.5)
    assert near.any()
    out = corrected_posteriors(big, stripped, no_tissue=cut)
    np.testing.assert_allclose(out[near][:, 1:].sum(-1), 1 - big[near][:, 0], rtol=1e-5)
    # no zeroed background: exactly the correction without the argument
    np.testing.assert_array_equal(corrected_posteriors(post, head, no_tissue=np.zeros(SHAPE, bool)),
                                  corrected_posteriors(post, head))


@pytest.mark.parametrize("noise", [0.0, 0.04])
def test_zeros_beyond_a_margin_are_no_neighbour_either(noise):
    """A mask with a margin: the zeros start two voxels under the structure, so none touches it,
    but they fill part of the neighbour ring the correction reads the darker tissue from. The
    share of the ring they take keeps the posterior, which moves the stripped volume toward the
    unstripped one (telling the correction nothing leaves it where it is)."""
    true = _ellipsoid_fraction((6.0, 8.0, 5.0))
    post = _posteriors((6.0, 8.0, 5.0))
    head = _image(true, noise=noise)
    stripped, cut = _stripped_below(head, z_mm=13.0)
    assert not (cut & (post[..., 0] < 0.5)).any()
    v_head = _volume(corrected_posteriors(post, head))
    v_blind = _volume(corrected_posteriors(post, stripped))
    v_fixed = _volume(corrected_posteriors(post, stripped, no_tissue=cut))
    assert v_blind > v_head + 15
    assert abs(v_fixed - v_head) < 0.8 * abs(v_blind - v_head)


def test_filled_background_is_the_border_connected_minimum():
    """The scan's minimum counts as no tissue only where it reaches the scan's border (a
    stripped background), not in an enclosed dark region (a FLAIR's nulled ventricle); found in
    world space on a crop of another grid."""
    from mri_hsynex.predict.grid import Grid
    from mri_hsynex.predict.pvc import filled_background

    data = np.full((30, 30, 30), 5.0, np.float32)
    data[:, :, :6] = 0.0  # stripped below z = 6 (reaches the border)
    data[14:17, 14:17, 14:17] = 0.0  # enclosed zeros
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = (-15.0, -15.0, -15.0)
    grid = Grid(data.shape, affine)
    crop_affine = np.diag([1.0, 1.0, 1.0, 1.0])
    crop_affine[:3, 3] = (-10.0, -10.0, -12.0)  # crop voxel k sits at scan voxel k + (5, 5, 3)
    crop = Grid((20, 20, 20), crop_affine)
    fill = filled_background(data, grid, crop)
    assert fill is not None and fill.shape == crop.shape
    assert fill[:, :, :3].all() and not fill[:, :, 3:].any()  # scan z < 6 only; not the hole
    assert filled_background(data + 1.0 + np.arange(30)[:, None, None], grid, crop) is None
    # only where it can change the correction: none of it within reach, no fill (and no labelling)
    reach = np.zeros(crop.shape, bool)
    reach[:, :, 14:] = True  # above the stripped zeros and the hole (crop z 11-13)
    assert filled_background(data, grid, crop, reach) is None
    reach[:, :, 2] = True
    np.testing.assert_array_equal(filled_background(data, grid, crop, reach), fill)
    # the reach may come as a function, asked for only when the crop holds some of the minimum
    np.testing.assert_array_equal(filled_background(data, grid, crop, lambda: reach), fill)

    def never():
        raise AssertionError("reach computed for a crop without the scan's minimum")

    assert filled_background(data + 1.0 + np.arange(30)[:, None, None], grid, crop, never) is None


def test_background_beyond_reach_changes_nothing():
    """The zeroed background counts only within ``background_reach`` of the posteriors: the
    same correction with the fill cut to that reach."""
    from mri_hsynex.predict.pvc import background_reach

    true = _ellipsoid_fraction((6.0, 8.0, 5.0))
    post = _posteriors((6.0, 8.0, 5.0))
    stripped, cut = _stripped_below(_image(true, noise=0.04), z_mm=13.0)
    reach = background_reach(post)
    assert (cut & reach).any() and (cut & ~reach).any()
    np.testing.assert_array_equal(corrected_posteriors(post, stripped, no_tissue=cut),
                                  corrected_posteriors(post, stripped, no_tissue=cut & reach))
