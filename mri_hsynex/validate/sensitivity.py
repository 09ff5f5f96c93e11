"""Paired sensitivity study (issue 13): does the measured volume follow the anatomy?

Each held-out label map is redrawn 3x finer around the hypothalamus
(:func:`~mri_hsynex.validate.anatomy.fine_patch`) and shrunk there by 10 and 20 % in two ways
(:func:`~mri_hsynex.validate.anatomy.shrink_hypothalamus`): ``ventricle`` (the lost tissue becomes
3rd ventricle: the ventricle widens) and ``vdc`` (the outer part becomes ventral DC). Every member
of a pair (the original and a shrunk copy) is rendered with the *same* seed, so contrast, bias and
noise are identical and only the anatomy differs (fixed tissue means per contrast, true partial
volume from the fine grid, bias, Rician noise: ``contrasts.synthesize``, not hsynex's training
generator), at 1 mm and with 5 mm axial slices, and segmented without an aseg.

    sensitivity = (measured / measured at 0 %  - 1) / (true / true at 0 %  - 1)

1 follows the anatomy, 0 is blind to it. :func:`paired_sensitivity` runs the study on its own
(a model folder or an engine, a few label maps) and returns the table in a few minutes, for
comparing training checkpoints; ``mri_hsynex validate`` runs it as part of the report.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import anatomy, contrasts
from .contrasts import Acquisition
from .study import LabelMap, Runner, _jsonable_volumes, localisation_centre, write_image

SENSITIVITY_VERSION = 1  # bump when a change makes cached sensitivity cases stale
FINE_FACTOR = 3  # the fine grid: 1/3 of the map's voxel
WHOLE, LEFT, RIGHT = 813, 811, 812
KIND_ORDER = ("ventricle", "vdc")  # the report's order of the two kinds of shrinkage


@dataclass(frozen=True)
class SensitivityDesign:
    """What the study renders: every contrast x thickness x seed, each as the original map and
    shrunk by every fraction in every kind. The teacher runs on ``teacher_contrasts`` only."""

    contrasts: tuple[str, ...] = ("T1", "T2", "PD", "FLAIR")
    thicknesses_mm: tuple[float, ...] = (1.0, 5.0)
    kinds: tuple[str, ...] = KIND_ORDER
    fractions: tuple[float, ...] = (0.10, 0.20)
    seeds: tuple[int, ...] = (0,)
    orientation: str = "axial"
    teacher_contrasts: tuple[str, ...] = ("T1",)
    # also run hsynex with each member's aseg (its ventral DC, now holding the subunits, and
    # 3rd ventricle, as FreeSurfer's aseg has them): the mask and 3rd-ventricle exclusion
    with_aseg: bool = True

    @property
    def acquisitions(self) -> list[Acquisition]:
        return [Acquisition(c, t, self.orientation) for c in self.contrasts
                for t in self.thicknesses_mm]

    @property
    def members(self) -> list[tuple[str, float]]:
        """``(kind, fraction)`` of every pair member; ``("none", 0.0)`` is the original."""
        return [("none", 0.0)] + [(k, f) for k in self.kinds for f in self.fractions]

    def n_images(self, n_maps: int = 1) -> int:
        return n_maps * len(self.acquisitions) * len(self.seeds) * len(self.members)


def quick_sensitivity_design() -> SensitivityDesign:
    """T1 and FLAIR, 1 and 5 mm, 20 % only: 12 images per map (the ``--quick`` check)."""
    return SensitivityDesign(contrasts=("T1", "FLAIR"), fractions=(0.20,))


def member_aseg(lmap: LabelMap, patch: anatomy.FinePatch) -> np.ndarray:
    """The aseg FreeSurfer would give for a pair member: the map with its fine patch sampled at
    each voxel's centre, the subunits inside their side's ventral DC (an aseg has no
    hypothalamus)."""
    from ..labels import LEFT_SUBUNIT_IDS, LEFT_VENTRAL_DC, RIGHT_SUBUNIT_IDS, RIGHT_VENTRAL_DC

    labels = lmap.labels.copy()
    c = patch.factor // 2
    labels[patch.box] = patch.labels[c::patch.factor, c::patch.factor, c::patch.factor]
    labels[np.isin(labels, LEFT_SUBUNIT_IDS)] = LEFT_VENTRAL_DC
    labels[np.isin(labels, RIGHT_SUBUNIT_IDS)] = RIGHT_VENTRAL_DC
    return labels


# --- anatomy ------------------------------------------------------------------------------------
def shrunk_patches(lmap: LabelMap, design: SensitivityDesign,
                   factor: int = FINE_FACTOR) -> dict[tuple[str, float], anatomy.FinePatch]:
    """The fine patch of every pair member of one map (the original under ``("none", 0.0)``)."""
    base = anatomy.fine_patch(lmap.labels, lmap.affine, factor)
    out = {}
    for kind, fraction in design.members:
        if kind == "none":
            out[(kind, fraction)] = base
        else:
            out[(kind, fraction)] = base.with_labels(anatomy.shrink_hypothalamus(
                base.labels, fraction, base.voxel_mm, kind=kind))
    return out


# --- running ------------------------------------------------------------------------------------
def run_sensitivity(runner: Runner, lmap: LabelMap, design: SensitivityDesign,
                    engines: Sequence[str] | None = None) -> list[dict]:
    """Render, segment (cached per case) and record every member of every pair of one map.

    Engine ``hsynex+aseg`` (with ``design.with_aseg``): hsynex given the member's aseg
    (:func:`member_aseg`)."""
    engines = [e for e in (engines or runner.engines) if e in runner.engines]
    if design.with_aseg and "hsynex" in engines:
        engines.append("hsynex+aseg")
    patches: dict | None = None
    centre = localisation_centre(lmap.labels, lmap.affine)
    work = runner.cache_dir / "images" / lmap.name
    records = []
    cases = [(acq, seed, member) for acq in design.acquisitions for seed in design.seeds
             for member in design.members]
    for k, (acq, seed, (kind, fraction)) in enumerate(cases):
        spec = {"kind": "sensitivity", "version": SENSITIVITY_VERSION, "map": lmap.fingerprint,
                "acq": asdict(acq), "seed": seed, "shrink": kind, "fraction": fraction,
                "factor": FINE_FACTOR}
        wanted = [e for e in engines
                  if e != "teacher" or acq.contrast in design.teacher_contrasts]
        done = {e: runner.cached(e, spec) for e in wanted}
        todo = [e for e in wanted if done[e] is None]
        if todo:
            if patches is None:
                patches = shrunk_patches(lmap, design)
            done.update(_segment_member(runner, lmap, acq, seed, (kind, fraction),
                                        patches[(kind, fraction)], spec, todo, centre, work))
        for engine in wanted:
            record = done[engine]
            records.append(record)
            runner.log(f"[sensitivity {k + 1}/{len(cases)}] {lmap.name} {acq.name} {kind} "
                       f"{fraction:.0%} {engine}: whole {record['volumes']['813']:.0f} mm3 "
                       f"(true {record['truth']['813']:.0f})"
                       + ("" if engine in todo else " cached"))
    return records


def _segment_member(runner: Runner, lmap: LabelMap, acq: Acquisition, seed: int,
                    member: tuple[str, float], patch: anatomy.FinePatch, spec: dict,
                    engines: list[str], centre: np.ndarray, work: Path) -> dict[str, dict]:
    """Render one pair member (the pair's seed: same contrast, bias and noise for every member)
    and segment it with ``engines``."""
    kind, fraction = member
    t0 = time.perf_counter()
    image, affine = contrasts.synthesize(
        lmap.labels, lmap.affine, acq,
        runner.case_seed("sensitivity", lmap.name, acq.name, seed), fine=patch)
    image_path = write_image(work / f"sensitivity_{acq.name}_{kind}.nii", image, affine)
    aseg_path = None
    if any(e.endswith("+aseg") for e in engines):
        aseg_path = write_image(work / f"sensitivity_{acq.name}_{kind}_aseg.nii",
                                member_aseg(lmap, patch), lmap.affine)
    prep = time.perf_counter() - t0
    out = {}
    try:
        for engine in engines:
            base, _, with_aseg = engine.partition("+")
            seg = runner.segment(base, image_path, aseg_path=aseg_path if with_aseg else None,
                                 centre_world=centre)
            variants = {name: _jsonable_volumes(v) for name, v in (seg.variants or {}).items()}
            out[engine] = runner.store(engine, spec, {
                "kind": "sensitivity", "map": lmap.name, "engine": engine,
                "contrast": acq.contrast, "thickness_mm": acq.thickness_mm, "acq": acq.name,
                "seed": seed, "shrink": kind, "fraction": fraction,
                "volumes": _jsonable_volumes(seg.volumes), "variants": variants,
                "truth": _jsonable_volumes(patch.volumes()),
                "prep_seconds": prep if engine == engines[0] else 0.0,
                "seconds": seg.seconds, "failed": seg.failed})
    finally:
        image_path.unlink(missing_ok=True)
        if aseg_path is not None:
            aseg_path.unlink(missing_ok=True)
    return out


def paired_sensitivity(engine_or_model_dir, maps: Iterable[LabelMap | str | os.PathLike],
                       design: SensitivityDesign | None = None, cache_dir=None,
                       threads: int | None = None, seed: int = 0,
                       log: Callable[[str], None] | None = None) -> list[dict]:
    """The study on its own: a model folder (hsynex's networks, with every post-processing
    variant) or an engine (anything with ``segment(image_path, aseg_path=None,
    centre_world=None)``), a few label maps (paths or loaded), a design (default: 4 contrasts x
    1/5 mm x both kinds x 10/20 %, 40 images per map, about 2 min per map on 2 cores).

    Returns :func:`sensitivity_rows` (one dict per engine, variant, contrast, thickness and kind,
    with ``sensitivity``); the case records are kept in ``cache_dir`` (a temporary folder by
    default), so repeating a call with the same networks costs nothing.
    """
    from .study import hsynex_fingerprint, load_label_map

    design = design or SensitivityDesign()
    if hasattr(engine_or_model_dir, "segment"):
        engine, fingerprint = engine_or_model_dir, f"engine-{id(engine_or_model_dir)}"
    else:
        from .probe import ProbeEngine

        engine = ProbeEngine(engine_or_model_dir, threads, seed)
        fingerprint = hsynex_fingerprint(Path(engine_or_model_dir))
    maps = [m if isinstance(m, LabelMap) else load_label_map(Path(m)) for m in maps]
    with tempfile.TemporaryDirectory(prefix="hsynex-sensitivity-") as tmp:
        runner = Runner(Path(cache_dir or tmp), {"hsynex": engine}, {"hsynex": fingerprint},
                        seed, log=log or (lambda msg: None))
        records = [r for m in maps for r in run_sensitivity(runner, m, design)]
    return sensitivity_rows(records)


# --- arithmetic ---------------------------------------------------------------------------------
def record_volume(record: dict, variant: str = "pipeline", label: int = WHOLE) -> float:
    """A record's measured volume of ``label`` in one variant (``pipeline``: the engine's own)."""
    if variant == "pipeline":
        volumes = record["volumes"]
    else:
        volumes = (record.get("variants") or {}).get(variant) or {}
    value = volumes.get(str(label))
    return float("nan") if value is None else float(value)


def sensitivity(measured: float, measured0: float, true: float, true0: float) -> float:
    """Measured relative change / true relative change (NaN when either is undefined)."""
    if not all(np.isfinite(v) for v in (measured, measured0, true, true0)) \
            or measured0 <= 0 or true0 <= 0 or true == true0:
        return float("nan")
    return (measured / measured0 - 1.0) / (true / true0 - 1.0)


def paired_changes(records: list[dict], variant: str = "pipeline",
                   label: int = WHOLE) -> list[dict]:
    """One dict per shrunk record with its original: relative changes and the sensitivity."""
    sens = [r for r in records if r.get("kind") == "sensitivity"]
    base = {(r["engine"], r["map"], r["acq"], r["seed"]): r for r in sens
            if r["shrink"] == "none"}
    out = []
    for r in sens:
        r0 = base.get((r["engine"], r["map"], r["acq"], r["seed"]))
        if r["shrink"] == "none" or r0 is None:
            continue
        m, m0 = record_volume(r, variant, label), record_volume(r0, variant, label)
        t, t0 = float(r["truth"][str(label)]), float(r0["truth"][str(label)])
        out.append({"engine": r["engine"], "variant": variant, "label": label, "map": r["map"],
                    "contrast": r["contrast"], "thickness_mm": r["thickness_mm"],
                    "seed": r["seed"], "shrink": r["shrink"], "fraction": r["fraction"],
                    "measured0": m0, "measured": m, "true0": t0, "true": t,
                    "measured_change": m / m0 - 1 if m0 > 0 else float("nan"),
                    "true_change": t / t0 - 1, "sensitivity": sensitivity(m, m0, t, t0)})
    return out


def _mean(values: Iterable[float]) -> float:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def sensitivity_rows(records: list[dict], variants: Sequence[str] = ("pipeline",),
                     label: int = WHOLE) -> list[dict]:
    """Mean sensitivity per engine, variant, contrast, thickness and kind (over maps, seeds
    and fractions), with the number of pairs and the mean measured and true changes."""
    rows = []
    engines = list(dict.fromkeys(r["engine"] for r in records if r["kind"] == "sensitivity"))
    for engine in engines:
        for variant in variants:
            changes = [c for c in paired_changes(records, variant, label)
                       if c["engine"] == engine]
            keys = dict.fromkeys((c["contrast"], c["thickness_mm"], c["shrink"])
                                 for c in changes)
            for contrast, thickness, kind in keys:
                sel = [c for c in changes if (c["contrast"], c["thickness_mm"], c["shrink"])
                       == (contrast, thickness, kind)]
                rows.append({"engine": engine, "variant": variant, "contrast": contrast,
                             "thickness_mm": thickness, "shrink": kind, "n": len(sel),
                             "sensitivity": _mean(c["sensitivity"] for c in sel),
                             "measured_change": _mean(c["measured_change"] for c in sel),
                             "true_change": _mean(c["true_change"] for c in sel)})
    return rows


def mean_sensitivity(records: list[dict], engine: str = "hsynex", variant: str = "pipeline",
                     label: int = WHOLE, **where) -> float:
    """Mean sensitivity over the pairs matching ``where`` (e.g. ``thickness_mm=1.0``,
    ``shrink="vdc"``, ``contrast="T1"``)."""
    return _mean(c["sensitivity"] for c in paired_changes(records, variant, label)
                 if c["engine"] == engine and all(c[k] == v for k, v in where.items()))


def fit_line(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, int]:
    """Pearson r and least-squares slope of y on x (NaN with fewer than 3 finite pairs or no
    spread); and the number of pairs used."""
    pairs = np.array([(a, b) for a, b in zip(x, y) if np.isfinite(a) and np.isfinite(b)],
                     dtype=float).reshape(-1, 2)
    n = len(pairs)
    if n < 3 or np.ptp(pairs[:, 0]) == 0 or np.ptp(pairs[:, 1]) == 0:
        return float("nan"), float("nan"), n
    r = float(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1])
    slope = float(np.polyfit(pairs[:, 0], pairs[:, 1], 1)[0])
    return r, slope, n


def within_acquisition_fit(records: list[dict], engine: str = "hsynex",
                           variant: str = "pipeline", label: int = WHOLE,
                           **where) -> tuple[float, float, int]:
    """r and slope of measured vs true volume over the study's images, each image's volumes
    taken relative to the mean of its acquisition (contrast, thickness, seed): the spread left
    is anatomy only (maps and shrinkage), not the contrast's bias."""
    sens = [r for r in records if r.get("kind") == "sensitivity" and r["engine"] == engine
            and all(r.get(k) == v for k, v in where.items())]
    groups: dict[tuple, list[dict]] = {}
    for r in sens:
        groups.setdefault((r["acq"], r["seed"]), []).append(r)
    xs, ys = [], []
    for members in groups.values():
        m = np.array([record_volume(r, variant, label) for r in members])
        t = np.array([float(r["truth"][str(label)]) for r in members])
        if np.isfinite(m).any() and np.isfinite(t).any():
            xs += list(t - np.nanmean(t))
            ys += list(m - np.nanmean(m))
    return fit_line(xs, ys)
