"""The T1-only teacher: network rebuild, weight loading, preprocessing, predict, CLI."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from mri_hsynex.errors import HsynexError
from mri_hsynex.io import Volume
from mri_hsynex.labels import SUBUNIT_IDS
from mri_hsynex.teacher.network import (
    N_PARAMETERS,
    build_teacher_network,
    load_teacher_weights,
    read_weight_arrays,
    save_teacher_weights,
)
from mri_hsynex.teacher.predict import (
    Teacher,
    crop_shape,
    largest_component_per_hemisphere,
    normalise_intensities,
    tile_plan,
)

LIA = np.array([[-1.0, 0, 0, 128], [0, 0, 1, -128], [0, -1, 0, 128], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """A teacher weights file (Keras-2 layout) holding random weights."""
    path = tmp_path_factory.mktemp("teacher") / "random_teacher.h5"
    save_teacher_weights(build_teacher_network(), path)
    return path


def _t1_like(shape=(24, 20, 28), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    head = (x**2 + y**2 + z**2 < 0.8).astype(np.float32)
    return (100 * head + 5 * rng.standard_normal(shape)).astype(np.float32)


def test_network_has_the_published_parameter_count():
    assert build_teacher_network().count_params() == N_PARAMETERS


@pytest.mark.realdata
def test_real_weights_load_with_no_missing_or_unused_arrays(shared_data):
    path = shared_data / "teacher" / "hypothalamus_seg_model.h5"
    model = build_teacher_network()
    assert load_teacher_weights(model, path) == N_PARAMETERS
    arrays = read_weight_arrays(path)
    kernel = model.get_layer("unet_conv_uparm_3_0").weights[0]
    assert np.array_equal(np.asarray(kernel.numpy()), arrays["unet_conv_uparm_3_0/kernel"])


def test_weights_round_trip(random_weights):
    model = build_teacher_network()
    assert load_teacher_weights(model, random_weights) == N_PARAMETERS


def _edit_copy(src, dst, drop: str | None = None, extra: bool = False):
    with h5py.File(src, "r") as a, h5py.File(dst, "w") as b:
        for key, value in a.attrs.items():
            b.attrs[key] = value
        for layer in a:
            a.copy(a[layer], b, name=layer)
        if drop:
            names = [n for n in b[drop].attrs["weight_names"] if not n.endswith(b"bias:0")]
            b[drop].attrs["weight_names"] = np.array(names)
        if extra:
            group = b.create_group("surplus")
            group.attrs["weight_names"] = np.array([b"surplus/kernel:0"])
            group.create_dataset("surplus/kernel:0", data=np.zeros(3, np.float32))


def test_missing_and_unused_arrays_are_errors_naming_the_file(random_weights, tmp_path):
    missing, unused = tmp_path / "missing.h5", tmp_path / "unused.h5"
    _edit_copy(random_weights, missing, drop="unet_likelihood")
    _edit_copy(random_weights, unused, extra=True)
    with pytest.raises(HsynexError, match="missing arrays.*unet_likelihood/bias") as err:
        load_teacher_weights(build_teacher_network(), missing)
    assert err.value.path == str(missing)
    with pytest.raises(HsynexError, match="unused arrays.*surplus/kernel"):
        load_teacher_weights(build_teacher_network(), unused)
    with pytest.raises(HsynexError, match="not found"):
        load_teacher_weights(build_teacher_network(), tmp_path / "nope.h5")
    (tmp_path / "bad.h5").write_text("not hdf5")
    with pytest.raises(HsynexError, match="cannot read"):
        load_teacher_weights(build_teacher_network(), tmp_path / "bad.h5")


def test_crop_shape_is_a_multiple_of_8():
    assert crop_shape((256, 256, 170), None) == (256, 256, 168)
    assert crop_shape((256, 256, 256), 160) == (160, 160, 160)
    assert crop_shape((20, 20, 20), 20) == (16, 16, 16)
    assert crop_shape((5, 30, 30), None) == (8, 24, 24)
    with pytest.raises(HsynexError):
        crop_shape((64, 64, 64), 4)


def test_normalisation_maps_percentiles_to_0_and_1():
    data = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    out = normalise_intensities(data)
    assert out.min() == 0.0 and out.max() == 1.0 and out.dtype == np.float32
    assert np.isclose(out[5, 0, 0], (500 - 4.995) / (994.005 - 4.995), atol=1e-4)
    assert not normalise_intensities(np.ones((4, 4, 4))).any()
    # percentiles of a reference block (the validation's teacher: a 160^3 block, network on 96^3)
    inner = normalise_intensities(data[3:7, 3:7, 3:7], reference=data)
    np.testing.assert_allclose(inner, out[3:7, 3:7, 3:7])


def test_largest_component_per_hemisphere():
    seg = np.zeros((12, 12, 12), np.int32)
    seg[1:4, 1:4, 1:4] = 801  # left, big
    seg[8, 8, 8] = 802  # left, small island: removed
    seg[1:3, 8:10, 1:3] = 806  # right, only component: kept
    removed = largest_component_per_hemisphere(seg)
    assert removed.sum() == 1 and removed[8, 8, 8]


def test_tile_plan_covers_the_axis_with_aligned_tiles():
    for size in (200, 256, 264, 512):
        plan = tile_plan(size, 192, 32)
        kept = np.concatenate([np.arange(k0, k1) for _, k0, k1 in plan])
        assert np.array_equal(kept, np.arange(size))
        for start, k0, k1 in plan:
            assert start % 8 == 0 and 0 <= start and start + 192 <= size
            # kept voxels are >= 32 from a tile edge unless that edge is the block's own edge
            assert k0 - start >= 32 or start == 0
            assert start + 192 - k1 >= 32 or start + 192 == size
    assert tile_plan(100, 192) == [(0, 0, 100)]
    with pytest.raises(ValueError):
        tile_plan(256, 64, 32)


@pytest.mark.backend
def test_tiled_inference_equals_whole_block(random_weights):
    teacher = Teacher(random_weights, max_tile=96)
    data = np.random.default_rng(0).random((128, 16, 16)).astype(np.float32)
    tiled = teacher.network_posteriors(data)  # 4 tiles along x
    whole = teacher._run(data)
    assert np.abs(tiled - whole).max() < 1e-5


@pytest.mark.backend
@pytest.mark.parametrize("voxel_mm", [1.0, 1.6])
def test_predict_returns_labels_on_the_input_grid(random_weights, voxel_mm):
    affine = LIA.copy()
    affine[:3, :3] *= voxel_mm
    vol = Volume(_t1_like(), affine)
    seg, post = Teacher(random_weights).predict(vol, crop=16)
    assert seg.data.shape == vol.shape and seg.data.dtype == np.int32
    assert np.array_equal(seg.affine, vol.affine)
    assert set(np.unique(seg.data)) <= {0, *SUBUNIT_IDS}
    assert post.data.shape == vol.shape + (11,) and post.data.dtype == np.float32
    assert np.allclose(post.data.sum(-1), 1.0, atol=1e-4)
    assert np.array_equal(np.array([0, *SUBUNIT_IDS])[post.data.argmax(-1)], seg.data)
    seg_only, none = Teacher(random_weights).predict(vol, posteriors=False,
                                                     center_world=[128, -128, 128])
    assert none is None and seg_only.data.shape == vol.shape


def test_teacher_needs_weights():
    with pytest.raises(HsynexError, match="weights"):
        Teacher(None)


# --- command line ------------------------------------------------------------------------------
def _write_t1(tmp_path):
    import nibabel as nib

    path = tmp_path / "t1.nii.gz"
    nib.save(nib.Nifti1Image(_t1_like(), LIA), str(path))
    return path


def test_cli_no_arguments_prints_help_and_exits_1(capsys):
    from mri_hsynex.cli.teacher import main

    assert main([]) == 1
    assert "--weights" in capsys.readouterr().out


def test_cli_missing_weights_is_a_clear_error(tmp_path, capsys):
    from mri_hsynex.cli.teacher import main

    t1 = _write_t1(tmp_path)
    assert main(["--i", str(t1), "--o", str(tmp_path / "seg.nii.gz")]) == 1
    assert "ERROR: the teacher needs its weights file" in capsys.readouterr().err
    assert main(["--i", str(t1), "--o", str(tmp_path / "seg.nii.gz"),
                 "--weights", str(tmp_path / "none.h5")]) == 1
    assert "ERROR: teacher weights file not found" in capsys.readouterr().err


def test_cli_missing_input_is_an_error(tmp_path, random_weights, capsys):
    from mri_hsynex.cli.teacher import main

    missing = tmp_path / "absent.mgz"
    assert main(["--i", str(missing), "--o", str(tmp_path / "seg.mgz"),
                 "--weights", str(random_weights)]) == 1
    assert f"ERROR: file not found: {missing}" in capsys.readouterr().err
    assert not (tmp_path / "seg.mgz").exists()


@pytest.mark.backend
def test_cli_writes_seg_posteriors_and_qc(tmp_path, random_weights):
    from mri_hsynex.cli.teacher import main
    from mri_hsynex.io import load_volume

    t1 = _write_t1(tmp_path)
    seg_path, post_path, qc = tmp_path / "seg.mgz", tmp_path / "post.nii.gz", tmp_path / "q.png"
    assert main(["--i", str(t1), "--o", str(seg_path), "--post", str(post_path),
                 "--weights", str(random_weights), "--qc", str(qc), "--threads", "1"]) == 0
    seg = load_volume(seg_path, kind="labels")
    post = load_volume(post_path, kind="posteriors")
    assert seg.shape == (24, 20, 28) and np.allclose(seg.affine, LIA)
    assert post.data.shape == (24, 20, 28, 11)
    assert qc.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
