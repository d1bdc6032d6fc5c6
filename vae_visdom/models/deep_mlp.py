"""Burda et al.'s MNIST VAE: 784-200-200-50 with tanh hidden layers (`--model mlp-iwae`)."""
from __future__ import annotations

import math

import torch
from torch import nn

from vae_visdom.models.base import VAE


class DeepMLPVAE(VAE):
    """x (B, C, H, W) -> pixels -> tanh layers -> (mu, logvar) (B, latent) -> tanh layers -> logits (B, C, H, W).

    Burda, Grosse & Salakhutdinov (2016), "Importance Weighted Autoencoders", section 5: one stochastic
    layer of 50 units, two deterministic layers of 200 tanh units in q(z|x) and p(x|z) each, a Bernoulli
    decoder. The decoder mirrors the encoder's widths.
    """

    def __init__(self, image_shape=(1, 28, 28), latent_dim: int = 50, hidden_dims: tuple[int, ...] = (200, 200),
                 likelihood: str = "bernoulli"):
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"unknown likelihood {likelihood!r}; allowed: bernoulli, gaussian")
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.hidden_dims = tuple(hidden_dims)
        n_pixels = math.prod(self.image_shape)
        self.encoder = _tanh_stack((n_pixels, *self.hidden_dims))
        self.fc_mu = nn.Linear(self.hidden_dims[-1], latent_dim)
        self.fc_logvar = nn.Linear(self.hidden_dims[-1], latent_dim)
        self.decoder = nn.Sequential(_tanh_stack((latent_dim, *self.hidden_dims[::-1])),
                                     nn.Linear(self.hidden_dims[0], n_pixels))
        if likelihood == "gaussian":
            self.log_sigma = nn.Parameter(torch.zeros(()))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x.flatten(1))  # (B, hidden[-1])
        return self.fc_mu(h), self.fc_logvar(h)  # (B, latent) each

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(-1, *self.image_shape)  # logits (B, C, H, W)


def _tanh_stack(widths: tuple[int, ...]) -> nn.Sequential:
    """Linear + tanh for each consecutive pair of widths."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(n_in, n_out), nn.Tanh()]
    return nn.Sequential(*layers)


def build_mlp_iwae(image_shape, latent_dim, hidden_dim, likelihood):
    return DeepMLPVAE(image_shape, latent_dim=latent_dim, hidden_dims=(hidden_dim, hidden_dim), likelihood=likelihood)
