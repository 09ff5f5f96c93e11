"""``mri_hsynex synth``: files, affines, montage, reproducibility, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from synthetic import tiny_affine, tiny_label_map

from mri_hsynex.cli.synth import main

SMALL = {"output_shape": [16, 16, 16], "output_voxel_mm": 1.5, "crop_jitter_mm": 2.0,
         "distance_maps": False}


@pytest.fixture()
def label_dir(tmp_path):
    import nibabel as nib

    folder = tmp_path / "labels"
    folder.mkdir()
    for name in ("a", "b"):
        nib.save(nib.Nifti1Image(tiny_label_map((32, 32, 32)), tiny_affine()),
                 folder / f"{name}.nii.gz")
    return folder


@pytest.fixture()
def config(tmp_path):
    path = tmp_path / "gen.json"
    path.write_text(json.dumps(SMALL))
    return path


def _run(label_dir, config, out, seed=0, n=3):
    return main(["--labels", str(label_dir), "--n", str(n), "--o", str(out), "--seed", str(seed),
                 "--config", str(config)])


def test_help_without_arguments(capsys):
    assert main([]) == 1
    assert "--labels" in capsys.readouterr().out


@pytest.mark.backend
def test_writes_samples_and_montage(tmp_path, label_dir, config):
    import nibabel as nib

    out = tmp_path / "out"
    assert _run(label_dir, config, out) == 0
    names = sorted(p.name for p in out.iterdir())
    expected = [f"sample_{i:03d}_{k}.nii.gz" for i in range(3) for k in ("image", "labels")]
    assert names == sorted(expected + ["montage.png"])
    image = nib.load(out / "sample_000_image.nii.gz")
    labels = nib.load(out / "sample_000_labels.nii.gz")
    assert image.shape == (16, 16, 16) and image.get_data_dtype() == np.float32
    assert labels.get_data_dtype() == np.int32
    np.testing.assert_allclose(image.affine[:3, :3], np.eye(3) * 1.5)  # RAS, output voxels
    np.testing.assert_array_equal(image.affine, labels.affine)
    data = image.get_fdata()
    assert data.min() >= 0 and data.max() <= 1 and data.std() > 0
    assert set(np.unique(np.asarray(labels.dataobj))) <= set(np.unique(tiny_label_map()))
    assert (out / "montage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.backend
@pytest.mark.slow
def test_same_seed_same_files_other_seed_different(tmp_path, label_dir, config):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        assert _run(label_dir, config, tmp_path / name, seed=seed, n=2) == 0
    for f in (tmp_path / "a").iterdir():
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes(), f.name
    other = (tmp_path / "c" / "sample_000_image.nii.gz").read_bytes()
    assert other != (tmp_path / "a" / "sample_000_image.nii.gz").read_bytes()


def test_errors(tmp_path, label_dir, config, capsys):
    assert main(["--labels", str(tmp_path / "missing"), "--o", str(tmp_path / "o")]) == 1
    assert "ERROR: label map or folder not found" in capsys.readouterr().err
    assert _run(label_dir, config, tmp_path / "o", n=0) == 1
    assert "ERROR: --n must be at least 1" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"target": "stage9"}))
    assert _run(label_dir, bad, tmp_path / "o") == 1
    assert "ERROR: generator config: target must be one of" in capsys.readouterr().err


def test_error_is_one_line_from_the_command_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mri_hsynex", "synth", "--labels",
                           str(tmp_path / "nope"), "--o", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"ERROR: label map or folder not found: {tmp_path / 'nope'}"
