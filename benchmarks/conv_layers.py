"""Where oneDNN pays in the convolutional VAEs on the CPU: per layer, then the whole step, in one run.

Part 1, per layer: forward + backward of every convolution of conv64 (grey, batch 16: ORL; RGB, batch 64) and
conv (MNIST, batch 128) in four ways, NCHW or channels_last, oneDNN on or off; the median of REPS calls, ms.
Part 2, the step: the channels_last ConvStep (train/conv_cpu_step.py) with the one-channel layers routed
around oneDNN (GreyLayer, what `--fast-step auto` runs) against the same step with every layer on oneDNN,
rounds alternating so that a load change hits both; the median ratio (above 1: routing is faster).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/conv_layers.py [--reps 20] [--rounds 5] [--steps 50]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

import torch  # noqa: E402

from vae_visdom.models import build_model  # noqa: E402
from vae_visdom.train import conv_cpu_step  # noqa: E402
from vae_visdom.train.step import backward_and_step  # noqa: E402

CASES = (("conv64", (1, 64, 64), 16), ("conv64", (3, 64, 64), 64), ("conv", (1, 28, 28), 128))
WAYS = {"nchw+dnn": (torch.contiguous_format, True), "nchw-dnn": (torch.contiguous_format, False),
        "cl+dnn": (torch.channels_last, True), "cl-dnn": (torch.channels_last, False)}


def layer_inputs(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[torch.nn.Module, torch.Tensor]]:
    """(layer, its input) for every convolution of one forward pass."""
    seen: list[tuple[torch.nn.Module, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((m, i[0].detach())))
             for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def layer_ms(layer: torch.nn.Module, inp: torch.Tensor, fmt: torch.memory_format, onednn: bool, reps: int) -> float:
    """Median ms of forward + backward of one layer (the input's gradient too, but for a first layer)."""
    first = inp.shape[1] in (1, 3) and isinstance(layer, torch.nn.Conv2d)
    inp = inp.contiguous(memory_format=fmt).requires_grad_(not first)
    layer = layer.to(memory_format=fmt)
    was = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(onednn)
    try:
        times = []
        for i in range(reps + 3):  # 3 warm-up calls
            t0 = time.perf_counter()
            layer(inp).sum().backward()
            if i >= 3:
                times.append(time.perf_counter() - t0)
    finally:
        torch._C._set_mkldnn_enabled(was)
    return statistics.median(times) * 1e3


def per_layer(reps: int) -> None:
    for name, shape, batch in CASES:
        torch.manual_seed(0)
        model = build_model(name, shape, 32, 256, "gaussian")
        print(f"== {name} {shape}, batch {batch}: forward + backward, ms (median of {reps})")
        totals = dict.fromkeys(WAYS, 0.0)
        for layer, inp in layer_inputs(model, torch.rand(batch, *shape)):
            ms = {way: layer_ms(layer, inp, fmt, onednn, reps) for way, (fmt, onednn) in WAYS.items()}
            for way in WAYS:
                totals[way] += ms[way]
            print(f"{type(layer).__name__:15s} {str(tuple(inp.shape)):17s} -> {layer.out_channels:2d}  "
                  + "  ".join(f"{w} {v:7.2f}" for w, v in ms.items()), flush=True)
        print("sum" + " " * 34 + "  ".join(f"{w} {v:7.2f}" for w, v in totals.items()))


def step_ab(rounds: int, steps: int) -> None:
    for name, shape, batch in CASES:
        if shape[0] != 1:
            continue  # RGB models route nothing
        torch.manual_seed(0)
        plain = build_model(name, shape, 32, 256, "gaussian")
        routed = copy.deepcopy(plain)
        x = torch.rand(batch, *shape).contiguous(memory_format=torch.channels_last)
        steps_of = {}
        for label, model in (("all on oneDNN", plain), ("one-channel layers routed", routed)):
            opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
            conv_cpu_step.to_channels_last(model, opt)
            if model is routed:
                conv_cpu_step.route_grey_layers(model)

            def step(model=model, opt=opt, x=x) -> None:
                opt.zero_grad(set_to_none=True)
                backward_and_step(model, opt, x, contextlib.nullcontext)
            steps_of[label] = step

        def timed(step) -> float:
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            return time.perf_counter() - t0

        for step in steps_of.values():
            timed(step)  # warm-up
        ratios = []
        print(f"== {name} {shape}, batch {batch}: {steps} steps a round, {torch.get_num_threads()} thread(s)")
        for r in range(rounds):
            a, b = (timed(s) for s in steps_of.values())
            ratios.append(a / b)
            print(f"round {r + 1}: all on oneDNN {a:.2f} s, routed {b:.2f} s, ratio {a / b:.3f}", flush=True)
        print(f"{name} {shape}: median ratio {statistics.median(ratios):.3f} "
              f"(min {min(ratios):.3f}, max {max(ratios):.3f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--no-layers", action="store_true", help="the step comparison only")
    args = p.parse_args()
    if not args.no_layers:
        per_layer(args.reps)
    step_ab(args.rounds, args.steps)


if __name__ == "__main__":
    main()
