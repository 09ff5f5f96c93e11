"""End-to-end time and memory of ``mri_hsynex segment`` on a 256^3 1 mm T1, per Keras backend.

Each run is a fresh ``python -m mri_hsynex segment`` subprocess (imports, model loading and
localisation included; ``--o`` and ``--vol`` written). Reports the median wall time of ``--runs``
runs, the peak RSS of the run (``os.wait4``'s rusage of that child, the same number
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` gives for one child), the stage times from the
sidecar, and the per-scan time of a batch of ``--batch`` scans (networks loaded once).

The scan is ``../shared/data/subjects/sub-01/mri/T1.mgz`` when present, else nilearn's MNI152
template padded to 256^3. The networks are the shipped ``models/`` when trained, else random
weights with the shipped architectures (``models/train_*.json``; same compute), stated in the
output. Writes ``bench_out/segment.json`` and prints a markdown table.

    .venv/bin/python benchmarks/bench_segment.py [--runs 3] [--batch 10] [--backends B1,B2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_T1 = REPO.parent / "shared" / "data" / "subjects" / "sub-01" / "mri" / "T1.mgz"
NETWORKS = ("stage1.keras", "stage2.keras", "localiser.keras")

_RANDOM_MODELS = r"""
import json, sys
from pathlib import Path
import numpy as np
from mri_hsynex.backend import configure
configure()
from mri_hsynex.models.unet import UNetConfig, build_unet
repo, out = Path(sys.argv[1]), Path(sys.argv[2])
cascade = json.loads((repo / "models" / "train_cascade.json").read_text())
localiser = json.loads((repo / "models" / "train_localiser.json").read_text())
settings = {"hsynex_version": "bench-random", "networks": {}}
for name, cfg, voxel in (("stage1", cascade["stage1"], 1.0), ("stage2", cascade["stage2"], 1.0),
                         ("localiser", localiser["localiser"], 3.0)):
    cfg = UNetConfig.from_dict(cfg)
    net = build_unet(cfg)
    if name == "localiser":  # random weights find no brain: answer "left ventral DC" everywhere
        layer = net.get_layer("localiser_softmax")
        kernel, bias = layer.get_weights()
        bias[:] = -10.0
        bias[2] = 10.0
        layer.set_weights([np.zeros_like(kernel), bias])
    net.save(out / f"{name}.keras")
    settings["networks"][name] = {"file": f"{name}.keras", "unet": cfg.to_dict(),
                                  "voxel_mm": voxel}
(out / "model.json").write_text(json.dumps(settings))
"""


def load_average() -> float:
    return os.getloadavg()[0]


def model_folder(tmp: Path) -> tuple[Path, str]:
    """The trained ``models/`` if complete, else random-weight networks written into ``tmp``."""
    shipped = REPO / "models"
    if all((shipped / n).is_file() for n in NETWORKS):
        return shipped, "trained networks in models/"
    out = tmp / "models"
    out.mkdir()
    env = dict(os.environ, KERAS_BACKEND="torch")
    subprocess.run([sys.executable, "-c", _RANDOM_MODELS, str(REPO), str(out)], check=True,
                   env=env, cwd=REPO)
    return out, "random weights with the shipped architectures (models/ not trained yet)"


def scan_file(tmp: Path) -> tuple[Path, str]:
    """A 256^3 1 mm T1: the real sub-01 T1.mgz, else the MNI152 template padded to 256^3."""
    if REAL_T1.exists():
        return REAL_T1, "sub-01 T1.mgz (256^3, 1 mm, LIA)"
    import nibabel as nib
    import numpy as np
    from nilearn import datasets

    template = datasets.load_mni152_template()
    data = np.asarray(template.get_fdata(), np.float32)
    padded = np.zeros((256, 256, 256), np.float32)
    start = [(256 - n) // 2 for n in data.shape]
    padded[start[0]:start[0] + data.shape[0], start[1]:start[1] + data.shape[1],
           start[2]:start[2] + data.shape[2]] = data
    affine = template.affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ np.array(start, float)
    path = tmp / "mni152_256.nii.gz"
    nib.save(nib.Nifti1Image(padded, affine), path)
    return path, "MNI152 2009 template padded to 256^3 (1 mm)"


def timed_run(argv: list[str], backend: str) -> dict:
    """Run ``python -m mri_hsynex segment ARGV``; wall time (s), peak RSS (MB), exit status."""
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONDONTWRITEBYTECODE="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "mri_hsynex", "segment", *argv], env=env,
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"segment failed ({backend}): {stderr.decode()[-2000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": usage.ru_maxrss / 1024.0}


def bench_backend(backend: str, scan: Path, models: Path, tmp: Path, runs: int,
                  batch: int) -> dict:
    out = tmp / backend
    out.mkdir()
    singles = []
    for i in range(runs):
        seg = out / f"seg{i}.mgz"
        r = timed_run(["--i", str(scan), "--o", str(seg), "--vol", str(out / f"v{i}.csv"),
                       "--model", str(models)], backend)
        r["stages_s"] = json.loads(seg.with_suffix(".json").read_text())["runtime_s"]
        singles.append(r)
    walls = [r["wall_s"] for r in singles]
    median_run = sorted(singles, key=lambda r: r["wall_s"])[len(singles) // 2]
    result = {"backend": backend, "runs": singles, "median_s": statistics.median(walls),
              "median_cpu_s": statistics.median(r["cpu_s"] for r in singles),
              "peak_rss_mb": max(r["peak_rss_mb"] for r in singles),
              "median_run_stages_s": median_run["stages_s"]}
    if batch:
        folder = tmp / f"batch_{backend}"
        folder.mkdir()
        for i in range(batch):
            (folder / f"scan{i:02d}{''.join(scan.suffixes)}").symlink_to(scan)
        r = timed_run(["--i", str(folder), "--o", str(tmp / f"batch_out_{backend}"),
                       "--vol", str(tmp / f"batch_{backend}.csv"), "--model", str(models)],
                      backend)
        result["batch"] = {"scans": batch, "wall_s": r["wall_s"],
                           "per_scan_s": r["wall_s"] / batch, "peak_rss_mb": r["peak_rss_mb"]}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="single-scan runs per backend")
    parser.add_argument("--batch", type=int, default=10, help="scans in the batch (0: none)")
    parser.add_argument("--backends", default="torch,tensorflow")
    args = parser.parse_args()
    results: dict = {"cpu_count": os.cpu_count(), "load_average_before": load_average(),
                     "backends": []}
    with tempfile.TemporaryDirectory(prefix="hsynex-bench-") as tmp:
        tmp = Path(tmp)
        models, results["models"] = model_folder(tmp)
        scan, results["scan"] = scan_file(tmp)
        for backend in args.backends.split(","):
            results["backends"].append(bench_backend(backend, scan, models, tmp, args.runs,
                                                     args.batch))
    results["load_average_after"] = load_average()
    results["children_max_rss_mb"] = (
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0)
    out = REPO / "bench_out"
    out.mkdir(exist_ok=True)
    (out / "segment.json").write_text(json.dumps(results, indent=1) + "\n")
    print_table(results, args.runs)
    return 0


def print_table(results: dict, runs: int) -> None:
    print(f"Scan: {results['scan']}; networks: {results['models']}. "
          f"{results['cpu_count']} cores, shared (load average "
          f"{results['load_average_before']:.1f} before, {results['load_average_after']:.1f} "
          "after). Wall and CPU times include Python start-up, imports and model loading; the "
          "stages are timed inside the run. Targets: median <= 10 s, peak RSS <= 3 GB with the "
          "fastest backend.\n")
    print(f"| backend | median of {runs} (s) | runs (s) | CPU time, median (s) | peak RSS (MB) | "
          "batch per scan (s) | stages of the median run (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in results["backends"]:
        runs_s = ", ".join(f"{x['wall_s']:.1f}" for x in r["runs"])
        batch = f"{r['batch']['per_scan_s']:.1f} ({r['batch']['scans']} scans)" \
            if "batch" in r else "-"
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r["median_run_stages_s"].items())
        print(f"| {r['backend']} | {r['median_s']:.1f} | {runs_s} | {r['median_cpu_s']:.1f} | "
              f"{r['peak_rss_mb']:.0f} | {batch} | {stages} |")


if __name__ == "__main__":
    sys.exit(main())
