"""Model registry: name -> builder and the defaults that suit it.

Every model is a `VAE` (see base.py): it takes images (B, C, H, W) in [0, 1],
`encode` gives (mu, logvar), `decode` gives logits shaped like the images.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from vae_visdom.models.base import VAE
from vae_visdom.models.mlp import MLPVAE


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[..., VAE]  # build(image_shape, latent_dim, hidden_dim, likelihood) -> VAE
    defaults: dict  # optimizer, lr, batch_size, latent_dim, hidden_dim, likelihood
    per_dataset: dict = field(default_factory=dict)  # dataset -> overrides of defaults
    help: str = ""

    def defaults_for(self, dataset: str) -> dict:
        return {**self.defaults, **self.per_dataset.get(dataset, {})}


def _mlp(image_shape, latent_dim, hidden_dim, likelihood):
    return MLPVAE(image_shape, latent_dim=latent_dim, hidden_dim=hidden_dim, activation="relu",
                  likelihood=likelihood)


def _mlp_paper(image_shape, latent_dim, hidden_dim, likelihood):
    return MLPVAE(image_shape, latent_dim=latent_dim, hidden_dim=hidden_dim, activation="sigmoid",
                  likelihood=likelihood)


MODELS: dict[str, ModelSpec] = {
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


def register(name: str, spec: ModelSpec) -> None:
    MODELS[name] = spec


def build_model(name: str, image_shape: tuple[int, int, int], latent_dim: int, hidden_dim: int,
                likelihood: str) -> VAE:
    return MODELS[name].build(tuple(image_shape), latent_dim, hidden_dim, likelihood)


# the conv models live in their own module, which registers them (conv, conv64)
from vae_visdom.models import conv as _conv  # noqa: E402,F401
