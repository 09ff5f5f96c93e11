"""Generator throughput: samples/s from a 256^3 label map to the training crop, per backend, and
its share of a training step of a small 3-D U-Net.

Each measurement runs in its own subprocess (one Keras backend per process). A sample is what
the trainer does per step: draw a map from the ``LabelMapSource``, run the generator, bring the
outputs back as NumPy arrays. Writes ``bench_out/generator.json`` and prints a markdown table.

    KERAS_BACKEND=torch .venv/bin/python benchmarks/bench_generator.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_MAP = REPO.parent / "shared" / "data" / "synthseg_label_maps" / "training_seg_01.nii.gz"
THREADS = int(os.environ.get("HSYNEX_BENCH_THREADS", "2"))  # of the train step, and default

CONFIGS = {
    "stage (64^3 @ 1 mm, subunits + distance)": {
        "output_shape": [64, 64, 64], "output_voxel_mm": 1.0, "target": "stage2",
        "distance_maps": True, "distance_max_mm": 8.0},
    "localiser (64^3 @ 3 mm)": {
        "output_shape": [64, 64, 64], "output_voxel_mm": 3.0, "target": "localiser",
        "distance_maps": False, "crop_jitter_mm": 30.0},
}


def _label_map_file(tmp: Path) -> Path:
    """The real 256^3 SynthSeg map when ../shared is there, else a synthetic 256^3 one."""
    if REAL_MAP.exists():
        return REAL_MAP
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    seeds = rng.uniform(0, 256, (300, 3))
    ids = rng.choice([2, 3, 4, 10, 11, 12, 17, 28, 41, 42, 43, 49, 60, 14, 16, 24], 300)
    coarse = np.stack(np.meshgrid(*[np.arange(4, 256, 8.0)] * 3, indexing="ij"), -1)
    nearest = ((coarse[..., None, :] - seeds) ** 2).sum(-1).argmin(-1)
    labels = np.repeat(np.repeat(np.repeat(ids[nearest], 8, 0), 8, 1), 8, 2).astype(np.int32)
    path = tmp / "synthetic_256.nii.gz"
    nib.save(nib.Nifti1Image(labels, np.eye(4)), path)
    return path


def measure_generator(config: dict, label_path: str, seconds: float, threads: int) -> dict:
    """Samples/s of one generator config (run inside the backend's own process)."""
    from mri_hsynex.backend import configure

    backend = configure(threads)
    import keras
    import numpy as np

    from mri_hsynex.generator import GeneratorConfig, LabelMapSource, build_generator

    cfg = GeneratorConfig.from_dict(config)
    centre = (28, 60, 14) if cfg.target == "localiser" else tuple(range(801, 811))
    source = LabelMapSource([label_path], cfg, center_labels=centre, rng_seed=0)
    generator = build_generator(cfg, seed=0)

    def one():
        labels, center = source.sample()
        out = generator({"labels": labels, "center": center}, training=True)
        return {k: np.asarray(keras.ops.convert_to_numpy(v)) for k, v in out.items()}

    for _ in range(3):  # warm-up
        one()
    times, cpu = [], []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 5:
        t0, c0 = time.perf_counter(), time.process_time()
        one()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"backend": backend, "threads": threads, "samples": len(times),
            "median_s": float(np.median(times)), "samples_per_s": float(1 / np.median(times)),
            "cpu_s": float(np.median(cpu)), "map_shape": list(source.maps[0].shape)}


def measure_train_step(steps: int) -> dict:
    """Seconds per optimiser step of a 4-level, 16-filter 3-D U-Net on 64^3 (torch)."""
    from mri_hsynex.backend import configure

    backend = configure(THREADS)
    import keras
    import numpy as np

    try:
        from mri_hsynex.models.unet import UNetConfig, build_unet

        model = build_unet(UNetConfig(levels=4, features=16, outputs=11))
        builder = "mri_hsynex.models.unet (4 levels, 16 filters, batch norm, elu)"
    except ImportError:  # pragma: no cover - the project's U-Net is missing
        inputs = keras.Input((None, None, None, 1))
        x, skips = inputs, []
        for level in range(4):
            x = keras.layers.Conv3D(16 * 2**level, 3, padding="same", activation="elu")(x)
            x = keras.layers.Conv3D(16 * 2**level, 3, padding="same", activation="elu")(x)
            if level < 3:
                skips.append(x)
                x = keras.layers.MaxPooling3D(2)(x)
        for level in (2, 1, 0):
            x = keras.layers.UpSampling3D(2)(x)
            x = keras.layers.Concatenate()([x, skips[level]])
            x = keras.layers.Conv3D(16 * 2**level, 3, padding="same", activation="elu")(x)
        x = keras.layers.Conv3D(11, 1, activation="softmax")(x)
        model = keras.Model(inputs, x)
        builder = "plain keras 3-D U-Net (4 levels, 16 filters)"
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(1, 64, 64, 64, 1)).astype("float32")
    y = np.eye(11, dtype="float32")[rng.integers(0, 11, (1, 64, 64, 64))]
    for _ in range(2):
        model.train_on_batch(x, y)
    times, cpu = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"backend": backend, "steps": steps, "median_s": float(np.median(times)),
            "cpu_s": float(np.median(cpu)),
            "params": int(model.count_params()), "model": builder}


def _child(kind: str, backend: str, payload: dict) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    code = (f"import json, sys; sys.path.insert(0, {str(REPO)!r}); "
            f"sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_generator as b; "
            f"print('RESULT', json.dumps(b.{kind}(**json.loads(sys.argv[1]))))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(payload)], env=env,
                          capture_output=True, text=True, cwd=REPO)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{kind} on {backend} failed:\n{proc.stderr[-3000:]}")


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover
        return float("nan")


def main() -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter timings")
    parser.add_argument("--runs", default=f"tensorflow:{THREADS},torch:{THREADS},torch:1",
                        help="backend:threads,... (default: %(default)s)")
    args = parser.parse_args()
    seconds = 5.0 if args.quick else 20.0
    results = {"threads": THREADS, "cpu_count": os.cpu_count(), "generator": [],
               "load_average_before": load_average()}
    with tempfile.TemporaryDirectory() as tmp:
        label_path = _label_map_file(Path(tmp))
        results["label_map"] = label_path.name
        for name, config in CONFIGS.items():
            for run in args.runs.split(","):
                backend, threads = run.split(":")
                r = _child("measure_generator", backend,
                           {"config": config, "label_path": str(label_path),
                            "seconds": seconds, "threads": int(threads)})
                results["generator"].append({"config": name, **r})
    results["train_step"] = _child("measure_train_step", "torch",
                                   {"steps": 3 if args.quick else 6})
    results["load_average_after"] = load_average()
    step = results["train_step"]["median_s"]
    out = REPO / "bench_out"
    out.mkdir(exist_ok=True)
    (out / "generator.json").write_text(json.dumps(results, indent=1) + "\n")

    print(f"Label map {results['label_map']} ({results['generator'][0]['map_shape']}), "
          f"{results['cpu_count']} cores shared with other jobs (load average "
          f"{results['load_average_before']:.1f} before, {results['load_average_after']:.1f} "
          "after).\n")
    print("| config | backend | threads | samples/s | s/sample (wall) | CPU s/sample | "
          "share of a torch train step |")
    print("|---|---|---|---|---|---|---|")
    for r in results["generator"]:
        share = r["median_s"] / (r["median_s"] + step)
        print(f"| {r['config']} | {r['backend']} | {r['threads']} | {r['samples_per_s']:.1f} | "
              f"{r['median_s']:.3f} | {r['cpu_s']:.3f} | {100 * share:.0f} % |")
    t = results["train_step"]
    print(f"\nTrain step ({t['model']}, {t['params']:,} parameters, 64^3, batch 1, Adam, "
          f"{t['backend']}, {THREADS} threads): {step:.2f} s wall, {t['cpu_s']:.2f} CPU s "
          f"(median of {t['steps']}). Share = generator time / (generator time + train step), wall "
          "times. CPU s = process time (all threads), less sensitive to other jobs.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
