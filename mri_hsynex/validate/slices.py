"""Slice direction and phase: does a thick-slice volume depend on where the slices fall?

A clinical scan with 5 mm slices may be axial, coronal or sagittal, and where its slices fall on
the hypothalamus (their phase) is left to chance: moving every slice by 1-4 mm changes the image
but not the anatomy. Here the held-out map is rendered (``contrasts.synthesize``) in a few
contrasts, with thick slices in each direction, at several phases, with the same seed (same
contrast, bias and noise draw) for every phase of one contrast and direction, and segmented
without an aseg. Reported per contrast and direction: whole and subunit Dice against the map,
the mean volume, and how much it moves with the phase alone (coefficient of variation and
range over the phases), for the tool's volume and for the networks' posteriors summed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from . import contrasts
from .contrasts import Acquisition
from .sensitivity import record_volume
from .study import LabelMap, Runner, _jsonable_volumes, _score, map_context, write_image
from .tables import fmt, md_table

SLICES_VERSION = 1  # bump when what a case renders changes
WHOLE = 813


@dataclass(frozen=True)
class SliceDesign:
    """Every contrast x direction x phase at one slice thickness (mm)."""

    contrasts: tuple[str, ...] = ("T1", "FLAIR", "PD")
    thickness_mm: float = 5.0
    orientations: tuple[str, ...] = ("axial", "coronal", "sagittal")
    phases_mm: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 4.0)

    def cases(self) -> list[tuple[Acquisition, float]]:
        return [(Acquisition(c, self.thickness_mm, o), p) for c in self.contrasts
                for o in self.orientations for p in self.phases_mm]


def quick_slice_design() -> SliceDesign:
    """T1-like, sagittal, two phases: the machinery in a minute."""
    return SliceDesign(contrasts=("T1",), orientations=("sagittal",), phases_mm=(0.0, 2.0))


def case_name(acq: Acquisition, phase_mm: float) -> str:
    return f"{acq.name}_phase{phase_mm:g}mm"


def run_slices(runner: Runner, lmap: LabelMap, design: SliceDesign,
               engine: str = "hsynex") -> list[dict]:
    """Render and segment every case of one map (cached per case)."""
    if engine not in runner.engines:
        return []
    truth, centre, work = map_context(runner, lmap)
    records = []
    for acq, phase in design.cases():
        name = case_name(acq, phase)
        spec = {"kind": "slices", "version": SLICES_VERSION, "map": lmap.fingerprint,
                "acq": asdict(acq), "phase_mm": phase}
        record = runner.cached(engine, spec)
        if record is None:
            t0 = time.perf_counter()
            # one seed per contrast and direction: only the phase differs between its images
            image, affine = contrasts.synthesize(
                lmap.labels, lmap.affine, acq, runner.case_seed("slices", lmap.name, acq.name),
                phase_mm=phase)
            image_path = write_image(work / f"slices_{name}.nii", image, affine)
            prep = time.perf_counter() - t0
            try:
                seg = runner.segment(engine, image_path, centre_world=centre)
            finally:
                image_path.unlink(missing_ok=True)
            record = runner.store(engine, spec, {
                "kind": "slices", "map": lmap.name, "engine": engine, "contrast": acq.contrast,
                "thickness_mm": acq.thickness_mm, "orientation": acq.orientation,
                "phase_mm": phase, "acq": name, "dice": _score(seg, lmap, lmap.labels),
                "volumes": _jsonable_volumes(seg.volumes),
                "variants": {variant: _jsonable_volumes(vols)
                             for variant, vols in (seg.variants or {}).items()},
                "truth": truth, "prep_seconds": prep, "seconds": seg.seconds,
                "failed": seg.failed})
            runner.log(f"[slices] {lmap.name} {name}: whole Dice {record['dice']['813']:.3f}, "
                       f"{record['volumes']['813']:.0f} mm3 (true {truth['813']:.0f})")
        records.append(record)
    return records


# --- arithmetic ---------------------------------------------------------------------------------
def phase_spread(volumes) -> dict[str, float]:
    """Mean, coefficient of variation and relative range (max - min over the mean) of one
    contrast and direction's volumes over the phases."""
    v = np.asarray([x for x in volumes if np.isfinite(x)], float)
    if v.size == 0 or v.mean() <= 0:
        return {"mean": float("nan"), "cv": float("nan"), "range": float("nan"), "n": 0}
    return {"mean": float(v.mean()), "cv": float(v.std() / v.mean()),
            "range": float((v.max() - v.min()) / v.mean()), "n": int(v.size)}


def slice_rows(records: list[dict], variant: str = "pipeline") -> list[dict]:
    """One dict per map, contrast and direction: Dice means and the phase spread of the whole
    volume (``variant``: the tool's volume, or e.g. "posterior volume")."""
    recs = [r for r in records if r.get("kind") == "slices" and not r.get("failed")]
    out = []
    keys = dict.fromkeys((r["map"], r["contrast"], r["orientation"]) for r in recs)
    for name, contrast, orientation in keys:
        sel = [r for r in recs if (r["map"], r["contrast"], r["orientation"]) ==
               (name, contrast, orientation)]
        spread = phase_spread([record_volume(r, variant) for r in sel])
        subunits = [np.mean([r["dice"][str(k)] for k in range(801, 811)]) for r in sel]
        out.append({"map": name, "contrast": contrast, "orientation": orientation,
                    "thickness_mm": sel[0]["thickness_mm"],
                    "whole_dice": float(np.mean([r["dice"]["813"] for r in sel])),
                    "subunit_dice": float(np.mean(subunits)),
                    "true": float(sel[0]["truth"][str(WHOLE)]), **spread})
    return out


# --- report -------------------------------------------------------------------------------------
def slices_section(records: list[dict], number: int = 11) -> str:
    """Section ``number`` of validation.md (empty without slice records)."""
    rows = slice_rows(records)
    if not rows:
        return ""
    posterior = {(r["map"], r["contrast"], r["orientation"]): r
                 for r in slice_rows(records, "posterior volume")}
    table = []
    for r in rows:
        p = posterior.get((r["map"], r["contrast"], r["orientation"]), {})
        table.append([r["map"], r["contrast"], f"{r['thickness_mm']:g} mm {r['orientation']}",
                      r["n"], fmt(r["whole_dice"], 3), fmt(r["subunit_dice"], 3),
                      f"{fmt(r['mean'], 0)} ({fmt(r['true'], 0)})",
                      _pct(r["cv"]), _pct(r["range"]), _pct(p.get("cv", float("nan"))),
                      _pct(p.get("range", float("nan")))])
    phases = sorted({float(r["phase_mm"]) for r in records if r.get("kind") == "slices"})
    by_direction = []
    for orientation in dict.fromkeys(r["orientation"] for r in rows):
        sel = [r for r in rows if r["orientation"] == orientation]
        by_direction.append([orientation, len(sel),
                             fmt(float(np.mean([r["whole_dice"] for r in sel])), 3),
                             fmt(float(np.mean([r["subunit_dice"] for r in sel])), 3),
                             _pct(float(np.mean([r["cv"] for r in sel])))])
    worst = max(rows, key=lambda r: r["cv"] if np.isfinite(r["cv"]) else -1.0)
    return "\n\n".join([
        f"## {number}. Slice direction and phase",
        "The held-out map rendered as in section 1 with thick slices in each direction, at "
        f"slice phases {', '.join(f'{p:g}' for p in phases)} mm (every slice moved by that much "
        "along the slice axis: where the slices fall on the anatomy, which a real scan leaves to "
        "chance), one seed per contrast and direction (the same contrast, bias and noise draw "
        "at every phase), segmented without an aseg. Dice against the map (mean over the "
        "phases); volume: mean over the phases (true); 'phase CV' / 'phase range': the "
        "coefficient of variation and (max - min) / mean of the whole volume over the phases, "
        "for the tool's volume and for the networks' posteriors summed (partial-volume "
        "correction off). The anatomy is the same in every image of a row: the ideal spread is "
        "0.",
        md_table(["map", "contrast", "slices", "phases", "whole Dice", "subunit Dice",
                  "volume (true)", "phase CV", "phase range", "posteriors: phase CV",
                  "posteriors: phase range"], table),
        md_table(["direction", "rows", "whole Dice", "subunit Dice", "mean phase CV"],
                 by_direction),
        f"Largest phase CV of the tool's volume: {_pct(worst['cv'])} ({worst['contrast']}, "
        f"{worst['thickness_mm']:g} mm {worst['orientation']}).",
    ])


def _pct(value: float) -> str:
    return "–" if not np.isfinite(value) else f"{100 * value:.1f} %"
