"""Validation machinery: contrast synthesis, thick slices, simulated atrophy, group statistics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from synthetic import tiny_affine, tiny_label_map

from mri_hsynex.errors import HsynexError
from mri_hsynex.labels import LEFT_SUBUNIT_IDS, RIGHT_SUBUNIT_IDS, SUBUNIT_IDS
from mri_hsynex.validate import anatomy, contrasts, metrics
from mri_hsynex.validate.contrasts import Acquisition

# LIA, like a conformed FreeSurfer volume: voxel axes -> (-x, -z, +y)
LIA = np.array([[-1.0, 0, 0, 20], [0, 0, 1, -20], [0, -1, 0, 20], [0, 0, 0, 1]])


def _clean(contrast: str, thickness: float = 1.0, orientation: str = "axial") -> Acquisition:
    return Acquisition(contrast, thickness, orientation, noise=0.0, bias=0.0, label_jitter=0.0)


def _tissue_mean(image, labels, label):
    core = ndimage.binary_erosion(labels == label, iterations=1)
    if not core.any():  # thin structure (the 3rd ventricle): all its voxels
        core = labels == label
    return float(image[core].mean())


@pytest.mark.parametrize("contrast, brighter, darker", [
    ("T1", 2, 10), ("T1", 10, 14),      # WM > deep GM > CSF
    ("T2", 14, 10), ("T2", 10, 2),      # reversed
    ("PD", 10, 2),                      # GM > WM
    ("FLAIR", 10, 14), ("FLAIR", 10, 2),  # CSF suppressed, GM > WM
    ("FA", 2, 10), ("FA", 2, 14),       # white matter bright, grey/CSF dark
])
def test_tissue_ordering(contrast, brighter, darker):
    labels = tiny_label_map((32, 32, 32))
    image, _ = contrasts.synthesize(labels, tiny_affine(), _clean(contrast), seed=0)
    assert _tissue_mean(image, labels, brighter) > _tissue_mean(image, labels, darker)


def test_subunits_share_one_intensity():
    labels = tiny_label_map((32, 32, 32))
    for contrast in contrasts.CONTRAST_NAMES:
        means, _ = contrasts.label_means(810, contrast, np.random.default_rng(3))
        assert np.ptp(means[list(SUBUNIT_IDS)]) == 0
    assert labels.max() == 810


def test_synthesis_is_seeded():
    labels = tiny_label_map((24, 24, 24))
    acq = Acquisition("random", 3.0, "coronal")
    a, _ = contrasts.synthesize(labels, tiny_affine(), acq, seed=5)
    b, _ = contrasts.synthesize(labels, tiny_affine(), acq, seed=5)
    c, _ = contrasts.synthesize(labels, tiny_affine(), acq, seed=6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 255


def test_unknown_contrast_is_a_user_error():
    with pytest.raises(HsynexError):
        contrasts.synthesize(tiny_label_map((16, 16, 16)), tiny_affine(), _clean("T7"), seed=0)
    with pytest.raises(HsynexError):
        contrasts.slice_axis(tiny_affine(), "sagittal-ish")


@pytest.mark.parametrize("orientation, world_axis", [("axial", 2), ("coronal", 1)])
@pytest.mark.parametrize("thickness", [3.0, 5.0, 7.0])
def test_thick_slices_keep_world_coordinates(orientation, world_axis, thickness):
    shape = (20, 36, 30)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    world = ijk @ LIA[:3, :3].T + LIA[:3, 3]
    ramp = world[..., world_axis].astype(np.float32)  # image = its own world coordinate
    low, affine = contrasts.acquire_thick_slices(ramp, LIA, thickness, orientation)
    axis = contrasts.slice_axis(LIA, orientation)
    sizes = contrasts.voxel_sizes(affine)
    assert sizes[axis] == pytest.approx(thickness)
    assert np.allclose(np.delete(sizes, axis), 1.0)
    assert low.shape[axis] == int(np.floor((shape[axis] - 1 - (thickness - 1) / 2) / thickness)) + 1
    assert np.allclose(np.delete(low.shape, axis), np.delete(shape, axis))
    # a linear ramp survives the blur away from the edges: each thick voxel holds its own world
    # coordinate, so the low-resolution affine places it where it was sampled
    low_ijk = np.stack(np.meshgrid(*[np.arange(n) for n in low.shape], indexing="ij"), axis=-1)
    low_world = (low_ijk @ affine[:3, :3].T + affine[:3, 3])[..., world_axis]
    inner = [slice(None)] * 3
    inner[axis] = slice(1, -1)
    assert np.allclose(low[tuple(inner)], low_world[tuple(inner)], atol=1e-3)


def test_one_mm_is_unchanged():
    image = np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)
    out, affine = contrasts.acquire_thick_slices(image, LIA, 1.0, "axial")
    assert np.array_equal(out, image) and np.allclose(affine, LIA)


def test_synthesised_head_has_shells_and_thick_grid():
    labels = tiny_label_map((32, 32, 32))
    padded = np.pad(labels, 14)
    image, affine = contrasts.synthesize(padded, LIA, Acquisition("T1", 5.0, "axial"), seed=1)
    axis = contrasts.slice_axis(LIA, "axial")
    assert contrasts.voxel_sizes(affine)[axis] == pytest.approx(5.0)
    shells = contrasts.head_shells(padded, LIA)
    assert (shells == contrasts.TISSUES.index("skull")).any()
    assert (shells[padded > 0] == -1).all()


def test_crop_to_head_keeps_world_coordinates():
    labels = np.pad(tiny_label_map((24, 24, 24)), 30)
    cropped, affine = contrasts.crop_to_head(labels, LIA, margin_mm=4)
    assert cropped.shape < labels.shape
    for label in (14, 801):
        a = np.argwhere(labels == label).mean(axis=0)
        b = np.argwhere(cropped == label).mean(axis=0)
        assert np.allclose(LIA[:3, :3] @ a + LIA[:3, 3], affine[:3, :3] @ b + affine[:3, 3])


@pytest.mark.parametrize("fraction", [0.05, 0.10, 0.15])
def test_shrink_gives_requested_fraction(fraction):
    labels = tiny_label_map((40, 40, 40))
    shrunk = anatomy.shrink_hypothalamus(labels, fraction)
    for ids, vdc in ((LEFT_SUBUNIT_IDS, 28), (RIGHT_SUBUNIT_IDS, 60)):
        before = np.isin(labels, ids).sum()
        after = np.isin(shrunk, ids).sum()
        assert abs((before - after) / before - fraction) < 0.01
        removed = np.isin(labels, ids) & ~np.isin(shrunk, ids)
        assert (shrunk[removed] == vdc).all()
    changed = labels != shrunk
    assert np.isin(labels[changed], SUBUNIT_IDS).all()
    v0 = anatomy.label_volumes(labels)[813]
    assert anatomy.label_volumes(shrunk)[813] == pytest.approx(v0 * (1 - fraction), rel=0.01)


def test_shrink_erodes_away_from_the_ventricle():
    labels = tiny_label_map((40, 40, 40))
    shrunk = anatomy.shrink_hypothalamus(labels, 0.15)
    ventricle = ndimage.binary_dilation(labels == 14)
    touching = ventricle & np.isin(labels, SUBUNIT_IDS)
    assert np.isin(shrunk[touching], SUBUNIT_IDS).all()


def test_shrink_rejects_bad_fraction():
    with pytest.raises(HsynexError):
        anatomy.shrink_hypothalamus(tiny_label_map((16, 16, 16)), 1.2)


def test_deformation_identity_and_small():
    labels = tiny_label_map((32, 32, 32))
    same = anatomy.random_deformation(labels, np.random.default_rng(0), scale_sd=0.0,
                                      elastic_mm=0.0)
    assert np.array_equal(same, labels)
    warped = anatomy.random_deformation(labels, np.random.default_rng(0))
    assert 0 < (warped != labels).mean() < 0.2
    assert set(np.unique(warped)) <= set(np.unique(labels))


def test_dice_cv_auroc_ranksum_on_known_numbers():
    a = np.array([0, 801, 801, 802, 0])
    b = np.array([0, 801, 0, 802, 802])
    assert metrics.dice(a, b, [801]) == pytest.approx(2 * 1 / 3)
    assert metrics.dice(a, b, [802]) == pytest.approx(2 * 1 / 3)
    assert np.isnan(metrics.dice(a, b, [805]))
    table = metrics.dice_table(a, b)
    assert table[813] == pytest.approx(2 * 2 / 6) and table[811] == table[813]
    assert metrics.coefficient_of_variation([1.0, 2.0, 3.0]) == pytest.approx(0.5)
    assert np.isnan(metrics.coefficient_of_variation([1.0]))
    # patients smaller than every control: perfect separation; exact two-sided p for 3 vs 2
    assert metrics.auroc([3, 4, 5], [1, 2]) == 1.0
    assert metrics.ranksum_p([3, 4, 5], [1, 2]) == pytest.approx(0.2)
    assert metrics.auroc([1, 3], [2, 4]) == pytest.approx(0.25)
    assert metrics.auroc([1.0], [1.0]) == 0.5
    with pytest.raises(HsynexError):
        metrics.auroc([], [1.0])
