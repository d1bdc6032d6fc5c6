"""A hand-derived training step for the fully connected VAEs on the CPU (`--fast-step auto`).

The same math as `backward_and_step` (step.py) for an MLPVAE (models/mlp.py: mlp, mlp-paper, mlp-iwae; any
number of ReLU, sigmoid or tanh layers each side) with a Bernoulli decoder: the forward pass, the negative
ELBO summed over the batch (cross-entropy from logits + analytic KL, its KL term weighted by beta:
kl_weight.py; one z ~ q(z|x) drawn with the same `randn_like` call as VAE.reparameterize), its gradient
written straight into each parameter's `.grad` with `out=` while walking back through the layers, then the
optimizer's own `step()`. Per layer, with d the gradient at its pre-activation: dW = d^T h_in,
db = sum over the batch of d, and the gradient at its input d W, taken through the previous layer's
activation with aten's own backward of it.

What it saves on a 2-core CPU, where the step is otherwise matrix products at ~90% of the machine's peak:
autograd's graph building and bookkeeping, a fresh gradient tensor per parameter per step, and the two
small mu/logvar layers done as one product each way (their weight gradients live side by side in one
buffer, each parameter's `.grad` a view of its half). Measured in docs/performance.md (mlp) and by
benchmarks/mlp_step.py (mlp-iwae, mlp-paper).

Gradients equal autograd's to float rounding (tests/test_cpu_step.py), not bit for bit: sums run
in another order. `--fast-step eager` uses autograd.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vae_visdom.models.mlp import MLPVAE

_aten = torch.ops.aten
Activation = Callable[[torch.Tensor], torch.Tensor]
# each activation, and d(act)/d(pre-activation) from (upstream grad, pre-activation a, output h)
_ACTIVATIONS: dict[str, tuple[Activation, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]]] = {
    "relu": (F.relu, lambda d, a, h: _aten.threshold_backward(d, a, 0)),
    "sigmoid": (torch.sigmoid, lambda d, a, h: _aten.sigmoid_backward(d, h)),
    "tanh": (torch.tanh, lambda d, a, h: _aten.tanh_backward(d, h)),
}


def unsupported(model: torch.nn.Module, device: torch.device, precision: str) -> str | None:
    """Why the hand-derived step does not apply (it needs the CPU, an MLPVAE, a Bernoulli decoder, fp32),
    or None when it does."""
    if device.type != "cpu":
        return f"device {device.type} (the CPU only)"
    if type(model) is not MLPVAE:
        return f"model {type(model).__name__} (the fully connected VAEs only)"
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
        self.act, self.act_grad = _ACTIVATIONS[model.activation]
        self.enc = _linears(model.encoder)  # each followed by the activation
        dec_stack, out = model.decoder  # MLPVAE builds it as (activation stack, output Linear)
        assert isinstance(dec_stack, nn.Sequential) and isinstance(out, nn.Linear)
        self.dec = _linears(dec_stack)
        self.out = out  # logits, no activation
        self.params = list(model.parameters())
        self.grads: list[torch.Tensor] = []  # the .grad tensors this step writes, in self.params' order

    def _own_grads(self) -> None:
        """Give every parameter a .grad this step owns, unless they still have them (anything else,
        e.g. zero_grad(set_to_none=True) or an eager step, may have replaced them)."""
        if self.grads and all(p.grad is g for p, g in zip(self.params, self.grads)):
            return
        m = self.model
        latent, hidden = m.fc_mu.weight.shape
        w2 = torch.zeros(2 * latent, hidden, dtype=m.fc_mu.weight.dtype)  # [mu; logvar] weight grads
        b2 = torch.zeros(2 * latent, dtype=m.fc_mu.bias.dtype)
        m.fc_mu.weight.grad, m.fc_logvar.weight.grad = w2[:latent], w2[latent:]
        m.fc_mu.bias.grad, m.fc_logvar.bias.grad = b2[:latent], b2[latent:]
        for lin in (*self.enc, *self.dec, self.out):
            lin.weight.grad, lin.bias.grad = torch.zeros_like(lin.weight), torch.zeros_like(lin.bias)
        self.w2_grad, self.b2_grad = w2, b2
        self.grads = []
        for p in self.params:
            assert p.grad is not None  # every parameter was given one just above
            self.grads.append(p.grad)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self._own_grads()
        m, act = self.model, self.act
        latent = m.latent_dim
        x = x.flatten(1)  # (B, P)
        w2 = torch.cat([m.fc_mu.weight, m.fc_logvar.weight])  # (2L, H): mu and logvar in one product
        b2 = torch.cat([m.fc_mu.bias, m.fc_logvar.bias])
        # forward (MLPVAE.forward, VAE.reparameterize); each layer's input, pre-activation and output kept
        enc_in, enc_pre, h = [], [], x
        for lin in self.enc:
            enc_in.append(h)
            enc_pre.append(torch.addmm(lin.bias, h, lin.weight.t()))
            h = act(enc_pre[-1])  # (B, H)
        enc_out = enc_in[1:] + [h]
        mulv = torch.addmm(b2, h, w2.t())  # (B, 2L)
        mu, logvar = mulv[:, :latent], mulv[:, latent:]
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        z = mu + std * eps
        dec_in, dec_pre, g = [], [], z
        for lin in self.dec:
            dec_in.append(g)
            dec_pre.append(torch.addmm(lin.bias, g, lin.weight.t()))
            g = act(dec_pre[-1])
        dec_out = dec_in[1:] + [g]
        logits = torch.addmm(self.out.bias, g, self.out.weight.t())  # (B, P)
        # the negative ELBO (objectives.elbo_terms), summed over the batch
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        var = logvar.exp()
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - var)
        # backward: d(loss)/d(logits) of the Bernoulli cross-entropy is sigmoid(logits) - x
        d = torch.sigmoid(logits).sub_(x)
        torch.mm(d.t(), g, out=self.out.weight.grad)
        torch.sum(d, 0, out=self.out.bias.grad)
        d = d @ self.out.weight
        for i in reversed(range(len(self.dec))):
            d = self._layer_back(d, self.dec[i], dec_pre[i], dec_out[i], dec_in[i], need_input_grad=True)
        dz = d  # (B, L)
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
        torch.mm(d2.t(), h, out=self.w2_grad)
        torch.sum(d2, 0, out=self.b2_grad)
        d = d2 @ w2
        for i in reversed(range(len(self.enc))):
            d = self._layer_back(d, self.enc[i], enc_pre[i], enc_out[i], enc_in[i], need_input_grad=i > 0)
        self.optimizer.step()
        return torch.stack([recon + kl, recon, kl])

    def _layer_back(self, d: torch.Tensor, lin: nn.Linear, pre: torch.Tensor, out: torch.Tensor,
                    h_in: torch.Tensor, need_input_grad: bool) -> torch.Tensor:
        """d, the gradient at one layer's output, through its activation to its pre-activation: writes the
        layer's weight and bias gradients, returns the gradient at its input (when `need_input_grad`)."""
        d = self.act_grad(d, pre, out)
        torch.mm(d.t(), h_in, out=lin.weight.grad)
        torch.sum(d, 0, out=lin.bias.grad)
        return d @ lin.weight if need_input_grad else d


def _linears(stack: nn.Module) -> list[nn.Linear]:
    return [m for m in stack.children() if isinstance(m, nn.Linear)]
