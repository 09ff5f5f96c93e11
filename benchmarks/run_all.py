"""`make bench`: run every benchmark script in this folder and gather their results.

Each ``bench_*.py`` runs its measurements (in subprocesses per backend), writes
``bench_out/<name>.json`` and prints a markdown table; this script runs them in turn and writes
``docs/benchmarks.md`` from their markdown output, with the machine it ran on. Scripts in
``MANUAL`` need arguments and minutes per setting: they are run by hand, and what the document
holds below the ``KEEP`` marker (their write-ups) is kept as it is.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DOC = REPO / "docs" / "benchmarks.md"
MANUAL = {"bench_train_step.py"}  # needs --labels; see its docstring
KEEP = "<!-- measured by hand: make bench keeps what follows -->"


def machine() -> str:
    cores = os.cpu_count()
    mem = ""
    try:
        kib = int(next(line for line in open("/proc/meminfo") if line.startswith("MemTotal"))
                  .split()[1])
        mem = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{platform.processor() or platform.machine()}, {cores} cores{mem}, Python " \
           f"{platform.python_version()}"


def main() -> int:
    (REPO / "bench_out").mkdir(exist_ok=True)
    sections, failed = [], []
    for script in sorted(HERE.glob("bench_*.py")):
        if script.name in MANUAL:
            continue
        print(f"== {script.name}", flush=True)
        t0 = time.time()
        proc = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True,
                              text=True)
        sys.stdout.write(proc.stdout)
        if proc.returncode:
            sys.stderr.write(proc.stderr[-3000:])
            failed.append(script.name)
            continue
        sections.append(f"## {script.stem}\n\n{proc.stdout.strip()}\n\n"
                        f"(ran in {time.time() - t0:.0f} s)\n")
    doc = ["# Benchmarks", "",
           f"Measured by `make bench` on {time.strftime('%Y-%m-%d')}: {machine()}.", "",
           *sections]
    old = DOC.read_text() if DOC.exists() else ""
    if KEEP in old:
        doc += [old[old.index(KEEP):].rstrip("\n") + "\n"]
    DOC.write_text("\n".join(doc))
    print(f"wrote docs/benchmarks.md; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
