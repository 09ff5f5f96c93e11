"""Between subjects on renders (issue 13): does the volume follow the anatomy from one subject to
the next, where the truth is known?

The paired study (``sensitivity``) shrinks one map; the real-T1 section (``volume_report``) has
no trustworthy reference on most scans. Here every label map the networks were not trained on
(the held-out maps and, with ``mri_hsynex validate --between-maps``, folders of maps never used
for training) is rendered in a few contrasts and thicknesses (``contrasts.synthesize``: fixed
tissue intensities, partial volume, bias, noise) and segmented; each acquisition's measured
whole and per-side volumes are regressed on the maps' own across the maps (r, slope). The
teacher segments the T1-like 1 mm renders, its home ground, as the baseline.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import contrasts
from .contrasts import Acquisition
from .sensitivity import fit_line, record_volume
from .study import (
    LABEL_MAP_SUFFIXES,
    LabelMap,
    Runner,
    _jsonable_volumes,
    map_context,
    map_name,
    write_image,
)
from .tables import SHORT_NAMES, fmt, md_table

BETWEEN_VERSION = 1  # bump when what a case renders changes
WHOLE, LEFT, RIGHT = 813, 811, 812


@dataclass(frozen=True)
class BetweenDesign:
    """Which acquisitions render every map (``stripped``: the names of those also rendered
    skull-stripped, ``contrasts.skull_strip``); the teacher runs on those of
    ``teacher_contrasts`` at 1 mm, with the skull; ``max_maps``: use only the first maps (None:
    all)."""

    acquisitions: tuple[Acquisition, ...] = (
        *(Acquisition(c) for c in ("T1", "T2", "PD", "FLAIR")),
        Acquisition("T1", 5.0, "axial"), Acquisition("FLAIR", 5.0, "axial"))
    stripped: tuple[str, ...] = ("T1_1mm", "FLAIR_1mm")
    teacher_contrasts: tuple[str, ...] = ("T1",)
    max_maps: int | None = None

    def cases(self) -> list[tuple[Acquisition, bool]]:
        """(acquisition, skull-stripped) of every image made from each map."""
        return [(acq, False) for acq in self.acquisitions] + \
            [(acq, True) for acq in self.acquisitions if acq.name in self.stripped]

    def engines_for(self, acq: Acquisition, engines: Sequence[str],
                    stripped: bool = False) -> list[str]:
        return [e for e in engines if e != "teacher" or (
            acq.contrast in self.teacher_contrasts and acq.thickness_mm <= 1.0 and not stripped)]


def case_name(acq: Acquisition, stripped: bool) -> str:
    return acq.name + ("_stripped" if stripped else "")


def quick_between_design() -> BetweenDesign:
    return BetweenDesign(acquisitions=(Acquisition("T1"), Acquisition("FLAIR", 5.0, "axial")),
                         stripped=("T1_1mm",), max_maps=3)


def between_map_paths(held_out: Sequence[Path], folders: Sequence[Path]) -> list[Path]:
    """The held-out maps, then every label map of ``folders`` (sorted; one per map name)."""
    paths, names = [], set()
    extra = [p for f in folders if Path(f).is_dir() for p in sorted(Path(f).iterdir())
             if p.is_file() and p.name.endswith(LABEL_MAP_SUFFIXES)]
    for path in [*held_out, *extra]:
        name = map_name(path)
        if name not in names:
            names.add(name)
            paths.append(Path(path))
    return paths


def run_between(runner: Runner, lmap: LabelMap, design: BetweenDesign) -> list[dict]:
    """Render one map in every case of the design and segment it (cached per case)."""
    truth, centre, work = map_context(runner, lmap)
    records = []
    for acq, stripped in design.cases():
        name = case_name(acq, stripped)
        spec = {"kind": "between", "version": BETWEEN_VERSION, "map": lmap.fingerprint,
                "acq": asdict(acq), **({"stripped": True} if stripped else {})}
        wanted = design.engines_for(acq, list(runner.engines), stripped)
        done = {e: runner.cached(e, spec) for e in wanted}
        todo = [e for e in wanted if done[e] is None]
        if todo:
            t0 = time.perf_counter()
            image, affine = contrasts.synthesize(lmap.labels, lmap.affine, acq,
                                                 runner.case_seed("between", lmap.name, acq.name))
            if stripped:  # the same image (same seed), zeroed outside the brain
                image = contrasts.skull_strip(image, affine, lmap.labels, lmap.affine)
            image_path = write_image(work / f"between_{name}.nii", image, affine)
            prep = time.perf_counter() - t0
            try:
                for engine in todo:
                    seg = runner.segment(engine, image_path, centre_world=centre)
                    done[engine] = runner.store(engine, spec, {
                        "kind": "between", "map": lmap.name, "source": lmap.path.parent.name,
                        "engine": engine, "contrast": acq.contrast,
                        "thickness_mm": acq.thickness_mm, "acq": name, "stripped": stripped,
                        "volumes": _jsonable_volumes(seg.volumes),
                        "variants": {variant: _jsonable_volumes(vols)
                                     for variant, vols in (seg.variants or {}).items()},
                        "truth": truth, "prep_seconds": prep if engine == todo[0] else 0.0,
                        "seconds": seg.seconds, "failed": seg.failed})
            finally:
                image_path.unlink(missing_ok=True)
        for engine in wanted:
            record = done[engine]
            records.append(record)
            runner.log(f"[between] {lmap.name} {name} {engine}: whole "
                       f"{record['volumes'].get(str(WHOLE), float('nan')):.0f} mm3 (true "
                       f"{truth[str(WHOLE)]:.0f})" + ("" if engine in todo else " cached"))
    return records


# --- arithmetic ---------------------------------------------------------------------------------
def between_fit(records: list[dict], engine: str, acq: str, variant: str = "pipeline",
                label: int = WHOLE, source: str | None = None) -> dict:
    """r, slope and mean measured / true of one engine's volumes on one acquisition across the
    maps (``source``: only the maps of that folder)."""
    sel = [r for r in records if r.get("kind") == "between" and r["engine"] == engine
           and r["acq"] == acq and not r.get("failed")
           and (source is None or r.get("source") == source)]
    x = [float(r["truth"][str(label)]) for r in sel]
    y = [record_volume(r, variant, label) for r in sel]
    r, slope, n = fit_line(x, y)
    ratios = [b / a for a, b in zip(x, y) if a > 0 and np.isfinite(b)]
    return {"r": r, "slope": slope, "n": n,
            "ratio": float(np.mean(ratios)) if ratios else float("nan")}


def between_summary(records: list[dict], engine: str = "hsynex",
                    variant: str = "pipeline") -> dict[str, float]:
    """Worst and mean whole-volume r over the acquisitions (for the closing note)."""
    acqs = list(dict.fromkeys(r["acq"] for r in records
                              if r.get("kind") == "between" and r["engine"] == engine))
    rs = {a: between_fit(records, engine, a, variant)["r"] for a in acqs}
    finite = {a: v for a, v in rs.items() if np.isfinite(v)}
    if not finite:
        return {}
    worst = min(finite, key=finite.get)
    return {"worst_acq": worst, "worst_r": finite[worst],
            "mean_r": float(np.mean(list(finite.values()))), "n_acq": len(finite)}


def stripping_changes(records: list[dict], engine: str = "hsynex",
                      variant: str = "pipeline") -> list[dict]:
    """Per stripped acquisition: the whole volume's relative change from the same image with
    the skull, over the maps (mean, mean absolute, largest absolute)."""
    recs = [r for r in records if r.get("kind") == "between" and r["engine"] == engine
            and not r.get("failed")]
    head = {(r["map"], r["acq"]): r for r in recs if not r.get("stripped")}
    out = []
    for acq in dict.fromkeys(r["acq"] for r in recs if r.get("stripped")):
        changes = []
        for r in recs:
            base = head.get((r["map"], acq.removesuffix("_stripped")))
            if r["acq"] == acq and base is not None:
                v0 = record_volume(base, variant)
                if v0 > 0:
                    changes.append(record_volume(r, variant) / v0 - 1.0)
        changes = [c for c in changes if np.isfinite(c)]
        if changes:
            out.append({"acq": acq, "n": len(changes), "mean": float(np.mean(changes)),
                        "mean_abs": float(np.mean(np.abs(changes))),
                        "worst": float(max(changes, key=abs))})
    return out


# --- report -------------------------------------------------------------------------------------
VARIANTS = (("hsynex", "pipeline", "hsynex"), ("hsynex", "posterior volume",
                                               "hsynex posteriors"), ("teacher", "pipeline",
                                                                      "teacher"))


def between_section(records: list[dict], number: int = 10) -> str:
    """Section ``number`` of validation.md (empty without between records)."""
    recs = [r for r in records if r.get("kind") == "between"]
    if not recs:
        return ""
    maps = list(dict.fromkeys(r["map"] for r in recs))
    acqs = list(dict.fromkeys(r["acq"] for r in recs if r["engine"] == "hsynex"))
    sources = list(dict.fromkeys(r.get("source", "") for r in recs))
    headers = ["map", "folder", "true whole"] + [f"hsynex {a}" for a in acqs] + \
        [f"teacher {a}" for a in dict.fromkeys(r["acq"] for r in recs
                                                  if r["engine"] == "teacher")]
    rows = []
    for name in maps:
        mine = [r for r in recs if r["map"] == name]
        row: list[object] = [name, mine[0].get("source", ""),
                             fmt(float(mine[0]["truth"][str(WHOLE)]), 0)]
        for engine in ("hsynex", "teacher"):
            for a in dict.fromkeys(r["acq"] for r in recs if r["engine"] == engine):
                rec = next((r for r in mine if r["engine"] == engine and r["acq"] == a), None)
                row.append("refused" if rec and rec.get("failed") else
                           fmt(rec["volumes"][str(WHOLE)], 0) if rec else "–")
        rows.append(row)
    fits = []
    for engine, variant, label in VARIANTS:
        for a in acqs:
            for source in ([None] + sources if len(sources) > 1 else [None]):
                whole = between_fit(recs, engine, a, variant, WHOLE, source)
                if whole["n"] == 0:
                    continue
                sides = [between_fit(recs, engine, a, variant, lab, source)["r"]
                         for lab in (LEFT, RIGHT)]
                fits.append([label, a, source or "all", whole["n"], fmt(whole["r"], 2),
                             fmt(whole["slope"], 2), fmt(whole["ratio"], 2),
                             fmt(sides[0], 2), fmt(sides[1], 2)])
    summary = between_summary(recs)
    strip_rows = [[label, c["acq"], c["n"], f"{100 * c['mean']:+.1f} %",
                   f"{100 * c['mean_abs']:.1f} %", f"{100 * c['worst']:+.1f} %"]
                  for _, variant, label in VARIANTS[:2]
                  for c in stripping_changes(recs, "hsynex", variant)]
    parts = [
        f"## {number}. Between subjects on renders: hsynex's volumes against the true ones",
        f"{len(maps)} label maps the networks were not trained on (the held-out map(s) and the "
        f"maps of the folders given with `--between-maps`: {', '.join(f'`{s}`' for s in sources)}"
        "), each rendered as in section 1 (one seed per map and acquisition) and segmented "
        "without an aseg; the teacher segments the T1-like 1 mm renders. 'true': the map's own "
        "subunit volume (mm³); its subunits are the teacher's on the subject's T1 or, for maps "
        "whose T1 the teacher failed on, transferred from other maps by registration and "
        "voting, so the maps of different folders may follow different conventions (r is also "
        "given per folder). r and slope: measured regressed on true across the maps; 'measured "
        "/ true': the mean ratio; 'hsynex posteriors': the networks' own soft volume, before "
        "the partial-volume correction; '_stripped': the same image (same seed) zeroed outside "
        "the map's brain, dilated by one voxel (`contrasts.skull_strip`).",
        md_table(headers, rows),
        md_table(["engine", "acquisition", "maps", "n", "r whole", "slope", "measured / true",
                  f"r {SHORT_NAMES[LEFT]}", f"r {SHORT_NAMES[RIGHT]}"], fits),
    ]
    if strip_rows:
        parts.append("Skull-stripped against the same image with the skull (whole volume, "
                     "relative change per map):\n\n" + md_table(
                         ["engine", "acquisition", "maps", "mean change", "mean |change|",
                          "largest"], strip_rows))
    if summary:
        parts.append(f"hsynex's whole volume against the true one across the maps: r "
                     f"{summary['mean_r']:.2f} on average over {summary['n_acq']} "
                     f"acquisitions, worst {summary['worst_r']:.2f} ({summary['worst_acq']}).")
    return "\n\n".join(parts)
