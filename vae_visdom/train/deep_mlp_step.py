"""The hand-derived CPU step for Burda et al.'s deeper VAE (`--model mlp-iwae`, models/deep_mlp.py).

The same contract and the same math as mlp_cpu_step.py (which covers the one-hidden-layer MLPVAE),
for any number of tanh layers on each side: forward through the encoder's layers, mu and logvar, one
z ~ q(z|x) drawn with the same `randn_like` call as VAE.reparameterize, the decoder's layers and its
output layer; the negative ELBO summed over the batch (Bernoulli cross-entropy from logits + beta times
the analytic KL); then each layer's gradient written into its `.grad` with `out=` while walking back,
and the optimizer's own `step()`. Per layer, with d the gradient at its output's pre-activation:
dW = d^T h_in, db = sum over the batch of d, and d_in = tanh'(d W) = (d W) * (1 - h_in^2).

Gradients equal autograd's to float rounding (tests/test_cpu_step.py); `--fast-step eager` uses autograd.
What it saves per epoch is measured in docs/results.md.
"""
from __future__ import annotations

from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import nn

from vae_visdom.models.deep_mlp import DeepMLPVAE
from vae_visdom.train.mlp_cpu_step import outside

_aten = torch.ops.aten


def unsupported(model: torch.nn.Module, device: torch.device, precision: str) -> str | None:
    """Why this step does not apply, or None when it does."""
    return outside(model, device, precision, DeepMLPVAE, "Burda et al.'s deeper VAE")


class DeepMLPStep:
    """step(x) -> (3,) loss, recon, kl summed over the batch, as every step of step.py's contract returns."""

    def __init__(self, model: DeepMLPVAE, optimizer: torch.optim.Optimizer, kl=None):
        self.model, self.optimizer, self.kl = model, optimizer, kl
        self.enc = [m for m in model.encoder if isinstance(m, nn.Linear)]  # each followed by tanh
        dec_stack, out = model.decoder  # DeepMLPVAE builds it as (tanh stack, output Linear)
        assert isinstance(dec_stack, nn.Sequential) and isinstance(out, nn.Linear)
        self.dec = [m for m in dec_stack if isinstance(m, nn.Linear)]  # each followed by tanh
        self.out = out  # logits, no activation
        self.params = list(model.parameters())
        self.grads: list[torch.Tensor] = []

    def _own_grads(self) -> None:
        """A .grad this step owns for every parameter (an eager step in between may have replaced them)."""
        if not (self.grads and all(p.grad is g for p, g in zip(self.params, self.grads))):
            self.grads = [torch.zeros_like(p) for p in self.params]
            for p, g in zip(self.params, self.grads):
                p.grad = g

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self._own_grads()
        m = self.model
        x = x.flatten(1)  # (B, P)
        hs = [x]  # each encoder layer's input, then the last one's output
        for lin in self.enc:
            hs.append(torch.tanh(torch.addmm(lin.bias, hs[-1], lin.weight.t())))  # (B, H)
        mu = torch.addmm(m.fc_mu.bias, hs[-1], m.fc_mu.weight.t())  # (B, L)
        logvar = torch.addmm(m.fc_logvar.bias, hs[-1], m.fc_logvar.weight.t())
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)  # the draw VAE.reparameterize makes
        gs = [mu + std * eps]  # z, then each decoder layer's output
        for lin in self.dec:
            gs.append(torch.tanh(torch.addmm(lin.bias, gs[-1], lin.weight.t())))
        logits = torch.addmm(self.out.bias, gs[-1], self.out.weight.t())  # (B, P)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        var = logvar.exp()
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - var)
        # backward: d(loss)/d(logits) of the Bernoulli cross-entropy is sigmoid(logits) - x
        d = torch.sigmoid(logits).sub_(x)
        dz = self._back(d, [self.out], gs[-1:], last=False)
        dz = self._back(dz, self.dec[::-1], gs[-2::-1], last=False, tanh_out=gs[:0:-1])
        beta = 1.0 if self.kl is None else self.kl.current
        dmu = torch.add(dz, mu, alpha=beta)  # d/dmu = dz + beta * mu
        dlv = (dz * eps * std).add_(var, alpha=beta).sub_(beta).mul_(0.5)  # dz * eps * std / 2 + beta (var - 1) / 2
        h = hs[-1]
        torch.mm(dmu.t(), h, out=m.fc_mu.weight.grad)
        torch.sum(dmu, 0, out=m.fc_mu.bias.grad)
        torch.mm(dlv.t(), h, out=m.fc_logvar.weight.grad)
        torch.sum(dlv, 0, out=m.fc_logvar.bias.grad)
        dh = torch.addmm(dmu @ m.fc_mu.weight, dlv, m.fc_logvar.weight)  # (B, H)
        self._back(dh, self.enc[::-1], hs[-2::-1], last=True, tanh_out=hs[:0:-1])
        self.optimizer.step()
        return torch.stack([recon + kl, recon, kl])

    @overload
    @staticmethod
    def _back(d: torch.Tensor, layers: list[nn.Linear], inputs: list[torch.Tensor], last: Literal[False],
              tanh_out: list[torch.Tensor] | None = None) -> torch.Tensor: ...

    @overload
    @staticmethod
    def _back(d: torch.Tensor, layers: list[nn.Linear], inputs: list[torch.Tensor], last: Literal[True],
              tanh_out: list[torch.Tensor] | None = None) -> None: ...

    @staticmethod
    def _back(d: torch.Tensor, layers: list[nn.Linear], inputs: list[torch.Tensor], last: bool,
              tanh_out: list[torch.Tensor] | None = None) -> torch.Tensor | None:
        """Walk back through `layers` (outermost first): d is the gradient at the first one's output (after
        its tanh when `tanh_out` gives the outputs); each layer's weight and bias gradients are written; the
        gradient at the last one's input is returned (None with `last`: the pixels need none)."""
        for i, (lin, h_in) in enumerate(zip(layers, inputs)):
            if tanh_out is not None:
                d = _aten.tanh_backward(d, tanh_out[i])  # through the tanh to the pre-activation
            torch.mm(d.t(), h_in, out=lin.weight.grad)
            torch.sum(d, 0, out=lin.bias.grad)
            if not (last and i == len(layers) - 1):
                d = d @ lin.weight
        return None if last else d
