"""Model registry: name -> builder and the defaults that suit it.

Every model is a `VAE` (see base.py): it takes images (B, C, H, W) in [0, 1],
`encode` gives (mu, logvar), `decode` gives logits shaped like the images.
"""
from __future__ import annotations

from vae_visdom.config import TrainConfig
from vae_visdom.models.base import VAE, ModelSpec
from vae_visdom.models.conv import CONV_MODELS, ConvVAE
from vae_visdom.models.deep_mlp import DEEP_MLP_MODELS, DeepMLPVAE
from vae_visdom.models.mlp import MLP_MODELS, MLPVAE

__all__ = ["MODELS", "ModelSpec", "VAE", "MLPVAE", "DeepMLPVAE", "ConvVAE", "build_model", "with_model_defaults"]


MODELS: dict[str, ModelSpec] = {**MLP_MODELS, **DEEP_MLP_MODELS, **CONV_MODELS}  # built here, in plain sight


def with_model_defaults(cfg: TrainConfig) -> TrainConfig:
    """Fill the config's fields left None from the model's and the dataset's defaults."""
    return cfg.with_defaults(MODELS[cfg.model].defaults_for(cfg.dataset))


def build_model(name: str, image_shape: tuple[int, int, int], latent_dim: int, hidden_dim: int,
                likelihood: str) -> VAE:
    return MODELS[name].build(tuple(image_shape), latent_dim, hidden_dim, likelihood)
