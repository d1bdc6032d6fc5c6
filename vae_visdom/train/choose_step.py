"""Which step a run takes: the captured CUDA graph, the hand-derived CPU step, or eager autograd."""
from __future__ import annotations

import torch

from vae_visdom.config import TrainConfig
from vae_visdom.models.base import VAE
from vae_visdom.models.deep_mlp import DeepMLPVAE
from vae_visdom.models.mlp import MLPVAE
from vae_visdom.train import deep_mlp_step, graph_step, mlp_cpu_step
from vae_visdom.train.step import StepFn, prepare_optimizer


def choose_step(model: VAE, optimizer: torch.optim.Optimizer, cfg: TrainConfig, device: torch.device,
                batch_size: int, eager: StepFn, kl=None) -> StepFn:
    """A captured CUDA graph (graph_step.py) or, on the CPU, the hand-derived step of the fully
    connected VAEs (mlp_cpu_step.py; deep_mlp_step.py for mlp-iwae) where they apply and `cfg.fast_step`
    allows; else `eager`."""
    if cfg.objective == "iwae":  # the fast steps compute the ELBO's gradient only
        prepare_optimizer(optimizer, capturable=False, fused=True if device.type in ("cpu", "cuda") else None)
        return eager
    if device.type != "cuda" or cfg.fast_step == "eager":
        # a checkpoint of a captured GPU run carries capturable=True, which Adam refuses on the CPU
        prepare_optimizer(optimizer, capturable=False, fused=True if device.type == "cpu" else None)
        if cfg.fast_step == "auto" and mlp_cpu_step.unsupported(model, device, cfg.precision) is None:
            assert isinstance(model, MLPVAE)  # unsupported() checked its exact type
            return mlp_cpu_step.MLPStep(model, optimizer, kl)  # the hand-derived step
        if cfg.fast_step == "auto" and deep_mlp_step.unsupported(model, device, cfg.precision) is None:
            assert isinstance(model, DeepMLPVAE)  # unsupported() checked its exact type
            return deep_mlp_step.DeepMLPStep(model, optimizer, kl)  # the same, for mlp-iwae's deeper stacks
        return eager
    step = graph_step.make_step(model, optimizer, model.likelihood, batch_size, device, fallback=eager,
                                amp=cfg.precision == "bf16", kl=kl)
    if step is None and cfg.fast_step == "graph":
        why = graph_step.capture_unsupported(model, optimizer, device)
        print(f"fast step: no captured graph ({why}); training eagerly")
    return step if step is not None else eager
