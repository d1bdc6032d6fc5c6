"""The convolutional VAEs' training step on the CPU (`--fast-step auto`): channels_last, compiled when it pays.

The arithmetic is the eager step's (step.py's `backward_and_step`); what changes is how the CPU runs it:

- channels_last: the weights and each batch in NHWC order, which oneDNN's convolutions take without
  reordering (docs/performance.md has the per-layer times). Fused Adam's kernel reads a parameter and
  its moments as flat memory, so the optimizer's moments are given the parameter's memory order too
  (`align_optimizer_state`); with mismatched orders it would update the wrong elements.
- torch.compile (inductor) of the model for the training step, only when the run is long enough to
  pay for the compile (`compile_pays`): a cold compile costs tens of seconds on this machine, a warm one
  (inductor's cache, kept under ~/.cache/vae_visdom/inductor) a few. A short run (ORL's 360 faces)
  never compiles.

The test pass and the images use the model itself, eagerly; only the training step uses the compiled one.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from vae_visdom.models.base import VAE
from vae_visdom.models.conv import ConvVAE
from vae_visdom.train.step import StepFn, backward_and_step

# A compile pays when the seconds it saves over the images left to train are at least twice what it
# costs. Measured on the project's CPU machine (docs/performance.md, "Convolutional VAEs on the CPU"):
# a cold compile of the model costs ~25 s on a quiet machine (105 s under a load of 6), and the compiled
# step was no faster than the channels_last eager one (conv: 5.32 against 5.29 s an epoch of 1,024
# images), so the saving is 0 and auto never compiles there. Set a model's measured saving to let it.
COMPILE_COST_S = 25.0
COMPILE_SAVING_S_PER_IMAGE = {"conv": 0.0, "conv64": 0.0}
INDUCTOR_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vae_visdom" / "inductor"


def unsupported(model: torch.nn.Module, device: torch.device) -> str | None:
    """None when this step applies (a convolutional VAE on the CPU), else why not."""
    if device.type != "cpu":
        return f"device {device.type} (CPU only)"
    if not isinstance(model, ConvVAE):
        return f"model {type(model).__name__} (convolutional VAEs only)"
    return None


def align_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Give every per-parameter state tensor of the parameter's shape the parameter's memory order
    (fused Adam reads both as flat memory)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def to_channels_last(model: VAE, optimizer: torch.optim.Optimizer) -> None:
    """The model's 4-D weights in channels_last order (the same Parameter objects), the optimizer's
    moments with them."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 4:  # convolution weights (out, in, kh, kw)
                p.data = p.data.contiguous(memory_format=torch.channels_last)
                if p.grad is not None:
                    p.grad = p.grad.contiguous(memory_format=torch.channels_last)
    align_optimizer_state(optimizer)


def compile_pays_from(model_name: str) -> int | None:
    """The images a run must still train for a compile to pay (None: never)."""
    saving = COMPILE_SAVING_S_PER_IMAGE.get(model_name, 0.0)
    return None if saving <= 0 else int(2 * COMPILE_COST_S / saving)


def compile_pays(model_name: str, images_left: int | None) -> bool:
    """Whether a run that still trains `images_left` images (None: unknown) is long enough for a compile."""
    threshold = compile_pays_from(model_name)
    return threshold is not None and images_left is not None and images_left >= threshold


def type_name(model: VAE) -> str:
    """conv | conv64: the model's name by its depth (the two builders of models/conv.py)."""
    return "conv64" if len(getattr(model, "encoder", ())) > 6 else "conv"


def describe(compiled: bool, asked: str, images_left: int | None, threshold: int | None) -> str:
    """The run pane's words for the step: what was picked and, under auto, why."""
    if asked == "compile":
        return "channels_last, torch.compile (inductor; --fast-step compile)"
    left = "unknown" if images_left is None else f"{images_left:,}"
    why = (f"{left} images left to train; a compile pays from {threshold:,}" if threshold else
           "a compile measured no faster here")
    return f"channels_last, {'torch.compile (inductor)' if compiled else 'eager autograd'} (auto: {why})"


class ConvStep:
    """`eager`'s step on channels_last batches, or the same math through a compiled copy of the model."""

    def __init__(self, model: VAE, optimizer: torch.optim.Optimizer, eager: StepFn, autocast,
                 beta: Callable[[], float | torch.Tensor | None], compiled: bool, images_left: int | None = None,
                 asked: str = "auto"):
        self.model, self.optimizer, self.eager, self.autocast, self.beta = model, optimizer, eager, autocast, beta
        self.compiled = None
        if compiled:
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(INDUCTOR_CACHE))
            self.compiled = torch.compile(model)
        self.description = describe(compiled, asked, images_left, compile_pays_from(type_name(model)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        if self.compiled is None:
            return self.eager(x)
        self.optimizer.zero_grad(set_to_none=True)
        return backward_and_step(self.compiled, self.optimizer, x, self.autocast, self.beta())  # type: ignore[arg-type]
