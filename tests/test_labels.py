"""mri_hsynex.labels: the shipped LUT, FreeSurfer names/colours, swap map, class tables."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from mri_hsynex import labels
from mri_hsynex.labels import (
    ALL_OUTPUT_ROWS,
    GROUPINGS,
    LOCALISER_CLASS_NAMES,
    LR_PAIRS,
    STAGE1_CLASSES,
    STAGE2_CLASSES,
    SUBUNIT_IDS,
    class_lut,
    generation_class_lut,
    localiser_lut,
    lr_swap_lut,
    lr_swap_map,
    lut_text,
)
from mri_hsynex.stats import LUT_PATH

# FreeSurferColorLUT.txt lines 801-810, typed in from FreeSurfer's table (so the test also runs
# without ../shared; the realdata test compares with the excerpt file itself).
FREESURFER_801_810 = {
    801: ("L_hypothalamus_anterior_inferior", (250, 255, 50)),
    802: ("L_hypothalamus_anterior_superior", (80, 200, 255)),
    803: ("L_hypothalamus_posterior", (255, 160, 0)),
    804: ("L_hypothalamus_tubular_inferior", (255, 160, 200)),
    805: ("L_hypothalamus_tubular_superior", (20, 180, 130)),
    806: ("R_hypothalamus_anterior_inferior", (250, 255, 50)),
    807: ("R_hypothalamus_anterior_superior", (80, 200, 255)),
    808: ("R_hypothalamus_posterior", (255, 160, 0)),
    809: ("R_hypothalamus_tubular_inferior", (255, 160, 200)),
    810: ("R_hypothalamus_tubular_superior", (20, 180, 130)),
}


def parse_lut(text: str) -> dict[int, tuple[str, tuple[int, int, int], int]]:
    """FreeSurfer LUT: ``index name R G B A`` per non-comment line."""
    table = {}
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        assert len(fields) == 6, line
        index, name, r, g, b, a = fields
        table[int(index)] = (name, (int(r), int(g), int(b)), int(a))
    return table


# --- the LUT file --------------------------------------------------------------------------------
def test_shipped_lut_equals_lut_text():
    assert LUT_PATH.is_file()
    assert LUT_PATH.read_text() == lut_text()


def test_lut_has_freesurfer_names_and_colours():
    table = parse_lut(lut_text())
    assert sorted(table) == [0] + list(range(801, 814))
    assert table[0][0] == "Unknown"
    for label, (name, rgb) in FREESURFER_801_810.items():
        assert table[label][:2] == (name, rgb)
        assert labels.SUBUNIT_NAMES[label] == name


def test_lut_grouping_rows():
    table = parse_lut(lut_text())
    assert (labels.WHOLE_LEFT.id, labels.WHOLE_RIGHT.id, labels.WHOLE.id) == (811, 812, 813)
    assert [table[i][0] for i in (811, 812, 813)] == \
        ["Left-Hypothalamus-Whole", "Right-Hypothalamus-Whole", "Hypothalamus-Whole"]
    assert GROUPINGS == {811: tuple(range(801, 806)), 812: tuple(range(806, 811)),
                         813: tuple(range(801, 811))}
    assert [r.id for r in ALL_OUTPUT_ROWS] == list(range(801, 814))


def test_lut_columns_are_fixed_width():
    # FreeSurfer's layout: id in 4 columns, name padded to 40, colours in 4 columns each
    for line in lut_text().splitlines()[1:]:
        assert re.fullmatch(r"\d+ *\S+ +\d+ +\d+ +\d+ +\d+", line)
        assert line[44:].split() == line.split()[2:]


@pytest.mark.realdata
def test_lut_matches_freesurfer_excerpt(shared_data):
    excerpt = shared_data / "lut" / "FreeSurferColorLUT_801-810_hypothalamic_subunits_excerpt.txt"
    if not excerpt.is_file():
        pytest.skip("FreeSurfer LUT excerpt not present")
    theirs = parse_lut(excerpt.read_text())
    ours = parse_lut(lut_text())
    assert sorted(theirs) == list(range(801, 811))
    for label, row in theirs.items():
        assert ours[label] == row
    # the lines themselves are identical, spacing included
    their_lines = [line for line in excerpt.read_text().splitlines()
                   if line[:1].isdigit()]
    our_lines = [line for line in lut_text().splitlines() if line[:3] in
                 {str(i) for i in range(801, 811)}]
    assert our_lines == their_lines


@pytest.mark.realdata
def test_grouping_ids_are_free_and_pairs_are_left_right(shared_data):
    full = shared_data / "lut" / "FreeSurferColorLUT_v1.105_2015_from_Pandora.txt"
    if not full.is_file():
        pytest.skip("full FreeSurfer LUT not present")
    table = parse_lut_loose(full.read_text())
    assert not set(table) & {811, 812, 813}
    for left, right in LR_PAIRS:
        if left in SUBUNIT_IDS:
            continue
        assert table[left].startswith("Left-"), (left, table[left])
        assert table[right] == "Right-" + table[left][len("Left-"):], (left, right)
    assert table[labels.LEFT_VENTRAL_DC] == "Left-VentralDC"
    assert table[labels.RIGHT_VENTRAL_DC] == "Right-VentralDC"
    assert table[labels.THIRD_VENTRICLE] == "3rd-Ventricle"
    assert table[labels.OPTIC_CHIASM] == "Optic-Chiasm"
    assert table[labels.LEFT_THALAMUS].startswith("Left-Thalamus")
    assert table[labels.RIGHT_THALAMUS].startswith("Right-Thalamus")
    assert table[labels.BRAIN_STEM] == "Brain-Stem"


@pytest.mark.realdata
def test_subunit_order_matches_the_teacher_table(shared_data):
    path = shared_data / "lut" / "hypothalamus_seg_README_label_table.txt"
    if not path.is_file():
        pytest.skip("teacher label table not present")
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*(left|right) ([a-z -]+?)\s*\|", path.read_text(),
                      flags=re.MULTILINE)
    assert len(rows) == 10
    for number, side, part in rows:
        name = labels.SUBUNIT_NAMES[800 + int(number)]
        assert name.startswith("L_" if side == "left" else "R_")
        assert name.endswith(part.replace("-", "_").replace(" ", "_"))


def parse_lut_loose(text: str) -> dict[int, str]:
    """id -> name of a full FreeSurfer LUT (which has comment and blank lines)."""
    table = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit():
            table[int(fields[0])] = fields[1]
    return table


# --- left/right ----------------------------------------------------------------------------------
def test_swap_map_is_an_involution():
    swap = lr_swap_map()
    for label, partner in swap.items():
        assert partner != label
        assert swap[partner] == label
    ids = [i for pair in LR_PAIRS for i in pair]
    assert len(ids) == len(set(ids)), "a label belongs to two pairs"


def test_swap_map_pairs():
    swap = lr_swap_map()
    for left, right in zip(range(801, 806), range(806, 811)):
        assert swap[left] == right and swap[right] == left
    assert swap[28] == 60 and swap[60] == 28
    assert swap[10] == 49 and swap[49] == 10
    for midline in (0, 14, 15, 16, 24, 85, 811, 812, 813):
        assert midline not in swap


def test_swap_lut():
    lut = lr_swap_lut(900)
    assert lut.dtype == np.int32 and lut.shape == (901,)
    np.testing.assert_array_equal(lut[lut], np.arange(901))
    swap = lr_swap_map()
    for label in range(901):
        assert lut[label] == swap.get(label, label)
    # a partner beyond the table is not swapped (the table stays an involution)
    small = lr_swap_lut(45)
    assert small[4] == 43 and small[43] == 4
    assert small[10] == 10  # 49 is beyond 45
    np.testing.assert_array_equal(small[small], np.arange(46))
    # applying it to a label map swaps left and right
    seg = np.array([[0, 801, 28], [10, 806, 60]])
    np.testing.assert_array_equal(lut[seg], [[0, 806, 60], [49, 801, 28]])


# --- class tables --------------------------------------------------------------------------------
def test_generation_classes_share_subunits_and_partners():
    lut = generation_class_lut(900)
    assert lut[0] == 0
    assert len({int(lut[i]) for i in SUBUNIT_IDS}) == 1
    for left, right in LR_PAIRS:
        assert lut[left] == lut[right]
    # classes are 0..n-1 without gaps, and unrelated labels get different classes
    assert set(np.unique(lut)) == set(range(int(lut.max()) + 1))
    assert len({lut[2], lut[14], lut[16], lut[24], lut[85], lut[801]}) == 6


def test_generation_classes_without_left_right_sharing():
    lut = generation_class_lut(900, share_left_right=False)
    assert lut[28] != lut[60] and lut[10] != lut[49]
    assert len({int(lut[i]) for i in SUBUNIT_IDS}) == 1  # subunits still share one class


def test_stage_class_tables():
    stage2 = class_lut(STAGE2_CLASSES, 900)
    assert len(STAGE2_CLASSES) == 11
    for label in SUBUNIT_IDS:
        assert stage2[label] == label - 800
    assert stage2[0] == 0 and stage2[28] == 0 and stage2[811] == 0
    stage1 = class_lut(STAGE1_CLASSES, 900)
    assert set(stage1[list(SUBUNIT_IDS)]) == {1}
    assert stage1.sum() == 10


def test_localiser_table():
    lut = localiser_lut(900)
    assert lut.dtype == np.int32
    assert int(lut.max()) == len(LOCALISER_CLASS_NAMES) - 1
    name = {label: LOCALISER_CLASS_NAMES[lut[label]] for label in range(901)}
    for label in (0, 24, 502, 515, 530):
        assert name[label] == "background"
    for label in (2, 41, 3, 42, 17, 53, 85, 4):
        assert name[label] == "other-brain"
    assert name[28] == "Left-VentralDC" and name[60] == "Right-VentralDC"
    assert name[14] == "3rd-Ventricle" and name[16] == "Brain-Stem"
    assert name[10] == name[9] == "Left-Thalamus"
    assert name[49] == name[48] == "Right-Thalamus"
    # the hypothalamus is part of the ventral DC of its side
    assert all(name[i] == "Left-VentralDC" for i in range(801, 806))
    assert all(name[i] == "Right-VentralDC" for i in range(806, 811))


def test_tables_clip_to_max_label():
    for table in (class_lut(STAGE2_CLASSES, 30), localiser_lut(30),
                  generation_class_lut(30), lr_swap_lut(30)):
        assert table.shape == (31,)


def test_label_module_is_light():
    # labels is imported by nearly everything: it must not pull in the heavy stack
    source = Path(labels.__file__).read_text()
    assert not re.search(r"^\s*(import|from)\s+(keras|tensorflow|torch)", source, re.MULTILINE)
