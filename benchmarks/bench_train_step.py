"""Train-step and generator timings for issue 13's settings (``docs/benchmarks.md``).

For each setting: the cascade of ``models/train_cascade.json`` (stage 1 + stage 2) built with or
without the mixed_bfloat16 policy, ``train_on_batch`` on a fixed synthetic batch (median of
``--steps`` after 2 warm-up steps), at a crop size and a torch thread count; and one generator
sample per config (old sharp 1 mm, supersample 2, supersample 3). Wall and CPU seconds (process
time, all threads): on a shared machine the CPU column is the steadier one.

``KERAS_BACKEND=torch python benchmarks/bench_train_step.py --labels /path/sub-01_labels.nii.gz``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _timed(fn, n: int, warmup: int = 2) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(n):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def bench_step(crop: int, bf16: bool, steps: int, mode: str = "product") -> tuple[float, float]:
    import keras
    import numpy as np

    from mri_hsynex.models.cascade import build_cascade_for_training
    from mri_hsynex.models.losses import VolumeAwareLoss
    from mri_hsynex.models.unet import UNetConfig

    cfg = json.loads((REPO / "models" / "train_cascade.json").read_text())
    previous = keras.config.dtype_policy()
    if bf16:
        keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_cascade_for_training(UNetConfig.from_dict(cfg["stage1"]),
                                           UNetConfig.from_dict(cfg["stage2"]), mode)
    finally:
        keras.config.set_dtype_policy(previous)
    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  loss={"stage1": VolumeAwareLoss(2, 1, 1, 1, 0, 1, 8.0),
                        "stage2": VolumeAwareLoss(11, 1, 1, 1, 0)})
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(1, crop, crop, crop, 1)).astype("float32")
    t2 = rng.dirichlet(np.ones(11), size=(1, crop, crop, crop)).astype("float32")
    t1 = np.concatenate([t2[..., :1], 1 - t2[..., :1],
                         rng.uniform(-8, 8, (1, crop, crop, crop, 1)).astype("float32")], -1)
    return _timed(lambda: model.train_on_batch(x, {"stage1": t1, "stage2": t2}), steps)


def bench_generator(labels: Path, supersample: int, steps: int) -> tuple[float, float]:
    import keras

    from mri_hsynex.generator import GeneratorConfig, LabelMapSource, build_generator

    cfg = json.loads((REPO / "models" / "train_cascade.json").read_text())["generator"]
    if supersample > 1:
        cfg.update(supersample=supersample, morph_prob=0.0, resize_prob=0.8,
                   neighbour_prob=0.5, rician_std_max=0.04, prob_blur_only=0.2)
    gcfg = GeneratorConfig.from_dict(cfg)
    source = LabelMapSource([labels], gcfg)
    gen = build_generator(gcfg, seed=0)

    def one():
        lab, centre = source.sample()
        out = gen({"labels": lab, "center": centre})
        for v in out.values():
            keras.ops.convert_to_numpy(v)

    return _timed(one, steps, warmup=1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--labels", required=True, help="a label map with subunits")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--crops", type=int, nargs="+", default=[48, 32])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--supersample", type=int, nargs="*", default=[1, 2, 3])
    p.add_argument("--o", default=None, help="write the rows as JSON")
    args = p.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import torch

    rows = []
    load = os.getloadavg()[0]
    for threads in args.threads:
        torch.set_num_threads(threads)
        for s in args.supersample:
            wall, cpu = bench_generator(Path(args.labels), s, args.steps)
            rows.append({"what": f"generator supersample {s}", "threads": threads,
                         "wall_s": round(wall, 3), "cpu_s": round(cpu, 3)})
            print(rows[-1], flush=True)
        for crop in args.crops:
            for bf16 in [p == "bf16" for p in args.precisions]:
                wall, cpu = bench_step(crop, bf16, args.steps)
                rows.append({"what": f"train step {crop}^3 {'bf16' if bf16 else 'fp32'}",
                             "threads": threads, "wall_s": round(wall, 3),
                             "cpu_s": round(cpu, 3)})
                print(rows[-1], flush=True)
    result = {"load_before": load, "load_after": os.getloadavg()[0], "rows": rows}
    if args.o:
        Path(args.o).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
