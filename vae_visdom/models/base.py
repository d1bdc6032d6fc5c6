"""What every model in the registry is."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn


class VAE(nn.Module):
    """Encoder q(z|x) = N(mu, diag(exp(logvar))), decoder p(x|z) given by logits.

    Subclasses set `image_shape` (C, H, W), `latent_dim`, `likelihood`
    ('bernoulli' or 'gaussian') and implement `encode` and `decode`.
    A Gaussian decoder also owns `log_sigma`, its (learned) pixel noise scale.
    """

    image_shape: tuple[int, int, int]
    latent_dim: int
    likelihood: str = "bernoulli"
    log_sigma: torch.Tensor | None  # an nn.Parameter for a Gaussian decoder, else None (registered in __init__)

    def __init__(self) -> None:
        super().__init__()
        # a Bernoulli decoder has no noise scale; a Gaussian one assigns an nn.Parameter here
        self.register_parameter("log_sigma", None)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> logits (B, C, H, W); the image mean is sigmoid(logits)."""
        raise NotImplementedError

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        # Kingma & Welling (2014), section 2.4: z = mu + sigma * eps, eps ~ N(0, I)
        std = torch.exp(0.5 * logvar)
        return mu + std * torch.randn_like(std)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar

    @torch.no_grad()
    def sample_images(self, z: torch.Tensor) -> torch.Tensor:
        """Decode prior draws to images in [0, 1], (B, C, H, W)."""
        return torch.sigmoid(self.decode(z))


@dataclass(frozen=True)
class ModelSpec:
    """How to build one model, and the training defaults that suit it."""

    build: Callable[..., VAE]  # build(image_shape, latent_dim, hidden_dim, likelihood) -> VAE
    defaults: dict  # optimizer, lr, batch_size, latent_dim, hidden_dim, likelihood
    per_dataset: dict = field(default_factory=dict)  # dataset -> overrides of defaults
    help: str = ""

    def defaults_for(self, dataset: str) -> dict:
        return {**self.defaults, **self.per_dataset.get(dataset, {})}
