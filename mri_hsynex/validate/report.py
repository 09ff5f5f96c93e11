"""``mri_hsynex validate``: run the measurements of issue 8 and write ``validation.md``.

(1) synthetic grid on the held-out label map (contrast x slice thickness x direction), Dice of
hsynex (localiser, no aseg) and of the T1-only teacher; (2) real held-out T1: hsynex vs the
teacher; (3) consistency (CV of each volume across the grid); (4) simulated group study
(atrophy 5/10/15 %, AUROC and rank-sum p, measured vs true volumes); (5) runtime and memory from
``make bench``. Expensive cases are cached under ``build/validate``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import HsynexError
from ..labels import SUBUNIT_IDS
from . import between, compare, figures, sensitivity, slices, study, tables, volume_report
from .contrasts import CONTRASTS, SHELLS_MM, Acquisition
from .metrics import coefficient_of_variation
from .tables import SHORT_NAMES, fmt, fmt_p, md_table, mean_subunit_dice, nanmean

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
DEFAULT_TEACHER = SHARED_DATA / "teacher" / "hypothalamus_seg_model.h5"
DEFAULT_SUBJECTS = SHARED_DATA / "subjects"
DEFAULT_MINDBOGGLE = SHARED_DATA / "mindboggle_oasis20"


@dataclass
class Options:
    """Everything a validation run needs (paths relative to the working folder)."""

    out_dir: Path
    quick: bool = False
    model_dir: Path | None = None
    labels_dir: Path = Path("build/labels")
    teacher_weights: Path | None = None
    subjects_dir: Path | None = None
    holdout: tuple[str, ...] = ()
    threads: int | None = None
    seed: int = 0
    cache_dir: Path = Path("build/validate")
    bench_dir: Path = Path("bench_out")
    use_teacher: bool = True
    notes: list[str] = field(default_factory=list)
    # real T1 scans to add to the held-out ones (name substrings, in the subjects folder and the
    # Mindboggle folder): scans the networks were not trained on although not in `holdout`
    real_extra: tuple[str, ...] = ()
    mindboggle_dir: Path | None = None
    # label maps with subunits of real subjects (``<name>_labels.nii.gz``), a second reference
    # for their volumes beside the teacher (section 8); the label folder is always searched
    real_reference_dirs: tuple[Path, ...] = ()
    sensitivity_only: bool = False  # run the paired sensitivity study alone (sensitivity.md)
    # folders of label maps the networks were never trained on, rendered beside the held-out
    # maps for the between-subject study on renders (section 10)
    between_dirs: tuple[Path, ...] = ()
    # an earlier run's report folder or targets.json: its targets beside this run's
    compare: Path | None = None


def default_holdout() -> tuple[str, ...]:
    """The held-out names of the cascade's training config (``models/train_cascade.json``)."""
    config = REPO / "models" / "train_cascade.json"
    try:
        return tuple(json.loads(config.read_text())["holdout"])
    except (OSError, KeyError, ValueError):
        return ("sub-08",)


def holdout_map_paths(opts: Options, holdout: tuple[str, ...]) -> list[Path]:
    """The held-out label maps: from ``opts.labels_dir``, else from ``<cache>/labels``, else
    built there first (``mri_hsynex build-labels`` on the held-out subjects of the subjects
    folder with the teacher's weights), so that ``make validate`` also runs from a clean clone."""
    built = Path(opts.cache_dir) / "labels"
    for folder in (Path(opts.labels_dir), built):
        if folder.is_dir():
            try:
                return study.find_holdout_maps(folder, holdout)
            except HsynexError:
                continue
    subjects_dir = opts.subjects_dir or DEFAULT_SUBJECTS
    weights = opts.teacher_weights or DEFAULT_TEACHER
    names = [name for name, _, aseg in study.find_real_subjects(subjects_dir, holdout)
             if aseg is not None]
    if not names or not Path(weights).is_file():
        # the error names the folder the user pointed at
        return study.find_holdout_maps(opts.labels_dir, holdout)
    from ..cli import build_labels

    print(f"no held-out label map in {opts.labels_dir}: building {', '.join(names)} in {built}",
          flush=True)
    argv = ["--sd", str(subjects_dir), "--s", *names, "--o", str(built), "--weights",
            str(weights), "--no-synthseg", "--cpu"]
    if opts.threads:
        argv += ["--threads", str(opts.threads)]
    if build_labels.main(argv) != 0:
        raise HsynexError("could not build the held-out label map(s) in", built)
    return study.find_holdout_maps(built, holdout)


def _engines(opts: Options) -> tuple[dict, dict[str, str]]:
    from ..predict.networks import find_model_dir
    from .engines import HsynexEngine, TeacherEngine

    model_dir = find_model_dir(opts.model_dir)
    engines: dict = {"hsynex": HsynexEngine(model_dir, opts.threads, opts.seed)}
    fingerprints = {"hsynex": study.hsynex_fingerprint(model_dir)}
    weights = opts.teacher_weights
    if not opts.use_teacher:
        weights = None
    elif weights is None and DEFAULT_TEACHER.is_file():
        weights = DEFAULT_TEACHER
    if weights is not None:
        if not Path(weights).is_file():
            raise HsynexError("teacher weights not found", weights)
        engines["teacher"] = TeacherEngine(weights)
        fingerprints["teacher"] = f"{study.file_fingerprint(Path(weights))}:block96of160"
    else:
        opts.notes.append("The teacher was not run (no weights, or `--no-teacher`), so the "
                          "teacher columns are missing and the real-T1 reference is the teacher "
                          "subunits stored in the held-out label map.")
    opts.model_dir = model_dir
    return engines, fingerprints


def run_validation(opts: Options, engines: dict | None = None) -> Path:
    """Run every measurement (cached) and write ``<out>/validation.md`` and its figures
    (``<out>/sensitivity.md`` only, with ``opts.sensitivity_only``).

    ``engines`` (name -> object with ``segment(image_path, aseg_path=None)``) replaces hsynex
    and the teacher, for tests.
    """
    t0 = time.time()
    before = None
    if opts.compare is not None:
        if opts.sensitivity_only:
            raise HsynexError("--compare needs a run that measures the targets "
                              "(not --sensitivity-only)")
        before = compare.load_targets(opts.compare)  # before the run: a bad path fails now
    holdout = opts.holdout or default_holdout()
    maps = [study.load_label_map(p) for p in holdout_map_paths(opts, holdout)]
    if engines is None:
        engines, fingerprints = _engines(opts)
    else:
        fingerprints = {name: f"test-{id(engine)}" for name, engine in engines.items()}
    runner = study.Runner(opts.cache_dir, engines, fingerprints, opts.seed)
    design = study.quick_design() if opts.quick else study.full_design()
    records: list[dict] = []
    if not opts.sensitivity_only:
        records += _issue8_records(opts, runner, maps, design, holdout)
    sens_design = sensitivity.quick_sensitivity_design() if opts.quick \
        else sensitivity.SensitivityDesign()
    sens_engines = {**engines, "hsynex": _probe_for(engines["hsynex"])}
    sens_runner = study.Runner(opts.cache_dir, sens_engines, fingerprints, opts.seed)
    for lmap in maps:
        records += sensitivity.run_sensitivity(sens_runner, lmap, sens_design)
    if not opts.sensitivity_only:
        records += _between_records(opts, sens_runner, maps)
        slice_design = slices.quick_slice_design() if opts.quick else slices.SliceDesign()
        for lmap in maps[:1]:  # section 11: one held-out map, thick slices at every phase
            records += slices.run_slices(sens_runner, lmap, slice_design)
    probe = sens_engines["hsynex"]
    probe_check = blank_noise = demo = None
    if hasattr(probe, "check_against_pipeline"):
        probe_check = _probe_check(probe, maps[0], opts.cache_dir)
        blank_noise = volume_report.blank_and_noise(probe, opts.cache_dir / "images")
        if not opts.quick:
            demo = volume_report.demo_check(engines["hsynex"], engines.get("teacher"),
                                            opts.cache_dir / "images")
    out_dir = Path(opts.out_dir)
    run = {"seconds": 0.0, "records": records, "counts": dict(runner.counts),
           "blank": None, "rss_mb": runner.rss_mb, "maps": maps, "design": design,
           "holdout": holdout, "figures": [], "sensitivity_design": sens_design,
           "probe_check": probe_check, "blank_noise": blank_noise, "demo": demo,
           "before": before}
    for name, count in sens_runner.counts.items():
        run["counts"][name] = run["counts"].get(name, 0) + count
    if not opts.sensitivity_only:
        figure_dir = out_dir / "figures"
        made = [
            figures.dice_vs_thickness(records, figure_dir / "validation_dice_vs_thickness.png"),
            figures.qc_montage([opts.cache_dir / "qc" / f"{m.name}_{name}.npz" for m in maps[:1]
                                for name in design.qc_cases], figure_dir / "validation_qc.png"),
            figures.group_boxplots(records, figure_dir / "validation_group_study.png"),
        ]
        run["figures"] = [p.relative_to(out_dir) for p in made if p is not None]
        run["blank"] = engines["hsynex"].blank_input_voxels() \
            if hasattr(engines.get("hsynex"), "blank_input_voxels") else None
    run["seconds"] = time.time() - t0
    run["rss_mb"] = study.remembered_rss_mb(opts.cache_dir, fingerprints,
                                            max(runner.rss_mb, sens_runner.rss_mb))
    if opts.sensitivity_only:
        text, name = render_sensitivity(records, opts, run), "sensitivity.md"
    else:
        text, name = render(records, opts, run), "validation.md"
    out_dir.mkdir(parents=True, exist_ok=True)
    if not opts.sensitivity_only:
        compare.write_targets(out_dir / compare.TARGETS_FILE, run["targets_record"])
    path = out_dir / name
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)
    _write_records(opts.cache_dir / ("sensitivity_records.json" if opts.sensitivity_only
                                     else "records.json"), records)
    return path


def _issue8_records(opts: Options, runner: study.Runner, maps: list, design: study.Design,
                    holdout: tuple[str, ...]) -> list[dict]:
    """Sections 1-4: the synthetic grid, the real T1 scans, the group study."""
    records: list[dict] = []
    for lmap in maps:
        records += study.run_grid(runner, lmap, design)
    for name, image, aseg in real_subjects(opts, holdout):
        reference = next((m for m in maps if name in m.name), None)
        records += study.run_real(runner, name, image, aseg, reference, design.real_teacher)
        records += _label_map_reference(opts, name, maps, image)
    for lmap in maps[:1]:  # one held-out map carries the group study
        for cohort in design.cohorts:
            records += study.run_cohort(runner, lmap, cohort)
    return records


def _between_records(opts: Options, runner: study.Runner, maps: list) -> list[dict]:
    """Section 10: renders of the held-out ``maps`` (already loaded) and of
    ``opts.between_dirs``' maps (loaded one at a time)."""
    design = between.quick_between_design() if opts.quick else between.BetweenDesign()
    loaded = {m.path: m for m in maps}
    paths = between.between_map_paths(list(loaded), opts.between_dirs)
    records: list[dict] = []
    for path in paths[:design.max_maps]:
        lmap = loaded.get(path) or study.load_label_map(path)
        records += between.run_between(runner, lmap, design)
    return records


def _label_map_reference(opts: Options, name: str, maps: list,
                         scan: Path | None = None) -> list[dict]:
    """A ``real`` record (variant ``label map``) with the subunit volumes of the subject's own
    label map, when one is found (held-out maps, the label folder, ``real_reference_dirs``);
    with the subject's ``scan``, also the share of the map's hypothalamus that the scan holds
    as masked out (``mask_removed_share``)."""
    from .anatomy import label_volumes

    folders = [Path(opts.labels_dir), Path(opts.cache_dir) / "labels",
               *map(Path, opts.real_reference_dirs)]
    paths = [m.path for m in maps if m.name == name] + [
        folder / f"{name}_labels.nii.gz" for folder in folders]
    path = next((p for p in paths if p.is_file()), None)
    if path is None:
        return []
    import nibabel as nib

    image = nib.load(path)
    labels = np.rint(np.asarray(image.dataobj)).astype(np.int32)
    volumes = label_volumes(labels, float(abs(np.linalg.det(image.affine[:3, :3]))))
    masked = mask_removed_share(labels, image.affine, scan) if scan is not None else None
    return [{"kind": "real", "subject": name, "engine": "label map", "variant": "label map",
             "path": str(path), "volumes": {str(k): v for k, v in volumes.items()},
             "masked": masked, "seconds": float("nan"), "failed": None}]


def mask_removed_share(labels: np.ndarray, affine: np.ndarray, scan: Path) -> float | None:
    """The share of the hypothalamus (801-810) of ``labels`` (on ``affine``'s grid) where the
    ``scan`` holds its minimum value connected to its border, i.e. where a brain mask removed
    the tissue (the Mindboggle T1s zero 7-41 % of their subjects' hypothalamus, and the 3rd
    ventricle's CSF); sampled in world coordinates. None without a hypothalamus."""
    from ..io import load_volume
    from ..labels import SUBUNIT_IDS
    from ..predict.grid import Grid, sample
    from ..predict.pvc import border_minimum

    hypothalamus = np.isin(labels, SUBUNIT_IDS)
    if not hypothalamus.any():
        return None
    volume = load_volume(scan)
    removed = border_minimum(np.asarray(volume.data))
    on_map = sample(removed.astype(np.uint8), Grid(removed.shape, np.asarray(volume.affine)),
                    Grid(labels.shape, np.asarray(affine, float)), order=0)
    return float(np.mean(on_map[hypothalamus] > 0))


def real_subjects(opts: Options, holdout: tuple[str, ...]) -> list[tuple[str, Path, Path | None]]:
    """The real T1 scans: held-out (and ``opts.real_extra``) subjects of the subjects folder
    and of the Mindboggle folder."""
    names = tuple(holdout) + tuple(opts.real_extra)
    subjects_dir = opts.subjects_dir or (DEFAULT_SUBJECTS if DEFAULT_SUBJECTS.is_dir() else None)
    mindboggle = opts.mindboggle_dir or (DEFAULT_MINDBOGGLE if DEFAULT_MINDBOGGLE.is_dir()
                                         else None)
    if opts.subjects_dir is not None and opts.mindboggle_dir is None:
        mindboggle = None  # a chosen subjects folder stands alone (tests, other data)
    return study.find_real_subjects(subjects_dir, names) \
        + study.find_mindboggle_subjects(mindboggle, names)


def _probe_for(engine):
    """The probe (every post-processing variant) sharing ``engine``'s networks, when ``engine``
    is hsynex's; other engines (stand-ins in tests) as they are."""
    from .engines import HsynexEngine
    from .probe import ProbeEngine

    if isinstance(engine, ProbeEngine) or not isinstance(engine, HsynexEngine):
        return engine
    probe = ProbeEngine(engine.model_dir, engine.threads, engine.seed)
    probe._segmenter = engine.segmenter
    return probe


def _probe_check(probe, lmap: study.LabelMap, cache_dir: Path) -> float:
    """The probe's pipeline volumes against the tool's on one T1-like image of the map."""
    from .contrasts import synthesize

    image, affine = synthesize(lmap.labels, lmap.affine, Acquisition("T1"), 0)
    path = study.write_image(Path(cache_dir) / "images" / "probe_check.nii", image, affine)
    try:
        return probe.check_against_pipeline(path)
    finally:
        path.unlink(missing_ok=True)


def _write_records(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(records, indent=0))
    os.replace(tmp, path)


# --- markdown -----------------------------------------------------------------------------------
def target_lists(records: list[dict], groups: list[tables.GroupResult],
                 run: dict) -> dict[int, list[tables.Target]]:
    """The target rows of issue 13 and of issue 8, by issue."""
    return {13: volume_report.target_rows(records, groups, run.get("blank_noise"),
                                          run.get("demo")),
            8: tables.target_rows(volume_report.without_failed_reference(records), groups)}


def _targets_record(by_issue: dict[int, list[tables.Target]], opts: Options) -> dict:
    return compare.targets_record(by_issue, _model_summary(opts.model_dir),
                                  "quick" if opts.quick else "full",
                                  time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))


def render(records: list[dict], opts: Options, run: dict) -> str:
    """The whole report as markdown."""
    groups = tables.group_results(records)
    by_issue = target_lists(records, groups, run)
    targets13, targets = by_issue[13], by_issue[8]
    run["targets_record"] = _targets_record(by_issue, opts)  # also written as targets.json
    versus = ""
    if run.get("before") is not None:
        versus = compare.comparison_section(run["before"], run["targets_record"],
                                            str(opts.compare))
    parts = [
        _header(opts, run),
        volume_report.targets_section(targets13),
        _targets_section(targets),
        versus,
        _grid_section(records),
        _real_section(records),
        _consistency_section(records),
        _group_section(records, groups),
        _runtime_section(records, opts, run),
        volume_report.sensitivity_section(records, run.get("sensitivity_design"),
                                          run["maps"], run.get("probe_check")),
        volume_report.diagnosis_section(records, groups),
        volume_report.between_subject_section(records, _real_note(opts)),
        volume_report.blank_noise_section(run.get("blank_noise")),
        between.between_section(records, 10),
        slices.slices_section(records, 11),
        _method_section(run),
        _limits_section(volume_report.without_failed_reference(records), targets, groups,
                        opts, run.get("blank")),
        _closing(records, targets, groups, run) + "\n" + _closing13(records, targets13),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def render_sensitivity(records: list[dict], opts: Options, run: dict) -> str:
    """``--sensitivity-only``: the paired sensitivity study and its diagnosis."""
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(run["counts"].items())) or "none (cached)"
    parts = [
        "# Paired sensitivity of hsynex",
        f"Generated by `mri_hsynex validate --sensitivity-only` (hsynex {__version__}) on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; networks: "
        f"{_model_summary(opts.model_dir)}; segmentations run: {counts}; wall time "
        f"{run['seconds'] / 60:.1f} min.",
        volume_report.sensitivity_section(records, run.get("sensitivity_design"), run["maps"],
                                          run.get("probe_check")),
        volume_report.diagnosis_section(records, []),
        volume_report.blank_noise_section(run.get("blank_noise")),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def _real_note(opts: Options) -> str:
    if not opts.real_extra:
        return ""
    return ("with `--real-extra " + " ".join(opts.real_extra) + "`: scans of subjects whose "
            "label maps the networks were not trained on, although not in the training "
            "config's hold-out list")


def _closing13(records: list[dict], targets13: list[tables.Target]) -> str:
    met = sum(1 for t in targets13 if t.met)
    measured = sum(1 for t in targets13 if t.met is not None)
    lines = [f"Issue 13 targets met: {met} of {measured} measured ({len(targets13)} in all)."]
    for thickness in (1.0, 5.0):
        for engine in ("hsynex", "teacher"):
            value = sensitivity.mean_sensitivity(records, engine, thickness_mm=thickness)
            if np.isfinite(value):
                lines.append(f"Mean paired sensitivity at {thickness:g} mm, {engine}: "
                             f"{value:.2f}" + (" (T1-like only)" if engine == "teacher" else "")
                             + ".")
    r, _, n = volume_report.real_fit(records, "hsynex", 813)
    if n:
        lines.append(f"Real T1, whole volume vs the teacher's across {n} subjects with a "
                     f"plausible teacher volume: r {fmt(r, 2)}.")
    summary = between.between_summary(records)
    if summary:
        lines.append(f"Renders of label maps the networks were not trained on (section 10): "
                     f"whole volume vs the true one, r {summary['mean_r']:.2f} on average over "
                     f"{summary['n_acq']} acquisitions, worst {summary['worst_r']:.2f} "
                     f"({summary['worst_acq']}).")
    return "\n".join(lines)


def _model_summary(model_dir: Path | None) -> str:
    if model_dir is None:
        return "unknown"
    settings = Path(model_dir) / "model.json"
    when = ""
    if settings.is_file():
        when = time.strftime(" (model.json of %Y-%m-%d %H:%M UTC)",
                             time.gmtime(settings.stat().st_mtime))
    try:
        shown = os.path.relpath(model_dir)
    except ValueError:
        shown = str(model_dir)
    steps = []
    try:
        networks = json.loads(settings.read_text()).get("networks", {})
        for name, info in networks.items():
            if "trained_steps" in info:
                best = info.get("best_validation_score")
                steps.append(f"{name} {info['trained_steps']} training steps"
                             + (f" (best validation score {best:.3f} at step "
                                f"{info.get('best_step')})" if best is not None else ""))
    except (OSError, ValueError, AttributeError):
        pass
    return f"`{shown}`{when}" + (f": {'; '.join(steps)}" if steps else "")


def _header(opts: Options, run: dict) -> str:
    design: study.Design = run["design"]
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(run["counts"].items())) or "none (cached)"
    mode = "`--quick` (machinery check, not a result)" if opts.quick else "full"
    maps = ", ".join(f"`{m.path.name}`" for m in run["maps"])
    return "\n".join([
        "# Validation of hsynex",
        "",
        f"Generated by `mri_hsynex validate` (hsynex {__version__}) on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, mode {mode}. "
        "Do not edit by hand: `make validate` rewrites this file.",
        "",
        f"- Networks: {_model_summary(opts.model_dir)}; Keras backend "
        f"`{os.environ.get('KERAS_BACKEND', '?')}`, CPU, threads: {opts.threads or 'default'}.",
        f"- Held-out label map(s) (names containing {', '.join(run['holdout'])}): {maps}.",
        f"- Design: {len(design.grid)} synthetic grid images for hsynex, "
        + (f"{len(design.teacher_cases)} of them for the teacher (every contrast at 1 mm and "
           "at 5 mm axial: it needs about a minute per image on this machine)"
           if design.teacher_cases is not None else "all of them for the teacher")
        + "; group study "
        f"{design.n_group_scans} simulated scans (hsynex only).",
        f"- Segmentations run in this invocation: {counts}; wall time "
        f"{run['seconds'] / 60:.1f} min on {platform.machine()}, {os.cpu_count()} cores "
        "(cached cases are not re-run).",
        f"- Compute in the case records (what a run from an empty cache costs): "
        f"{_compute_minutes(run['records'])}.",
        f"- Images an engine refused (counted as Dice 0, left out of the group statistics): "
        f"{_failures(run['records'])}.",
        f"- Seed {opts.seed}; case records: `{opts.cache_dir}/records.json`.",
    ])


def _compute_minutes(records: list[dict]) -> str:
    """Segmentation and image-making time summed over the case records, in minutes."""
    def total(values) -> float:
        return sum(v for v in values if v is not None and np.isfinite(v)) / 60

    parts = [f"{engine} {total(r['seconds'] for r in records if r['engine'] == engine):.1f}"
             for engine in dict.fromkeys(r["engine"] for r in records)]
    prep = total(r.get("prep_seconds") for r in records)
    return (f"segmentation {', '.join(parts)} min; synthesis, deformation and writing of the "
            f"test images {prep:.1f} min (not recorded for cases cached by older versions)")


def _failures(records: list[dict]) -> str:
    failed: dict[str, int] = {}
    for r in records:
        if r.get("failed"):
            failed[r["engine"]] = failed.get(r["engine"], 0) + 1
    return ", ".join(f"{k}: {v}" for k, v in sorted(failed.items())) or "none"


def _targets_section(targets: list[tables.Target]) -> str:
    rows = [(t.what, t.goal, fmt(t.value), t.status, t.note) for t in targets]
    return "## Targets (issue 8)\n\n" + md_table(
        ["target", "goal", "measured", "status", "note"], rows)


def _grid_section(records: list[dict]) -> str:
    grid = [r for r in records if r["kind"] == "grid"]
    if not grid:
        return ""
    engines = list(dict.fromkeys(r["engine"] for r in grid))
    acqs = list(dict.fromkeys(r["acq"] for r in grid))
    headers = ["image"] + [f"{e} {w}" for e in engines for w in ("whole", "mean subunit")]
    rows = []
    for acq in acqs:
        row: list[object] = [acq]
        for engine in engines:
            r = next((x for x in grid if x["acq"] == acq and x["engine"] == engine), None)
            row += [fmt(r["dice"]["813"]) if r else "–", fmt(mean_subunit_dice(r)) if r else "–"]
        rows.append(row)
    contrasts = list(dict.fromkeys(r["contrast"] for r in grid))
    per_sub_headers = ["engine", "contrast"] + [SHORT_NAMES[i] for i in SUBUNIT_IDS] + ["whole"]
    per_sub = []
    for engine in engines:
        for contrast in contrasts:
            sel = [r for r in grid if r["engine"] == engine and r["contrast"] == contrast]
            per_sub.append([engine, contrast] + [
                fmt(nanmean(r["dice"][str(i)] for r in sel), 2) for i in (*SUBUNIT_IDS, 813)])
    summary = []
    for engine in engines:
        for contrast in contrasts:
            summary.append([engine, contrast,
                            fmt(tables.grid_dice(records, engine, contrast=contrast)),
                            fmt(tables.grid_dice(records, engine, contrast=contrast, label=0))])
    return "\n\n".join([
        "## 1. Synthetic grid (held-out label map)",
        "Each image is the held-out label map rendered in one contrast and acquired at one slice "
        "thickness (stored at that resolution); hsynex runs without an aseg (its localiser finds "
        "the hypothalamus); the teacher gets its own preprocessing (linear resampling to 1 mm, "
        "intensities normalised on a 160³ block) centred on the map's ventral DCs and 3rd "
        "ventricle (the localisation recon-all's aseg would give it, a help hsynex does not get "
        "here), its network run on the central 96³ (same labels as the whole block, 5× "
        "faster). Dice against the "
        "map's subunits on its 1 mm grid (hsynex's 1 mm model-grid output and the teacher's "
        "output resampled, nearest neighbour).",
        "### Mean over thicknesses and directions",
        md_table(["engine", "contrast", "whole Dice", "mean subunit Dice"], summary),
        "### Every image",
        md_table(headers, rows),
        "### Per subunit (mean over thicknesses and directions)",
        md_table(per_sub_headers, per_sub),
        "![Dice vs thickness](figures/validation_dice_vs_thickness.png)",
        "![QC montage](figures/validation_qc.png)",
        "QC montage: coronal crops through the hypothalamus (radiological view); label colours "
        "are FreeSurfer's.",
    ])


def _real_section(records: list[dict]) -> str:
    real = [r for r in records if r["kind"] == "real" and "dice" in r]
    if not real:
        return ("## 2. Real held-out T1\n\nNo held-out subject with a T1 image was found "
                "(`--subjects-dir`), so this section is empty.")
    headers = ["subject", "hsynex run", "reference"] + [SHORT_NAMES[i] for i in SUBUNIT_IDS] \
        + ["mean subunit", "whole"]
    rows = [[r["subject"], r["variant"], r["reference"]]
            + [fmt(r["dice"][str(i)], 2) for i in SUBUNIT_IDS]
            + [fmt(mean_subunit_dice(r)), fmt(r["dice"]["813"])] for r in real]
    vol_rows = []
    for r in [x for x in records if x["kind"] == "real"]:
        vol_rows.append([r["subject"], r["variant"]] + [fmt(r["volumes"][str(i)], 0)
                                                       for i in (*SUBUNIT_IDS, 813)])
    return "\n\n".join([
        "## 2. Real held-out T1",
        "hsynex with the subject's aseg (`hsynex+aseg`, the recon-all module) and with its own "
        "localiser (`hsynex`), scored against the teacher's labels on the same scan (the teacher "
        "is the reference here, not ground truth). Scans where the teacher's own whole volume "
        "is implausible (section 8) are listed but left out of the targets.",
        md_table(headers, rows),
        "Volumes (mm³):",
        md_table(["subject", "run"] + [SHORT_NAMES[i] for i in (*SUBUNIT_IDS, 813)], vol_rows),
    ])


def _consistency_section(records: list[dict]) -> str:
    engines = list(dict.fromkeys(r["engine"] for r in records if r["kind"] == "grid"))
    if not engines:
        return ""
    headers = ["structure"] + [f"{e} {c}" for e in engines
                               for c in ("CV all", "CV 1 mm contrasts", "mean bias")]
    per_engine = {e: tables.consistency_rows(records, e) for e in engines}
    rows = []
    for k, label in enumerate((*SUBUNIT_IDS, 811, 812, 813)):
        row: list[object] = [SHORT_NAMES[label]]
        for e in engines:
            _, cv_all, cv_1mm, bias = per_engine[e][k]
            row += [_pct(cv_all), _pct(cv_1mm), _pct(bias, signed=True)]
        rows.append(row)
    return "\n\n".join([
        "## 3. Consistency across contrasts and resolutions",
        "Coefficient of variation (SD / mean) of each volume over all grid images of the same "
        "label map (the true volume is fixed, so all variation is measurement), over the 1 mm "
        "images of different contrasts only, and the mean bias of the measured volume against "
        "the true one. hsynex volumes are its soft volumes (as it reports them); the teacher's "
        "are voxel counts of its labels (its posteriors, summed over its 160³ block, give about "
        "twice the labelled volume).",
        md_table(headers, rows),
    ])


def _pct(value: float, signed: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    return f"{value * 100:+.1f} %" if signed else f"{value * 100:.1f} %"


def _group_section(records: list[dict], groups: list[tables.GroupResult]) -> str:
    if not groups:
        return ""
    main_rows = []
    for g in groups:
        if g.label not in (813, 811, 812):
            continue
        main_rows.append([g.cohort, g.engine, f"{g.fraction:.0%}", SHORT_NAMES[g.label],
                          f"{g.n_controls}/{g.n_patients}", fmt(g.auroc), fmt_p(g.p),
                          f"{g.change * 100:+.1f} %", fmt(g.auroc_truth), fmt_p(g.p_truth),
                          f"{g.change_truth * 100:+.1f} %"])
    sub_rows = []
    for g in groups:
        if g.label in SUBUNIT_IDS and abs(g.fraction - 0.10) < 1e-9:
            sub_rows.append([g.cohort, g.engine, SHORT_NAMES[g.label], fmt(g.auroc), fmt_p(g.p),
                             f"{g.change * 100:+.1f} %", fmt(g.auroc_truth),
                             f"{g.change_truth * 100:+.1f} %"])
    dice_rows = []
    group = [r for r in records if r["kind"] == "group"]
    for cohort, engine in dict.fromkeys((r["cohort"], r["engine"]) for r in group):
        sel = [r for r in group if r["cohort"] == cohort and r["engine"] == engine]
        dice_rows.append([cohort, engine, len(sel), fmt(nanmean(r["dice"]["813"] for r in sel)),
                          fmt(nanmean(mean_subunit_dice(r) for r in sel))])
    return "\n\n".join([
        "## 4. Simulated group study",
        "Patients: the held-out map with the hypothalamus of each side shrunk by the given "
        "fraction (voxels nearest its outer surface, away from the third ventricle, become "
        "ventral DC). Every control and patient gets its own random deformation (per-axis "
        "scaling N(1, 0.02) about the hypothalamus plus a smooth displacement, sd 0.75 mm at "
        "control points a fifth of the region apart, tapered to none 48 mm from the "
        "hypothalamus; its volume follows the Jacobian) and, in "
        "the mixed cohort, a fresh contrast (any named one or fully random), slice thickness "
        "(1/3/5/7 mm) and direction. AUROC = P(control volume > patient volume); p = two-sided "
        "rank-sum. 'true' = the same statistics on the label maps' own volumes. The teacher "
        "also segments the T1-like 1 mm cohort (its home ground), to show whether the "
        "simulated atrophy can be seen in these images by a method that works on them.",
        md_table(["cohort", "engine", "atrophy", "structure", "n C/P", "AUROC", "p",
                  "measured change", "AUROC true", "p true", "true change"], main_rows),
        "Per subunit, 10 % atrophy:",
        md_table(["cohort", "engine", "subunit", "AUROC", "p", "measured change",
                  "AUROC true", "true change"], sub_rows),
        "Segmentation quality inside the group study (Dice against each simulated map):",
        md_table(["cohort", "engine", "scans", "whole Dice", "mean subunit Dice"], dice_rows),
        "![group study](figures/validation_group_study.png)",
    ])


def _bench_tables(bench_dir: Path) -> list[str]:
    """Markdown for the per-scan benchmarks in ``bench_out/*.json`` (files with a ``backends``
    list, as ``segment.json`` writes: end-to-end time and memory per backend)."""
    parts = []
    for path in sorted(Path(bench_dir).glob("*.json")) if Path(bench_dir).is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("backends"), list):
            parts.append(_segment_bench(path.name, data))
    return parts


def _segment_bench(name: str, data: dict) -> str:
    rows = []
    for b in data["backends"]:
        stages = b.get("median_run_stages_s") or {}
        batch = b.get("batch") or {}
        rows.append([b.get("backend", "?"), _cell(b.get("median_s")), _cell(b.get("median_cpu_s")),
                     _cell(b.get("peak_rss_mb")), _cell(batch.get("per_scan_s")),
                     ", ".join(f"{k} {v:.1f}" for k, v in stages.items()
                               if isinstance(v, (int, float)))])
    notes = [f"{k}: {data[k]}" for k in ("scan", "models", "cpu_count", "load_average_before",
                                          "load_average_after") if k in data]
    return (f"`{name}` (one `mri_hsynex segment` process per run: imports, model loading and "
            f"writing included; {'; '.join(notes)}):\n\n"
            + md_table(["backend", "median wall s", "median CPU s", "peak RSS MB",
                        "batch s/scan", "stages (s)"], rows))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return "" if value is None else str(value)


def _runtime_section(records: list[dict], opts: Options, run: dict) -> str:
    rows = []
    for engine in dict.fromkeys(r["engine"] for r in records if r["engine"] != "label map"):
        for kind in ("grid", "real", "group", "sensitivity", "between", "slices"):
            sel = [r for r in records if r["engine"] == engine and r["kind"] == kind]
            secs = [r["seconds"] for r in sel if np.isfinite(r["seconds"])]
            failed = sum(1 for r in sel if r.get("failed"))
            if sel:
                rows.append([engine, kind, len(sel), failed,
                             fmt(float(np.mean(secs)), 1) if secs else "–",
                             fmt(float(np.max(secs)), 1) if secs else "–"])
    bench = _bench_tables(opts.bench_dir)
    parts = ["## 5. Runtime and memory",
             "Seconds per segmentation measured inside this run (model already loaded; includes "
             "reading the image and post-processing; the machine may have been shared):",
             md_table(["engine", "images", "n", "refused", "mean s", "max s"], rows),
             f"Largest resident memory after a segmentation, in this run or an earlier one with "
             f"the same networks (both engines loaded, the held-out map in memory): "
             f"{run.get('rss_mb', 0):.0f} MB."
             if run.get("rss_mb") else "Resident memory: not measured (every case came from "
             "the cache; a run from an empty cache records it)."]
    if bench:
        parts += ["From `make bench` (`bench_out/*.json`; the training-data generator's "
                  "throughput is in `docs/benchmarks.md`):"] + bench
    else:
        parts.append("No `bench_out/*.json` was found: run `make bench` before `make validate` "
                     "to include runtime and memory per backend here (see also "
                     "`docs/benchmarks.md`).")
    return "\n\n".join(parts)


def _method_section(run: dict) -> str:
    design: study.Design = run["design"]
    a = Acquisition("T1")
    contrast_rows = [[name] + [f"{CONTRASTS[name][t]:.2f}" for t in
                               ("wm", "cortex", "deep_gm", "hypothalamus", "ventral_dc", "csf")]
                     for name in CONTRASTS]
    shells = ", ".join(f"{t} {d0:g}–{d1:g} mm" for t, d0, d1 in SHELLS_MM)
    cohorts = "; ".join(f"{c.name}: {c.n} controls + {c.n} patients at "
                        f"{', '.join(f'{f:.0%}' for f in c.fractions)}" for c in design.cohorts)
    return "\n\n".join([
        "## How the test images are made",
        "`mri_hsynex/validate/contrasts.py`: each aseg label gets a tissue class and the "
        "contrast's mean for it (± a small per-label jitter, sd "
        f"{a.label_jitter:g}; the ten subunits share one intensity), maps without "
        f"extra-cerebral labels get shells around the brain ({shells}) so the image is a whole "
        "head, then partial-volume blur (σ 0.5 mm), a multiplicative bias field (log-sd "
        f"{a.bias:g}), thick-slice acquisition (Gaussian slice profile with FWHM = thickness, "
        "resampled every `thickness` mm along S for axial, A for coronal or R for sagittal, "
        "the first slice half a thickness from the edge unless a phase moves it (section 11), "
        "stored at that resolution with the matching affine) and Rician noise (sd "
        f"{a.noise:g} of the brightest tissue). 'random' draws every label class and tissue "
        "uniformly. Tissue means:",
        md_table(["contrast", "WM", "cortex", "deep GM", "hypothalamus", "ventral DC", "CSF"],
                 contrast_rows),
        f"Group study: {cohorts}.",
    ])


def _limits_section(records: list[dict], targets: list[tables.Target],
                    groups: list[tables.GroupResult], opts: Options,
                    blank: dict[str, int] | None = None) -> str:
    lines = ["## Notes and limits"]
    if blank:
        lines.append("- Does the network read the image? On a crop with no image in it, stage 1 "
                     "returns " + ", ".join(f"{v} hypothalamus voxels ({k})"
                                            for k, v in blank.items())
                     + " (the hypothalamus is ~900 voxels): anything far from 0 is a shape "
                     "learnt from the crop's position rather than read from the image.")
    lines += [f"- {n}" for n in opts.notes]
    if opts.quick:
        lines.append("- This is a `--quick` run (4 grid images, n = 4 per group): the numbers "
                     "check the machinery and are not results.")
    lines += [
        "- One held-out label map (the only subject kept out of training); its subunits are the "
        "teacher's labels on the real T1, so every 'truth' here is the teacher's idea of the "
        "subunits. The anterior subunits are tiny (tens of voxels), so their Dice is noisy and "
        "low for any method.",
        "- The synthetic test images come from a simpler model (fixed tissue means per contrast) "
        "than the training generator (random Gaussian mixtures), and they are not real scans; "
        "the real-T1 section is the only check on real images.",
    ]
    lines += [f"- {d}" for d in diagnose(records, targets, groups)]
    return "\n".join(lines)


def diagnose(records: list[dict], targets: list[tables.Target],
             groups: list[tables.GroupResult]) -> list[str]:
    """Data-driven sentences on what limits each missed target (and what would close it)."""
    notes = []
    missed = {t.what.split(":")[0] for t in targets if t.met is False}
    syn_t1 = tables.grid_dice(records, "hsynex", contrast="T1")
    syn_t1_sub = tables.grid_dice(records, "hsynex", contrast="T1", label=0)
    real = [r for r in records if r["kind"] == "real" and r.get("variant") == "hsynex+aseg"]
    if "real held-out T1" in missed and real:
        real_whole = nanmean(r["dice"]["813"] for r in real)
        worst = min(SUBUNIT_IDS, key=lambda i: nanmean(r["dice"][str(i)] for r in real))
        if np.isfinite(syn_t1) and syn_t1 > real_whole + 0.05:
            cause = (f"hsynex does better on the synthetic T1-like images of the same anatomy "
                     f"(whole {syn_t1:.3f}, subunits {syn_t1_sub:.3f}) than on the real scan "
                     f"({real_whole:.3f}): the gap is synthetic-to-real (generator realism: "
                     "bias, texture, partial volume of the real hypothalamus borders)")
        else:
            cause = (f"hsynex is no better on synthetic T1-like images of the same anatomy "
                     f"(whole {fmt(syn_t1)}, subunits {fmt(syn_t1_sub)}), so the networks "
                     "themselves are the limit (training steps, capacity, only a handful of "
                     "real label maps with subunits to train on)")
        notes.append(f"Real-T1 Dice: {cause}. Weakest subunit: {SHORT_NAMES[worst]}. Longer "
                     "training, more label maps with subunits and larger stage-2 networks are "
                     "the levers; test-time left/right flipping helps the small subunits.")
    gap = next((t for t in targets if t.what.startswith("synthetic non-T1")), None)
    if gap is not None and gap.met is False:
        grid = [r for r in records if r["kind"] == "grid" and r["engine"] == "hsynex"]
        by_thick = {th: nanmean(r["dice"]["813"] for r in grid if r["thickness_mm"] == th)
                    for th in sorted({r["thickness_mm"] for r in grid})}
        notes.append("Contrast gap: " + gap.note + "; hsynex whole Dice by thickness "
                     + ", ".join(f"{th:g} mm {v:.3f}" for th, v in by_thick.items())
                     + f". {_contrast_note(gap.note)} More training steps (the generator "
                     "draws every contrast, so low-contrast images are seen as often as any) "
                     "and the aseg mask (when available) are what would close it.")
    for g in (tables.find_group(groups, p, 0.10) for p in ("T1-like", "FLAIR-like 5")):
        if g is None:
            continue
        goal = 0.9 if g.cohort.startswith("T1") else 0.8
        if g.auroc >= goal:
            continue
        controls = [r for r in records if r["kind"] == "group" and r["cohort"] == g.cohort
                    and r["group"] == "control" and r["engine"] == "hsynex"]
        cv_meas = coefficient_of_variation([r["volumes"]["813"] for r in controls])
        cv_true = coefficient_of_variation([r["truth"]["813"] for r in controls])
        causes = []
        if abs(g.change) < 0.7 * abs(g.change_truth):
            causes.append("the segmentation under-reports the shrinkage")
        if cv_meas > cv_true:
            causes.append("the measurement adds noise to the anatomical spread")
        elif cv_meas < 0.5 * cv_true:
            causes.append("the measured volumes hardly follow the anatomy at all: the networks "
                          "return a nearly constant shape around the hypothalamus")
        teacher = tables.find_group(groups, g.cohort, 0.10, engine="teacher")
        if teacher is not None:
            causes.append(f"on the same images the teacher reaches AUROC {teacher.auroc:.3f} "
                          f"(measured change {_pct(teacher.change, True)}), so the atrophy is "
                          "visible in them")
        if g.auroc_truth < goal:
            causes.append("even the true volumes do not reach the goal at this n")
        notes.append(f"Atrophy detection ({g.cohort}): AUROC {g.auroc:.3f} vs {g.auroc_truth:.3f}"
                     f" on the true volumes; measured change {_pct(g.change, True)} for a true "
                     f"{_pct(g.change_truth, True)}; control volumes vary by CV "
                     f"{_pct(cv_meas)} measured vs {_pct(cv_true)} true"
                     + (": " + "; ".join(causes) if causes else "")
                     + ". More accurate whole-hypothalamus boundaries (stage 1: more training, "
                     "thick-slice augmentation) are what would close it.")
    teacher = next((t for t in targets if t.what.startswith("teacher")), None)
    if teacher is not None and teacher.met is False:
        notes.append("The teacher is not clearly worse off-contrast here (" + teacher.note
                     + "): hsynex's own off-contrast accuracy is the limit, not the baseline.")
    return notes


def _contrast_note(note: str) -> str:
    """How much the hypothalamus stands out from its neighbours in the worst contrast vs T1."""
    worst = note.split(";")[0].removeprefix("worst: ").strip()
    if worst not in CONTRASTS:
        return ""

    def spread(name: str) -> str:
        t = CONTRASTS[name]
        hyp = t["hypothalamus"]
        parts = [f"{abs(hyp - t[n]) / hyp:.0%} from {label}" for n, label in
                 (("ventral_dc", "ventral DC"), ("csf", "CSF"), ("wm", "WM"))]
        return f"{name}-like: hypothalamus {', '.join(parts)}"

    def mean_spread(name: str) -> float:
        t = CONTRASTS[name]
        return float(np.mean([abs(t["hypothalamus"] - t[n]) for n in ("ventral_dc", "csf", "wm")])
                     / t["hypothalamus"])

    flatter = mean_spread(worst) < mean_spread("T1")
    return (f"Tissue contrast around the hypothalamus, {spread(worst)}; {spread('T1')}"
            + (": the worst contrast is also the flatter one." if flatter else "."))


def _closing(records: list[dict], targets: list[tables.Target],
             groups: list[tables.GroupResult], run: dict) -> str:
    t1 = tables.grid_dice(records, "hsynex", contrast="T1")
    off = tables.grid_dice(records, "hsynex", exclude_contrast="T1")
    teacher_t1 = tables.grid_dice(records, "teacher", contrast="T1")
    teacher_off = tables.grid_dice(records, "teacher", exclude_contrast="T1")
    met = sum(1 for t in targets if t.met)
    measured = sum(1 for t in targets if t.met is not None)
    lines = ["## Closing note", "",
             f"Targets met: {met} of {measured} measured ({len(targets)} in all).",
             f"Synthetic whole Dice, hsynex: T1-like {fmt(t1)}, other contrasts {fmt(off)}; "
             f"teacher: T1-like {fmt(teacher_t1)}, other contrasts {fmt(teacher_off)}."]
    for t in targets[:2]:
        lines.append(f"{t.what}: {fmt(t.value)} ({t.status}).")
    teacher_1mm = nanmean(r["dice"]["813"] for r in records if r["kind"] == "grid"
                          and r["engine"] == "teacher" and r["acq"] == "T1_1mm")
    if np.isfinite(teacher_1mm):
        lines.append(f"Teacher on the 1 mm T1-like image: whole Dice {fmt(teacher_1mm)}.")
    for prefix in ("T1-like", "FLAIR-like 5", "mixed"):
        for engine in ("hsynex", "teacher"):
            g = tables.find_group(groups, prefix, 0.10, engine=engine)
            if g:
                lines.append(f"10 % atrophy, {g.cohort}, {engine}: AUROC {fmt(g.auroc)} (true "
                             f"volumes {fmt(g.auroc_truth)}), p {fmt_p(g.p)}.")
    lines.append(f"Run time of this invocation: {run['seconds'] / 60:.1f} min "
                 f"({_compute_minutes(records)}).")
    return "\n".join(lines)
