"""Training runs end to end on a tiny label map: steps, validation, checkpoints, resume, export."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from synthetic import tiny_affine, tiny_label_map

pytestmark = [pytest.mark.slow, pytest.mark.backend]

TINY_UNET = {"levels": 2, "features": 2}


def _write_maps(folder):
    import nibabel as nib

    folder.mkdir()
    for name in ("sub-a", "sub-b"):
        labels = tiny_label_map((40, 40, 40))
        nib.save(nib.Nifti1Image(labels, tiny_affine()), folder / f"{name}_labels.nii.gz")
    return folder


def _config(tmp_path, network):
    gen = {"output_shape": [16, 16, 16], "crop_jitter_mm": 2.0}
    cfg = {"network": network, "steps": 4, "checkpoint_every": 2, "validate_every": 2,
           "n_validation": 2, "holdout": ["sub-b"], "learning_rate": 0.001}
    if network == "cascade":
        gen.update(target="stage2", distance_maps=True, distance_max_mm=4.0)
        cfg["stage1"] = {"name": "stage1", "outputs": 2, "regression_outputs": 1, **TINY_UNET}
        cfg["stage2"] = {"name": "stage2", "input_channels": 2, "outputs": 11, **TINY_UNET}
    else:
        gen.update(target="localiser", output_voxel_mm=2.0, distance_maps=False)
        cfg["localiser"] = {"name": "localiser", "outputs": 8, **TINY_UNET}
        cfg["center_labels"] = [28, 60, 14]
    cfg["generator"] = gen
    path = tmp_path / f"{network}.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize("network", ["cascade", "localiser"])
def test_train_resume_and_export(tmp_path, network):
    import keras

    from mri_hsynex.cli.train import main

    maps = _write_maps(tmp_path / "labels")
    cfg = _config(tmp_path, network)
    run = tmp_path / "run"
    assert main(["--config", str(cfg), "--labels", str(maps), "--o", str(run),
                 "--steps", "2", "--no-progress"]) == 0
    # resume in a fresh interpreter: the saved model's classes must register themselves
    proc = subprocess.run([sys.executable, "-m", "mri_hsynex", "train", "--config", str(cfg),
                           "--labels", str(maps), "--o", str(run), "--resume", "--no-progress",
                           "--export", str(tmp_path / "models")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader(open(run / "train_log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]  # resumed at 3, not from scratch
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    assert len(list(csv.DictReader(open(run / "validation.csv")))) == 2
    assert (run / "best.keras").exists() and (run / "last.keras").exists()
    settings = json.loads((tmp_path / "models" / "model.json").read_text())
    names = ["stage1", "stage2"] if network == "cascade" else ["localiser"]
    for name in names:
        net = keras.saving.load_model(tmp_path / "models" / f"{name}.keras", compile=False,
                                      safe_mode=True)
        assert net.count_params() > 0
        assert settings["networks"][name]["trained_steps"] == 4


def test_train_init_from_model_folder(tmp_path):
    from mri_hsynex.cli.train import main

    maps = _write_maps(tmp_path / "labels")
    cfg = _config(tmp_path, "localiser")
    assert main(["--config", str(cfg), "--labels", str(maps), "--o", str(tmp_path / "r1"),
                 "--steps", "2", "--no-progress", "--export", str(tmp_path / "m")]) == 0
    assert main(["--config", str(cfg), "--labels", str(maps), "--o", str(tmp_path / "r2"),
                 "--steps", "1", "--no-progress", "--init", str(tmp_path / "m")]) == 0


def test_train_errors_are_one_line(tmp_path):
    cfg = _config(tmp_path, "cascade")
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([sys.executable, "-m", "mri_hsynex", "train", "--config", str(cfg),
                           "--labels", str(empty), "--o", str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("ERROR: no label maps")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_minutes_stops_at_a_validated_checkpoint_and_resumes(tmp_path, capsys):
    """``--minutes 0``: one step, then the stop step is validated and checkpointed (off the
    config's every-2-steps schedule), and ``--resume`` continues from it."""
    from mri_hsynex.cli.train import main

    maps = _write_maps(tmp_path / "labels")
    cfg = _config(tmp_path, "localiser")
    cfg_dict = json.loads(cfg.read_text())
    cfg_dict.update(checkpoint_every=10, validate_every=10, steps=20)
    cfg.write_text(json.dumps(cfg_dict))
    run = tmp_path / "run"
    assert main(["--config", str(cfg), "--labels", str(maps), "--o", str(run), "--minutes", "0",
                 "--no-progress"]) == 0
    assert "stopped at the --minutes limit, 19 steps short of 20" in capsys.readouterr().out
    assert json.loads((run / "state.json").read_text())["step"] == 1
    assert [int(r["step"]) for r in csv.DictReader(open(run / "validation.csv"))] == [1]
    assert (run / "best.keras").exists() and (run / "last.keras").exists()
    assert main(["--config", str(cfg), "--labels", str(maps), "--o", str(run), "--minutes", "0",
                 "--resume", "--no-progress"]) == 0
    assert [int(r["step"]) for r in csv.DictReader(open(run / "train_log.csv"))] == [1, 2]
    proc = subprocess.run([sys.executable, "-m", "mri_hsynex", "train", "--config", str(cfg),
                           "--labels", str(maps), "--o", str(tmp_path / "r"), "--minutes", "-1"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.startswith("ERROR: --minutes")
    assert not (tmp_path / "r").exists()  # refused before the run folder is made


def test_resume_takes_the_configs_learning_rate(tmp_path):
    import keras

    from mri_hsynex.cli.train import main
    from mri_hsynex.train.config import TrainConfig
    from mri_hsynex.train.trainer import Trainer

    maps = _write_maps(tmp_path / "labels")
    cfg_path = _config(tmp_path, "localiser")
    run = tmp_path / "run"
    assert main(["--config", str(cfg_path), "--labels", str(maps), "--o", str(run),
                 "--steps", "2", "--no-progress"]) == 0
    cfg = json.loads(cfg_path.read_text())
    cfg["learning_rate"] = 0.0002
    cfg_path.write_text(json.dumps(cfg))
    trainer = Trainer(TrainConfig.load(cfg_path), maps, run, resume=True)
    assert trainer.state["step"] == 2
    rate = float(keras.ops.convert_to_numpy(trainer.model.optimizer.learning_rate))
    assert rate == pytest.approx(0.0002)


@pytest.mark.parametrize("step", [0, 7, 500, 123456])
def test_kept_step_inverts_kept_name(step):
    from mri_hsynex.train.config import kept_name, kept_step

    assert kept_step(kept_name(step)) == step
    for other in ("kept/last.keras", "kept/step_12.h5", "kept/step_x1.keras", "best.keras"):
        assert kept_step(other) is None


def test_kept_checkpoints_and_averaged_export(tmp_path):
    """keep_every keeps step copies; --average-from exports the mean of their weights."""
    import keras

    from mri_hsynex.cli.train import main
    from mri_hsynex.train.export import averaged_model, kept_checkpoints

    maps = _write_maps(tmp_path / "labels")
    cfg_path = _config(tmp_path, "localiser")
    cfg = json.loads(cfg_path.read_text())
    cfg["keep_every"] = 2
    cfg_path.write_text(json.dumps(cfg))
    run, out = tmp_path / "run", tmp_path / "models"
    assert main(["--config", str(cfg_path), "--labels", str(maps), "--o", str(run),
                 "--steps", "4", "--no-progress", "--export", str(out),
                 "--average-from", "2"]) == 0
    kept = kept_checkpoints(run, 2)
    assert list(kept) == [2, 4]
    weights = [keras.saving.load_model(p, compile=False).get_weights() for p in kept.values()]
    exported = keras.saving.load_model(out / "localiser.keras", compile=False).get_weights()
    for a, b, mean in zip(*weights, exported):
        np.testing.assert_allclose(mean, (np.asarray(a) + np.asarray(b)) / 2, rtol=1e-5,
                                   atol=1e-6)
    assert np.any([np.any(np.asarray(a) != np.asarray(b)) for a, b in zip(*weights)])
    assert averaged_model([kept[4]]).get_weights()[0].shape == weights[1][0].shape
    settings = json.loads((out / "model.json").read_text())
    assert settings["networks"]["localiser"]["checkpoint"].startswith("mean of 2 kept")
    # without kept checkpoints from that step: one ERROR line, nothing exported
    proc = subprocess.run([sys.executable, "-m", "mri_hsynex", "train", "--config",
                           str(cfg_path), "--labels", str(maps), "--o", str(run), "--resume",
                           "--no-progress", "--export", str(tmp_path / "m2"),
                           "--average-from", "99"], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.strip().startswith("ERROR: no kept checkpoints")
    assert not (tmp_path / "m2" / "localiser.keras").exists()


def test_keep_every_must_fit_the_checkpoints(tmp_path):
    from mri_hsynex.errors import HsynexError
    from mri_hsynex.train.config import TrainConfig

    with pytest.raises(HsynexError, match="keep_every"):
        TrainConfig.from_dict({"checkpoint_every": 50, "keep_every": 75})


def test_pair_fraction_mixes_pairs_with_ordinary_samples():
    """pair_fraction: that share of the steps trains on a same-seed pair, the rest on one
    ordinary sample; 1 (the default) pairs every step, pair_weight 0 none."""
    from mri_hsynex.errors import HsynexError
    from mri_hsynex.train.config import TrainConfig
    from mri_hsynex.train.trainer import Trainer

    def share(**options):
        trainer = object.__new__(Trainer)  # only the step choice, no networks or maps
        trainer.cfg = TrainConfig.from_dict(options)
        trainer._mix_rng = np.random.default_rng(0)
        return np.mean([trainer._pair_step() for _ in range(4000)])

    assert share(pair_weight=5.0) == 1.0
    assert share(pair_weight=0.0, pair_fraction=0.5) == 0.0
    assert share(pair_weight=5.0, pair_fraction=0.3) == pytest.approx(0.3, abs=0.03)
    assert share(pair_weight=5.0, pair_fraction=0.0) == 0.0
    for bad in (-0.1, 1.5):
        with pytest.raises(HsynexError, match="pair_fraction"):
            TrainConfig.from_dict({"pair_fraction": bad})


def test_whole_only_maps_flag_their_samples(tmp_path):
    """``whole_only_maps``: stage 2's target carries a per-sample flag (1 for the named maps'
    samples), the validation truth does not, and the run trains and resumes with it."""
    from mri_hsynex.cli.train import main
    from mri_hsynex.labels import STAGE2_CLASSES
    from mri_hsynex.train.config import TrainConfig
    from mri_hsynex.train.trainer import Trainer

    maps = _write_maps(tmp_path / "labels")
    path = _config(tmp_path, "cascade")
    cfg = json.loads(path.read_text())
    cfg["whole_only_maps"] = ["sub-a"]
    path.write_text(json.dumps(cfg))
    trainer = Trainer(TrainConfig.from_dict(cfg), maps, tmp_path / "run")
    image, target = trainer._batch(trainer.generator, trainer.source)
    stage2 = target["stage2"]
    assert stage2.shape[-1] == len(STAGE2_CLASSES) + 1
    np.testing.assert_array_equal(stage2[..., -1], 1.0)  # sub-a is the only training map
    assert trainer.whole_only(maps / "sub-a_labels.nii.gz")
    assert not trainer.whole_only(maps / "sub-b_labels.nii.gz")
    assert trainer.validation_set()["truth"].max() < len(STAGE2_CLASSES)
    run = tmp_path / "run2"
    args = ["--config", str(path), "--labels", str(maps), "--o", str(run), "--no-progress"]
    assert main([*args, "--steps", "2"]) == 0
    assert main([*args, "--steps", "3", "--resume"]) == 0
    rows = list(csv.DictReader(open(run / "train_log.csv")))
    assert len(rows) == 3 and all(np.isfinite(float(r["loss"])) for r in rows)
