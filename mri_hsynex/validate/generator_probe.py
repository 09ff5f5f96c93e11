"""Paired-sensitivity probe on the generator's own images (issue 13, §1 and §4).

For each label map and seed, a pair of samples is rendered with identical deformation, contrast,
bias, resolution and noise (``generator.paired.PairRenderer``) that differ only in the
hypothalamus: the original and the same map shrunk by ``shrink`` (both sides) at the 3rd
ventricle (kind 0: the ventricle widens) or at the ventral DC (kind 1). The networks measure
both; the paired sensitivity of a pair is

    (measured relative change) / (true relative change)

(1 = follows the anatomy, 0 = blind). True volumes are the hypothalamus' pooled label fractions
(mm^3); measured volumes are soft (sum of posteriors) and hard (voxels with posterior > 0.5), for
stage 1 alone and for the cascade's subunits (stage 2, or stage 1 x stage 2 in "product" mode).
No post-processing (ventral-DC mask, largest component) and no flip TTA: the networks
themselves. Samples are rendered untied (the hypothalamus never takes the ventral DC's
intensity), so both kinds of change are visible in the image.

``python -m mri_hsynex.validate.generator_probe --model models --labels DIR --maps sub-08 ...``
prints a summary and writes ``--o`` JSON (per pair and summary).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KIND_NAMES = {0: "ventricle", 1: "ventral_dc"}


@dataclass
class ProbePair:
    """One rendered pair: images (2, X, Y, Z, 1) and the true hypothalamus volumes (2,) mm^3."""

    map_name: str
    seed: int
    kind: int
    images: np.ndarray
    true_mm3: np.ndarray


def probe_config(base: dict | None = None, supersample: int | None = None, **overrides):
    """The probe's generator config: ``base`` (e.g. the stage-1 generator of ``model.json``)
    with the random hypothalamus changes off, crop jitter 4 mm (the whole hypothalamus in the
    crop), and ``overrides``."""
    from ..generator import GeneratorConfig

    d = dict(base or {})
    d.update(morph_prob=0.0, resize_prob=0.0, neighbour_prob=0.0, crop_jitter_mm=4.0)
    if supersample is not None:
        d["supersample"] = supersample
    d.update(overrides)
    return GeneratorConfig.from_dict(d)


def render_pairs(cfg, label_paths: Sequence[str | Path], seeds: Sequence[int],
                 shrink: float = 0.2, kinds: Sequence[int] = (0, 1)) -> list[ProbePair]:
    """Render one pair (original, shrunk by ``shrink``) per map, seed and kind."""
    import keras

    from .. import labels as label_tables
    from ..generator import LabelMapSource
    from ..generator.paired import PairRenderer

    pairs = []
    fine_voxel_mm3 = cfg.fine_voxel_mm ** 3
    for path in label_paths:
        source = LabelMapSource([path], cfg, center_labels=label_tables.SUBUNIT_IDS)
        labels, center = source.get(0)
        for seed in seeds:
            for kind in kinds:
                renderer = PairRenderer(cfg, seed=int(seed))  # same seed: same sample per kind
                out = renderer.render(labels, center, [(0.0, 0.0), (-shrink, -shrink)],
                                      kind=kind, respect_tie=False, tie_value=0.0)
                fine = np.asarray(keras.ops.convert_to_numpy(out["fine_labels"]))
                true = np.isin(fine, label_tables.SUBUNIT_IDS).reshape(2, -1).sum(1)
                images = np.asarray(keras.ops.convert_to_numpy(out["image"]), np.float32)
                pairs.append(ProbePair(Path(path).name.split(".")[0], int(seed), int(kind),
                                       images, true * fine_voxel_mm3))
    return pairs


def measure_volumes(stage1, stage2, images: np.ndarray, mode: str = "independent",
                    voxel_mm3: float = 1.0) -> dict[str, np.ndarray]:
    """Volumes (mm^3) the networks give each image of (N, X, Y, Z, 1): stage 1 soft / hard and
    the cascade's subunits soft / hard (summed over the ten subunits)."""
    from ..models.cascade import STAGE1_POSTERIOR, run_cascade

    if stage2 is None:  # stage 1 alone
        import keras

        p1 = np.asarray(keras.ops.convert_to_numpy(stage1(images, training=False)),
                        np.float32)[..., STAGE1_POSTERIOR]
        return {"stage1_soft": p1.sum((1, 2, 3)) * voxel_mm3,
                "stage1_hard": (p1 > 0.5).sum((1, 2, 3)) * voxel_mm3}
    out1, out2 = run_cascade(stage1, stage2, images, mode)
    p1 = out1[..., STAGE1_POSTERIOR]
    sub = out2[..., 1:].sum(-1)
    hard2 = np.argmax(out2, axis=-1) > 0
    axes = (1, 2, 3)
    return {"stage1_soft": p1.sum(axes) * voxel_mm3,
            "stage1_hard": (p1 > 0.5).sum(axes) * voxel_mm3,
            "cascade_soft": sub.sum(axes) * voxel_mm3,
            "cascade_hard": hard2.sum(axes) * voxel_mm3}


def _fit(true: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    if len(true) < 3 or np.std(true) == 0 or np.std(measured) == 0:
        return {"r": float("nan"), "slope": float("nan")}
    r = float(np.corrcoef(true, measured)[0, 1])
    slope = float(np.polyfit(true, measured, 1)[0])
    return {"r": r, "slope": slope}


def summarise(rows: list[dict]) -> dict:
    """Mean (and sd) paired sensitivity per kind and measure; r and slope of measured vs true
    volume over every rendered sample."""
    measures = [k[:-len("_orig")] for k in rows[0] if k.endswith("_orig") and k != "true_orig"]
    summary: dict = {"n_pairs": len(rows)}
    for kind, name in KIND_NAMES.items():
        kind_rows = [r for r in rows if r["kind"] == kind]
        if not kind_rows:
            continue
        for m in measures:
            s = np.array([r[f"{m}_sensitivity"] for r in kind_rows], float)
            summary[f"{name}_{m}_sensitivity"] = float(np.nanmean(s))
            summary[f"{name}_{m}_sensitivity_sd"] = float(np.nanstd(s))
    true = np.array([v for r in rows for v in (r["true_orig"], r["true_shrunk"])], float)
    for m in measures:
        measured = np.array([v for r in rows for v in (r[f"{m}_orig"], r[f"{m}_shrunk"])],
                            float)
        fit = _fit(true, measured)
        summary[f"{m}_r"] = fit["r"]
        summary[f"{m}_slope"] = fit["slope"]
        summary[f"{m}_mean_mm3"] = float(measured.mean())
    summary["true_mean_mm3"] = float(true.mean())
    summary["true_range_mm3"] = [float(true.min()), float(true.max())]
    return summary


def probe(stage1, stage2, pairs: list[ProbePair], mode: str = "independent",
          voxel_mm3: float = 1.0) -> tuple[list[dict], dict]:
    """Measure every pair; returns (rows, summary)."""
    rows = []
    for pair in pairs:
        volumes = measure_volumes(stage1, stage2, pair.images, mode, voxel_mm3)
        true_change = pair.true_mm3[1] / pair.true_mm3[0] - 1.0
        row = {"map": pair.map_name, "seed": pair.seed, "kind": pair.kind,
               "true_orig": float(pair.true_mm3[0]), "true_shrunk": float(pair.true_mm3[1])}
        for name, v in volumes.items():
            row[f"{name}_orig"] = float(v[0])
            row[f"{name}_shrunk"] = float(v[1])
            change = v[1] / v[0] - 1.0 if v[0] > 0 else float("nan")
            row[f"{name}_sensitivity"] = float(change / true_change) if true_change else \
                float("nan")
        rows.append(row)
    return rows, summarise(rows)


def load_stages(path: str | Path, stage2_dir: str | Path = "models"
                ) -> tuple[object, object, str, dict]:
    """(stage 1, stage 2, cascade mode, stage-1 generator config) from a model folder
    (``stage1.keras``, ``stage2.keras``, ``model.json``) or a training checkpoint (a run's
    ``best.keras``/``last.keras``, with its ``config.json`` beside it; a stage-1-only run takes
    stage 2 from ``stage2_dir``)."""
    import keras

    from ..generator.builder import import_layers
    from ..models import layers, losses  # noqa: F401  (registers the saved classes)

    import_layers()
    path = Path(path)
    if path.is_dir():
        settings = json.loads((path / "model.json").read_text())
        s1 = keras.saving.load_model(path / "stage1.keras", compile=False)
        s2 = keras.saving.load_model(path / "stage2.keras", compile=False)
        gen = settings["networks"]["stage1"].get("generator", {})
        return s1, s2, settings.get("cascade_mode", "independent"), gen
    config = json.loads((path.parent / "config.json").read_text())
    model = keras.saving.load_model(path, compile=False)
    if config.get("network") == "stage1":  # stage 1 alone: stage 2 from ``stage2_dir``
        s2 = keras.saving.load_model(Path(stage2_dir) / "stage2.keras", compile=False)
    else:
        s2 = model.get_layer("stage2")
    return (model.get_layer("stage1"), s2, config.get("cascade_mode", "independent"),
            config.get("generator", {}))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mri_hsynex.validate.generator_probe",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True,
                   help="model folder (stage1/2.keras, model.json) or a run's checkpoint .keras")
    p.add_argument("--labels", required=True, help="folder of label maps")
    p.add_argument("--maps", nargs="+", required=True,
                   help="substrings of the label-map file names to probe (e.g. sub-08)")
    p.add_argument("--seeds", type=int, default=6, help="pairs per map and kind (default 6)")
    p.add_argument("--first-seed", type=int, default=0,
                   help="seed of the first pair (default 0; a training run's validation pairs use "
                        "seeds 0..sensitivity_pairs-1, so probe a checkpoint chosen on them from "
                        "higher seeds)")
    p.add_argument("--shrink", type=float, default=0.2, help="relative shrinkage (0.2)")
    p.add_argument("--supersample", type=int, default=None,
                   help="render finer then pool (default: the model's generator config)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON",
                   help="generator config overrides, e.g. rician_std_max=0.03")
    p.add_argument("--mode", default=None, help="cascade mode (default: the model's)")
    p.add_argument("--stage2", default="models",
                   help="model folder whose stage 2 completes a stage-1-only checkpoint")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--o", default=None, help="write rows and summary to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..backend import configure

    configure(args.threads)
    from ..train.trainer import find_label_maps

    paths = [p for p in find_label_maps(args.labels) if any(m in p.name for m in args.maps)]
    if not paths:
        print(f"Error: no label map in {args.labels} matches {args.maps}", file=sys.stderr)
        return 1
    stage1, stage2, mode, gen = load_stages(args.model, args.stage2)
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    cfg = probe_config(gen, args.supersample, **overrides)
    pairs = render_pairs(cfg, paths, range(args.first_seed, args.first_seed + args.seeds),
                         args.shrink)
    rows, summary = probe(stage1, stage2, pairs, args.mode or mode,
                          cfg.output_voxel_mm ** 3)
    summary.update(model=str(args.model), maps=[p.name for p in paths], mode=args.mode or mode,
                   shrink=args.shrink, generator=cfg.to_dict())
    for key, value in summary.items():
        if key != "generator":
            print(f"{key}: {value}")
    if args.o:
        Path(args.o).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
