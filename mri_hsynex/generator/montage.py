"""A montage of synthetic samples: one row per sample, the three mid-slices (sagittal, coronal,
axial, RAS) of the image with the boundaries of the labels around the hypothalamus in colour."""

from __future__ import annotations

import io as _io
from collections.abc import Sequence

import numpy as np

from .. import labels as label_tables

# Labels outlined in the montage: the hypothalamus and its neighbours (all labels would hide
# the image).
CONTOURED = (label_tables.SUBUNIT_IDS + label_tables.VENTRAL_DC_IDS
             + (label_tables.THIRD_VENTRICLE, label_tables.OPTIC_CHIASM,
                label_tables.LEFT_THALAMUS, label_tables.RIGHT_THALAMUS))


def label_colours(max_label: int) -> np.ndarray:
    """(max_label + 1, 3) RGB in [0, 1]: the LUT colours for the subunits, a fixed
    pseudo-random colour for every other label, black for 0."""
    rng = np.random.default_rng(12345)
    colours = rng.uniform(0.25, 1.0, (max_label + 1, 3))
    colours[0] = 0
    for sub in label_tables.SUBUNITS:
        if sub.id <= max_label:
            colours[sub.id] = np.array(sub.rgb) / 255.0
    return colours


def boundaries(labels: np.ndarray) -> np.ndarray:
    """Boolean mask of the 2-D pixels whose label differs from a 4-neighbour's."""
    edge = np.zeros(labels.shape, bool)
    edge[1:] |= labels[1:] != labels[:-1]
    edge[:-1] |= labels[1:] != labels[:-1]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[:, :-1] |= labels[:, 1:] != labels[:, :-1]
    return edge


def _overlay(image: np.ndarray, labels: np.ndarray, colours: np.ndarray,
             contoured: Sequence[int]) -> np.ndarray:
    """RGB (H, W, 3) of a 2-D image in [0, 1] with the boundaries of the ``contoured`` labels
    drawn in their colours."""
    rgb = np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=-1)
    keep = np.isin(labels, np.asarray(contoured)) & (labels < len(colours))
    shown = np.where(keep, labels, 0)
    edge = boundaries(shown) & keep
    rgb[edge] = colours[shown[edge]]
    return rgb


def mid_slices(volume: np.ndarray) -> list[np.ndarray]:
    """Sagittal (y, z), coronal (x, z), axial (x, y) mid-slices of an (X, Y, Z) RAS volume,
    transposed for display with ``origin="lower"`` (superior/anterior up)."""
    x, y, z = (n // 2 for n in volume.shape[:3])
    return [volume[x, :, :].T, volume[:, y, :].T, volume[:, :, z].T]


def montage_png(images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                titles: Sequence[str] | None = None, max_label: int = 830,
                contoured: Sequence[int] = CONTOURED) -> bytes:
    """PNG bytes of the montage of (X, Y, Z) images in [0, 1] and their (X, Y, Z) labels
    (the boundaries of the ``contoured`` label ids drawn in colour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = label_colours(max_label)
    rows = len(images)
    fig, axes = plt.subplots(rows, 3, figsize=(6.6, 2.2 * rows + 0.3), squeeze=False)
    for r, (image, lab) in enumerate(zip(images, labels)):
        for c, (im2d, lab2d, view) in enumerate(zip(mid_slices(image), mid_slices(lab),
                                                    ("sagittal", "coronal", "axial"))):
            ax = axes[r][c]
            ax.imshow(_overlay(im2d, lab2d, colours, contoured), origin="lower",
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(view, fontsize=8)
            if c == 0 and titles is not None:
                ax.set_ylabel(titles[r], fontsize=7)
    fig.tight_layout(pad=0.3)
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()
