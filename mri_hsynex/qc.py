"""Quality-control figure: three zoomed orthogonal slices through the hypothalamus with labels.

Headless (matplotlib's Agg canvas, no pyplot state). Views follow the radiological convention:
the subject's right is on the left of the screen in the coronal and axial views (marked "R" and
"L"); the sagittal view has anterior on the left ("A", "P"). Superior is up.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from .errors import HsynexError
from .labels import LEFT_SUBUNIT_IDS, SUBUNIT_IDS, SUBUNITS

ALPHA = 0.5  # opacity of the label overlay


def _default_lut() -> dict[int, tuple[str, tuple[int, int, int]]]:
    return {s.id: (s.name, s.rgb) for s in SUBUNITS}


def _as_lut(lut) -> dict[int, tuple[str, tuple[int, int, int]]]:
    """Accept None (the subunits), ``{id: (name, rgb)}``, ``{id: rgb}`` or a sequence of Labels."""
    if lut is None:
        return _default_lut()
    if isinstance(lut, Mapping):
        out = {}
        for key, value in lut.items():
            if len(value) == 2 and isinstance(value[0], str):
                out[int(key)] = (value[0], tuple(int(c) for c in value[1]))
            else:
                out[int(key)] = (str(key), tuple(int(c) for c in value))
        return out
    return {int(row.id): (row.name, tuple(row.rgb)) for row in lut}


def _robust_window(values: np.ndarray) -> tuple[float, float]:
    """Grey-level window: 2nd percentile of the non-zero displayed voxels (the background of a
    skull-stripped or defaced image is zero) to the 99.5th percentile of all of them."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    nonzero = values[values != 0]
    lo = np.percentile(nonzero, 2.0) if nonzero.size else 0.0
    hi = np.percentile(values, 99.5)
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def _overlay_rgba(labels: np.ndarray, lut: dict) -> np.ndarray:
    rgba = np.zeros(labels.shape + (4,), np.float32)
    for label_id, (_, rgb) in lut.items():
        mask = labels == label_id
        if mask.any():
            rgba[mask, :3] = np.asarray(rgb, np.float32) / 255.0
            rgba[mask, 3] = ALPHA
    return rgba


def _centre_voxel(seg_ras, center_world) -> np.ndarray:
    """Voxel (float, RAS grid) at which to cut: ``center_world`` (mm, RAS), else the centroid of
    the subunit labels, else the middle of the volume."""
    inv = np.linalg.inv(seg_ras.affine)
    if center_world is not None:
        world = np.asarray(center_world, np.float64).reshape(3)
        return inv[:3, :3] @ world + inv[:3, 3]
    mask = np.isin(np.asarray(seg_ras.data), SUBUNIT_IDS)
    if mask.any():
        return np.argwhere(mask).mean(axis=0)
    return (np.asarray(seg_ras.data.shape[:3], np.float64) - 1) / 2


# (fixed axis, horizontal axis, vertical axis, name, left marker, right marker, flip horizontal)
_VIEWS = (
    (1, 0, 2, "coronal", "R", "L", True),
    (2, 0, 1, "axial", "R", "L", True),
    (0, 1, 2, "sagittal", "A", "P", True),
)


def _draw_view(ax, image: np.ndarray, labels: np.ndarray, centre: np.ndarray,
               voxel_mm: np.ndarray, view, zoom_mm: float, lut: dict,
               name_suffix: str = "") -> None:
    fixed, h_axis, v_axis, name, left_mark, right_mark, flip = view
    index = int(np.clip(round(centre[fixed]), 0, image.shape[fixed] - 1))
    im2 = np.take(image, index, axis=fixed)
    lab2 = np.take(labels, index, axis=fixed)
    # after np.take the remaining axes keep their order: (h, v) if h < v
    if h_axis > v_axis:
        im2, lab2 = im2.T, lab2.T
    h_half = int(np.ceil(zoom_mm / voxel_mm[h_axis]))
    v_half = int(np.ceil(zoom_mm / voxel_mm[v_axis]))
    hc, vc = int(round(centre[h_axis])), int(round(centre[v_axis]))
    h0, h1 = max(hc - h_half, 0), min(hc + h_half + 1, im2.shape[0])
    v0, v1 = max(vc - v_half, 0), min(vc + v_half + 1, im2.shape[1])
    im2, lab2 = im2[h0:h1, v0:v1], lab2[h0:h1, v0:v1]
    lo, hi = _robust_window(im2)
    extent_h = ((h0 - 0.5 - centre[h_axis]) * voxel_mm[h_axis],
                (h1 - 0.5 - centre[h_axis]) * voxel_mm[h_axis])
    extent_v = ((v0 - 0.5 - centre[v_axis]) * voxel_mm[v_axis],
                (v1 - 0.5 - centre[v_axis]) * voxel_mm[v_axis])
    extent = (*extent_h, *extent_v)
    # imshow wants rows = vertical: transpose, origin lower so superior / anterior is up
    ax.imshow(im2.T, cmap="gray", vmin=lo, vmax=hi, origin="lower", extent=extent,
              interpolation="nearest")
    ax.imshow(_overlay_rgba(lab2.T, lut), origin="lower", extent=extent, interpolation="nearest")
    if flip:  # radiological: +x (right) to the left of the screen; sagittal: anterior left
        ax.set_xlim(extent_h[1], extent_h[0])
    ax.set_ylim(extent_v[0], extent_v[1])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{name}{name_suffix} (slice {index})", fontsize=9)
    style = dict(transform=ax.transAxes, color="yellow", fontsize=11, fontweight="bold",
                 va="center")
    ax.text(0.03, 0.5, left_mark, ha="left", **style)
    ax.text(0.97, 0.5, right_mark, ha="right", **style)


def _legend_entries(labels: np.ndarray, lut: dict) -> list[tuple[str, tuple[int, int, int]]]:
    """One entry per colour present; left/right partners sharing a colour are merged."""
    present = set(np.unique(labels).tolist())
    by_colour: dict[tuple[int, int, int], list[tuple[int, str]]] = {}
    for label_id, (name, rgb) in sorted(lut.items()):
        if label_id in present:
            by_colour.setdefault(tuple(rgb), []).append((label_id, name))
    entries = []
    for rgb, rows in by_colour.items():
        ids = "/".join(str(i) for i, _ in rows)
        names = {n[2:] if n[:2] in ("L_", "R_") else n for _, n in rows}
        entries.append((f"{ids} {' / '.join(sorted(names))}", rgb))
    return entries


def save_overlay_png(path: str | os.PathLike, image, seg, *, title: str = "",
                     center_world: Sequence[float] | None = None, zoom_mm: float = 40.0,
                     lut=None) -> str:
    """Write a PNG with coronal, axial and sagittal slices of ``image`` with ``seg`` overlaid.

    ``image`` and ``seg`` are ``io.Volume`` objects on the same voxel grid (any orientation: both
    are reoriented to RAS first). Slices cross at ``center_world`` (mm, RAS) if given, else at
    the centroid of the subunit labels (801-810), else at the middle of the volume; each view
    shows +-``zoom_mm`` mm around it. ``lut`` (default: the subunits of ``labels.SUBUNITS``)
    maps label id -> (name, (r, g, b)); labels not in it are not drawn. Returns the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from .io import atomic_path, to_ras

    if np.asarray(image.data).shape[:3] != np.asarray(seg.data).shape[:3] or not np.allclose(
            image.affine, seg.affine, atol=1e-3):
        raise HsynexError("QC figure: image and segmentation are not on the same grid",
                          os.fspath(path))
    lut = _as_lut(lut)
    image_ras, _ = to_ras(image)
    seg_ras, _ = to_ras(seg)
    data = np.asarray(image_ras.data, np.float32)
    if data.ndim == 4:
        data = data[..., 0]
    labels = np.asarray(seg_ras.data)
    if labels.ndim == 4:
        labels = labels[..., 0]
    voxel_mm = np.sqrt((np.asarray(image_ras.affine)[:3, :3] ** 2).sum(axis=0))
    centre = _centre_voxel(seg_ras, center_world)

    fig = Figure(figsize=(12, 4.9), dpi=100)
    FigureCanvasAgg(fig)
    axes = [fig.add_axes((0.01 + i * 0.33, 0.17, 0.31, 0.73)) for i in range(3)]
    for ax, view in zip(axes, _VIEWS):
        ax.set_facecolor("black")
        view_centre, suffix = centre, ""
        left = np.isin(labels, LEFT_SUBUNIT_IDS)
        if view[3] == "sagittal" and center_world is None and left.any():
            # the centroid of both sides lies in the 3rd ventricle: cut through the left side
            view_centre = centre.copy()
            view_centre[0] = np.argwhere(left)[:, 0].mean()
            suffix = " through the left side"
        _draw_view(ax, data, labels, view_centre, voxel_mm, view, zoom_mm, lut, suffix)
    entries = _legend_entries(labels, lut)
    if entries:
        handles = [Patch(facecolor=np.asarray(rgb) / 255.0, edgecolor="none", label=text)
                   for text, rgb in entries]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 3), fontsize=8,
                   frameon=False)
    else:
        fig.text(0.5, 0.06, "no labels to show", ha="center", fontsize=9)
    heading = (title + "   " if title else "") + (
        f"radiological view (R on left), +-{zoom_mm:g} mm")
    fig.suptitle(heading, fontsize=10)
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", facecolor="white")
    return path
