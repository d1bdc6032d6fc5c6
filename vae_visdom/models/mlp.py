"""The fully connected VAE of pytorch/examples vae/main.py (and the paper's sigmoid variant)."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vae_visdom.models.base import VAE, ModelSpec

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}


class MLPVAE(VAE):
    """x (B, C, H, W) -> 784 -> hidden -> (mu, logvar) (B, latent) -> hidden -> logits (B, C, H, W)."""

    def __init__(self, image_shape=(1, 28, 28), latent_dim: int = 20, hidden_dim: int = 400,
                 activation: str = "relu", likelihood: str = "bernoulli"):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.act = _ACTIVATIONS[activation]
        n_pixels = math.prod(self.image_shape)
        self.fc1 = nn.Linear(n_pixels, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, latent_dim)  # mu
        self.fc22 = nn.Linear(hidden_dim, latent_dim)  # logvar
        self.fc3 = nn.Linear(latent_dim, hidden_dim)
        self.fc4 = nn.Linear(hidden_dim, n_pixels)
        if likelihood == "gaussian":
            self.log_sigma = nn.Parameter(torch.zeros(()))

    def encode(self, x):
        h1 = self.act(self.fc1(x.flatten(1)))  # (B, hidden)
        return self.fc21(h1), self.fc22(h1)  # (B, latent) each

    def decode(self, z):
        h3 = self.act(self.fc3(z))  # (B, hidden)
        return self.fc4(h3).view(-1, *self.image_shape)  # logits (B, C, H, W)


def _mlp(image_shape, latent_dim, hidden_dim, likelihood):
    return MLPVAE(image_shape, latent_dim=latent_dim, hidden_dim=hidden_dim, activation="relu",
                  likelihood=likelihood)


def _mlp_paper(image_shape, latent_dim, hidden_dim, likelihood):
    return MLPVAE(image_shape, latent_dim=latent_dim, hidden_dim=hidden_dim, activation="sigmoid",
                  likelihood=likelihood)


MLP_MODELS: dict[str, ModelSpec] = {
    "mlp": ModelSpec(
        _mlp,
        dict(optimizer="adam", lr=1e-3, batch_size=128, latent_dim=20, hidden_dim=400, likelihood="bernoulli"),
        help="the PyTorch example's VAE: 784-400-20, ReLU, Adam 1e-3",
    ),
    "mlp-paper": ModelSpec(
        _mlp_paper,
        # Kingma & Welling (2014), section 5: 500 hidden units for MNIST, minibatch M=100,
        # Adagrad with a global stepsize from {0.01, 0.02, 0.1}.
        dict(optimizer="adagrad", lr=0.02, batch_size=100, latent_dim=20, hidden_dim=500, likelihood="bernoulli"),
        help="Kingma & Welling's MNIST setup: sigmoid hidden units, 500 hidden, Adagrad",
    ),
}
