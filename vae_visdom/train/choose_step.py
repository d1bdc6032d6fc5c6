"""Which step a run takes: the captured CUDA graph, the hand-derived CPU step, or eager autograd."""
from __future__ import annotations

import torch

from vae_visdom.config import TrainConfig
from vae_visdom.models.base import VAE
from vae_visdom.models.mlp import MLPVAE
from vae_visdom.train import conv_cpu_step, graph_step, mlp_cpu_step
from vae_visdom.train.step import StepFn, autocast_for, prepare_optimizer


def choose_step(model: VAE, optimizer: torch.optim.Optimizer, cfg: TrainConfig, device: torch.device,
                batch_size: int, eager: StepFn, kl=None, images_left: int | None = None) -> StepFn:
    """A captured CUDA graph (graph_step.py) or, on the CPU, the hand-derived step of the fully
    connected VAEs (mlp_cpu_step.py) or the convolutional VAEs'
    channels_last step, compiled when the `images_left` to train pay for it (conv_cpu_step.py), where
    they apply and `cfg.fast_step` allows; else `eager`."""
    if cfg.objective == "iwae":  # the fast steps compute the ELBO's gradient only
        prepare_optimizer(optimizer, capturable=False, fused=True if device.type in ("cpu", "cuda") else None)
        conv_cpu_step.align_optimizer_state(optimizer)
        return eager
    if device.type != "cuda" or cfg.fast_step == "eager":
        # a checkpoint of a captured GPU run carries capturable=True, which Adam refuses on the CPU
        prepare_optimizer(optimizer, capturable=False, fused=True if device.type == "cpu" else None)
        conv_cpu_step.align_optimizer_state(optimizer)  # a channels_last run's checkpoint, resumed eagerly
        if cfg.fast_step in ("auto", "compile") and conv_cpu_step.unsupported(model, device) is None:
            conv_cpu_step.to_channels_last(model, optimizer)
            compiled = cfg.fast_step == "compile" or conv_cpu_step.compile_pays(cfg.model, images_left)
            beta = (lambda: None) if kl is None else (lambda: None if kl.current == 1.0 else kl.current)
            return conv_cpu_step.ConvStep(model, optimizer, eager, autocast_for(cfg.precision, device, say=False),
                                          beta, compiled, images_left, cfg.fast_step)
        if cfg.fast_step == "auto" and mlp_cpu_step.unsupported(model, device, cfg.precision) is None:
            assert isinstance(model, MLPVAE)  # unsupported() checked its exact type
            return mlp_cpu_step.MLPStep(model, optimizer, kl)  # the hand-derived step
        return eager
    step = graph_step.make_step(model, optimizer, model.likelihood, batch_size, device, fallback=eager,
                                amp=cfg.precision == "bf16", kl=kl)
    if step is None and cfg.fast_step == "graph":
        why = graph_step.capture_unsupported(model, optimizer, device)
        print(f"fast step: no captured graph ({why}); training eagerly")
    return step if step is not None else eager


def describe_step(step) -> str:
    """What a chosen step is, in words, for the run pane and the benchmarks."""
    what = getattr(step, "description", None)
    if what is not None:
        return str(what)
    if getattr(step, "__func__", None) is not None:
        return "eager autograd"
    return {"MLPStep": "hand-derived MLP step",
            "CapturedStep": "captured CUDA graph"}.get(type(step).__name__, type(step).__name__)
