"""QC overlay figure: written atomically, right orientation, grid checks."""

from __future__ import annotations

import numpy as np
import pytest

from mri_hsynex.errors import HsynexError
from mri_hsynex.io import Volume
from mri_hsynex.qc import _VIEWS, _legend_entries, save_overlay_png
from tests.synthetic import tiny_affine, tiny_label_map

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# LIA (conformed FreeSurfer) version of a RAS array: voxel (i, j, k) -> RAS (-i, k, -j)
LIA = np.array([[-1.0, 0, 0, 16], [0, 0, 1, -16], [0, -1, 0, 16], [0, 0, 0, 1]])


def _ras_pair(shape=(32, 32, 32)):
    labels = tiny_label_map(shape)
    image = np.where(labels > 0, 50.0 + (labels % 7) * 10, 0.0).astype(np.float32)
    affine = tiny_affine()
    return Volume(image, affine), Volume(labels, affine)


def _to_lia(vol: Volume) -> Volume:
    # RAS data (x, y, z) -> LIA voxel axes (-x, -z, y)
    data = np.flip(np.flip(np.transpose(vol.data, (0, 2, 1)), 0), 1)
    return Volume(np.ascontiguousarray(data), LIA)


@pytest.mark.parametrize("orientation", ["ras", "lia"])
def test_png_is_written_and_no_temporary_file_is_left(tmp_path, orientation):
    image, seg = _ras_pair()
    if orientation == "lia":
        image, seg = _to_lia(image), _to_lia(seg)
    out = tmp_path / "qc.png"
    assert save_overlay_png(out, image, seg, title="tiny") == str(out)
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["qc.png"]


def test_png_with_center_and_no_labels(tmp_path):
    image, seg = _ras_pair()
    empty = seg.with_data(np.zeros_like(seg.data))
    save_overlay_png(tmp_path / "a.png", image, empty, center_world=[0.0, 0.0, 0.0],
                     zoom_mm=10)
    save_overlay_png(tmp_path / "b.png", image, seg, lut={801: ((255, 0, 0))})
    assert (tmp_path / "a.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "b.png").read_bytes()[:8] == PNG_MAGIC


def test_grid_mismatch_and_missing_folder_are_errors(tmp_path):
    image, seg = _ras_pair()
    moved = seg.affine.copy()
    moved[0, 3] += 1.0  # same array, grid shifted by 1 mm
    shifted = Volume(seg.data, moved)
    with pytest.raises(HsynexError, match="same grid"):
        save_overlay_png(tmp_path / "x.png", image, shifted)
    with pytest.raises(HsynexError, match="does not exist"):
        save_overlay_png(tmp_path / "no" / "x.png", image, seg)


def test_views_are_radiological():
    """Coronal/axial: screen-left is the subject's right (+x); sagittal: anterior on the left."""
    from matplotlib.figure import Figure

    from mri_hsynex.qc import _default_lut, _draw_view

    image, seg = _ras_pair()
    for view in _VIEWS:
        ax = Figure().add_subplot()
        _draw_view(ax, image.data, seg.data, np.array([16.0, 16.0, 16.0]), np.ones(3), view,
                   10.0, _default_lut())
        left, right = ax.get_xlim()
        assert left > right  # larger R (or A) coordinate drawn on the left
        bottom, top = ax.get_ylim()
        assert top > bottom  # superior (or anterior) up
        marks = [t.get_text() for t in ax.texts]
        assert marks == (["A", "P"] if view[3] == "sagittal" else ["R", "L"])


def test_legend_merges_left_right_partners():
    labels = np.array([0, 801, 806, 803])
    entries = _legend_entries(labels, {801: ("L_a", (1, 2, 3)), 806: ("R_a", (1, 2, 3)),
                                       803: ("L_p", (9, 9, 9)), 805: ("L_x", (5, 5, 5))})
    assert entries == [("801/806 a", (1, 2, 3)), ("803 p", (9, 9, 9))]
