"""The step contract: the device, the optimizer, the forward's precision, and one training step's math.

Every step the trainer can take (eager autograd, the captured CUDA graph in graph_step.py, the
hand-derived CPU step in mlp_cpu_step.py) computes what `backward_and_step` computes: x (B, C, H, W)
in [0, 1] -> (3,) loss, recon, kl summed over the batch, after one optimizer step.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import torch

from vae_visdom.config import UsageError
from vae_visdom.models.base import VAE
from vae_visdom.train.objectives import elbo_terms, gaussian_kl, iwae_bound, log_importance_weights, recon_nll

StepFn = Callable[[torch.Tensor], torch.Tensor]  # x (B, C, H, W) in [0, 1] -> (3,) loss, recon, kl sums


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """adam | adagrad | sgd over `params`, fused where the device has a fused kernel."""
    params = list(params)
    # fused: one kernel for all parameters; the CPU default is a per-tensor loop, ~25% of an MLP
    # step on 2 cores (docs/performance.md). Same update, rounding aside.
    on_cpu = all(p.device.type == "cpu" for p in params)
    fusable = all(p.device.type in ("cpu", "cuda") for p in params)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, fused=fusable or None)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, fused=on_cpu or None)  # fused Adagrad is CPU-only
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    raise ValueError(f"unknown optimizer {name!r}")


def prepare_optimizer(optimizer: torch.optim.Optimizer, capturable: bool,
                      fused: bool | None = None) -> None:
    """Set Adam's `capturable` flag (and `fused`, unless None) and keep its step counters where they
    must then live.

    Call it after `optimizer.load_state_dict` as well: that takes the flags from the checkpoint,
    so a captured GPU run's checkpoint (capturable=True, fused=False) would otherwise carry
    capturable=True to a CPU resume, where Adam refuses it.
    """
    if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        return
    for group in optimizer.param_groups:
        group["capturable"] = bool(capturable)
        if capturable:
            group["fused"] = False  # the documented capture path is the foreach capturable one
        elif fused is not None:
            group["fused"] = fused
        for p in group["params"]:
            state = optimizer.state.get(p)
            if state and torch.is_tensor(state.get("step")):
                on_device = group["capturable"] or group.get("fused")
                state["step"] = state["step"].to(dtype=torch.float32, device=p.device if on_device else "cpu")


def autocast_for(precision: str, device: torch.device, captured: bool = False, say: bool = True) -> Callable:
    """A context factory for the forward pass: bf16 autocast where asked for and the hardware has it
    (`say`: print a line when it has not)."""
    if precision != "bf16":
        return contextlib.nullcontext
    if device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        if say:
            print("precision bf16: this CPU has no native bf16; training in fp32")
        return contextlib.nullcontext
    # captured: autocast's weight-cast cache must not outlive a CUDA graph capture
    return functools.partial(torch.autocast, device.type, dtype=torch.bfloat16,
                             **({"cache_enabled": False} if captured else {}))


def backward_and_step(model: VAE, optimizer: torch.optim.Optimizer, x: torch.Tensor, autocast,
                      beta: float | torch.Tensor | None = None) -> torch.Tensor:
    """Forward, negative ELBO, backward, optimizer step; (3,) loss, recon, kl summed over the batch.

    `beta` (None: 1, the ELBO, today's exact arithmetic) weights the KL term of the objective whose
    gradient is taken (kl_weight.py); the loss returned stays the negative ELBO.

    The one training step's math, shared by the eager step and the captured CUDA graph (graph_step.py).
    Gradients must be cleared (or freshly allocated) by the caller.
    """
    with autocast():
        logits, mu, logvar = model(x)
    # the ELBO in float32 whatever precision the forward ran in (Kingma & Welling 2014, eq. 10)
    recon, kl = elbo_terms(logits.float(), x.float(), mu.float(), logvar.float(), model.likelihood,
                           model.log_sigma)
    recon_sum, kl_sum = recon.sum(), kl.sum()
    loss = recon_sum + kl_sum  # summed over the batch, as the seed does
    (loss if beta is None else recon_sum + beta * kl_sum).backward()
    optimizer.step()
    return torch.stack([loss.detach(), recon_sum.detach(), kl_sum.detach()])  # (3,)


def iwae_terms(model: VAE, x: torch.Tensor, k: int, autocast, beta: float | torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(-L_K (B,), the objective whose gradient is taken (B,), recon nll of the first sample (B,), KL (B,)).

    K reparameterised samples per example (Kingma & Welling 2014, section 2.4), decoded in one batch of
    K * B; the bound in float32 whatever precision the forward ran in (Burda et al. 2016, eq. 8). With
    beta (None: 1) the prior-to-posterior log ratio of each weight is scaled (objectives.log_importance_weights).
    """
    with autocast():
        mu, logvar = model.encode(x)  # (B, D) each
        std = torch.exp(0.5 * logvar)
        z = mu + std * torch.randn((k, *mu.shape), device=mu.device, dtype=mu.dtype)  # (K, B, D)
        logits = model.decode(z.flatten(0, 1))  # (K * B, C, H, W)
    mu, logvar, z = mu.float(), logvar.float(), z.float()
    xs = x.float().expand(k, *x.shape).flatten(0, 1)  # (K * B, C, H, W), the batch once per sample
    recon = recon_nll(logits.float(), xs, model.likelihood, model.log_sigma).view(k, -1)  # (K, B)
    log_w = log_importance_weights(-recon, z, mu, logvar)  # (K, B)
    neg_bound = -iwae_bound(log_w)
    trained = neg_bound if beta is None else -iwae_bound(log_importance_weights(-recon, z, mu, logvar, beta))
    return neg_bound, trained, recon[0], gaussian_kl(mu, logvar)


def iwae_backward_and_step(model: VAE, optimizer: torch.optim.Optimizer, x: torch.Tensor, autocast, k: int,
                           beta: float | torch.Tensor | None = None) -> torch.Tensor:
    """`backward_and_step` for `--objective iwae`: (3,) -L_K, recon, kl summed over the batch.

    recon + kl is the negative ELBO of the same batch (its first sample's reconstruction, the KL in closed
    form), reported beside the bound the step optimises.
    """
    neg_bound, trained, recon, kl = iwae_terms(model, x, k, autocast, beta)
    trained.sum().backward()
    optimizer.step()
    return torch.stack([neg_bound.sum().detach(), recon.sum().detach(), kl.sum().detach()])  # (3,)


def eager_step(model: VAE, optimizer: torch.optim.Optimizer, autocast,
               beta: Callable[[], float | torch.Tensor | None] = lambda: None) -> StepFn:
    """The autograd step: clear the gradients, then `backward_and_step` with the KL weight `beta()`."""
    def step(x: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        return backward_and_step(model, optimizer, x, autocast, beta())
    return step


def resolve_device(name: str):
    """auto | cpu | cuda -> a torch.device; UsageError when CUDA is asked for and absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("device: cuda was asked for but no CUDA device is available; allowed here: auto, cpu")
    return torch.device(name)
