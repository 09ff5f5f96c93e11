"""The shipped networks in models/: they load in safe mode and agree across backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mri_hsynex.constants import LOCALISER_FILE, STAGE1_FILE, STAGE2_FILE

MODELS = Path(__file__).resolve().parents[1] / "models"
FILES = (LOCALISER_FILE, STAGE1_FILE, STAGE2_FILE)

pytestmark = pytest.mark.skipif(not all((MODELS / f).exists() for f in FILES),
                                reason="no trained networks in models/")

PREDICT = r"""
import sys, numpy as np, keras
from mri_hsynex.models.cascade import run_cascade
models, out = sys.argv[1], sys.argv[2]
load = lambda name: keras.saving.load_model(f"{models}/{name}", compile=False, safe_mode=True)
rng = np.random.default_rng(0)
x = rng.random((1, 48, 48, 48, 1), dtype=np.float32)
# a smooth, image-like input: blurred noise, min-max normalised
from scipy.ndimage import gaussian_filter
x[0, ..., 0] = gaussian_filter(x[0, ..., 0], 2)
x = (x - x.min()) / (x.max() - x.min())
o1, o2 = run_cascade(load("stage1.keras"), load("stage2.keras"), x)
loc = keras.ops.convert_to_numpy(load("localiser.keras")(x, training=False))
np.savez(out, stage1=o1, stage2=o2, localiser=loc)
"""


@pytest.mark.slow
def test_tensorflow_and_torch_give_the_same_labels(tmp_path):
    results = {}
    for backend in ("tensorflow", "torch"):
        out = tmp_path / f"{backend}.npz"
        env = dict(os.environ, KERAS_BACKEND=backend)
        proc = subprocess.run([sys.executable, "-c", PREDICT, str(MODELS), str(out)], env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results[backend] = np.load(out)
    for name in ("stage1", "stage2", "localiser"):
        k = 2 if name == "stage1" else None
        a = results["tensorflow"][name][..., :k].argmax(-1)
        b = results["torch"][name][..., :k].argmax(-1)
        agreement = float((a == b).mean())
        assert agreement >= 0.999, f"{name}: {agreement:.5f} of voxels agree"


def test_model_settings_describe_every_network():
    settings = json.loads((MODELS / "model.json").read_text())
    for name in ("localiser", "stage1", "stage2"):
        net = settings["networks"][name]
        assert (MODELS / net["file"]).exists()
        assert net["voxel_mm"] > 0 and net["trained_steps"] > 0


def test_shipped_networks_are_compact():
    total = sum((MODELS / f).stat().st_size for f in FILES)
    assert total <= 20 * 2**20, f"{total / 2**20:.1f} MB"
