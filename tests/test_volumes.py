"""mri_hsynex.volumes: soft volumes (posterior sums x voxel volume), groupings, CSV round trip."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mri_hsynex.errors import HsynexError
from mri_hsynex.labels import (
    ALL_OUTPUT_ROWS,
    GROUPINGS,
    LEFT_SUBUNIT_IDS,
    RIGHT_SUBUNIT_IDS,
    SUBUNIT_IDS,
    VOLUME_COLUMNS,
    WHOLE,
    WHOLE_LEFT,
    WHOLE_RIGHT,
)
from mri_hsynex.volumes import (
    read_volumes_csv,
    stats_rows,
    structure_volumes,
    volumes_csv_row,
    write_volumes_csv,
)


def random_outputs(seed: int = 0, shape=(10, 11, 12)) -> tuple[np.ndarray, np.ndarray]:
    """Random softmax-like posteriors (11 channels) and their argmax segmentation (label ids)."""
    rng = np.random.default_rng(seed)
    post = rng.random(shape + (11,)) ** 4
    post /= post.sum(axis=-1, keepdims=True)
    labels = np.array((0,) + SUBUNIT_IDS, np.int32)
    return labels[np.argmax(post, axis=-1)], post.astype(np.float32)


def test_soft_volumes_are_posterior_sums_times_voxel_volume():
    seg, post = random_outputs()
    voxel_mm3 = 0.7 * 0.8 * 1.5
    volumes = structure_volumes(seg, post, voxel_mm3)
    assert sorted(volumes) == list(range(801, 814))
    for k, label in enumerate(SUBUNIT_IDS, start=1):
        nvoxels, volume = volumes[label]
        assert nvoxels == int(np.sum(seg == label))
        assert isinstance(nvoxels, int)
        assert volume == pytest.approx(float(post[..., k].sum(dtype=np.float64)) * voxel_mm3,
                                       rel=1e-9)


def test_channel_k_is_label_800_plus_k():
    seg = np.zeros((4, 4, 4), np.int32)
    post = np.zeros((4, 4, 4, 11), np.float32)
    post[..., 0] = 1.0
    post[0, 0, 0] = 0.0
    post[0, 0, 0, 3] = 1.0  # one voxel of channel 3 -> label 803
    post[1, 1, 1] = 0.0
    post[1, 1, 1, 8] = 0.5  # half a voxel of channel 8 -> label 808
    post[1, 1, 1, 0] = 0.5
    volumes = structure_volumes(seg, post, 2.0)
    assert volumes[803] == (0, 2.0)
    assert volumes[808] == (0, 1.0)
    assert all(volumes[i][1] == 0 for i in SUBUNIT_IDS if i not in (803, 808))
    assert volumes[WHOLE.id] == (0, 3.0)


def test_no_structure_has_a_negative_volume():
    """Partial-volume-corrected channels may dip below 0 (pvc.LOWEST_FRACTION) where a subunit
    holds almost nothing: its volume is 0, and the groupings add the subunits as reported."""
    seg = np.zeros((4, 4, 4), np.int32)
    post = np.zeros((4, 4, 4, 11), np.float32)
    post[..., 0] = 1.0
    post[0, 0, :, 2] = [-0.1, -0.1, 0.05, 0.0]  # 802 sums to -0.15 voxels
    post[1, 1, 1, 7] = 0.8  # 807
    post[..., 0] = 1.0 - post[..., 1:].sum(axis=-1)
    volumes = structure_volumes(seg, post, 2.0)
    assert volumes[802] == (0, 0.0)
    assert volumes[807][1] == pytest.approx(1.6)
    assert volumes[WHOLE_LEFT.id][1] == 0.0
    assert volumes[WHOLE.id][1] == pytest.approx(1.6)


def test_hard_volumes_without_posteriors():
    seg, _ = random_outputs(1)
    volumes = structure_volumes(seg, None, 1.5)
    for label in SUBUNIT_IDS:
        count = int(np.sum(seg == label))
        assert volumes[label] == (count, count * 1.5)


def test_groupings_are_sums():
    seg, post = random_outputs(2)
    volumes = structure_volumes(seg, post, 1.0)
    for group, members in ((WHOLE_LEFT.id, LEFT_SUBUNIT_IDS), (WHOLE_RIGHT.id, RIGHT_SUBUNIT_IDS),
                           (WHOLE.id, SUBUNIT_IDS)):
        assert GROUPINGS[group] == members
        assert volumes[group][0] == sum(volumes[m][0] for m in members)
        assert volumes[group][1] == pytest.approx(sum(volumes[m][1] for m in members), rel=1e-12)
    assert volumes[WHOLE.id][1] == pytest.approx(volumes[811][1] + volumes[812][1], rel=1e-12)
    assert volumes[WHOLE.id][0] == int(np.sum(seg > 0))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), voxel=st.floats(0.1, 8.0),
       shape=st.tuples(*[st.integers(1, 5)] * 3))
def test_volume_properties(seed, voxel, shape):
    seg, post = random_outputs(seed, shape)
    volumes = structure_volumes(seg, post, voxel)
    # soft whole = everything that is not background, hard whole = the segmented voxels
    assert volumes[WHOLE.id][1] == pytest.approx(
        float((1.0 - post[..., 0].astype(np.float64)).sum()) * voxel, rel=1e-5, abs=1e-6)
    assert volumes[WHOLE.id][0] == int(np.sum(seg != 0))
    assert all(v[1] >= 0 for v in volumes.values())


@pytest.mark.parametrize("shape", [(10, 11, 12, 10), (10, 11, 11, 11), (10, 11, 12)])
def test_posteriors_must_match(shape):
    seg, _ = random_outputs()
    with pytest.raises(ValueError):
        structure_volumes(seg, np.zeros(shape, np.float32), 1.0)


def test_stats_rows_in_lut_order():
    seg, post = random_outputs(3)
    volumes = structure_volumes(seg, post, 1.0)
    rows = stats_rows(volumes)
    assert [r.index for r in rows] == list(range(1, 14))
    assert [(r.seg_id, r.name) for r in rows] == [(x.id, x.name) for x in ALL_OUTPUT_ROWS]
    assert all((r.nvoxels, r.volume_mm3) == volumes[r.seg_id] for r in rows)


# --- CSV ------------------------------------------------------------------------------------------
def test_csv_row_names_and_rounding():
    seg, post = random_outputs(4)
    volumes = structure_volumes(seg, post, 1.0 / 3.0)
    row = volumes_csv_row("sub-01", volumes)
    assert list(row) == ["subject", *VOLUME_COLUMNS]
    assert VOLUME_COLUMNS[:10] == tuple(x.name for x in ALL_OUTPUT_ROWS[:10])
    assert VOLUME_COLUMNS[10:] == ("whole_left", "whole_right", "whole")
    assert row["L_hypothalamus_anterior_inferior"] == round(volumes[801][1], 3)
    assert row["whole"] == round(volumes[813][1], 3)


def test_csv_round_trip(tmp_path):
    rows = [volumes_csv_row(f"sub-{i:02d}", structure_volumes(*random_outputs(i), 1.0))
            for i in range(3)]
    path = tmp_path / "volumes.csv"
    write_volumes_csv(path, rows)
    with open(path, newline="") as f:
        header = next(csv.reader(f))
    assert header == ["subject", *VOLUME_COLUMNS]
    back = read_volumes_csv(path)
    assert back == rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volumes.csv"]


def test_csv_header_only_round_trip(tmp_path):
    path = tmp_path / "empty.csv"
    write_volumes_csv(path, [])
    assert read_volumes_csv(path) == []


def test_csv_errors(tmp_path):
    with pytest.raises(HsynexError) as info:
        read_volumes_csv(tmp_path / "none.csv")
    assert info.value.path == str(tmp_path / "none.csv")
    lacking = tmp_path / "lacking.csv"
    lacking.write_text("subject,whole\nsub-01,12.5\n")
    with pytest.raises(HsynexError) as info:
        read_volumes_csv(lacking)
    assert "whole_left" in info.value.what
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(HsynexError):
        read_volumes_csv(empty)
    bad = tmp_path / "bad.csv"
    row = volumes_csv_row("sub-01", structure_volumes(*random_outputs(), 1.0))
    row["whole"] = "n/a"
    write_volumes_csv(bad, [row])
    with pytest.raises(HsynexError) as info:
        read_volumes_csv(bad)
    assert "line 2" in info.value.what
    with pytest.raises(HsynexError):
        write_volumes_csv(tmp_path / "no" / "volumes.csv", [])
