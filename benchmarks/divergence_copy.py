"""What a panel's divergence hold costs a run: the copy of the whole training state kept at every log point
(Trainer._keep_finite: the weights checked, then `copy_into` the previous copy), against the steps of one log
interval measured in the same run. Synthetic images of MNIST's shape; the default MLP and batch size.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/divergence_copy.py [--interval 10] [--repeats 50]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch


def main() -> None:
    from vae_visdom.config import TrainConfig
    from vae_visdom.data import ImageData
    from vae_visdom.session import TrainingSession

    p = argparse.ArgumentParser()
    p.add_argument("--interval", type=int, default=10)
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args()
    g = torch.Generator().manual_seed(0)
    data = ImageData("synthetic", (torch.rand(6000, 1, 28, 28, generator=g) * 255).to(torch.uint8),
                     (torch.rand(200, 1, 28, 28, generator=g) * 255).to(torch.uint8), source="random")
    with tempfile.TemporaryDirectory() as tmp:
        s = TrainingSession(TrainConfig(visdom=False, out=os.path.join(tmp, "run"), views=False), data=data,
                            progress=False)
        t = s.trainer
        t.controller.steered_by(lambda: True)  # as a panel does
        t._holds = True  # as fit() does
        x = torch.rand(t.batch_size, 1, 28, 28)
        assert t.step_fn is not None
        for _ in range(5):
            t.step_fn(x)
        steps, copies = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for _ in range(args.interval):
                t.step_fn(x)
            t1 = time.perf_counter()
            t._keep_finite()
            steps.append(t1 - t0)
            copies.append(time.perf_counter() - t1)
        s.close()
    interval, copy = statistics.median(steps), statistics.median(copies)
    print(f"{args.interval} steps of batch {t.batch_size}: {interval * 1e3:.1f} ms; the copy: {copy * 1e3:.2f} ms "
          f"= {copy / interval:.3f}x of the interval; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
