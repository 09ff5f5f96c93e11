"""Label tables: the one place that says which label ids hsynex reads, writes and swaps.

Conventions: FreeSurfer label ids (``FreeSurferColorLUT.txt``); "left"/"right" are the
subject's left/right (RAS: left is -x).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Label:
    """One row of a FreeSurfer colour table."""

    id: int
    name: str
    rgb: tuple[int, int, int]


# --- Output labels: FreeSurfer's hypothalamic subunits (FreeSurferColorLUT.txt 801-810) -------
SUBUNITS: tuple[Label, ...] = (
    Label(801, "L_hypothalamus_anterior_inferior", (250, 255, 50)),
    Label(802, "L_hypothalamus_anterior_superior", (80, 200, 255)),
    Label(803, "L_hypothalamus_posterior", (255, 160, 0)),
    Label(804, "L_hypothalamus_tubular_inferior", (255, 160, 200)),
    Label(805, "L_hypothalamus_tubular_superior", (20, 180, 130)),
    Label(806, "R_hypothalamus_anterior_inferior", (250, 255, 50)),
    Label(807, "R_hypothalamus_anterior_superior", (80, 200, 255)),
    Label(808, "R_hypothalamus_posterior", (255, 160, 0)),
    Label(809, "R_hypothalamus_tubular_inferior", (255, 160, 200)),
    Label(810, "R_hypothalamus_tubular_superior", (20, 180, 130)),
)
SUBUNIT_IDS: tuple[int, ...] = tuple(s.id for s in SUBUNITS)
LEFT_SUBUNIT_IDS: tuple[int, ...] = SUBUNIT_IDS[:5]
RIGHT_SUBUNIT_IDS: tuple[int, ...] = SUBUNIT_IDS[5:]
SUBUNIT_NAMES: dict[int, str] = {s.id: s.name for s in SUBUNITS}

# Rows for the groupings in stats files and tables. These ids are hsynex's own choice: they are
# not used by FreeSurferColorLUT.txt (which ends the hypothalamus block at 810).
WHOLE_LEFT = Label(811, "Left-Hypothalamus-Whole", (200, 70, 255))
WHOLE_RIGHT = Label(812, "Right-Hypothalamus-Whole", (200, 70, 255))
WHOLE = Label(813, "Hypothalamus-Whole", (200, 70, 255))
GROUPINGS: dict[int, tuple[int, ...]] = {
    WHOLE_LEFT.id: LEFT_SUBUNIT_IDS,
    WHOLE_RIGHT.id: RIGHT_SUBUNIT_IDS,
    WHOLE.id: SUBUNIT_IDS,
}
ALL_OUTPUT_ROWS: tuple[Label, ...] = SUBUNITS + (WHOLE_LEFT, WHOLE_RIGHT, WHOLE)
# Column names of the volumes CSV, in order after ``subject``.
VOLUME_COLUMNS: tuple[str, ...] = tuple(s.name for s in SUBUNITS) + (
    "whole_left", "whole_right", "whole",
)

# --- aseg labels hsynex reads ------------------------------------------------------------------
LEFT_VENTRAL_DC = 28
RIGHT_VENTRAL_DC = 60
VENTRAL_DC_IDS = (LEFT_VENTRAL_DC, RIGHT_VENTRAL_DC)
THIRD_VENTRICLE = 14
OPTIC_CHIASM = 85
LEFT_THALAMUS = 10
RIGHT_THALAMUS = 49
BRAIN_STEM = 16
# Extra-cerebral classes of the SynthSeg label maps (skull, scalp, sinus, eyes, ...).
EXTRA_CEREBRAL_IDS = tuple(range(502, 531))

# --- left/right partners (for flipping label maps) --------------------------------------------
_LR_PAIRS_ASEG = (
    (1, 40), (2, 41), (3, 42), (4, 43), (5, 44), (6, 45), (7, 46), (8, 47), (9, 48), (10, 49),
    (11, 50), (12, 51), (13, 52), (17, 53), (18, 54), (19, 55), (20, 56), (25, 57), (26, 58),
    (27, 59), (28, 60), (29, 61), (30, 62), (31, 63), (78, 79), (81, 82), (96, 97),
)
LR_PAIRS: tuple[tuple[int, int], ...] = _LR_PAIRS_ASEG + tuple(
    zip(LEFT_SUBUNIT_IDS, RIGHT_SUBUNIT_IDS)
)


def lr_swap_map() -> dict[int, int]:
    """Label id -> its left/right partner (both directions). Labels not listed map to themselves."""
    swap: dict[int, int] = {}
    for left, right in LR_PAIRS:
        swap[left] = right
        swap[right] = left
    return swap


def lr_swap_lut(max_label: int) -> np.ndarray:
    """Lookup array ``lut[label] -> partner`` for labels ``0..max_label`` (identity elsewhere)."""
    lut = np.arange(max_label + 1, dtype=np.int32)
    for label, partner in lr_swap_map().items():
        if label <= max_label and partner <= max_label:
            lut[label] = partner
    return lut


# --- what each network predicts: output channel -> label ids it covers ---------------------------
# Stage 2: background + the ten subunits (channel k <-> label 800 + k).
STAGE2_CLASSES: tuple[tuple[int, ...], ...] = ((0,),) + tuple((i,) for i in SUBUNIT_IDS)
# Stage 1: background + whole hypothalamus.
STAGE1_CLASSES: tuple[tuple[int, ...], ...] = ((0,), SUBUNIT_IDS)
# Localiser: coarse anatomy around the hypothalamus on the whole head. The hypothalamus is merged
# into the ventral DC of its side (aseg's ventral DC contains it), so that label maps without
# subunits train it consistently. Channel 1 "other brain" gives a brain mask; channel 0 is
# everything outside the brain (including extra-cerebral tissue).
LOCALISER_CLASS_NAMES = (
    "background", "other-brain", "Left-VentralDC", "Right-VentralDC", "3rd-Ventricle",
    "Left-Thalamus", "Right-Thalamus", "Brain-Stem",
)
LOCALISER_FIXED: dict[int, int] = {
    LEFT_VENTRAL_DC: 2, RIGHT_VENTRAL_DC: 3, THIRD_VENTRICLE: 4,
    LEFT_THALAMUS: 5, 9: 5, RIGHT_THALAMUS: 6, 48: 6, BRAIN_STEM: 7,
    **{i: 2 for i in LEFT_SUBUNIT_IDS}, **{i: 3 for i in RIGHT_SUBUNIT_IDS},
}
# aseg labels that are not brain (channel 0 of the localiser).
NON_BRAIN_IDS = (0, 24) + EXTRA_CEREBRAL_IDS  # 24 = CSF (extra-ventricular)


def class_lut(classes: tuple[tuple[int, ...], ...], max_label: int) -> np.ndarray:
    """Lookup ``lut[label] -> channel`` for an output table; labels not listed go to channel 0."""
    lut = np.zeros(max_label + 1, dtype=np.int32)
    for channel, ids in enumerate(classes):
        for i in ids:
            if i <= max_label:
                lut[i] = channel
    return lut


def localiser_lut(max_label: int) -> np.ndarray:
    """Lookup ``lut[label] -> localiser channel`` (see ``LOCALISER_CLASS_NAMES``)."""
    lut = np.ones(max_label + 1, dtype=np.int32)  # any brain label -> "other-brain"
    for i in NON_BRAIN_IDS:
        if i <= max_label:
            lut[i] = 0
    for i, channel in LOCALISER_FIXED.items():
        if i <= max_label:
            lut[i] = channel
    return lut


def generation_class_lut(max_label: int, share_left_right: bool = True) -> np.ndarray:
    """Lookup ``lut[label] -> generation class`` for the GMM of the synthetic-image generator.

    Every label gets its own intensity class, except that all ten hypothalamic subunits share
    one class (real scans show no contrast between subunits, so the network must not learn to
    rely on it) and, with ``share_left_right``, left/right partners share a class. Class 0 is the
    background (label 0).
    """
    lut = np.zeros(max_label + 1, dtype=np.int32)
    swap = lr_swap_map()
    next_class = 1
    assigned: dict[int, int] = {}
    for label in range(1, max_label + 1):
        key = label
        if label in SUBUNIT_IDS:
            key = SUBUNIT_IDS[0]
        elif share_left_right and label in swap:
            key = min(label, swap[label])
        if key not in assigned:
            assigned[key] = next_class
            next_class += 1
        lut[label] = assigned[key]
    return lut


def lut_text() -> str:
    """The FreeSurfer-format colour table shipped in ``mri_hsynex/data/hsynex_LUT.txt``."""
    lines = ["#No. Label Name:                            R   G   B   A"]
    rows = (Label(0, "Unknown", (0, 0, 0)),) + ALL_OUTPUT_ROWS
    for row in rows:
        r, g, b = row.rgb
        lines.append(f"{row.id:<4d}{row.name:<40s}{r:<4d}{g:<4d}{b:<4d}0")
    return "\n".join(lines) + "\n"
