"""Issue 13's training options end to end on a tiny label map: supersampled generator with
resizing, "product" cascade, volume-aware losses, same-seed pairs, bfloat16 networks, paired
sensitivity in validation; export writes the cascade mode that inference then uses."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from synthetic import tiny_affine, tiny_label_map

pytestmark = [pytest.mark.slow, pytest.mark.backend]

TINY_UNET = {"levels": 2, "features": 2}


@pytest.mark.parametrize("network", ["cascade", "stage1"])
def test_volume_training_options_and_export(tmp_path, network):
    import keras
    import nibabel as nib

    from mri_hsynex.cli.train import main
    from mri_hsynex.models.cascade import run_cascade

    maps = tmp_path / "labels"
    maps.mkdir()
    for name in ("sub-a", "sub-b"):
        nib.save(nib.Nifti1Image(tiny_label_map((40, 40, 40)), tiny_affine()),
                 maps / f"{name}_labels.nii.gz")
    cfg = {"network": network, "steps": 2, "checkpoint_every": 2, "validate_every": 2,
           "n_validation": 1, "holdout": ["sub-b"], "learning_rate": 0.001,
           "cascade_mode": "product", "stage1_ce_weight": 1.0, "volume_weight": 1.0,
           "pair_weight": 1.0, "mixed_precision": True, "sensitivity_pairs": 1,
           "stage1": {"name": "stage1", "outputs": 2, "regression_outputs": 1, **TINY_UNET},
           "stage2": {"name": "stage2", "input_channels": 2, "outputs": 11, **TINY_UNET},
           "generator": {"output_shape": [16, 16, 16], "crop_jitter_mm": 2.0,
                         "target": "stage2", "distance_max_mm": 4.0, "supersample": 2,
                         "resize_prob": 1.0, "neighbour_prob": 0.5, "rician_std_max": 0.03,
                         "noise_std_max": 0.0}}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    run, models = tmp_path / "run", tmp_path / "models"
    if network == "stage1":  # exported into a folder that already has a stage 2
        from helpers_models import write_tiny_models

        write_tiny_models(models)
    assert main(["--config", str(path), "--labels", str(maps), "--o", str(run),
                 "--no-progress", "--export", str(models)]) == 0
    rows = list(csv.DictReader(open(run / "train_log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    validation = list(csv.DictReader(open(run / "validation.csv")))
    assert f"sens_ventricle_{'cascade' if network == 'cascade' else 'stage1'}_soft" \
        in validation[0]
    assert keras.config.dtype_policy().name == "float32"  # bf16 only inside the networks
    settings = json.loads((models / "model.json").read_text())
    assert settings["cascade_mode"] == "product"
    s1 = keras.saving.load_model(models / "stage1.keras", compile=False, safe_mode=True)
    s2 = keras.saving.load_model(models / "stage2.keras", compile=False, safe_mode=True)
    x = np.random.rand(1, 16, 16, 16, 1).astype("float32")
    o1, o2 = run_cascade(s1, s2, x, settings["cascade_mode"])
    np.testing.assert_allclose(o2[..., 1:].sum(-1), o1[..., 1], atol=1e-4)
