"""The fully connected VAEs' hand-derived CPU step (train/mlp_cpu_step.py) against autograd's, in one run.

Each round times one epoch's worth of steps (STEPS at batch BATCH, binarized random images: the time of a
step does not depend on the pixels) with each step, alternating, so that a load change hits both. Prints
each round and the median ratio, autograd / hand-derived (above 1: the hand-derived step is faster).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mlp_step.py [--model mlp-iwae] [--rounds 5] [--steps 600]
        [--batch 100]

--model takes mlp (784-400-20 ReLU), mlp-paper (784-500-20 sigmoid) or mlp-iwae (784-200-200-50 tanh, the
default), each with its defaults' widths.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import time

import torch

from vae_visdom.models import MODEL_SPECS, build_model
from vae_visdom.train.mlp_cpu_step import MLPStep
from vae_visdom.train.step import backward_and_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("mlp", "mlp-paper", "mlp-iwae"), default="mlp-iwae")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=100)
    args = p.parse_args()
    torch.manual_seed(0)
    spec = MODEL_SPECS[args.model].defaults
    a = build_model(args.model, (1, 28, 28), spec["latent_dim"], spec["hidden_dim"], "bernoulli")
    b = copy.deepcopy(a)
    oa = torch.optim.Adam(a.parameters(), lr=1e-4, eps=1e-4, fused=True)
    ob = torch.optim.Adam(b.parameters(), lr=1e-4, eps=1e-4, fused=True)
    hand = MLPStep(b, ob)
    x = torch.bernoulli(torch.rand(args.batch, 1, 28, 28))

    def autograd() -> None:
        oa.zero_grad(set_to_none=True)
        backward_and_step(a, oa, x, contextlib.nullcontext)

    def timed(step) -> float:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        return time.perf_counter() - t0

    timed(autograd), timed(lambda: hand(x))  # warm-up
    ratios = []
    print(f"model {args.model}, {torch.get_num_threads()} thread(s), {args.steps} steps of batch {args.batch} a round")
    for r in range(args.rounds):
        ta, th = timed(autograd), timed(lambda: hand(x))
        ratios.append(ta / th)
        print(f"round {r + 1}: autograd {ta:.2f} s, hand-derived {th:.2f} s, ratio {ta / th:.3f}")
    print(f"median ratio autograd / hand-derived: {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
