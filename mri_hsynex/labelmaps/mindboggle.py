"""Mindboggle-101 subjects (e.g. OASIS-TRT-20) as training label maps.

Each subject folder holds a skull-stripped T1 (``t1weighted_brain.nii.gz``) and a label map on
the same grid (``labels.nii.gz``): FreeSurfer aseg ids for the subcortical structures, DKT
cortical parcels (1000s left, 2000s right), 91/92 basal forebrain, 630-632 cerebellar vermis,
and **no cerebral white matter** (0 inside the brain). To look like the aseg-based maps the
generator is trained on, the labels are converted (``convert_labels``):

- cortical parcels -> cortex 3 (left) / 42 (right); Mindboggle's cerebellum exterior 6/45 ->
  FreeSurfer's cerebellar cortex 8/47; the vermis 630-632 -> 8/47 of the nearer side;
- ids the generator cannot use (above ``MAX_LABEL``) are reported and treated as unlabelled;
- unlabelled voxels of the brain mask (non-zero T1, holes filled) become cerebral white matter
  2 (left) / 41 (right), the side taken from the nearest labelled structure that has a side
  (a distance transform in mm, not a midline split); they stay 0 where they are darker than
  CSF-like (below the midpoint of the lateral ventricles' and the cortex's median T1) or where
  the nearest labelled structure is infratentorial (cerebellum, brain stem, 4th ventricle).

The teacher's subunits are then painted exactly as for FreeSurfer subjects (``build``); or, with
``atlases``, subunits voted from other subjects' label maps (``transfer.transfer_subunits``), for
T1s on which the teacher fails.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import HsynexError
from ..labels import LR_PAIRS, SUBUNIT_IDS
from .build import LabelMapBuilder, SubjectInputs, write_tsv

MINDBOGGLE_IMAGE = "t1weighted_brain.nii.gz"
MINDBOGGLE_LABELS = "labels.nii.gz"
CONVERSION_TSV = "mindboggle_labels.tsv"
MAX_LABEL = 830  # the generator's default max_label: larger ids would become background
LEFT_WM, RIGHT_WM = 2, 41
LEFT_CORTEX, RIGHT_CORTEX = 3, 42
LEFT_CEREBELLUM_CORTEX, RIGHT_CEREBELLUM_CORTEX = 8, 47
CORTEX_RANGES = ((range(1000, 2000), LEFT_CORTEX), (range(2000, 3000), RIGHT_CORTEX))
RENAMED = {6: LEFT_CEREBELLUM_CORTEX, 45: RIGHT_CEREBELLUM_CORTEX}  # cerebellum exterior
VERMIS_IDS = (630, 631, 632)
BASAL_FOREBRAIN = (91, 92)  # Mindboggle's left / right basal forebrain (kept as they are)
LATERAL_VENTRICLES = (4, 43)
INFRATENTORIAL_IDS = (7, 8, 15, 16, 46, 47)  # cerebellar WM / cortex, 4th ventricle, brain stem


def sided_ids() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(left ids, right ids) of the converted maps: aseg's left/right pairs and 91/92."""
    pairs = [p for p in LR_PAIRS if p[0] not in SUBUNIT_IDS] + [BASAL_FOREBRAIN]
    return tuple(a for a, _ in pairs), tuple(b for _, b in pairs)


@dataclass
class Conversion:
    """What ``convert_labels`` did to one subject (volumes in mm^3)."""

    wm_left_mm3: float = 0.0
    wm_right_mm3: float = 0.0
    dark_left_out_mm3: float = 0.0
    infratentorial_left_out_mm3: float = 0.0
    unknown_ids: list[int] = field(default_factory=list)

    def row(self, subject: str) -> dict[str, str]:
        return {"subject": subject, "wm_left_mm3": f"{self.wm_left_mm3:.0f}",
                "wm_right_mm3": f"{self.wm_right_mm3:.0f}",
                "dark_left_0_mm3": f"{self.dark_left_out_mm3:.0f}",
                "infratentorial_left_0_mm3": f"{self.infratentorial_left_out_mm3:.0f}",
                "unknown_ids": ",".join(map(str, self.unknown_ids)) or "-"}


CONVERSION_COLUMNS = ("subject", "wm_left_mm3", "wm_right_mm3", "dark_left_0_mm3",
                      "infratentorial_left_0_mm3", "unknown_ids")


def map_ids(labels: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Mindboggle ids -> ids of hsynex's aseg-based maps (int32), and the unknown ids.

    Cortical parcels become cortex 3/42, 6/45 become 8/47; the vermis (630-632) is kept for
    ``assign_vermis``; other ids above ``MAX_LABEL`` (or negative) are unknown and become 0.
    """
    labels = np.asarray(labels, np.int32)
    out = labels.copy()
    for ids, target in CORTEX_RANGES:
        out[(labels >= ids.start) & (labels < ids.stop)] = target
    for old, new in RENAMED.items():
        out[labels == old] = new
    unknown_mask = ((out > MAX_LABEL) | (out < 0)) & ~np.isin(out, VERMIS_IDS)
    unknown = sorted(int(i) for i in np.unique(out[unknown_mask]))
    out[unknown_mask] = 0
    return out, unknown


def nearest_is_left(labels: np.ndarray, where: np.ndarray, voxel_mm: Sequence[float]
                    ) -> np.ndarray:
    """For the voxels of the boolean mask ``where``: is the nearest labelled voxel (Euclidean
    distance in mm, ``voxel_mm`` per axis) that belongs to a left structure (rather than a
    right one)? Returns a boolean array of ``where``'s shape (False outside ``where``)."""
    left, right = sided_ids()
    if not np.isin(labels, left + right).any():
        raise HsynexError("the label map has no left or right structure to take sides from")
    return where & np.isin(nearest_label(labels, where, voxel_mm, among=left + right), left)


def brain_mask(image: np.ndarray) -> np.ndarray:
    """Non-zero voxels of a skull-stripped image, holes filled."""
    from scipy import ndimage

    return ndimage.binary_fill_holes(np.asarray(image) != 0)


def csf_threshold(image: np.ndarray, labels: np.ndarray) -> float | None:
    """Midpoint of the median T1 of the lateral ventricles and of the cortex (None if either is
    missing): unlabelled voxels darker than this are CSF-like and stay 0."""
    ventricles = np.isin(labels, LATERAL_VENTRICLES)
    cortex = np.isin(labels, (LEFT_CORTEX, RIGHT_CORTEX))
    if not ventricles.any() or not cortex.any():
        return None
    return 0.5 * float(np.median(image[ventricles]) + np.median(image[cortex]))


def nearest_label(labels: np.ndarray, where: np.ndarray, voxel_mm: Sequence[float],
                  among: Sequence[int] | None = None) -> np.ndarray:
    """Label of the nearest voxel labelled with one of ``among`` (default: any non-zero label),
    Euclidean distance in mm, for the voxels of ``where`` (0 elsewhere)."""
    from scipy import ndimage

    candidates = labels != 0 if among is None else np.isin(labels, among)
    _, index = ndimage.distance_transform_edt(~candidates, sampling=voxel_mm,
                                              return_indices=True)
    out = np.zeros(labels.shape, np.int32)
    out[where] = labels[tuple(i[where] for i in index)]
    return out


def convert_labels(labels: np.ndarray, image: np.ndarray, voxel_mm: Sequence[float]
                   ) -> tuple[np.ndarray, Conversion]:
    """A Mindboggle label map (and its T1 on the same grid) -> an aseg-like map (int32) with
    cerebral white matter 2/41, cortex 3/42 and cerebellar cortex 8/47 (module docstring)."""
    voxel_mm = np.asarray(voxel_mm, np.float64)
    voxel_mm3 = float(np.prod(voxel_mm))
    image = np.asarray(image, np.float32)
    out, unknown = map_ids(labels)
    report = Conversion(unknown_ids=unknown)
    unlabelled = brain_mask(image) & (out == 0)
    threshold = csf_threshold(image, out)
    dark = unlabelled & (image != 0) & (image < threshold) if threshold is not None else \
        np.zeros(out.shape, bool)
    vermis = np.isin(out, VERMIS_IDS)
    infratentorial = np.isin(nearest_label(out, unlabelled & ~dark, voxel_mm),
                             INFRATENTORIAL_IDS + VERMIS_IDS)
    white = unlabelled & ~dark & ~infratentorial
    left = nearest_is_left(out, white | vermis, voxel_mm)
    out[vermis] = np.where(left[vermis], LEFT_CEREBELLUM_CORTEX, RIGHT_CEREBELLUM_CORTEX)
    out[white] = np.where(left[white], LEFT_WM, RIGHT_WM)
    report.wm_left_mm3 = float((white & left).sum()) * voxel_mm3
    report.wm_right_mm3 = float((white & ~left).sum()) * voxel_mm3
    report.dark_left_out_mm3 = float(dark.sum()) * voxel_mm3
    report.infratentorial_left_out_mm3 = float(infratentorial.sum()) * voxel_mm3
    return out, report


def find_mindboggle(folder: str | os.PathLike, names: Sequence[str] | None = None
                    ) -> list[SubjectInputs]:
    """Subject folders of ``folder`` holding ``t1weighted_brain.nii.gz`` and ``labels.nii.gz``.

    With ``names``, exactly those subjects (an error names the first one that is unusable).
    """
    root = Path(folder)
    if not root.is_dir():
        raise HsynexError("Mindboggle folder not found", root)
    candidates = list(names) if names else sorted(p.name for p in root.iterdir() if p.is_dir())
    found = []
    for name in candidates:
        image, labels = root / name / MINDBOGGLE_IMAGE, root / name / MINDBOGGLE_LABELS
        if not (image.is_file() and labels.is_file()):
            if names:
                missing = MINDBOGGLE_IMAGE if not image.is_file() else MINDBOGGLE_LABELS
                raise HsynexError(f"subject has no {missing}", root / name)
            continue
        found.append(SubjectInputs(name, image, labels))
    if not found:
        raise HsynexError(f"no subject folder with {MINDBOGGLE_IMAGE} and {MINDBOGGLE_LABELS} in",
                          root)
    return found


class MindboggleBuilder(LabelMapBuilder):
    """``LabelMapBuilder`` for Mindboggle subjects: converts the labels (``convert_labels``)
    before painting, leaves out maps that fail the checks, and writes ``mindboggle_labels.tsv``
    (white matter filled in, voxels left at 0, unknown ids per subject). With ``atlases``
    (``transfer.Atlas`` label maps with subunits) the subunits are transferred from them instead
    of coming from the teacher."""

    def __init__(self, *args, atlases=None, **kwargs):
        kwargs.setdefault("keep_failed", False)
        super().__init__(*args, **kwargs)
        self.conversions: dict[str, Conversion] = {}
        self.atlases = list(atlases or [])
        if self.atlases:
            self.subunit_source = f"transferred ({len(self.atlases)} atlases)"

    def _teacher_subunits(self, inputs: SubjectInputs, image, aseg) -> np.ndarray:
        if not self.atlases:
            return super()._teacher_subunits(inputs, image, aseg)
        from .transfer import transfer_subunits

        try:
            seg = transfer_subunits(aseg.data, aseg.affine, self.atlases)
        except ValueError as err:  # too few anchor structures, no ventral DC / 3rd ventricle
            raise HsynexError(f"cannot transfer subunits: {err}", inputs.aseg) from None
        self.log(f"{inputs.name}: subunits voted from {len(self.atlases)} label maps")
        return seg

    def load_inputs(self, inputs: SubjectInputs):
        image, labels = super().load_inputs(inputs)
        converted, report = convert_labels(labels.data, image.data, labels.voxel_sizes)
        if report.unknown_ids:
            self.log(f"{inputs.name}: unknown label ids treated as unlabelled: "
                     f"{', '.join(map(str, report.unknown_ids))}")
        self.conversions[inputs.name] = report
        return image, labels.with_data(converted)

    def subjects(self, subjects: Sequence[SubjectInputs]):
        result = super().subjects(subjects)
        rows = [self.conversions[s.name].row(s.name) for s in subjects
                if s.name in self.conversions]
        write_tsv(self.out_dir / CONVERSION_TSV, CONVERSION_COLUMNS, rows)
        return result
