"""The negative ELBO, its two terms, per example, in nats.

Kingma & Welling (2014), "Auto-Encoding Variational Bayes", eq. (10):
    -ELBO(x) = -E_q(z|x)[log p(x|z)] + KL(q(z|x) || p(z)),
with the KL in closed form for a Gaussian q and p(z) = N(0, I) (Appendix B).
The reconstruction term is estimated with one sample z ~ q(z|x), as in the paper
and in pytorch/examples vae/main.py.

The importance-weighted bound (Burda, Grosse & Salakhutdinov 2016, eq. 8), the `--objective iwae` option:
    L_K(x) = E[ log (1/K) sum_k w_k ],   w_k = p(x|z_k) p(z_k) / q(z_k|x),   z_1..z_K ~ q(z|x),
with L_1 the ELBO (estimated from its one sample, KL included) and L_K non-decreasing in K (their Theorem 1).
Its gradient, sum_k w~_k grad log w_k with the normalised weights w~_k (their eq. 14), is what autograd
takes of `iwae_bound` below.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
OBJECTIVE_NAMES = ("elbo", "iwae")  # = config.OBJECTIVES, the rule table (tests/test_iwae_objective.py)


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


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))), summed over the last dimension: (..., D) -> (...)."""
    return -(0.5 * (z - mu).pow(2) * torch.exp(-logvar) + 0.5 * logvar + _HALF_LOG_2PI).sum(dim=-1)


def log_importance_weights(log_px_z: torch.Tensor, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                           beta: float | torch.Tensor = 1.0) -> torch.Tensor:
    """log w_k = log p(x|z_k) + beta * (log p(z_k) - log q(z_k|x)), (K, B).

    log_px_z (K, B); z (K, B, D); mu, logvar (B, D); p(z) = N(0, I). beta = 1 is Burda et al.'s weight;
    another beta weighs the prior-to-posterior ratio as beta weighs the KL in the beta-ELBO (K = 1 gives it).
    """
    log_ratio = log_normal(z, torch.zeros_like(z), torch.zeros_like(z)) - log_normal(z, mu, logvar)  # (K, B)
    return log_px_z + beta * log_ratio


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """L_K per example from the log weights (K, B) -> (B,): log (1/K) sum_k w_k, computed stably."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def seed_loss_function(recon_x: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
                       ) -> torch.Tensor:
    """pytorch/examples vae/main.py `loss_function`, verbatim in substance: a summed loss for the batch.

    Kept as the reference our loss is tested against and the seed's loop in the benchmark uses.
    """
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld
