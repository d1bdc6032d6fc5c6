"""Seconds from `vae-visdom sweep` to the first training step of its first run, and to the end of the sweep.

    python benchmarks/sweep_startup.py [--tree DIR]    # DIR: a checkout of another version (e.g. the old pool:
                                                       #   git archive 2f8886d | tar -x -C /tmp/old)
The same grid each time: --lr 1e-3,3e-4 --epochs E --batch-size 1024 on full MNIST, --parallel 2, no visdom.
Prints the time to the first row of any run's steps.jsonl, the sweep's wall time and each run's epoch seconds
(train + test, from metrics.jsonl): the gap between the wall time and the runs' own time is the engine's cost.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", default=str(REPO), help="the checkout whose vae_visdom runs the sweep")
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "vae_visdom", "sweep", "--runs-dir", str(runs), "--name", "b",
                                 "--lr", "1e-3,3e-4", "--epochs", str(args.epochs), "--batch-size", "1024",
                                 "--parallel", "2", "--no-visdom", "--no-views"], cwd=args.tree,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONPATH": args.tree})
        first = None
        while proc.poll() is None:
            if first is None and any(p.stat().st_size for p in _each(runs, "steps.jsonl")):
                first = time.monotonic() - t0
            time.sleep(0.05)
        wall = time.monotonic() - t0
        epochs = []
        for m in sorted(_each(runs, "metrics.jsonl")):
            rows = [json.loads(line) for line in m.read_text().splitlines() if line.strip()]
            epochs.append((m.parent.name, sum(r["seconds"] + r["test_seconds"] for r in rows)))
    print(f"tree {args.tree}: exit {proc.returncode}; first step after {first:.1f} s; sweep {wall:.1f} s; runs' own "
          "train+test seconds: " + ", ".join(f"{n} {s:.1f}" for n, s in epochs))


def _each(runs: Path, name: str) -> list[Path]:
    """The runs' files: RUNS_DIR/<run>/name (the old pool) or RUNS_DIR/<sweep>/<run>/name (a sweep's folder)."""
    return [*runs.glob(f"*/{name}"), *runs.glob(f"*/*/{name}")]


if __name__ == "__main__":
    main()
