"""The report's sections on volume (issue 13): its targets, the paired sensitivity study, why the
volume does not follow the anatomy (post-processing steps switched off in turn, stage 1 vs the
pipeline), between-subject agreement with the teacher on real T1, blank and noise inputs.

Everything here is computed from case records (:mod:`~mri_hsynex.validate.sensitivity`,
:mod:`~mri_hsynex.validate.study`) and the blank/noise probe; nothing is typed in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..labels import SUBUNIT_IDS
from . import sensitivity as sens
from .probe import VARIANTS
from .tables import (
    SHORT_NAMES,
    GroupResult,
    Target,
    at_least,
    auroc_target,
    find_group,
    fmt,
    md_table,
    mean_subunit_dice,
    nanmean,
)

GOALS = {1.0: 0.8, 5.0: 0.6}  # paired sensitivity goal per slice thickness (mm)
KIND_NAMES = {"ventricle": "ventricle widens", "vdc": "outer part -> ventral DC"}
REAL_ENGINES = ("hsynex", "hsynex+aseg")
PLAUSIBLE_MM3 = (600.0, 1400.0)  # whole hypothalamus: the range build-labels' check accepts
INFERIOR = (801, 804, 806, 809)  # anterior-inferior and tubular-inferior, both sides
DEMO_RATIO = (0.8, 1.2)  # make demo's whole volume against the teacher's on the same image
# section 8: a scan whose mask removed this share of the label map's hypothalamus or more is named
MASKED_NOTE = 0.05
# ... and the fits against the label maps are split here (about the median of the 17 Mindboggle
# maps' shares, 7-41 %)
MASKED_SPLIT = 0.2


def _pct(value: float) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value * 100:+.1f} %"


# --- targets ------------------------------------------------------------------------------------
def target_rows(records: list[dict], groups: list[GroupResult],
                blank_noise: dict | None, demo: dict | None = None) -> list[Target]:
    """The targets of issue 13, each with the measured value (None: not measured here)."""
    rows = []
    for thickness, goal in GOALS.items():
        for kind in sens.KIND_ORDER:
            per_contrast = {c: sens.mean_sensitivity(records, thickness_mm=thickness, shrink=kind,
                                                     contrast=c)
                            for c in dict.fromkeys(r["contrast"] for r in records
                                                   if r["kind"] == "sensitivity")}
            per_contrast = {c: v for c, v in per_contrast.items() if np.isfinite(v)}
            what = (f"paired sensitivity, {thickness:g} mm, {KIND_NAMES[kind]} "
                    "(worst contrast's mean)")
            if not per_contrast:
                rows.append(Target(what, f"≥ {goal:g}", None, None, "not run"))
                continue
            worst = min(per_contrast, key=per_contrast.get)
            value = per_contrast[worst]
            rows.append(Target(what, f"≥ {goal:g}", value, value >= goal,
                               f"worst {worst}; " + ", ".join(f"{c} {v:.2f}" for c, v
                                                              in per_contrast.items())))
    for prefix, goal, name in (("T1-like", 0.9, "T1-like 1 mm"),
                               ("FLAIR-like 5", 0.8, "FLAIR-like 5 mm")):
        g = find_group(groups, prefix, 0.10)
        rows.append(auroc_target(f"10 % atrophy, {name}: AUROC (n = "
                                 f"{g.n_controls if g else '?'} per group)", g, goal))
    plausible = set(real_pairs(records, "hsynex", 813, plausible_only=True)[0])
    real = [r for r in records if r["kind"] == "real" and r.get("variant") == "hsynex"
            and "dice" in r and (r["subject"] in plausible or "teacher" not in r["reference"])]
    whole = nanmean(r["dice"]["813"] for r in real) if real else None
    sub = nanmean(mean_subunit_dice(r) for r in real) if real else None
    n = f"no aseg, n = {len(real)} with a plausible teacher volume"
    rows.append(at_least(f"real held-out T1 ({n}): whole Dice vs teacher", whole, 0.86))
    rows.append(at_least(f"real held-out T1 ({n}): mean subunit Dice vs teacher", sub, 0.72))
    r_whole, _, n_pairs = real_fit(records, "hsynex", 813)
    r_all, _, n_all = real_fit(records, "hsynex", 813, plausible_only=False)
    target = at_least(f"real held-out T1: r of whole volume with the teacher's (n = {n_pairs} "
                       "with a plausible teacher volume)", r_whole if n_pairs >= 3 else None,
                       0.8)
    r_map, _, n_map = real_fit(records, "hsynex", 813, reference="label map")
    target.note = (target.note + "; " if target.note else "") \
        + f"over all {n_all} scans r = {fmt(r_all, 2)}" \
        + (f"; against the subjects' label maps r = {fmt(r_map, 2)} (n = {n_map})"
           if n_map else "")
    r_kept, _, n_kept = masked_split_fit(records, "hsynex", below=True)
    if n_kept:
        target.note += (f", r = {fmt(r_kept, 2)} on the {n_kept} scans whose brain mask removed "
                        f"less than {MASKED_SPLIT:.0%} of the hypothalamus (section 8)")
    rows.append(target)
    rows.append(_synthetic_dice_target(records))
    rows.append(demo_target(demo))
    rows.append(_blank_target(blank_noise))
    return rows


def _synthetic_dice_target(records: list[dict]) -> Target:
    grid = [r for r in records if r["kind"] == "grid" and r["engine"] == "hsynex"
            and r["thickness_mm"] <= 5.0 and r["contrast"] != "random"]
    cells = {}
    for r in grid:
        cells.setdefault((r["contrast"], r["thickness_mm"]), []).append(r["dice"]["813"])
    what = "synthetic held-out maps: whole Dice, every contrast and thickness ≤ 5 mm (worst)"
    if not cells:
        return Target(what, "≥ 0.78", None, None, "grid not run")
    means = {k: nanmean(v) for k, v in cells.items()}
    worst = min(means, key=means.get)
    value = means[worst]
    return Target(what, "≥ 0.78", value, value >= 0.78,
                  f"worst {worst[0]} {worst[1]:g} mm (mean over directions)")


def demo_target(demo: dict | None) -> Target:
    """``make demo``'s target from :func:`demo_check`'s read-out: ten subunits, no QC flag and the
    whole volume within 20 % of the teacher's (measured: the ratio), with where they differ."""
    what = "`make demo`: ten subunits, no QC flag, whole within 20 % of the teacher"
    goal = "10, no flag, " + "–".join(f"{r:g}" for r in DEMO_RATIO) + " × teacher"
    if not demo or not demo.get("teacher"):
        return Target(what, goal, None, None, "not run (needs nilearn's template and the "
                                             "teacher's weights)")
    ours, theirs = demo["hsynex"], demo["teacher"]
    ratio = ours[813] / theirs[813] if theirs[813] > 0 else float("inf")
    met = (demo["present"] == len(SUBUNIT_IDS) and not demo["qc_flag"]
           and DEMO_RATIO[0] <= ratio <= DEMO_RATIO[1])
    low = {name: sum(v[i] for i in INFERIOR) for name, v in (("ours", ours), ("theirs", theirs))}
    note = (f"{demo['present']} subunits, QC flag {'raised' if demo['qc_flag'] else 'not raised'}; "
            f"whole {ours[813]:.0f} vs the teacher's {theirs[813]:.0f} mm³: the four inferior "
            f"subunits {low['ours']:.0f} vs {low['theirs']:.0f}, the other six "
            f"{ours[813] - low['ours']:.0f} vs {theirs[813] - low['theirs']:.0f}")
    return Target(what, goal, ratio, met, note)


def demo_check(hsynex, teacher, work_dir) -> dict | None:
    """``make demo``'s image (nilearn's MNI152 2009 template) through hsynex as the demo runs it
    (no aseg) and through the teacher (centred on hsynex's localisation): soft volumes (mm³),
    the subunits labelled, the QC flag; None without nilearn or the teacher, or if refused."""
    from ..demo import save_template
    from ..errors import HsynexError

    if teacher is None:
        return None
    try:
        path = save_template(Path(work_dir))
    except HsynexError:  # no nilearn
        return None
    try:
        result = hsynex.segmenter.segment(path)
        seg = teacher.segment(path, centre_world=result.localisation.centre_world)
    except HsynexError:  # refused: the target row says it was not run
        return None
    finally:
        path.unlink(missing_ok=True)
    return {"hsynex": {int(k): float(v[1]) for k, v in result.volumes.items()},
            "present": sum(int(result.volumes[i][0] > 0) for i in SUBUNIT_IDS),
            "qc_flag": bool(result.qc["qc_flag"]),
            "teacher": {int(k): float(v) for k, v in seg.volumes.items()}}


def _blank_target(blank_noise: dict | None) -> Target:
    what = "blank or noise image: no hypothalamus (the tool's volume)"
    if not blank_noise:
        return Target(what, "0 mm³", None, None, "not run")
    volumes = {name: out["pipeline"] for name, out in blank_noise["images"].items()}
    worst = max(0.0 if v is None else v for v in volumes.values())
    note = ", ".join(f"{name}: " + ("refused (no brain)" if v is None else f"{v:.0f} mm³")
                     for name, v in volumes.items())
    return Target(what, "0 mm³", worst, worst == 0.0, note)


def targets_section(targets: list[Target]) -> str:
    rows = [(t.what, t.goal, fmt(t.value), t.status, t.note) for t in targets]
    return "\n\n".join([
        "## Targets (issue 13: volumes that measure the anatomy)",
        "Measured by this run (sections 6-9 below); 'not measured' where `make validate` "
        "cannot measure it.",
        md_table(["target", "goal", "measured", "status", "note"], rows)])


# --- paired sensitivity -------------------------------------------------------------------------
def sensitivity_section(records: list[dict], design: sens.SensitivityDesign | None,
                        maps: list, probe_check: float | None) -> str:
    sel = [r for r in records if r["kind"] == "sensitivity"]
    if not sel:
        return ""
    engines = list(dict.fromkeys(r["engine"] for r in sel))
    kinds = [k for k in sens.KIND_ORDER if any(r["shrink"] == k for r in sel)]
    fractions = sorted({r["fraction"] for r in sel if r["shrink"] != "none"})
    headers = ["engine", "contrast", "slices", "true 0 %", "measured 0 %"] + [
        f"{k} {f:.0%}: measured (true) change" for k in kinds for f in fractions] + [
        f"sensitivity {k}" for k in kinds]
    rows = []
    changes = sens.paired_changes(records)
    for engine in engines:
        for acq in dict.fromkeys(r["acq"] for r in sel if r["engine"] == engine):
            base = [r for r in sel if r["engine"] == engine and r["acq"] == acq
                    and r["shrink"] == "none"]
            if not base:
                continue
            row: list[object] = [engine, base[0]["contrast"], f"{base[0]['thickness_mm']:g} mm",
                                 fmt(nanmean(r["truth"]["813"] for r in base), 0),
                                 fmt(nanmean(r["volumes"]["813"] for r in base), 0)]
            for kind in kinds:
                for fraction in fractions:
                    cs = [c for c in changes if c["engine"] == engine
                          and (c["contrast"], c["thickness_mm"]) ==
                          (base[0]["contrast"], base[0]["thickness_mm"])
                          and c["shrink"] == kind and c["fraction"] == fraction]
                    row.append(f"{_pct(nanmean(c['measured_change'] for c in cs))} "
                               f"({_pct(nanmean(c['true_change'] for c in cs))})")
            for kind in kinds:
                row.append(fmt(sens.mean_sensitivity(
                    records, engine, contrast=base[0]["contrast"],
                    thickness_mm=base[0]["thickness_mm"], shrink=kind), 2))
            rows.append(row)
    summary = []
    for engine in engines:
        for thickness in sorted({r["thickness_mm"] for r in sel}):
            row = [engine, f"{thickness:g} mm"]
            for kind in kinds:
                row.append(fmt(sens.mean_sensitivity(records, engine, thickness_mm=thickness,
                                                     shrink=kind), 2))
            row.append(fmt(sens.mean_sensitivity(records, engine, thickness_mm=thickness), 2))
            row.append(str(sum(1 for c in changes if c["engine"] == engine
                               and c["thickness_mm"] == thickness)))
            summary.append(row)
    n_maps = len({r["map"] for r in sel})
    parts = [
        "## 6. Paired sensitivity: does the volume follow the anatomy?",
        f"Held-out label map(s): {', '.join(sorted({r['map'] for r in sel}))} ({n_maps}). "
        "Each map is redrawn 3× finer (1/3 mm) in a box 8 mm around the hypothalamus (each "
        "label's indicator interpolated trilinearly, arg-max), and shrunk there by "
        + ", ".join(f"{f:.0%}" for f in fractions) + " per side in two ways: **ventricle** "
        "(the fine voxels nearest the 3rd ventricle become 3rd ventricle: the ventricle widens, "
        "as in neurodegeneration) and **vdc** (the outermost fine voxels, ignoring the border "
        "with the ventricle, become ventral DC). Each pair (original and shrunk) is rendered "
        "with the same seed: identical tissue means, bias field and Rician noise; only the "
        "anatomy differs. Rendering (`validate/contrasts.py`, independent of hsynex's training "
        "generator): fixed tissue means per contrast, intensities drawn on the fine grid and "
        "averaged over each 1 mm voxel (true partial volume), σ 0.5 mm blur, bias, 5 mm axial "
        "slices where stated, Rician noise. hsynex runs without an aseg; the teacher "
        "(T1-only) on the T1-like images with its block centred on the map's ventral DCs and "
        "3rd ventricle. Sensitivity = measured relative change of the whole volume ÷ true "
        "relative change (1: follows the anatomy; 0: blind to it). True volumes are the fine "
        "grid's.",
        "### Mean sensitivity",
        md_table(["engine", "slices"] + [f"{k}" for k in kinds] + ["both kinds", "pairs"],
                 summary),
        "### Every contrast and thickness (mean over maps and seeds)",
        md_table(headers, rows),
    ]
    if probe_check is not None:
        parts.append(f"hsynex's numbers here come from `validate/probe.py`, which re-runs the "
                     f"pipeline's steps to read every variant of section 7 from one pass of the "
                     f"networks; on the first image of this run its pipeline volumes differ "
                     f"from `Segmenter.segment`'s by at most {probe_check:.2g} mm³.")
    if design is not None:
        parts.append(f"Design: {', '.join(design.contrasts)}; "
                     f"{', '.join(f'{t:g} mm' for t in design.thicknesses_mm)}; seeds "
                     f"{', '.join(str(s) for s in design.seeds)}; {design.n_images(n_maps)} "
                     "images. For checkpoint comparisons: "
                     "`mri_hsynex.validate.sensitivity.paired_sensitivity(model_dir, maps)` or "
                     "`mri_hsynex validate --sensitivity-only`.")
    return "\n\n".join(parts)


# --- diagnosis ----------------------------------------------------------------------------------
def diagnosis_section(records: list[dict], groups: list[GroupResult]) -> str:
    sel = [r for r in records if r["kind"] == "sensitivity" and r["engine"] == "hsynex"]
    if not sel:
        return ""
    present = [v for v in VARIANTS if any(v in (r.get("variants") or {}) for r in sel)]
    if not present:
        present = ["pipeline"]
    thicknesses = sorted({r["thickness_mm"] for r in sel})
    kinds = [k for k in sens.KIND_ORDER if any(r["shrink"] == k for r in sel)]
    headers = ["read-out", "what"] + [f"{t:g} mm {k}" for t in thicknesses for k in kinds] + [
        "all", "volume at 0 %", "r", "slope"]
    rows = []
    summary: dict[str, float] = {}
    with_aseg = ("pipeline", "posterior volume", "no 3V exclusion", "no VDC mask",
                 "no post-processing")
    for engine, variants in (("hsynex", present), ("hsynex+aseg", with_aseg)):
        mine = [r for r in records if r["kind"] == "sensitivity" and r["engine"] == engine]
        if not mine:
            continue
        for variant in variants:
            name = variant if engine == "hsynex" else f"with aseg: {variant}"
            what = VARIANTS.get(variant, "")
            if engine != "hsynex":
                what += " — given the member's aseg (its VDC holding the hypothalamus, its 3V)"
            row: list[object] = [name, what]
            for t in thicknesses:
                for k in kinds:
                    row.append(fmt(sens.mean_sensitivity(records, engine, variant,
                                                         thickness_mm=t, shrink=k), 2))
            summary[name] = sens.mean_sensitivity(records, engine, variant)
            base = [sens.record_volume(r, variant) for r in mine if r["shrink"] == "none"]
            r, slope, _ = sens.within_acquisition_fit(records, engine, variant)
            rows.append(row + [fmt(summary[name], 2), fmt(nanmean(base), 0), fmt(r, 2),
                               fmt(slope, 2)])
    teacher_rows = []
    for engine in ("hsynex", "teacher"):
        t1 = [r for r in records if r["kind"] == "sensitivity" and r["engine"] == engine
              and r["contrast"] == "T1"]
        if not t1:
            continue
        r, slope, _ = sens.within_acquisition_fit(records, engine, contrast="T1")
        teacher_rows.append([engine] + [fmt(sens.mean_sensitivity(
            records, engine, contrast="T1", thickness_mm=t, shrink=k), 2)
            for t in thicknesses for k in kinds] + [fmt(r, 2), fmt(slope, 2)])
    parts = [
        "## 7. Why the networks' volume does not follow the anatomy (issue 13, section 1)",
        "The same images as section 6, read out in different ways from one pass of hsynex's "
        "networks: the pipeline's volume, its posteriors summed without the partial-volume "
        "correction, the posteriors with one post-processing step switched off in turn, without "
        "any, and stage 1's own whole-hypothalamus output (the reported volumes are stage 2's). "
        "Columns: mean paired sensitivity per thickness and kind, over "
        "all contrasts; the mean volume of the unshrunk images (mm³); r and slope of measured vs "
        "true whole volume over all images, each taken relative to the mean of its acquisition "
        "(so only the anatomy varies: maps and shrinkage).",
        md_table(headers, rows),
        "On the T1-like images only, hsynex against the teacher (the teacher's volumes are its "
        "label counts):",
        md_table(["engine"] + [f"{t:g} mm {k}" for t in thicknesses for k in kinds]
                 + ["r", "slope"], teacher_rows),
    ]
    group_lines = _group_fit_lines(records)
    if group_lines:
        parts.append("Across the simulated subjects of the group study (section 4: random "
                     "deformations and 10 % atrophy, each with its own true volume), measured vs "
                     "true whole volume:")
        parts.append(md_table(["cohort", "engine", "n", "r", "slope", "true range",
                               "measured range"], group_lines))
    parts.append("Reading: " + _diagnosis_sentences(summary))
    parts.append(
        "Measured before this report existed (issue 13, on hsynex's own training generator, "
        "two label maps, 6 seeds, 20 % shrinkage with identical deformation, contrast and "
        "noise): stage 1's summed posterior follows the generator's global scaling (r 0.62) but "
        "not the hypothalamus' own shrinkage (sensitivity 0.05 ventricle kind, −0.03 ventral-DC "
        "kind); the generator ties the hypothalamus' intensity to the ventral DC's with p 0.3, "
        "so morphs into the ventral DC in those samples change the target without changing the "
        "image. That generator experiment is not re-run by `make validate`.")
    return "\n\n".join(parts)


def _group_fit_lines(records: list[dict]) -> list[list[object]]:
    group = [r for r in records if r["kind"] == "group"]
    lines = []
    for cohort, engine in dict.fromkeys((r["cohort"], r["engine"]) for r in group):
        sel = [r for r in group if r["cohort"] == cohort and r["engine"] == engine]
        true = [r["truth"]["813"] for r in sel]
        measured = [r["volumes"]["813"] for r in sel]
        r, slope, n = sens.fit_line(true, measured)
        finite = [m for m in measured if m is not None and np.isfinite(m)]
        lines.append([cohort, engine, n, fmt(r, 2), fmt(slope, 2),
                      f"{min(true):.0f}–{max(true):.0f}",
                      f"{min(finite):.0f}–{max(finite):.0f}" if finite else "–"])
    return lines


def _diagnosis_sentences(summary: dict[str, float]) -> str:
    """What the ablation numbers say (generated from them)."""
    pipeline = summary.get("pipeline", float("nan"))
    if not np.isfinite(pipeline):
        return "no paired changes were measured."
    steps = [v for v in ("no VDC mask", "no 3V exclusion", "no largest component",
                         "no flip TTA", "no post-processing")
             if np.isfinite(summary.get(v, np.nan))]
    text = [f"the pipeline's mean sensitivity is {pipeline:.2f}."]
    # the ablations below are read from the networks' posteriors (no partial-volume correction):
    # compare them with the posteriors summed
    posterior = summary.get("posterior volume", pipeline)
    corrected = summary.get("PV corrected", float("nan"))
    if np.isfinite(corrected) and np.isfinite(posterior) and abs(corrected - posterior) > 1e-9:
        text.append(f"The networks' posteriors summed give {posterior:.2f}; the partial-volume "
                    f"correction (`predict/pvc.py`, the tool's default) gives {corrected:.2f}"
                    + (": the volume follows the anatomy because the correction reads the "
                       "boundary from the image, not because the networks do"
                       if corrected - posterior > 0.3 else "") + ".")
    if steps:
        biggest = max(steps, key=lambda v: abs(summary[v] - posterior))
        delta = summary[biggest] - posterior
        text.append(f"Switching off one post-processing step changes the posteriors' "
                    f"sensitivity by at most {delta:+.2f} ({biggest}: {summary[biggest]:.2f})"
                    + (", so post-processing is not what hides the anatomy" if abs(delta) < 0.1
                       else ", so post-processing is part of the cause") + ".")
    aseg = summary.get("with aseg: pipeline")
    aseg_post = summary.get("with aseg: posterior volume", aseg)
    aseg_no3v = summary.get("with aseg: no 3V exclusion")
    if aseg is not None and np.isfinite(aseg):
        text.append(f"Given the member's aseg (whose 3rd ventricle widens with the ventricle-kind "
                    f"loss), the pipeline reaches {aseg:.2f}"
                    + (f" (posteriors summed: {aseg_post:.2f})"
                       if aseg_post is not None and abs(aseg_post - aseg) > 1e-9 else "")
                    + (f", {aseg_no3v:.2f} without the 3rd-ventricle exclusion: what the aseg "
                       "adds to the posteriors is the exclusion cutting them at the widened "
                       "ventricle, not the networks" if aseg_no3v is not None
                       and np.isfinite(aseg_no3v) and aseg_post - aseg_no3v > 0.1 else "")
                    + ".")
    stage1 = summary.get("stage 1", float("nan"))
    if np.isfinite(stage1):
        text.append(f"Stage 1's own summed posterior has sensitivity {stage1:.2f}"
                    + (" (hard: " + f"{summary['stage 1 hard']:.2f})"
                       if np.isfinite(summary.get("stage 1 hard", np.nan)) else "")
                    + (": the network that draws the whole hypothalamus does not see the "
                       "shrinkage either, so the cause is in the networks (what they learnt "
                       "from the training generator), not in stage 2 or the post-processing."
                       if stage1 < 0.3 else
                       ": stage 1 does follow the anatomy, and stage 2 loses it."))
    return " ".join(text)


# --- real T1 ------------------------------------------------------------------------------------
def real_pairs(records: list[dict], variant: str, label: int, plausible_only: bool = False,
               reference: str = "teacher") -> tuple[list[str], list, list]:
    """Subjects with both the reference's (the teacher's, or ``label map``: the subject's own
    label map) and ``variant``'s volume of ``label``: names, reference volumes, hsynex volumes
    (``plausible_only``: only where the reference's whole volume is plausible,
    ``PLAUSIBLE_MM3``)."""
    real = [r for r in records if r["kind"] == "real"]
    teacher = {r["subject"]: r["volumes"][str(label)] for r in real if r["variant"] == reference}
    whole = {r["subject"]: r["volumes"]["813"] for r in real if r["variant"] == reference}
    mine = {r["subject"]: r["volumes"][str(label)] for r in real if r["variant"] == variant}
    names = [s for s in teacher if s in mine
             and (not plausible_only or teacher_plausible(whole[s]))]
    return names, [teacher[s] for s in names], [mine[s] for s in names]


def teacher_plausible(volume_mm3: float | None) -> bool:
    """Whether a whole-hypothalamus volume is in the range ``build-labels`` accepts."""
    return volume_mm3 is not None and PLAUSIBLE_MM3[0] <= volume_mm3 <= PLAUSIBLE_MM3[1]


def real_fit(records: list[dict], variant: str, label: int, plausible_only: bool = True,
             reference: str = "teacher") -> tuple[float, float, int]:
    """r and slope of hsynex's volume on the reference's across real subjects (by default only
    those where the reference's own volume is plausible: a failed reference says nothing)."""
    _, teacher, mine = real_pairs(records, variant, label, plausible_only, reference)
    return sens.fit_line(teacher, mine)


def without_failed_reference(records: list[dict]) -> list[dict]:
    """The records less the real-T1 ones of subjects whose teacher volume is implausible (the
    reference failed there: Dice against it measures nothing)."""
    bad = {r["subject"] for r in records if r["kind"] == "real" and r["variant"] == "teacher"
           and not teacher_plausible(r["volumes"]["813"])}
    return [r for r in records if not (r["kind"] == "real" and r["subject"] in bad)]


def between_subject_section(records: list[dict], real_note: str = "") -> str:
    real = [r for r in records if r["kind"] == "real"]
    if not real:
        return ""
    names = list(dict.fromkeys(r["subject"] for r in real))
    variants = [v for v in ("teacher", "label map", *REAL_ENGINES)
                if any(r["variant"] == v for r in real)]
    headers = ["subject"] + [f"{v} {SHORT_NAMES[lab]}" for v in variants
                             for lab in (813, 811, 812)] + ["teacher plausible"]
    masked = mask_removed_shares(records)
    if masked:
        headers.append("hypothalamus masked in the scan")
    rows = []
    implausible = []
    for name in names:
        row: list[object] = [name]
        for v in variants:
            rec = next((r for r in real if r["subject"] == name and r["variant"] == v), None)
            row += [fmt(rec["volumes"][str(lab)], 0) if rec else "–" for lab in (813, 811, 812)]
        teacher = next((r for r in real if r["subject"] == name and r["variant"] == "teacher"),
                       None)
        ok = teacher is not None and teacher_plausible(teacher["volumes"]["813"])
        if teacher is not None and not ok:
            implausible.append(teacher["volumes"]["813"])
        row.append("yes" if ok else "no" if teacher else "–")
        if masked:
            row.append(f"{masked[name]:.0%}" if name in masked else "–")
        rows.append(row)
    fits = []
    for reference in ("teacher", "label map"):
        for v in REAL_ENGINES:
            for lab in (813, 811, 812):
                for plausible in (True, False):
                    r, slope, n = real_fit(records, v, lab, plausible, reference)
                    if n:
                        fits.append([reference, v, SHORT_NAMES[lab],
                                     "plausible" if plausible else "all", n, fmt(r, 2),
                                     fmt(slope, 2)])
    if masked:
        fits += _masked_split_fits(records)
    parts = [
        "## 8. Between subjects: hsynex's volumes against the teacher's on real T1",
        "Every real T1 the networks were not trained on (section 2's scans"
        + (f"; {real_note}" if real_note else "") + "), segmented by the teacher (the "
        "reference: its label counts) and by hsynex without and with the scan's aseg (soft "
        "volumes, mm³); 'label map': the subunit volumes of the subject's own label map where "
        "one was found (" + (", ".join(sorted({"`" + str(Path(r["path"]).parent) + "`"
                                                for r in real if r.get("path")})) or "none")
        + "), a second reference and an estimate too (a map's subunits are the teacher's on "
        "the subject's T1, or transferred from other maps by registration and voting). r and "
        "slope: hsynex's volume regressed on the reference's "
        f"across the subjects (NaN with fewer than 3), over the subjects where the reference's "
        f"whole volume is plausible ({PLAUSIBLE_MM3[0]:.0f}–{PLAUSIBLE_MM3[1]:.0f} mm³, the "
        "range `build-labels` accepts) and over all.",
        md_table(headers, rows),
        md_table(["reference", "hsynex run", "volume", "subjects", "n", "r", "slope"], fits)
        if fits else "",
    ]
    if implausible:
        parts.append(f"The teacher's whole volume is implausible on {len(implausible)} of "
                     f"{len(names)} scans ({min(implausible):.0f}–{max(implausible):.0f} mm³): "
                     "there it is no reference, and the r over all subjects measures the "
                     "teacher's failure as much as hsynex."
                     + (" (The Mindboggle T1s are skull-stripped and not intensity-normalised by "
                        "FreeSurfer, unlike the T1.mgz the teacher was made for.)"
                        if any(n.startswith("oasis") for n in names) else ""))
    cut = {name: share for name, share in masked.items() if share >= MASKED_NOTE}
    if cut:
        parts.append(
            f"'hypothalamus masked in the scan': the share of the label map's hypothalamus where "
            "the scan holds its border-connected minimum (a brain mask removed the tissue). On "
            f"{len(cut)} of {len(masked)} scans it is {MASKED_NOTE:.0%} or more "
            f"({min(cut.values()):.0%}–{max(cut.values()):.0%}): there the hypothalamus is "
            "partly absent from the image, so no method that reads the scan (the teacher, "
            "hsynex) can measure its whole volume, and these scans do not test whether a volume "
            "follows the anatomy.")
    return "\n\n".join(p for p in parts if p)


def mask_removed_shares(records: list[dict]) -> dict[str, float]:
    """Subject -> the share of its label map's hypothalamus that its scan's brain mask removed
    (the ``label map`` records' ``masked``, ``report.mask_removed_share``), where measured."""
    return {r["subject"]: r["masked"] for r in records if r["kind"] == "real"
            and r["variant"] == "label map" and r.get("masked") is not None}


def masked_split_fit(records: list[dict], variant: str, below: bool
                     ) -> tuple[float, float, int]:
    """r and slope of ``variant``'s whole volume on the label maps' over the subjects whose
    scan's mask removed less than ``MASKED_SPLIT`` of the map's hypothalamus (``below``), or
    over the others."""
    masked = mask_removed_shares(records)
    names, reference, mine = real_pairs(records, variant, 813, reference="label map")
    keep = [k for k, name in enumerate(names)
            if name in masked and (masked[name] < MASKED_SPLIT) == below]
    return sens.fit_line([reference[k] for k in keep], [mine[k] for k in keep])


def _masked_split_fits(records: list[dict]) -> list[list[object]]:
    """Fit rows of ``masked_split_fit`` for every hsynex run, both sides of the split."""
    rows = []
    for v in REAL_ENGINES:
        for below in (True, False):
            r, slope, n = masked_split_fit(records, v, below)
            if n:
                rows.append(["label map", v, SHORT_NAMES[813],
                             f"mask removed {'<' if below else '≥'} {MASKED_SPLIT:.0%}", n,
                             fmt(r, 2), fmt(slope, 2)])
    return rows


# --- blank and noise ----------------------------------------------------------------------------
def blank_noise_section(blank_noise: dict | None) -> str:
    if not blank_noise:
        return ""
    rows = []
    for name, out in blank_noise["images"].items():
        rows.append([f"{name} (whole image, {blank_noise['shape']})",
                     out.get("refused") or "segmented",
                     fmt(out["pipeline"], 0), fmt(out.get("pipeline hard"), 0),
                     fmt(out.get("stage 1"), 0), fmt(out.get("stage 1 hard"), 0)])
    for name, out in blank_noise["crops"].items():
        rows.append([f"{name} (crop given to the networks directly)", "–",
                     fmt(out["pipeline"], 0), fmt(out.get("pipeline hard"), 0),
                     fmt(out.get("stage 1"), 0), fmt(out.get("stage 1 hard"), 0)])
    return "\n\n".join([
        "## 9. Blank and noise inputs",
        "The whole tool (localiser included) on an image of zeros and on an image of Rician "
        "noise, and the two stages on a constant and a uniform-noise crop (no localisation, "
        "no mask). Volumes in mm³ (the hypothalamus is ~900 mm³); 'pipeline' is the tool's soft "
        "volume, 'hard' its voxel count.",
        md_table(["input", "outcome", "pipeline", "pipeline hard", "stage 1", "stage 1 hard"],
                 rows)])


def blank_and_noise(probe, work_dir, shape: tuple[int, int, int] = (192, 192, 192),
                    seed: int = 0) -> dict:
    """Run the probe on a blank and a noise image (whole tool) and on a constant and a noise
    crop (networks only); returns the whole-volume read-outs (mm³; pipeline None = refused)."""
    from ..errors import HsynexError
    from .study import write_image

    rng = np.random.default_rng(seed)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = -(np.array(shape) - 1) / 2.0
    noise = np.hypot(rng.normal(0, 20, shape), rng.normal(0, 20, shape)).astype(np.float32)
    images = {"blank": np.zeros(shape, np.float32), "noise": noise}
    out: dict = {"shape": "×".join(str(n) for n in shape), "images": {}, "crops": {}}
    keys = ("pipeline", "pipeline hard", "stage 1", "stage 1 hard")
    for name, image in images.items():
        path = write_image(Path(work_dir) / f"{name}.nii", image, affine)
        try:
            seg = probe.segment(path)
            out["images"][name] = {k: seg.variants[k][813] for k in keys}
        except HsynexError as err:
            out["images"][name] = {"pipeline": None, "refused": err.what}
        finally:
            path.unlink(missing_ok=True)
    crop = probe.segmenter.crop_shape
    crops = {"constant": np.full(crop, 0.5, np.float32),
             "uniform noise": rng.random(crop).astype(np.float32)}
    for name, image in crops.items():
        variants = probe.crop_variants(image)
        out["crops"][name] = {k: variants[k][813] for k in keys}
    return out
