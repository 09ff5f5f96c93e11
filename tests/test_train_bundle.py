"""What travels to a lent GPU machine (``make gpu-bundle``) and the script that trains there
(``models/device_train.sh``), run here on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from synthetic import tiny_affine, tiny_label_map

ROOT = Path(__file__).resolve().parents[1]


def _save(labels, path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(labels.astype(np.int32), tiny_affine()), path)


def test_bundle_copies_only_maps_with_subunits(tmp_path):
    from mri_hsynex.train.bundle import main

    source = tmp_path / "labels"
    source.mkdir()
    labels = tiny_label_map((24, 24, 24))
    _save(labels, source / "sub-a_labels.nii.gz")
    _save(np.where(labels >= 801, 28, labels), source / "whole_brain.nii.gz")  # no 801-810
    (source / "checks.tsv").write_text("not a map\n")
    assert main(["maps", str(source), str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sub-a_labels.nii.gz"]


def test_bundle_refuses_a_folder_without_subunits(tmp_path, capsys):
    from mri_hsynex.train.bundle import main

    source = tmp_path / "labels"
    source.mkdir()
    _save(np.where(tiny_label_map((24, 24, 24)) >= 801, 28, 0), source / "a.nii.gz")
    assert main(["maps", str(source), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("ERROR: no label map with hypothalamic subunits") and "\n" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_device_script_trains_resumes_and_packs_what_comes_back(tmp_path):
    """The script as a lent machine runs it (here with --minutes 0: one step per call): the
    first call starts from INIT, the second resumes; what it leaves in OUT fits the device
    tool's return limits (at most 8 files of at most 16 MiB) and rebuilds the run."""
    from test_train import _config, _write_maps

    from mri_hsynex.cli.train import main as train
    from mri_hsynex.train.bundle import copy_subunit_maps

    maps = _write_maps(tmp_path / "labels")
    cfg_path = _config(tmp_path, "cascade")
    cfg = json.loads(cfg_path.read_text())
    cfg.update(checkpoint_every=1, keep_every=1, validate_every=10, steps=10)
    cfg_path.write_text(json.dumps(cfg))
    init = tmp_path / "init"
    assert train(["--config", str(cfg_path), "--labels", str(maps), "--o", str(tmp_path / "r0"),
                  "--steps", "1", "--no-progress", "--export", str(init)]) == 0
    copy_subunit_maps(maps, tmp_path / "bundle" / "labels")
    run, out = tmp_path / "run", tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "BUNDLE": str(tmp_path / "bundle"),
           "RUN": str(run), "CONFIG": str(cfg_path), "INIT": str(init), "MINUTES": "0",
           "OUT": str(out)}
    for call in (1, 2):
        for old in out.glob("*") if out.exists() else []:
            old.unlink()
        out.mkdir(exist_ok=True)
        proc = subprocess.run(["bash", str(ROOT / "models" / "device_train.sh")], cwd=ROOT,
                              env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads((out / "state.json").read_text())["step"] == call
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all((out / f).stat().st_size <= 16 * 2**20 for f in files)
    assert {"state.json", "logs.tar.gz", "models_best.tar", "models_mean.tar"} <= set(files)
    parts = sorted(out.glob("last.keras.part-*"))
    assert b"".join(p.read_bytes() for p in parts) == (run / "last.keras").read_bytes()
    for name in ("models_best.tar", "models_mean.tar"):
        with tarfile.open(out / name) as tar:
            assert {"stage1.keras", "stage2.keras", "model.json"} <= set(tar.getnames())
            settings = json.load(tar.extractfile("model.json"))
        shipped = json.loads((ROOT / "models" / "model.json").read_text())
        assert settings["partial_volume"] == shipped["partial_volume"]  # shipped settings kept
        assert settings["networks"]["stage2"]["trained_steps"] == 2
        assert "localiser" in settings["networks"]
