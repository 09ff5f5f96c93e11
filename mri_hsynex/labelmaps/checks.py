"""Plausibility checks of teacher subunit labels against a subject's aseg (issue 4 "Must show").

All checks work in world RAS millimetres, so they hold for any voxel orientation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..labels import (
    LEFT_SUBUNIT_IDS,
    RIGHT_SUBUNIT_IDS,
    SUBUNIT_IDS,
    THIRD_VENTRICLE,
    VENTRAL_DC_IDS,
)

WHOLE_RANGE_MM3 = (600.0, 1400.0)  # plausible whole-hypothalamus volume (both sides)
INSIDE_DILATION_MM = 2.0  # dilation of aseg's ventral DC + 3rd ventricle
INSIDE_MIN_FRACTION = 0.90  # share of teacher voxels that must lie inside that region
REFERENCE_IDS = VENTRAL_DC_IDS + (THIRD_VENTRICLE,)


@dataclass
class SubunitChecks:
    """Results of the checks for one subject (volumes mm^3, distances mm, fraction 0..1)."""

    subject: str
    labels_present: int
    missing: list[int] = field(default_factory=list)
    sides_correct: int = 0
    centroid_offsets_mm: dict[int, float] = field(default_factory=dict)
    whole_mm3: float = 0.0
    inside_fraction: float = 0.0

    @property
    def all_present(self) -> bool:
        return self.labels_present == len(SUBUNIT_IDS)

    @property
    def sides_ok(self) -> bool:
        return self.sides_correct == len(SUBUNIT_IDS)

    @property
    def volume_ok(self) -> bool:
        return WHOLE_RANGE_MM3[0] <= self.whole_mm3 <= WHOLE_RANGE_MM3[1]

    @property
    def inside_ok(self) -> bool:
        return self.inside_fraction >= INSIDE_MIN_FRACTION

    @property
    def passed(self) -> bool:
        return self.all_present and self.sides_ok and self.volume_ok and self.inside_ok

    def row(self) -> dict[str, str]:
        """One row of ``checks.tsv`` (strings)."""
        return {
            "subject": self.subject,
            "labels_present": f"{self.labels_present}/{len(SUBUNIT_IDS)}",
            "missing": ",".join(map(str, self.missing)) or "-",
            "sides_correct": f"{self.sides_correct}/{len(SUBUNIT_IDS)}",
            "whole_mm3": f"{self.whole_mm3:.0f}",
            "whole_in_600_1400": _yes(self.volume_ok),
            "inside_vdc_3v_2mm_pct": f"{100 * self.inside_fraction:.1f}",
            "inside_ge_90pct": _yes(self.inside_ok),
            "pass": _yes(self.passed),
        }

    def to_dict(self) -> dict:
        return asdict(self) | {"passed": self.passed}


CHECK_COLUMNS = ("subject", "labels_present", "missing", "sides_correct", "whole_mm3",
                 "whole_in_600_1400", "inside_vdc_3v_2mm_pct", "inside_ge_90pct", "pass")


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def _world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def check_subunits(subject: str, seg: np.ndarray, aseg: np.ndarray, affine: np.ndarray
                   ) -> SubunitChecks:
    """Run the checks on a teacher segmentation ``seg`` (labels 0/801-810) and the subject's
    ``aseg`` on the same grid (``affine``: voxel -> RAS mm).

    Sides: the RAS x of each subunit centroid relative to the midline (x of the centroid of the
    3rd ventricle, label 14) must be negative for 801-805 (left) and positive for 806-810.
    Inside: fraction of subunit voxels within ``INSIDE_DILATION_MM`` mm (Euclidean, in mm) of
    aseg's ventral DC (28, 60) or 3rd ventricle (14).
    """
    from scipy import ndimage

    affine = np.asarray(affine, np.float64)
    voxel_mm = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
    present = [i for i in SUBUNIT_IDS if np.any(seg == i)]
    result = SubunitChecks(subject, len(present),
                           missing=[i for i in SUBUNIT_IDS if i not in present])
    ventricle = np.argwhere(aseg == THIRD_VENTRICLE)
    if ventricle.size:
        midline_x = _world(affine, ventricle.mean(axis=0))[0]
        for i in present:
            offset = _world(affine, np.argwhere(seg == i).mean(axis=0))[0] - midline_x
            result.centroid_offsets_mm[i] = round(float(offset), 2)
            if (i in LEFT_SUBUNIT_IDS and offset < 0) or (i in RIGHT_SUBUNIT_IDS and offset > 0):
                result.sides_correct += 1
    hypothalamus = np.isin(seg, SUBUNIT_IDS)
    result.whole_mm3 = float(hypothalamus.sum()) * voxel_mm3
    if hypothalamus.any():
        # Work in the box around the labels plus the dilation radius: every reference voxel
        # within that radius of a label voxel is in the box, so the decision is exact.
        where = np.argwhere(hypothalamus)
        margin = np.ceil(INSIDE_DILATION_MM / voxel_mm).astype(int) + 1
        lo = np.maximum(where.min(axis=0) - margin, 0)
        hi = np.minimum(where.max(axis=0) + margin + 1, seg.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        reference = np.isin(aseg[box], REFERENCE_IDS)
        if reference.any():
            distance = ndimage.distance_transform_edt(~reference, sampling=voxel_mm)
            inside = distance[hypothalamus[box]] <= INSIDE_DILATION_MM + 1e-6
            result.inside_fraction = float(inside.mean())
    return result
