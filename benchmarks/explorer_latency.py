"""How long the page waits for the latent explorer: one click's work, for each model, against a budget of 1 s.

A click decodes the point's 3x3 neighbourhood from the explorer's copy of the model (insight/explorer.py). The
first click after an epoch also encodes the test images whose posterior means give the principal directions,
so both are timed: "click" (a step along a direction) and "after refresh" (the first click after the trainer
took new weights). The baseline in the same run is one forward pass of a training batch of the same model,
to show what a click costs next to the work the trainer does anyway.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/explorer_latency.py [--clicks 30]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from vae_visdom.insight.explorer import LatentExplorer
from vae_visdom.models import build_model
from vae_visdom.models.specs import MODEL_SPECS

MODELS = {"mlp": (1, 28, 28), "mlp-iwae": (1, 28, 28), "conv": (1, 28, 28), "conv64": (3, 64, 64)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clicks", type=int, default=30)
    args = p.parse_args()
    print(f"torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.2f} (1-min average)")
    print(f"{'model':10} {'click ms (median/max)':>22} {'after refresh ms (median/max)':>31} "
          f"{'train batch forward ms':>23}")
    for name, shape in MODELS.items():
        d = MODEL_SPECS[name].defaults
        torch.manual_seed(0)
        model = build_model(name, shape, d["latent_dim"], d["hidden_dim"], d["likelihood"])
        test = (torch.rand(1000, *shape) * 255).to(torch.uint8)
        explorer = LatentExplorer(model, test)
        explorer.run_start()
        clicks, refreshed = [], []
        for i in range(args.clicks):
            if i % 5 == 0:  # the trainer hands over new weights now and then
                explorer.epoch_end(i)
                t0 = time.perf_counter()
                with explorer.lock:
                    explorer.start_at(i)
                    explorer.decode()
                refreshed.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            with explorer.lock:
                explorer.move(i % 2, 1)
                explorer.decode()
            clicks.append(time.perf_counter() - t0)
        batch = (torch.rand(d["batch_size"], *shape) > 0.5).float()
        with torch.no_grad():
            model(batch)
            t0 = time.perf_counter()
            model(batch)
            fwd = time.perf_counter() - t0
        ms = lambda xs: f"{statistics.median(xs) * 1000:8.1f} / {max(xs) * 1000:7.1f}"  # noqa: E731
        print(f"{name:10} {ms(clicks):>22} {ms(refreshed):>31} {fwd * 1000:23.1f}")
    print(f"load {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
