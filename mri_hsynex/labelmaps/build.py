"""Build training label maps: aseg + teacher subunits for real subjects; SynthSeg maps as is.

For each FreeSurfer subject: run the T1-only teacher on its T1 (first of
``constants.SUBJECT_INPUTS`` that exists), paint the subunits (801-810) over ``aseg.mgz`` on the
same 1 mm grid (the hypothalamus wins where they overlap; every other aseg label is kept), write
``<subject>_labels.nii.gz`` (int32, the subject's native orientation, its affine), a QC figure and
the plausibility checks. The SynthSeg whole-brain maps are only rounded to int32 and rewritten
(they have no subunit labels).
"""

from __future__ import annotations

import csv
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..constants import SUBJECT_ASEG, SUBJECT_INPUTS
from ..errors import HsynexError
from ..labels import GROUPINGS, SUBUNIT_IDS, THIRD_VENTRICLE, VENTRAL_DC_IDS, VOLUME_COLUMNS
from .checks import CHECK_COLUMNS, SubunitChecks, check_subunits

LABELS_SUFFIX = "_labels.nii.gz"
VOLUMES_TSV = "subunit_volumes.tsv"
CHECKS_TSV = "checks.tsv"
SYNTHSEG_TSV = "synthseg_maps.tsv"
QC_DIR = "qc"
FAILED_DIR = "failed"  # label maps left out of training (keep_failed=False), for inspection
DEFAULT_CROP = 160  # voxels (1 mm): block the teacher sees, centred on the ventral DC / 3rd vent.
LOCALISER_IDS = VENTRAL_DC_IDS + (THIRD_VENTRICLE,)


@dataclass
class SubjectInputs:
    """Files of one FreeSurfer subject used to build its label map."""

    name: str
    image: Path
    aseg: Path


def find_subjects(subjects_dir: str | os.PathLike, names: Sequence[str] | None = None
                  ) -> list[SubjectInputs]:
    """Subjects of ``subjects_dir`` that have ``mri/aseg.mgz`` and one of SUBJECT_INPUTS.

    With ``names``, exactly those subjects (an error names the first one that is unusable).
    """
    root = Path(subjects_dir)
    if not root.is_dir():
        raise HsynexError("subjects folder not found", root)
    candidates = list(names) if names else sorted(p.name for p in root.iterdir() if p.is_dir())
    found = []
    for name in candidates:
        folder = root / name
        image = next((folder / rel for rel in SUBJECT_INPUTS if (folder / rel).is_file()), None)
        aseg = folder / SUBJECT_ASEG
        if image is None or not aseg.is_file():
            if names:
                what = "subject has no aseg.mgz" if image else \
                    f"subject has none of {', '.join(SUBJECT_INPUTS)}"
                raise HsynexError(what, folder)
            continue
        found.append(SubjectInputs(name, image, aseg))
    if not found:
        raise HsynexError("no subject with mri/aseg.mgz and a T1 image in", root)
    return found


def paint_subunits(aseg: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """aseg labels with the subunits (801-810) of ``seg`` painted over them (int32)."""
    out = np.asarray(aseg, np.int32).copy()
    hypothalamus = np.isin(seg, SUBUNIT_IDS)
    out[hypothalamus] = seg[hypothalamus]
    return out


def subunit_volumes(seg: np.ndarray, voxel_mm3: float) -> dict[str, float]:
    """Volumes (mm^3) of the ten subunits and the whole left / right / both, VOLUME_COLUMNS keys."""
    counts = {i: int(np.count_nonzero(seg == i)) for i in SUBUNIT_IDS}
    values = [counts[i] * voxel_mm3 for i in SUBUNIT_IDS]
    values += [sum(counts[i] for i in ids) * voxel_mm3 for ids in GROUPINGS.values()]
    return dict(zip(VOLUME_COLUMNS, values))


def write_tsv(path: Path, columns: Sequence[str], rows: Sequence[dict]) -> None:
    """Atomically write a tab-separated table with a header row."""
    from ..io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), delimiter="\t",
                                lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})


class LabelMapBuilder:
    """Builds the label maps of many subjects with one teacher (loaded on first use).

    ``keep_failed=False`` leaves the label map of a subject that fails the checks out of
    ``out_dir`` (it goes to ``out_dir/failed/``, which training does not read); its QC figure,
    checks and volumes are written as for the others.
    Subclasses change how a subject's image and labels are read by overriding ``load_inputs``.
    """

    def __init__(self, out_dir: str | os.PathLike, weights: str | os.PathLike | None, *,
                 crop: int = DEFAULT_CROP, force: bool = False, keep_failed: bool = True,
                 log: Callable[[str], None] = print):
        self.out_dir = Path(out_dir)
        self.weights = weights
        self.crop = crop
        self.force = force
        self.keep_failed = keep_failed  # False: a map that fails the checks is not written
        self.log = log
        self._teacher = None
        self.subunit_source = "teacher"  # for the QC figure's title

    @property
    def teacher(self):
        if self._teacher is None:
            from ..teacher.predict import Teacher

            if self.weights is None:
                raise HsynexError("the teacher needs its weights file (--weights PATH)")
            self._teacher = Teacher(self.weights)
        return self._teacher

    def labels_path(self, name: str, failed: bool = False) -> Path:
        folder = self.out_dir / FAILED_DIR if failed else self.out_dir
        return folder / f"{name}{LABELS_SUFFIX}"

    def _reusable(self, name: str) -> Path | None:
        """An existing label map of ``name`` (kept or left out) to reuse, unless ``force``."""
        if self.force:
            return None
        return next((p for p in (self.labels_path(name), self.labels_path(name, True))
                     if p.is_file()), None)

    def _store(self, name: str, painted, passed: bool, reused: Path | None) -> None:
        """Write the painted map where it belongs (``failed/`` if it fails and is left out)."""
        from ..io import save_volume

        out = self.labels_path(name, failed=not (passed or self.keep_failed))
        if out != reused:
            out.parent.mkdir(parents=True, exist_ok=True)
            save_volume(painted, out, kind="labels")
        for other in (self.labels_path(name), self.labels_path(name, True)):
            if other != out:
                other.unlink(missing_ok=True)
        self.log(f"{name}: -> {out}" if out.parent == self.out_dir else
                 f"{name}: fails the checks: label map left out (-> {out})")

    def load_inputs(self, inputs: SubjectInputs):
        """(T1 image, aseg-like labels) of one subject as ``io.Volume``s on the same grid."""
        from ..io import load_volume

        image = load_volume(inputs.image)
        aseg = load_volume(inputs.aseg, kind="labels")
        if image.shape != aseg.shape or not np.allclose(image.affine, aseg.affine, atol=1e-3):
            raise HsynexError(f"{inputs.image.name} and {inputs.aseg.name} are not on the same "
                              "voxel grid", inputs.aseg)
        return image, aseg

    def _teacher_subunits(self, inputs: SubjectInputs, image, aseg) -> np.ndarray:
        """The teacher's subunits (0 / 801-810) on aseg's grid, in a block around the ventral
        DC / 3rd ventricle."""
        from ..io import centroid_world, resample_like

        centre = centroid_world(aseg, LOCALISER_IDS)
        if centre is None:
            raise HsynexError("the labels have no ventral DC (28/60) or 3rd ventricle (14)",
                              inputs.aseg)
        start = time.perf_counter()
        seg_vol, _ = self.teacher.predict(image, crop=self.crop, center_world=centre,
                                          posteriors=False)
        if seg_vol.shape != aseg.shape:  # not 1 mm input: bring the labels to aseg's grid
            seg_vol = resample_like(seg_vol, aseg.shape, aseg.affine, order=0)
        self.log(f"{inputs.name}: teacher on {inputs.image.name} ({self.crop}^3 block) in "
                 f"{time.perf_counter() - start:.0f} s")
        return seg_vol.data

    def subject(self, inputs: SubjectInputs) -> tuple[SubunitChecks, dict[str, float]]:
        """Build (or, without ``force``, reuse) one subject's label map; QC figure and checks."""
        from ..io import Volume, load_volume
        from ..qc import save_overlay_png

        image, aseg = self.load_inputs(inputs)
        reused = self._reusable(inputs.name)
        if reused is not None:
            existing = load_volume(reused, kind="labels")
            if existing.shape != aseg.shape:
                raise HsynexError("existing label map does not fit the subject (use --force)",
                                  reused)
            seg = np.where(np.isin(existing.data, SUBUNIT_IDS), existing.data, 0)
            self.log(f"{inputs.name}: reusing {reused}")
        else:
            seg = self._teacher_subunits(inputs, image, aseg)
        checks = check_subunits(inputs.name, seg, aseg.data, aseg.affine)
        self._store(inputs.name, Volume(paint_subunits(aseg.data, seg), aseg.affine),
                    checks.passed, reused)
        voxel_mm3 = float(abs(np.linalg.det(aseg.affine[:3, :3])))
        (self.out_dir / QC_DIR).mkdir(exist_ok=True)
        save_overlay_png(self.out_dir / QC_DIR / f"{inputs.name}.png", image,
                         Volume(seg, aseg.affine),
                         title=f"{inputs.name}: {self.subunit_source} subunits on "
                               f"{inputs.image.name}")
        return checks, subunit_volumes(seg, voxel_mm3)

    def subjects(self, subjects: Sequence[SubjectInputs]
                 ) -> tuple[list[SubunitChecks], list[tuple[str, str]]]:
        """All subjects; writes the volumes and checks TSVs. Returns (checks, failures)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        all_checks, volume_rows, failures = [], [], []
        for inputs in subjects:
            try:
                checks, volumes = self.subject(inputs)
            except HsynexError as err:
                failures.append((inputs.name, str(err)))
                self.log(f"{inputs.name}: FAILED: {err}")
                continue
            all_checks.append(checks)
            volume_rows.append({"subject": inputs.name} |
                               {k: f"{v:.0f}" for k, v in volumes.items()})
        write_tsv(self.out_dir / VOLUMES_TSV, ("subject",) + VOLUME_COLUMNS, volume_rows)
        write_tsv(self.out_dir / CHECKS_TSV, CHECK_COLUMNS, [c.row() for c in all_checks])
        return all_checks, failures


def synthseg_maps(source_dir: str | os.PathLike) -> list[Path]:
    """The label maps of a SynthSeg training folder (``*.nii``, ``*.nii.gz``, ``*.mgz``)."""
    from ..io import suffix

    root = Path(source_dir)
    if not root.is_dir():
        raise HsynexError("SynthSeg label-map folder not found", root)
    maps = sorted(p for p in root.iterdir() if p.is_file() and suffix(p))
    if not maps:
        raise HsynexError("no label maps (.nii/.nii.gz/.mgz) in", root)
    return maps


def synthseg_name(path: Path) -> str:
    """``training_seg_07.nii.gz`` -> ``synthseg_07``; other names keep their stem."""
    from ..io import suffix

    stem = path.name[: -len(suffix(path))]
    match = re.search(r"(\d+)$", stem)
    return f"synthseg_{match.group(1)}" if match else f"synthseg_{stem}"


def convert_synthseg(source_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                     force: bool = False, log: Callable[[str], None] = print) -> list[dict]:
    """Rewrite SynthSeg label maps as int32 ``synthseg_XX_labels.nii.gz`` (float labels
    rounded; orientation and affine kept). They carry no subunit labels (801-810)."""
    from ..io import load_volume, save_volume

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in synthseg_maps(source_dir):
        out = out_dir / f"{synthseg_name(path)}{LABELS_SUFFIX}"
        vol = load_volume(out if out.is_file() and not force else path, kind="labels")
        if not (out.is_file() and not force):
            save_volume(vol, out, kind="labels")
        present = set(np.unique(vol.data).tolist())
        rows.append({
            "map": out.name, "source": path.name,
            "shape": "x".join(map(str, vol.shape)),
            "voxel_mm": ",".join(f"{v:.2f}" for v in vol.voxel_sizes),
            "n_labels": str(len(present) - (0 in present)),
            "has_vdc_3v": "yes" if all(i in present for i in LOCALISER_IDS) else "NO",
            "has_subunits": "yes" if present & set(SUBUNIT_IDS) else "no",
        })
        log(f"{path.name} -> {out}")
    write_tsv(out_dir / SYNTHSEG_TSV, tuple(rows[0]), rows)
    return rows


TRANSFER_DIR = "transferred"


def label_map_picture(labels: np.ndarray) -> np.ndarray:
    """A grey image of a label map for QC figures (each label its own fixed grey, 0 black)."""
    grey = (np.asarray(labels, np.int64) * 53) % 200 + 40
    return np.where(labels > 0, grey, 0).astype(np.float32)


def transfer_to_synthseg(out_dir: str | os.PathLike, atlas_names: Sequence[str], *,
                         log: Callable[[str], None] = print) -> list[SubunitChecks]:
    """Give the converted SynthSeg maps of ``out_dir`` subunits voted from the subject label
    maps ``<name>_labels.nii.gz`` of ``atlas_names`` (``labelmaps.transfer``); writes
    ``out_dir/transferred/synthseg_XX_labels.nii.gz`` (only maps that pass the checks), QC
    figures and ``checks.tsv`` (every map) there."""
    from ..io import Volume, load_volume, save_volume
    from ..qc import save_overlay_png
    from .transfer import Atlas, transfer_subunits

    out_dir = Path(out_dir)
    atlases = []
    for name in atlas_names:
        vol = load_volume(out_dir / f"{name}{LABELS_SUFFIX}", kind="labels")
        atlases.append(Atlas(vol.data, vol.affine, name))
    if not atlases:
        raise HsynexError("no subject label maps to transfer subunits from", out_dir)
    targets = sorted(out_dir.glob(f"synthseg_*{LABELS_SUFFIX}"))
    if not targets:
        raise HsynexError("no converted SynthSeg maps (synthseg_*_labels.nii.gz) in", out_dir)
    dest = out_dir / TRANSFER_DIR
    (dest / QC_DIR).mkdir(parents=True, exist_ok=True)
    all_checks = []
    for path in targets:
        target = load_volume(path, kind="labels")
        seg = transfer_subunits(target.data, target.affine, atlases)
        name = path.name[: -len(LABELS_SUFFIX)]
        checks = check_subunits(name, seg, target.data, target.affine)
        all_checks.append(checks)
        if checks.passed:
            save_volume(Volume(paint_subunits(target.data, seg), target.affine),
                        dest / path.name, kind="labels")
        else:  # only maps that pass the checks are training material
            (dest / path.name).unlink(missing_ok=True)
        save_overlay_png(dest / QC_DIR / f"{name}.png",
                         Volume(label_map_picture(target.data), target.affine),
                         Volume(seg, target.affine),
                         title=f"{name}: subunits voted from {len(atlases)} subjects")
        log(f"{path.name}: {checks.whole_mm3:.0f} mm3 of subunits -> "
            + (str(dest / path.name) if checks.passed else "rejected (fails the checks)"))
    write_tsv(dest / CHECKS_TSV, CHECK_COLUMNS, [c.row() for c in all_checks])
    return all_checks
