"""Start-up time of `vae-visdom --help` (and `train --help`, `runs`) against `python -c "import torch"`.

Each command runs as a whole process, alternating with the baseline in one run (the machine's drift hits
both alike); prints per command the median wall and CPU seconds and the ratio to the baseline.

    .venv/bin/python benchmarks/cli_startup.py [--runs 5]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall s, cpu s) of one run of cmd, its output thrown away."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    runs_dir = tempfile.mkdtemp(prefix="cli_startup_")
    py = sys.executable
    baseline = [py, "-c", "import torch"]
    commands = {"--help": [py, "-m", "vae_visdom", "--help"],
                "train --help": [py, "-m", "vae_visdom", "train", "--help"],
                "runs": [py, "-m", "vae_visdom", "runs", "--runs-dir", runs_dir]}
    for cmd in [baseline, *commands.values()]:
        timed(cmd)  # warm-up: file caches
    base: list[tuple[float, float]] = []
    got: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, cmd in commands.items():
            base.append(timed(baseline))
            got[name].append(timed(cmd))
    bw, bc = statistics.median(w for w, _ in base), statistics.median(c for _, c in base)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.runs} runs each, alternating")
    print(f"{'command':<26}{'wall s':>9}{'cpu s':>9}{'wall/torch':>12}{'cpu/torch':>11}")
    label = 'python -c "import torch"'
    print(f"{label:<26}{bw:9.3f}{bc:9.3f}{1:12.3f}{1:11.3f}")
    for name, rows in got.items():
        w, c = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
        print(f"{'vae-visdom ' + name:<26}{w:9.3f}{c:9.3f}{w / bw:12.3f}{c / bc:11.3f}")


if __name__ == "__main__":
    main()
