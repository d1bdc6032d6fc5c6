"""A hand-derived training step for the fully connected VAE on the CPU (`--fast-step auto`).

The same math as `backward_and_step` (step.py) for an MLPVAE with a Bernoulli decoder: the
forward pass, the negative ELBO summed over the batch (cross-entropy from logits + analytic KL,
its KL term weighted by beta: kl_weight.py; one z ~ q(z|x) drawn with the same `randn_like` call), its gradient
written straight into each parameter's `.grad` with `out=`, then the optimizer's own `step()`. What it saves on a
2-core CPU, where the step is otherwise matrix products at ~90% of the machine's peak: autograd's graph
building and bookkeeping, a fresh gradient tensor per parameter per step, and the two small mu/logvar
layers done as one product each way (their weight gradients live side by side in one buffer, each
parameter's `.grad` a view of its half). Measured on the project's CPU machine, 469 steps (an MNIST
epoch at batch 128) alternating with the autograd step: 1.21-1.25 s against 1.32-1.40 s.

Gradients equal autograd's to float rounding (tests/test_cpu_step.py), not bit for bit: sums run
in another order. `--fast-step eager` uses autograd.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vae_visdom.models.mlp import MLPVAE

_aten = torch.ops.aten
_ACTIVATION_GRADS = {  # d(act)/d(pre-activation) from (upstream grad, pre-activation a, output h)
    F.relu: lambda d, a, h: _aten.threshold_backward(d, a, 0),
    torch.sigmoid: lambda d, a, h: _aten.sigmoid_backward(d, h),
    torch.tanh: lambda d, a, h: _aten.tanh_backward(d, h),
}


def unsupported(model: torch.nn.Module, device: torch.device, precision: str) -> str | None:
    """Why the hand-derived step does not apply, or None when it does."""
    why = outside(model, device, precision, MLPVAE, "the fully connected VAE")
    if why is None and model.act not in _ACTIVATION_GRADS:
        return f"activation {model.act!r}"
    return why


def outside(model: torch.nn.Module, device: torch.device, precision: str, kind: type, what: str) -> str | None:
    """What both hand-derived steps (this one, deep_mlp_step.py) need: the CPU, a model of exactly `kind`,
    a Bernoulli decoder, fp32. Why not, or None."""
    if device.type != "cpu":
        return f"device {device.type} (the CPU only)"
    if type(model) is not kind:
        return f"model {type(model).__name__} ({what} only)"
    if model.likelihood != "bernoulli":
        return f"{model.likelihood} likelihood (Bernoulli only)"
    if precision != "fp32":
        return f"precision {precision} (fp32 only)"
    return None


class MLPStep:
    """step(x) -> (3,) loss, recon, kl summed over the batch, as every step of step.py's contract returns."""

    def __init__(self, model: MLPVAE, optimizer: torch.optim.Optimizer, kl=None):
        self.model, self.optimizer = model, optimizer
        self.kl = kl  # a KLWeight (kl_weight.py); None: the ELBO
        self.act_grad = _ACTIVATION_GRADS[model.act]
        self.params = list(model.parameters())
        self.grads: list[torch.Tensor] = []  # the .grad tensors this step writes, in self.params' order

    def _own_grads(self) -> None:
        """Give every parameter a .grad this step owns, unless they still have them (anything else,
        e.g. zero_grad(set_to_none=True) or an eager step, may have replaced them)."""
        if self.grads and all(p.grad is g for p, g in zip(self.params, self.grads)):
            return
        m = self.model
        latent, hidden = m.fc21.weight.shape
        w2 = torch.zeros(2 * latent, hidden, dtype=m.fc21.weight.dtype)  # [fc21; fc22] weight grads
        b2 = torch.zeros(2 * latent, dtype=m.fc21.bias.dtype)
        m.fc21.weight.grad, m.fc22.weight.grad = w2[:latent], w2[latent:]
        m.fc21.bias.grad, m.fc22.bias.grad = b2[:latent], b2[latent:]
        for p in (m.fc1.weight, m.fc1.bias, m.fc3.weight, m.fc3.bias, m.fc4.weight, m.fc4.bias):
            p.grad = torch.zeros_like(p)
        self.w2_grad, self.b2_grad = w2, b2
        self.grads = []
        for p in self.params:
            assert p.grad is not None  # every parameter was given one just above
            self.grads.append(p.grad)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self._own_grads()
        m, act, act_grad = self.model, self.model.act, self.act_grad
        latent = m.latent_dim
        x = x.flatten(1)  # (B, P)
        w1, w3, w4 = m.fc1.weight, m.fc3.weight, m.fc4.weight
        w2 = torch.cat([m.fc21.weight, m.fc22.weight])  # (2L, H): mu and logvar in one product
        b2 = torch.cat([m.fc21.bias, m.fc22.bias])
        # forward (MLPVAE.forward, VAE.reparameterize)
        a1 = torch.addmm(m.fc1.bias, x, w1.t())
        h1 = act(a1)  # (B, H)
        mulv = torch.addmm(b2, h1, w2.t())  # (B, 2L)
        mu, logvar = mulv[:, :latent], mulv[:, latent:]
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        z = mu + std * eps
        a3 = torch.addmm(m.fc3.bias, z, w3.t())
        h3 = act(a3)
        logits = torch.addmm(m.fc4.bias, h3, w4.t())  # (B, P)
        # the negative ELBO (objectives.elbo_terms), summed over the batch
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        var = logvar.exp()
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - var)
        # backward: d(loss)/d(logits) of the Bernoulli cross-entropy is sigmoid(logits) - x
        d4 = torch.sigmoid(logits).sub_(x)
        torch.mm(d4.t(), h3, out=m.fc4.weight.grad)
        torch.sum(d4, 0, out=m.fc4.bias.grad)
        d3 = act_grad(d4 @ w4, a3, h3)  # (B, H)
        torch.mm(d3.t(), z, out=m.fc3.weight.grad)
        torch.sum(d3, 0, out=m.fc3.bias.grad)
        dz = d3 @ w3  # (B, L)
        # d/dmu = dz + beta * mu (KL); d/dlogvar = dz * eps * std / 2 + beta * (var - 1) / 2
        d2 = torch.empty_like(mulv)
        beta = 1.0 if self.kl is None else self.kl.current
        torch.mul(dz, eps, out=d2[:, latent:])
        if beta == 1.0:  # the ELBO, in exactly the operations it had before beta existed
            torch.add(dz, mu, out=d2[:, :latent])
            d2[:, latent:].mul_(std).add_(var).sub_(1).mul_(0.5)
        else:
            torch.add(dz, mu, alpha=beta, out=d2[:, :latent])
            d2[:, latent:].mul_(std).add_(var, alpha=beta).sub_(beta).mul_(0.5)
        torch.mm(d2.t(), h1, out=self.w2_grad)
        torch.sum(d2, 0, out=self.b2_grad)
        d1 = act_grad(d2 @ w2, a1, h1)
        torch.mm(d1.t(), x, out=m.fc1.weight.grad)
        torch.sum(d1, 0, out=m.fc1.bias.grad)
        self.optimizer.step()
        return torch.stack([recon + kl, recon, kl])
