"""train.export.mix_networks: a model folder whose networks are a weighted mean of others'."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers_models import write_tiny_models

from mri_hsynex.errors import HsynexError
from mri_hsynex.train.export import main, mix_networks


def _weights(folder, name):
    import keras

    net = keras.saving.load_model(folder / name, compile=False, safe_mode=True)
    return [np.asarray(w) for w in net.get_weights()]


@pytest.fixture
def two_folders(tmp_path):
    a = write_tiny_models(tmp_path / "a", seed=0)
    b = write_tiny_models(tmp_path / "b", seed=1)
    shutil.copy(a / "localiser.keras", b / "localiser.keras")  # one network the same in both
    return a, b


def test_mix_is_the_weighted_mean(tmp_path, two_folders):
    a, b = two_folders
    out = tmp_path / "mix"
    written = mix_networks([a, b], [3, 1], out)
    assert sorted(p.name for p in written) == ["localiser.keras", "stage1.keras", "stage2.keras"]
    for name in ("stage1.keras", "stage2.keras"):
        wa, wb, mixed = _weights(a, name), _weights(b, name), _weights(out, name)
        assert any(np.any(x != y) for x, y in zip(wa, wb))
        for x, y, m in zip(wa, wb, mixed):
            np.testing.assert_allclose(m, 0.75 * x + 0.25 * y, rtol=1e-5, atol=1e-6)
    # the network both folders share is copied as it is
    assert (out / "localiser.keras").read_bytes() == (a / "localiser.keras").read_bytes()
    settings = json.loads((out / "model.json").read_text())
    assert settings["networks"]["stage1"]["checkpoint"] == f"weight mix: 3 x {a} + 1 x {b}"
    assert "checkpoint" not in settings["networks"]["localiser"]
    assert not list(tmp_path.glob(".tmp-*"))
    # an existing folder is never written into
    with pytest.raises(HsynexError, match="exists already"):
        mix_networks([a, b], [1, 1], out)
    with pytest.raises(HsynexError, match="exists already"):
        mix_networks([a, b], [1, 1], a)


def test_bad_mixes_are_user_errors(tmp_path, two_folders):
    a, b = two_folders
    with pytest.raises(HsynexError, match="one weight each"):
        mix_networks([a, b], [1.0], tmp_path / "out")
    with pytest.raises(HsynexError, match="non-negative weight"):
        mix_networks([a, b], [1.0, -1.0], tmp_path / "out")
    (b / "stage2.keras").unlink()
    with pytest.raises(HsynexError, match="network file not found"):
        mix_networks([a, b], [1.0, 1.0], tmp_path / "out")
    with pytest.raises(HsynexError, match="not a model folder"):
        mix_networks([tmp_path, a], [1.0, 1.0], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # no partial output


def test_command(tmp_path, two_folders, capsys):
    a, b = two_folders
    assert main(["mix", str(tmp_path / "m"), f"{a}:0.5", f"{b}:0.5"]) == 0
    assert (tmp_path / "m" / "stage2.keras").is_file()
    assert main(["mix", str(tmp_path / "n"), str(a), str(b)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ERROR: ") and "DIR:WEIGHT" in err[0]
    assert main([]) == 2
