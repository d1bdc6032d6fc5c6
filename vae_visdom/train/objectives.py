"""The negative ELBO, its two terms, per example, in nats.

Kingma & Welling (2014), "Auto-Encoding Variational Bayes", eq. (10):
    -ELBO(x) = -E_q(z|x)[log p(x|z)] + KL(q(z|x) || p(z)),
with the KL in closed form for a Gaussian q and p(z) = N(0, I) (Appendix B).
The reconstruction term is estimated with one sample z ~ q(z|x), as in the paper
and in pytorch/examples vae/main.py.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per example, (B, D) -> (B,).

    Appendix B: -KL = 1/2 * sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2).
    """
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)


def recon_nll(logits: torch.Tensor, x: torch.Tensor, likelihood: str = "bernoulli",
              log_sigma: torch.Tensor | None = None) -> torch.Tensor:
    """-log p(x|z) per example, summed over pixels: (B, C, H, W) -> (B,).

    bernoulli: the seed's binary cross-entropy, computed from logits (stable; the
      seed applies sigmoid first and clamps inside BCE). Targets may be grey levels in [0, 1].
    gaussian: N(x; sigmoid(logits), sigma^2) with one learned sigma for all pixels.
    """
    if likelihood == "bernoulli":
        nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    elif likelihood == "gaussian":
        if log_sigma is None:
            raise ValueError("a gaussian likelihood needs log_sigma")
        log_sigma = log_sigma.clamp(min=-6.0)  # sigma >= 0.0025: keeps the density bounded
        mean = torch.sigmoid(logits)
        nll = 0.5 * ((x - mean) * torch.exp(-log_sigma)).pow(2) + log_sigma + _HALF_LOG_2PI
    else:
        raise ValueError(f"unknown likelihood {likelihood!r}")
    return nll.flatten(1).sum(dim=1)


def elbo_terms(logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
               likelihood: str = "bernoulli", log_sigma: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction nll (B,), kl (B,)); the negative ELBO is their sum."""
    return recon_nll(logits, x, likelihood, log_sigma), gaussian_kl(mu, logvar)


def seed_loss_function(recon_x: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
                       ) -> torch.Tensor:
    """pytorch/examples vae/main.py `loss_function`, verbatim in substance: a summed loss for the batch.

    Kept as the reference our loss is tested against and the seed's loop in the benchmark uses.
    """
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld
