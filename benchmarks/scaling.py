"""Data-parallel scaling on this machine: 1 rank against 2 (torchrun, gloo on the CPU; nccl on GPUs).

For each world size it runs one epoch of the real TrainingSession (visdom off, views off) on the first
--examples MNIST training images, global batch --batch-size, and prints per rank count: the time per
optimizer step, the share of it spent in communication (the gradient all-reduce and the command
broadcast, timed around the collectives: waiting for a slower rank counts as communication), the epoch
time and the projected full-MNIST epoch, then the ratios 2 ranks / 1 rank measured in this one run.

    python benchmarks/scaling.py                      # CPU: 1 and 2 ranks
    python benchmarks/scaling.py --device cuda --ranks 1 2 4 8
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

import torch  # noqa: E402

from vae_visdom.config import TrainConfig  # noqa: E402
from vae_visdom.data import ImageData, load_dataset  # noqa: E402
from vae_visdom.session import TrainingSession  # noqa: E402
from vae_visdom.train import distributed  # noqa: E402

COMM = {"seconds": 0.0}


def timed(fn):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            COMM["seconds"] += time.perf_counter() - t0
    return wrapper


def worker(args) -> None:
    """One rank (or the one process): an epoch, then rank 0 prints one JSON line."""
    distributed.sum_gradients = timed(distributed.sum_gradients)
    distributed.Commands.sync = timed(distributed.Commands.sync)
    full = load_dataset("mnist")
    data = ImageData(full.name, full.train[:args.examples], full.test[:2000], source=full.source)
    out = Path(tempfile.mkdtemp(prefix="scaling-"))
    cfg = TrainConfig(visdom=False, views=False, epochs=1, batch_size=args.batch_size, device=args.device,
                      out=str(out / "run"), log_interval=100000)
    session = TrainingSession(cfg, data=data, progress=False)
    t0 = time.perf_counter()
    session.run()
    wall = time.perf_counter() - t0
    row = json.loads((out / "run" / "metrics.jsonl").read_text().splitlines()[0]) if session.group.is_face else None
    if row is not None:
        steps = row["step"]
        print(json.dumps(dict(ranks=session.group.world, steps=steps, step_ms=1000 * row["seconds"] / steps,
                              comm_share=COMM["seconds"] / row["seconds"], epoch_s=row["seconds"], wall_s=wall,
                              train_loss=row["train_loss"], test_loss=row["test_loss"])), flush=True)


def launch(ranks: int, args) -> dict:
    me = [str(Path(__file__).resolve()), "--worker", "--examples", str(args.examples), "--batch-size",
          str(args.batch_size), "--device", args.device]
    pre = [sys.executable] if ranks == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                               f"--nproc-per-node={ranks}"]
    threads = args.threads or max(1, (os.cpu_count() or 1) // ranks)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([*pre, *me], capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        sys.exit(f"{ranks} ranks failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads(lines[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--examples", type=int, default=12800, help="training images (default 12800: 100 steps)")
    p.add_argument("--batch-size", type=int, default=128, help="the global batch")
    p.add_argument("--device", default="cpu")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=0, help="torch threads per rank (default: CPUs / ranks)")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    print(f"{torch.__version__}, {os.cpu_count()} CPUs, device {args.device}, {args.examples} images, "
          f"global batch {args.batch_size}, threads per rank {args.threads or 'CPUs / ranks'}")
    rows = [launch(n, args) for n in args.ranks]
    print(f"{'ranks':>5} {'ms/step':>8} {'comm':>6} {'epoch s':>8} {'60k epoch s':>11} {'train loss':>10}")
    for r in rows:
        print(f"{r['ranks']:>5} {r['step_ms']:>8.2f} {r['comm_share']:>6.1%} {r['epoch_s']:>8.2f} "
              f"{r['epoch_s'] * 60000 / args.examples:>11.1f} {r['train_loss']:>10.2f}")
    base = rows[0]
    for r in rows[1:]:
        print(f"{r['ranks']} ranks / {base['ranks']}: time per step x{r['step_ms'] / base['step_ms']:.2f}, "
              f"epoch speedup x{base['epoch_s'] / r['epoch_s']:.2f}")


if __name__ == "__main__":
    main()
