"""Where oneDNN pays in the convolutional VAEs on the CPU, layer by layer.

Forward + backward of every convolution of conv64 (grey, batch 16: ORL; RGB, batch 64) and conv (MNIST,
batch 128) in four ways, NCHW or channels_last, oneDNN on or off; the median of REPS calls, in ms. A first
layer computes no input gradient, as in training. docs/performance.md has a run, and what came of routing the
layers that are faster without oneDNN around it (commit 602bbf0, reverted: the whole step gained nothing).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/conv_layers.py [--reps 20]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

import torch  # noqa: E402

from vae_visdom.models import build_model  # noqa: E402

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args()
    per_layer(args.reps)


if __name__ == "__main__":
    main()
