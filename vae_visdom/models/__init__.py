"""Models: the table of what `--model` offers (specs.py, torch-free) and `build_model`, which builds each.

Every model is a `VAE` (see base.py): it takes images (B, C, H, W) in [0, 1],
`encode` gives (mu, logvar), `decode` gives logits shaped like the images.
Importing this package imports no torch: the table is read by `--help`, the runs home and sweep.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from vae_visdom.models.specs import MODEL_NAMES, MODEL_SPECS, ModelSpec

if TYPE_CHECKING:
    from vae_visdom.models.base import VAE

__all__ = ["MODEL_NAMES", "MODEL_SPECS", "ModelSpec", "build_model"]


def build_model(name: str, image_shape: tuple[int, ...], latent_dim: int, hidden_dim: int, likelihood: str) -> VAE:
    """The model `name` of MODEL_SPECS for images of `image_shape` (C, H, W)."""
    from vae_visdom.models import conv, mlp  # late: torch only when a model is built

    builders = {"mlp": mlp.build_mlp, "mlp-paper": mlp.build_mlp_paper, "mlp-iwae": mlp.build_mlp_iwae,
                "conv": conv.build_conv, "conv64": conv.build_conv64}
    c, h, w = image_shape
    return builders[name]((c, h, w), latent_dim, hidden_dim, likelihood)
