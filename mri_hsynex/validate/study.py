"""Running the measurements of the validation report, one cached *case* at a time.

A case is one synthetic (or real) image segmented by one engine; its record (a JSON-able dict
with Dice, volumes, true volumes and seconds) is cached under ``<cache>/cases`` keyed by the
networks, the label map, the case and the seed, so an interrupted or repeated run only does
what is new. Label maps keep their own orientation; all scoring is on the label map's 1 mm grid.
"""

from __future__ import annotations

import gc
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import HsynexError
from ..generator.data import named_by
from ..io import SUFFIXES as LABEL_MAP_SUFFIXES  # the label-map files the validation reads
from ..io import atomic_path
from ..labels import SUBUNIT_IDS, THIRD_VENTRICLE, VENTRAL_DC_IDS
from . import anatomy, contrasts
from .contrasts import Acquisition
from .engines import Segmentation, failed_segmentation, nearest_onto
from .metrics import dice_table

CASE_VERSION = 2  # bump when a change makes cached case records stale
THICKNESSES_MM = (1.0, 3.0, 5.0, 7.0)
ORIENTATIONS = ("axial", "coronal")


# --- the design ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cohort:
    """One simulated group study: ``n`` controls and ``n`` patients per atrophy fraction.

    ``contrast``/``thickness_mm``/``orientation`` None: drawn afresh for every subject (contrast
    from all named ones and fully random, thickness from ``THICKNESSES_MM``).
    """

    name: str
    fractions: tuple[float, ...]
    n: int
    contrast: str | None = None
    thickness_mm: float | None = None
    orientation: str | None = None
    engines: tuple[str, ...] = ("hsynex",)  # the teacher too where it is at home (T1, 1 mm)


@dataclass(frozen=True)
class Design:
    """What a run measures (the full report or the ``--quick`` machinery check)."""

    grid: tuple[Acquisition, ...]
    cohorts: tuple[Cohort, ...]
    qc_cases: tuple[str, ...] = ()  # acquisition names shown in the QC montage
    teacher_cases: tuple[str, ...] | None = None  # grid images the teacher runs on (None: all)
    real_teacher: bool = True  # run the teacher on real scans (else: the label map's subunits)

    def runs(self, engine: str, acq: Acquisition) -> bool:
        """Whether ``engine`` segments grid image ``acq`` (the teacher costs ~40-80 s each)."""
        return engine != "teacher" or self.teacher_cases is None \
            or acq.name in self.teacher_cases

    @property
    def n_group_scans(self) -> int:
        return sum(c.n * (1 + len(c.fractions)) for c in self.cohorts)


def full_design() -> Design:
    """6 contrasts x (1 mm + 3/5/7 mm axial and coronal) = 42 grid images, each segmented by
    hsynex and by the teacher; 160 group scans (hsynex)."""
    grid = []
    for contrast in contrasts.CONTRAST_NAMES:
        grid.append(Acquisition(contrast, 1.0))
        for thickness in THICKNESSES_MM[1:]:
            for orientation in ORIENTATIONS:
                grid.append(Acquisition(contrast, thickness, orientation))
    cohorts = (
        Cohort("T1-like 1 mm", (0.10,), 20, "T1", 1.0, "axial", ("hsynex", "teacher")),
        Cohort("FLAIR-like 5 mm axial", (0.10,), 20, "FLAIR", 5.0, "axial"),
        Cohort("mixed contrasts and thicknesses", (0.05, 0.10, 0.15), 20),
    )
    qc = tuple(a.name for a in grid if a.thickness_mm in (1.0, 5.0)
               and a.orientation == "axial")
    return Design(tuple(grid), cohorts, qc)


def quick_design() -> Design:
    """2 contrasts x 2 thicknesses, n = 4 per group: checks the machinery in a few minutes (the
    teacher on the two 1 mm images only; on the real scan its subunits in the label map)."""
    grid = tuple(Acquisition(c, t, "axial") for c in ("T1", "FLAIR") for t in (1.0, 5.0))
    cohorts = (
        Cohort("T1-like 1 mm", (0.10,), 4, "T1", 1.0, "axial"),
        Cohort("FLAIR-like 5 mm axial", (0.10,), 4, "FLAIR", 5.0, "axial"),
    )
    return Design(grid, cohorts, tuple(a.name for a in grid),
                  teacher_cases=("T1_1mm", "FLAIR_1mm"), real_teacher=False)


# --- inputs -------------------------------------------------------------------------------------
@dataclass
class LabelMap:
    """A held-out label map, cropped to the head (1 mm, its own orientation)."""

    name: str
    path: Path
    labels: np.ndarray
    affine: np.ndarray
    fingerprint: str

    @property
    def voxel_mm3(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3])))


def file_fingerprint(path: Path) -> str:
    """sha1 of a file's bytes (label maps are small once compressed)."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def folder_fingerprint(folder: Path | None) -> str:
    """Names and contents of a model folder's networks and settings (``*.keras``,
    ``model.json``; other files such as a model card do not count): a fresh checkout or a copy
    keeps the cache, new weights do not."""
    if folder is None or not Path(folder).is_dir():
        return "none"
    parts = [f"{p.name}:{file_fingerprint(p)}"
             for p in sorted(Path(folder).iterdir())
             if p.is_file() and (p.suffix == ".keras" or p.name == "model.json")]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def hsynex_fingerprint(folder: Path | None) -> str:
    """The model folder's fingerprint, the version of the volume correction
    (``predict/pvc.py``), the labelling rule (``predict/postprocess.py``), the soft-volume rule
    (``volumes.py``) and the brain check's thresholds: cached hsynex records are redone when any
    of them changes."""
    from .. import volumes
    from ..predict import brain_check
    from ..predict.postprocess import LABEL_RULE
    from ..predict.pvc import VERSION

    return (f"{folder_fingerprint(folder)}:pv{VERSION}:labels{LABEL_RULE}"
            f":volumes{volumes.SOFT_VOLUME_RULE}"
            f":brain{brain_check.MIN_MUTUAL_INFORMATION:g}/{brain_check.MIN_MARGIN_OVER_NULL:g}")


def find_holdout_maps(labels_dir: Path, holdout: tuple[str, ...]) -> list[Path]:
    """Label maps in ``labels_dir`` whose file name contains one of the ``holdout`` strings."""
    if not Path(labels_dir).is_dir():
        raise HsynexError("label-map folder not found", labels_dir)
    maps = sorted(p for p in Path(labels_dir).iterdir()
                  if p.name.endswith(LABEL_MAP_SUFFIXES) and named_by(p, holdout))
    if not maps:
        raise HsynexError(f"no held-out label map (name containing {' or '.join(holdout)}) in",
                          labels_dir)
    return maps


def load_label_map(path: Path) -> LabelMap:
    """Load a label map (integer ids; float storage is rounded), crop it to the head."""
    import nibabel as nib

    try:
        image = nib.load(path)
        data = np.asarray(image.dataobj)
    except Exception as err:  # nibabel raises many types for unreadable files
        raise HsynexError(f"cannot read label map ({err.__class__.__name__})", path) from err
    if data.ndim != 3:
        raise HsynexError("label map is not a 3-D volume", path)
    labels = np.rint(data).astype(np.int32)
    if not np.isin(labels, SUBUNIT_IDS).any():
        raise HsynexError("label map has no hypothalamic subunits (801-810)", path)
    labels, affine = contrasts.crop_to_head(labels, image.affine)
    labels = contrasts.add_head_shells(labels, affine)  # once, so that they deform with it
    return LabelMap(map_name(path), path, labels, affine, file_fingerprint(path))


def map_name(path: Path) -> str:
    """A label map's name: its file name without extensions and ``_labels``."""
    return Path(path).name.split(".")[0].removesuffix("_labels")


def synthesis_fingerprint() -> str:
    """The tables that decide what a synthetic image looks like (part of every cache key)."""
    tables = [contrasts.CONTRASTS, contrasts.TISSUE_OF_LABEL, contrasts.SHELLS_MM,
              contrasts.SHELL_LABELS, asdict(Acquisition("T1"))]
    return hashlib.sha1(json.dumps(tables, sort_keys=True, default=str).encode()).hexdigest()[:12]


# --- cases --------------------------------------------------------------------------------------
@dataclass
class Runner:
    """Runs and caches cases; ``engines`` maps an engine name to an object with ``segment``."""

    cache_dir: Path
    engines: dict[str, object]
    engine_fingerprints: dict[str, str]
    seed: int = 0
    log: Callable[[str], None] = field(default=lambda msg: print(msg, flush=True))
    counts: dict[str, int] = field(default_factory=dict)  # segmentations actually run
    rss_mb: float = 0.0  # largest resident memory seen after a segmentation (MB)

    def __post_init__(self) -> None:
        self.cache_dir = Path(self.cache_dir)
        (self.cache_dir / "cases").mkdir(parents=True, exist_ok=True)
        (self.cache_dir / "qc").mkdir(parents=True, exist_ok=True)

    def case_seed(self, *parts: object) -> int:
        """A seed of its own for each case, derived from the run's seed and the case's name."""
        text = json.dumps([self.seed, *[str(p) for p in parts]])
        return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)

    def _key(self, engine: str, spec: dict) -> Path:
        text = json.dumps([CASE_VERSION, synthesis_fingerprint(),
                           self._fingerprint(engine), self.seed, spec],
                          sort_keys=True)
        digest = hashlib.sha1(text.encode()).hexdigest()[:20]
        return self.cache_dir / "cases" / f"{engine}-{digest}.json"

    def _fingerprint(self, engine: str) -> str | None:
        """An engine's fingerprint; a variant such as ``hsynex+aseg`` has its engine's."""
        return self.engine_fingerprints.get(engine,
                                            self.engine_fingerprints.get(engine.split("+")[0]))

    def cached(self, engine: str, spec: dict) -> dict | None:
        path = self._key(engine, spec)
        if path.is_file():
            return json.loads(path.read_text())
        return None

    def store(self, engine: str, spec: dict, record: dict) -> dict:
        with atomic_path(self._key(engine, spec)) as tmp:
            tmp.write_text(json.dumps(record))
        return record

    def segment(self, engine: str, image_path: Path, aseg_path: Path | None = None,
                centre_world: np.ndarray | None = None) -> Segmentation:
        """Run one engine on one image; a refused image (HsynexError, e.g. no brain found) is
        logged and counts as a failed segmentation (Dice 0, volumes unknown)."""
        self.counts[engine] = self.counts.get(engine, 0) + 1
        try:
            if centre_world is None:
                return self.engines[engine].segment(image_path, aseg_path=aseg_path)
            return self.engines[engine].segment(image_path, aseg_path=aseg_path,
                                                centre_world=centre_world)
        except HsynexError as err:
            self.log(f"  {engine} failed on {Path(image_path).name}: {err.what}")
            return failed_segmentation(err.what)
        finally:
            # the engines' results hold large arrays in reference cycles, which Python's
            # collector (counting objects, not bytes) would free only much later: ~100 MB per
            # scan piled up to 12 GB over a full run before this
            gc.collect()
            self.rss_mb = max(self.rss_mb, current_rss_mb())


def current_rss_mb() -> float:
    """Resident memory of this process now (MB; 0 where /proc is not available)."""
    try:
        with open("/proc/self/status") as f:
            line = next(x for x in f if x.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration, ValueError):
        return 0.0


def remembered_rss_mb(cache_dir: Path, fingerprints: dict[str, str], measured_mb: float) -> float:
    """The largest resident memory measured after a segmentation by any run with these engines
    (``fingerprints``), kept in ``cache_dir/rss.json``: a run served from the cache measures
    nothing, yet the number belongs in its report. 0 when no run has measured it."""
    path = Path(cache_dir) / "rss.json"
    key = hashlib.sha1(json.dumps(fingerprints, sort_keys=True).encode()).hexdigest()[:20]
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        stored = {}
    best = max(float(measured_mb), float(stored.get(key, 0.0)))
    if best > float(stored.get(key, 0.0)):
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({**stored, key: best}))
    return best


def write_image(path: Path, image: np.ndarray, affine: np.ndarray) -> Path:
    """Write a synthetic test image (float32 NIfTI, RAS affine) atomically."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), tmp)
    return path


def _score(seg: Segmentation, lmap: LabelMap, truth: np.ndarray) -> dict[str, float]:
    on_grid = nearest_onto(seg.labels, seg.affine, truth.shape, lmap.affine)
    return {str(k): v for k, v in dice_table(truth, on_grid).items()}


def _jsonable_volumes(volumes: dict[int, float]) -> dict[str, float]:
    return {str(k): float(v) for k, v in volumes.items()}


def map_context(runner: Runner, lmap: LabelMap) -> tuple[dict[str, float], np.ndarray, Path]:
    """What every study that renders ``lmap`` needs: its true volumes (as records store them),
    the localisation centre the teacher is given, and the folder its test images go to."""
    return (_jsonable_volumes(anatomy.label_volumes(lmap.labels, lmap.voxel_mm3)),
            localisation_centre(lmap.labels, lmap.affine),
            runner.cache_dir / "images" / lmap.name)


def run_grid(runner: Runner, lmap: LabelMap, design: Design) -> list[dict]:
    """Section 1: each grid acquisition of the held-out map, segmented by every engine."""
    records = []
    truth_volumes, centre, work = map_context(runner, lmap)
    for k, acq in enumerate(design.grid):
        spec = {"kind": "grid", "map": lmap.fingerprint, "acq": asdict(acq)}
        engines = [e for e in runner.engines if design.runs(e, acq)]
        todo = [e for e in engines if runner.cached(e, spec) is None]
        image_path = work / f"grid_{acq.name}.nii"
        prep = float("nan")
        if todo:
            t0 = time.perf_counter()
            image, affine = contrasts.synthesize(lmap.labels, lmap.affine, acq,
                                                 runner.case_seed("grid", lmap.name, acq.name))
            write_image(image_path, image, affine)
            prep = time.perf_counter() - t0
        segs = {}
        for engine in engines:
            record = runner.cached(engine, spec)
            if record is None:
                seg = runner.segment(engine, image_path, centre_world=centre)
                segs[engine] = seg
                record = runner.store(engine, spec, {
                    "kind": "grid", "map": lmap.name, "engine": engine, **asdict(acq),
                    "acq": acq.name, "dice": _score(seg, lmap, lmap.labels),
                    "prep_seconds": prep if engine == todo[0] else 0.0,
                    "volumes": _jsonable_volumes(seg.volumes), "truth": truth_volumes,
                    "seconds": seg.seconds, "failed": seg.failed})
            records.append(record)
            runner.log(f"[grid {k + 1}/{len(design.grid)}] {lmap.name} {acq.name:>20s} "
                       f"{engine:>7s}: whole Dice {record['dice']['813']:.3f} "
                       f"({record['seconds']:.1f} s{'' if engine in segs else ', cached'})")
        if acq.name in design.qc_cases and segs:
            save_qc_slices(runner.cache_dir / "qc" / f"{lmap.name}_{acq.name}.npz", lmap,
                           image_path, segs)
        image_path.unlink(missing_ok=True)
    return records


def _cohort_subjects(runner: Runner, cohort: Cohort) -> list[dict]:
    """The subjects of a cohort: group, atrophy fraction, acquisition and seed, all fixed by the
    run's seed."""
    subjects = []
    groups = [("control", 0.0)] + [("patient", f) for f in cohort.fractions]
    for group, fraction in groups:
        for i in range(cohort.n):
            seed = runner.case_seed("group", cohort.name, group, fraction, i)
            rng = np.random.default_rng(seed)
            contrast = cohort.contrast or str(rng.choice(contrasts.CONTRAST_NAMES))
            thickness = cohort.thickness_mm or float(rng.choice(THICKNESSES_MM))
            orientation = cohort.orientation or str(rng.choice(ORIENTATIONS))
            subjects.append({"group": group, "fraction": fraction, "index": i, "seed": seed,
                             "acq": Acquisition(contrast, thickness, orientation)})
    return subjects


def run_cohort(runner: Runner, lmap: LabelMap, cohort: Cohort) -> list[dict]:
    """Section 4: simulate, segment and measure one cohort with its engines (hsynex; the
    teacher as well on the T1-like 1 mm cohort, as a check that the simulated atrophy is
    visible to a method that works on those images)."""
    engines = [e for e in cohort.engines if e in runner.engines]
    shrunk = {f: anatomy.shrink_hypothalamus(lmap.labels, f, contrasts.voxel_sizes(lmap.affine))
              for f in cohort.fractions}
    records = []
    subjects = _cohort_subjects(runner, cohort)
    for k, subject in enumerate(subjects):
        acq: Acquisition = subject["acq"]
        spec = {"kind": "group", "map": lmap.fingerprint, "cohort": asdict(cohort),
                "group": subject["group"], "fraction": subject["fraction"],
                "index": subject["index"], "acq": asdict(acq)}
        spec["cohort"].pop("engines")  # adding an engine must not invalidate the others
        done = {e: runner.cached(e, spec) for e in engines}
        todo = [e for e in engines if done[e] is None]
        if todo:
            done.update(_segment_subject(runner, lmap, cohort, subject, shrunk, spec, todo))
        for engine in engines:
            record = done[engine]
            records.append(record)
            runner.log(f"[{cohort.name} {k + 1}/{len(subjects)}] {engine} {record['group']} "
                       f"{record['fraction']:.0%} {record['acq']}: whole "
                       f"{record['volumes']['813']:.0f} mm3 (true {record['truth']['813']:.0f})"
                       + (f", RSS {current_rss_mb():.0f} MB" if engine in todo else " cached"))
    return records


def _segment_subject(runner: Runner, lmap: LabelMap, cohort: Cohort, subject: dict,
                     shrunk: dict, spec: dict, engines: list[str]) -> dict[str, dict]:
    """Simulate one subject of a cohort (deformation, image) and segment it with ``engines``."""
    acq: Acquisition = subject["acq"]
    t0 = time.perf_counter()
    rng = np.random.default_rng(subject["seed"])
    base = shrunk[subject["fraction"]] if subject["fraction"] else lmap.labels
    labels = anatomy.random_deformation(
        base, rng, voxel_mm=float(contrasts.voxel_sizes(lmap.affine).mean()))
    truth = anatomy.label_volumes(labels, lmap.voxel_mm3)
    image, affine = contrasts.synthesize(labels, lmap.affine, acq, int(rng.integers(2**31)))
    work = runner.cache_dir / "images" / lmap.name
    image_path = write_image(work / f"group_{subject['seed']}.nii", image, affine)
    prep = time.perf_counter() - t0
    centre = localisation_centre(labels, lmap.affine)
    out = {}
    try:
        for engine in engines:
            seg = runner.segment(engine, image_path, centre_world=centre)
            out[engine] = runner.store(engine, spec, {
                "kind": "group", "map": lmap.name, "engine": engine, "cohort": cohort.name,
                "group": subject["group"], "fraction": subject["fraction"],
                "index": subject["index"], "acq": acq.name, "contrast": acq.contrast,
                "thickness_mm": acq.thickness_mm, "orientation": acq.orientation,
                "volumes": _jsonable_volumes(seg.volumes),
                "truth": _jsonable_volumes(truth), "dice": _score(seg, lmap, labels),
                "prep_seconds": prep if engine == engines[0] else 0.0,
                "seconds": seg.seconds, "failed": seg.failed})
    finally:
        image_path.unlink(missing_ok=True)
    return out


# --- real scans ---------------------------------------------------------------------------------
SUBJECT_IMAGES = ("mri/T1.mgz", "mri/norm.mgz", "mri/orig.mgz")


def find_real_subjects(subjects_dir: Path | None, holdout: tuple[str, ...]
                       ) -> list[tuple[str, Path, Path | None]]:
    """Held-out subjects with a T1 image: ``(name, image, aseg or None)``."""
    if subjects_dir is None or not Path(subjects_dir).is_dir():
        return []
    found = []
    for subject in sorted(Path(subjects_dir).iterdir()):
        if not any(h in subject.name for h in holdout):
            continue
        image = next((subject / p for p in SUBJECT_IMAGES if (subject / p).is_file()), None)
        if image is None:
            continue
        aseg = subject / "mri" / "aseg.mgz"
        found.append((subject.name, image, aseg if aseg.is_file() else None))
    return found


def find_mindboggle_subjects(folder: Path | None, names: tuple[str, ...]
                             ) -> list[tuple[str, Path, Path | None]]:
    """Subjects of a Mindboggle-style folder (``<name>/t1weighted_brain.nii.gz`` and
    ``<name>/labels.nii.gz``, whose aseg ids place the teacher's block and serve as hsynex's
    aseg) whose name contains one of ``names``: ``(name, image, labels or None)``."""
    if folder is None or not Path(folder).is_dir() or not names:
        return []
    found = []
    for subject in sorted(Path(folder).iterdir()):
        image = subject / "t1weighted_brain.nii.gz"
        if any(n in subject.name for n in names) and image.is_file():
            labels = subject / "labels.nii.gz"
            found.append((subject.name, image, labels if labels.is_file() else None))
    return found


def run_real(runner: Runner, name: str, image: Path, aseg: Path | None,
             reference: LabelMap | None = None, run_teacher: bool = True) -> list[dict]:
    """Section 2: a real T1 scan segmented by hsynex (with the aseg and with the localiser) and by
    the teacher; Dice of hsynex against the teacher on the scan's grid. Without the teacher,
    the teacher subunits stored in the held-out label map (``reference``) serve instead."""
    import nibabel as nib

    t1 = nib.load(image)
    shape, affine = t1.shape[:3], t1.affine
    fingerprint = file_fingerprint(image)
    variants = [("hsynex+aseg", "hsynex", aseg), ("hsynex", "hsynex", None)]
    if aseg is None:
        variants = variants[1:]
    segs: dict[str, dict] = {}
    teacher_labels = None
    if "teacher" in runner.engines and (run_teacher or reference is None):
        spec = {"kind": "real", "image": fingerprint, "variant": "teacher"}
        record = runner.cached("teacher", spec)
        npz = runner.cache_dir / "cases" / f"real_{name}_teacher.npz"
        if record is None or not npz.is_file():
            centre = None
            if aseg is not None:
                aseg_image = nib.load(aseg)
                centre = localisation_centre(np.rint(np.asarray(aseg_image.dataobj)).astype(int),
                                             aseg_image.affine)
            seg = runner.segment("teacher", image, centre_world=centre)
            teacher_labels = nearest_onto(seg.labels, seg.affine, shape, affine)
            np.savez_compressed(npz, labels=teacher_labels)
            record = runner.store("teacher", spec, {
                "kind": "real", "subject": name, "engine": "teacher", "variant": "teacher",
                "volumes": _jsonable_volumes(seg.volumes), "seconds": seg.seconds,
                "failed": seg.failed})
        else:
            teacher_labels = np.load(npz)["labels"]
        segs["teacher"] = record
        reference_name = "teacher (run here)"
    elif reference is not None:
        teacher_labels = nearest_onto(reference.labels, reference.affine, shape, affine)
        teacher_labels = np.where(np.isin(teacher_labels, SUBUNIT_IDS), teacher_labels, 0)
        reference_name = f"teacher subunits of {reference.path.name}"
    else:
        return []
    records = []
    for variant, engine, aseg_path in variants:
        spec = {"kind": "real", "image": fingerprint, "variant": variant,
                "reference": reference_name}
        record = runner.cached(engine, spec)
        if record is None:
            seg = runner.segment(engine, image, aseg_path=aseg_path)
            on_grid = nearest_onto(seg.labels, seg.affine, shape, affine)
            record = runner.store(engine, spec, {
                "kind": "real", "subject": name, "engine": engine, "variant": variant,
                "reference": reference_name,
                "dice": {str(k): v for k, v in dice_table(teacher_labels, on_grid).items()},
                "volumes": _jsonable_volumes(seg.volumes), "seconds": seg.seconds,
                "failed": seg.failed})
        records.append(record)
        runner.log(f"[real] {name} {variant}: whole Dice vs {reference_name} "
                   f"{record['dice']['813']:.3f}")
    records.extend(segs.values())
    return records


# --- QC slices ----------------------------------------------------------------------------------
def coronal_crop(volume: np.ndarray, affine: np.ndarray, centre_world: np.ndarray,
                 half_mm: int = 24, order: int = 0) -> np.ndarray:
    """A coronal slice (1 mm pixels, rows superior -> inferior, columns right -> left, i.e.
    radiological) of ``half_mm`` around a world point, resampled from any grid."""
    from scipy import ndimage

    offsets = np.arange(-half_mm, half_mm + 1, dtype=float)
    s, x = np.meshgrid(offsets[::-1], offsets[::-1], indexing="ij")
    world = np.stack([centre_world[0] + x, np.full_like(x, centre_world[1]),
                      centre_world[2] + s, np.ones_like(x)])
    vox = np.tensordot(np.linalg.inv(affine), world, axes=1)[:3]
    return ndimage.map_coordinates(np.asarray(volume, dtype=np.float32), vox, order=order,
                                   mode="constant", cval=0)


def localisation_centre(labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World (RAS mm) centroid of the ventral DCs and 3rd ventricle: where recon-all's aseg says
    the hypothalamus is (used to place the teacher's block)."""
    idx = np.argwhere(np.isin(labels, VENTRAL_DC_IDS + (THIRD_VENTRICLE,) + SUBUNIT_IDS))
    if idx.size == 0:
        idx = np.argwhere(labels > 0)
    if idx.size == 0:
        idx = (np.array(labels.shape)[None] - 1) / 2.0
    return affine[:3, :3] @ idx.mean(axis=0) + affine[:3, 3]


def hypothalamus_centre(labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World (RAS mm) centre of the hypothalamus (or of the ventral DCs without it)."""
    idx = np.argwhere(np.isin(labels, SUBUNIT_IDS))
    if idx.size == 0:
        idx = np.argwhere(np.isin(labels, VENTRAL_DC_IDS))
    if idx.size == 0:
        idx = np.argwhere(labels > 0)
    return affine[:3, :3] @ idx.mean(axis=0) + affine[:3, 3]


def save_qc_slices(path: Path, lmap: LabelMap, image_path: Path,
                   segs: dict[str, Segmentation]) -> None:
    """Store coronal crops (image, truth, each engine) of one grid case for the QC montage."""
    import nibabel as nib

    image = nib.load(image_path)
    centre = hypothalamus_centre(lmap.labels, lmap.affine)
    crops = {"image": coronal_crop(np.asarray(image.dataobj), image.affine, centre, order=1),
             "truth": coronal_crop(lmap.labels, lmap.affine, centre)}
    if path.is_file():  # engines run earlier keep their crops
        with np.load(path) as old:
            crops = {**{k: old[k] for k in old.files}, **crops}
    for engine, seg in segs.items():
        crops[engine] = coronal_crop(seg.labels, seg.affine, centre)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **crops)
