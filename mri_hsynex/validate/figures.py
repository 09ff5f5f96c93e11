"""Figures of the validation report (matplotlib, Agg, written atomically as PNG)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..labels import SUBUNITS
from .tables import mean_subunit_dice

ENGINE_STYLE = {"hsynex": dict(color="tab:blue"), "teacher": dict(color="tab:red")}
ORIENTATION_STYLE = {"axial": "-", "coronal": "--"}


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    fig.savefig(tmp, dpi=90, bbox_inches="tight", format="png")
    os.replace(tmp, path)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def dice_vs_thickness(records: list[dict], path: Path) -> Path | None:
    """Whole and mean-subunit Dice against slice thickness, one column per contrast, hsynex vs
    the teacher, axial (solid) and coronal (dashed)."""
    grid = [r for r in records if r["kind"] == "grid"]
    if not grid:
        return None
    plt = _pyplot()
    contrasts = list(dict.fromkeys(r["contrast"] for r in grid))
    fig, axes = plt.subplots(2, len(contrasts), figsize=(2.6 * len(contrasts), 5.2),
                             sharex=True, sharey=True, squeeze=False)
    for col, contrast in enumerate(contrasts):
        for row, (title, score) in enumerate((("whole", lambda r: r["dice"]["813"]),
                                              ("mean subunit", mean_subunit_dice))):
            ax = axes[row, col]
            for engine in dict.fromkeys(r["engine"] for r in grid):
                for orientation, style in ORIENTATION_STYLE.items():
                    pts = sorted((r["thickness_mm"], score(r)) for r in grid
                                 if r["contrast"] == contrast and r["engine"] == engine
                                 and (r["orientation"] == orientation or r["thickness_mm"] <= 1))
                    if len(pts) < 1:
                        continue
                    x, y = zip(*pts)
                    ax.plot(x, y, style, marker="o", ms=3, label=f"{engine} {orientation}",
                            **ENGINE_STYLE.get(engine, {}))
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(f"{contrast}-like" if contrast != "random" else "random")
            if col == 0:
                ax.set_ylabel(f"{title} Dice")
            if row == 1:
                ax.set_xlabel("slice thickness (mm)")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Synthetic grid on the held-out label map")
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def _label_rgb(labels: np.ndarray) -> np.ndarray:
    rgba = np.zeros(labels.shape + (4,), dtype=float)
    for s in SUBUNITS:
        rgba[labels == s.id] = (*[c / 255 for c in s.rgb], 0.6)
    return rgba


def qc_montage(qc_files: list[Path], path: Path) -> Path | None:
    """Coronal crops through the hypothalamus: the image, then the truth and each engine's
    labels overlaid on it; one row per QC case (radiological: subject's right on the left)."""
    files = [f for f in qc_files if f.is_file()]
    if not files:
        return None
    plt = _pyplot()
    columns = ["image", "truth", "hsynex", "teacher"]
    fig, axes = plt.subplots(len(files), len(columns), figsize=(1.9 * len(columns),
                                                                1.9 * len(files)),
                             squeeze=False)
    for row, file in enumerate(files):
        with np.load(file) as crops:
            image = crops["image"]
            lo, hi = np.percentile(image, [1, 99.5]) if image.any() else (0, 1)
            for col, name in enumerate(columns):
                ax = axes[row, col]
                ax.axis("off")
                if name not in crops.files:
                    continue
                ax.imshow(image, cmap="gray", vmin=lo, vmax=max(hi, lo + 1e-6))
                if name != "image":
                    ax.imshow(_label_rgb(np.rint(crops[name]).astype(int)))
                if row == 0:
                    ax.set_title(name, fontsize=9)
        axes[row, 0].text(-3, image.shape[0] / 2, file.stem.split("_", 1)[-1], fontsize=7,
                          rotation=90, va="center", ha="right")
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def group_boxplots(records: list[dict], path: Path) -> Path | None:
    """Whole-hypothalamus volume per group (measured by hsynex, and the truth), per cohort."""
    group = [r for r in records if r["kind"] == "group" and r["engine"] == "hsynex"]
    if not group:
        return None
    plt = _pyplot()
    cohorts = list(dict.fromkeys(r["cohort"] for r in group))
    fig, axes = plt.subplots(1, len(cohorts), figsize=(4.2 * len(cohorts), 3.6), squeeze=False)
    for ax, cohort in zip(axes[0], cohorts):
        rows = [r for r in group if r["cohort"] == cohort]
        keys = sorted({r["fraction"] for r in rows})
        data, truth, names = [], [], []
        for f in keys:
            sel = [r for r in rows if r["fraction"] == f]
            data.append([r["volumes"]["813"] for r in sel])
            truth.append([r["truth"]["813"] for r in sel])
            names.append("control" if f == 0 else f"−{f:.0%}")
        pos = np.arange(len(keys))
        ax.boxplot(truth, positions=pos - 0.18, widths=0.3, patch_artist=True,
                   boxprops=dict(facecolor="0.85"), medianprops=dict(color="k"))
        ax.boxplot(data, positions=pos + 0.18, widths=0.3, patch_artist=True,
                   boxprops=dict(facecolor="tab:blue", alpha=0.6), medianprops=dict(color="k"))
        ax.set_xticks(pos, names)
        ax.set_title(cohort, fontsize=9)
        ax.set_ylabel("whole hypothalamus (mm³)")
        ax.grid(alpha=0.3, axis="y")
    axes[0, 0].plot([], [], "s", color="0.7", label="true (label map)")
    axes[0, 0].plot([], [], "s", color="tab:blue", alpha=0.6, label="hsynex")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out
