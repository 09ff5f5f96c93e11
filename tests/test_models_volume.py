"""Issue 13's model pieces: the "product" cascade (one owner of the volume) and the
volume-aware losses."""

from __future__ import annotations

import numpy as np
import pytest

from mri_hsynex.models.unet import UNetConfig

pytestmark = pytest.mark.backend

S1 = UNetConfig(name="stage1", levels=2, features=2, outputs=2, regression_outputs=1)
S2 = UNetConfig(name="stage2", input_channels=2, levels=2, features=2, outputs=11)


def _np(x):
    from keras import ops

    return np.asarray(ops.convert_to_numpy(x))


def test_subunit_product_adds_up_to_stage1():
    from mri_hsynex.models.layers import subunit_product

    rng = np.random.default_rng(0)
    p = rng.uniform(size=(2, 4, 4, 4, 1)).astype("float32")
    s2 = rng.dirichlet(np.ones(11), size=(2, 4, 4, 4)).astype("float32")
    out = _np(subunit_product(p, s2))
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out[..., 1:].sum(-1), p[..., 0], atol=1e-5)
    # stage 2's background channel does not matter, only its split of the subunits
    s2b = s2.copy()
    s2b[..., 0] *= 5
    np.testing.assert_allclose(_np(subunit_product(p, s2b)), out, atol=1e-5)


@pytest.mark.parametrize("mode", ["independent", "product"])
def test_cascade_modes_train_and_run_alike(mode):
    from mri_hsynex.models.cascade import STAGE1_POSTERIOR, build_cascade_for_training, run_cascade

    model = build_cascade_for_training(S1, S2, mode)
    x = np.random.rand(2, 8, 8, 8, 1).astype("float32")
    out = model.predict_on_batch(x)
    o1, o2 = run_cascade(model.get_layer("stage1"), model.get_layer("stage2"), x, mode)
    np.testing.assert_allclose(o2, np.asarray(out["stage2"]), atol=1e-5)
    if mode == "product":
        np.testing.assert_allclose(o2[..., 1:].sum(-1), o1[..., STAGE1_POSTERIOR], atol=1e-5)
    with pytest.raises(ValueError):
        run_cascade(model.get_layer("stage1"), model.get_layer("stage2"), x, "sum")


def test_volume_losses():
    from keras import ops

    from mri_hsynex.models.losses import VolumeAwareLoss, pair_volume_error, soft_volume_error

    rng = np.random.default_rng(1)
    soft = rng.dirichlet(np.ones(2), size=(2, 6, 6, 6)).astype("float32")  # soft targets
    assert _np(soft_volume_error(soft, soft)) == pytest.approx([0, 0], abs=1e-6)
    # predicting 10 % more foreground everywhere: relative error 0.1 x V / (V + min_volume)
    more = soft.copy()
    more[..., 1] *= 1.1
    v = soft[..., 1].sum(axis=(1, 2, 3))
    np.testing.assert_allclose(_np(soft_volume_error(soft, more, 0.0)), 0.1, rtol=1e-4)
    np.testing.assert_allclose(_np(soft_volume_error(soft, more, 50.0)), 0.1 * v / (v + 50),
                               rtol=1e-4)
    # pairs: the same error in both samples leaves their difference right
    np.testing.assert_allclose(_np(pair_volume_error(soft, more * 0 + soft)), 0.0, atol=1e-6)
    shifted = soft.copy()
    shifted[0, ..., 1] *= 1.2  # only the first sample over-measured
    err = _np(pair_volume_error(soft, shifted, 0.0))
    assert err[0] == err[1] == pytest.approx(0.2 * v[0] / v.mean(), rel=1e-4)
    dist = rng.uniform(-8, 8, (2, 6, 6, 6, 1)).astype("float32")
    y_true = np.concatenate([soft, dist], -1)
    y_pred = np.concatenate([soft, dist / 8.0], -1)
    loss = VolumeAwareLoss(2, ce_weight=1.0, volume_weight=1.0, pair_weight=1.0,
                           distance_weight=1.0, distance_max_mm=8.0)
    base = float(ops.convert_to_numpy(loss(y_true, y_pred)))
    worse = y_pred.copy()
    worse[..., 1] = np.clip(worse[..., 1] * 1.3, 0, 1)
    worse[..., 0] = 1 - worse[..., 1]
    assert float(ops.convert_to_numpy(loss(y_true, worse))) > base
    config = loss.get_config()
    assert VolumeAwareLoss.from_config(config).get_config() == config


def test_whole_only_samples_train_the_whole_structure_only():
    from keras import ops

    from mri_hsynex.models.losses import VolumeAwareLoss, merge_foreground

    rng = np.random.default_rng(2)
    truth = rng.dirichlet(np.ones(3), size=(2, 6, 6, 6)).astype("float32")
    swapped = truth[..., [0, 2, 1]]  # same foreground, the two subunits exchanged
    np.testing.assert_allclose(_np(merge_foreground(truth)), _np(merge_foreground(swapped)))
    loss = VolumeAwareLoss(3, ce_weight=1.0, volume_weight=1.0, whole_only_flag=True)
    flags = np.zeros((2, 6, 6, 6, 1), "float32")
    flags[1] = 1.0  # the second sample trains the whole structure only
    y_true = np.concatenate([truth, flags], -1)
    on_truth = _np(loss.call(ops.convert_to_tensor(y_true), ops.convert_to_tensor(truth)))
    on_swapped = _np(loss.call(ops.convert_to_tensor(y_true), ops.convert_to_tensor(swapped)))
    assert on_swapped[0] > on_truth[0] + 0.1  # a subunit sample sees the swap
    assert on_swapped[1] == pytest.approx(on_truth[1], abs=1e-5)  # a whole-only one does not
    # an unflagged batch: the same loss as without the flag channel
    plain = VolumeAwareLoss(3, ce_weight=1.0, volume_weight=1.0)
    unflagged = np.concatenate([truth, np.zeros_like(flags)], -1)
    np.testing.assert_allclose(_np(loss.call(ops.convert_to_tensor(unflagged),
                                             ops.convert_to_tensor(swapped))),
                               _np(plain.call(ops.convert_to_tensor(truth),
                                              ops.convert_to_tensor(swapped))), rtol=1e-5)
    config = loss.get_config()
    assert config["whole_only_flag"] is True
    assert VolumeAwareLoss.from_config(config).get_config() == config


@pytest.mark.parametrize("mode", [None, "product"])
def test_segmenter_honours_the_cascade_mode_of_model_json(tmp_path, mode):
    import json

    from helpers_models import write_tiny_models

    from mri_hsynex.predict.pipeline import Segmenter

    folder = write_tiny_models(tmp_path / "models")
    if mode is not None:
        settings = json.loads((folder / "model.json").read_text())
        settings["cascade_mode"] = mode
        (folder / "model.json").write_text(json.dumps(settings))
    segmenter = Segmenter(folder)
    crop = np.random.default_rng(0).uniform(size=(16, 16, 16)).astype("float32")
    whole, posteriors = segmenter._run_cascade_tta(crop)
    added_up = np.allclose(posteriors[..., 1:].sum(-1), whole, atol=1e-4)
    assert added_up == (mode == "product")  # the shipped ("independent") way: stage 2's own
