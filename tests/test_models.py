"""U-Net builder, cascade wiring and losses."""

from __future__ import annotations

import numpy as np
import pytest

from mri_hsynex.models.unet import UNetConfig

pytestmark = pytest.mark.backend


def test_unet_config_round_trip():
    cfg = UNetConfig(name="x", levels=3, features=4, outputs=3, regression_outputs=1)
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.divisor == 4
    with pytest.raises(ValueError):
        UNetConfig.from_dict({"nope": 1})


@pytest.mark.parametrize("normalisation", ["batch", "instance", "none"])
def test_unet_output_shape_and_softmax(normalisation):
    from mri_hsynex.models.unet import build_unet

    net = build_unet(UNetConfig(levels=2, features=2, outputs=3, regression_outputs=1,
                                normalisation=normalisation))
    out = np.asarray(net.predict_on_batch(np.random.rand(1, 8, 12, 16, 1).astype("float32")))
    assert out.shape == (1, 8, 12, 16, 4)
    np.testing.assert_allclose(out[..., :3].sum(-1), 1.0, atol=1e-5)
    assert np.all(np.abs(out[..., 3]) <= 1.0)


def test_saved_networks_load_in_safe_mode(tmp_path):
    import keras

    from mri_hsynex.models.unet import build_unet

    net = build_unet(UNetConfig(levels=2, features=2, outputs=2))
    x = np.random.rand(1, 8, 8, 8, 1).astype("float32")
    net.save(tmp_path / "n.keras")
    again = keras.saving.load_model(tmp_path / "n.keras", compile=False, safe_mode=True)
    np.testing.assert_allclose(np.asarray(again.predict_on_batch(x)),
                               np.asarray(net.predict_on_batch(x)), atol=1e-6)


def test_cascade_feeds_stage1_posterior_to_stage2():
    from mri_hsynex.models.cascade import build_cascade_for_training, run_cascade

    s1 = UNetConfig(name="stage1", levels=2, features=2, outputs=2, regression_outputs=1)
    s2 = UNetConfig(name="stage2", input_channels=2, levels=2, features=2, outputs=11)
    model = build_cascade_for_training(s1, s2)
    x = np.random.rand(1, 8, 8, 8, 1).astype("float32")
    out = model.predict_on_batch(x)
    assert np.asarray(out["stage1"]).shape == (1, 8, 8, 8, 3)
    assert np.asarray(out["stage2"]).shape == (1, 8, 8, 8, 11)
    o1, o2 = run_cascade(model.get_layer("stage1"), model.get_layer("stage2"), x)
    np.testing.assert_allclose(o2, np.asarray(out["stage2"]), atol=1e-5)


def test_losses_zero_for_perfect_prediction_and_positive_otherwise():
    from keras import ops

    from mri_hsynex.models.losses import DiceCrossEntropy, DiceDistance

    labels = np.random.randint(0, 3, (1, 6, 6, 6))
    onehot = np.eye(3, dtype="float32")[labels]
    perfect = float(ops.convert_to_numpy(DiceCrossEntropy()(onehot, onehot)))
    assert perfect == pytest.approx(0.0, abs=1e-3)
    wrong = np.roll(onehot, 1, axis=-1)
    assert float(ops.convert_to_numpy(DiceCrossEntropy()(onehot, wrong))) > 1.0
    dist = np.random.uniform(-8, 8, (1, 6, 6, 6, 1)).astype("float32")
    y_true = np.concatenate([onehot[..., :2], dist], -1)
    y_pred = np.concatenate([onehot[..., :2], dist / 8.0], -1)
    loss = DiceDistance(2, distance_max_mm=8.0)
    assert float(ops.convert_to_numpy(loss(y_true, y_pred))) == pytest.approx(0.0, abs=1e-3)
    y_pred[..., 2] = 0.0
    assert float(ops.convert_to_numpy(loss(y_true, y_pred))) > 0.1


def test_dice_per_class():
    from mri_hsynex.models.losses import dice_per_class

    a = np.array([0, 1, 1, 2])
    d = dice_per_class(a, np.array([0, 1, 2, 2]), 4)
    assert d[0] == 1.0 and d[1] == pytest.approx(2 / 3) and np.isnan(d[3])
