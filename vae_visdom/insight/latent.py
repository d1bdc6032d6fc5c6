"""Views of the latent space: the manifold grid, interpolations, the posterior scatter.

Every function returns CPU tensors; `figures_for_epoch` wraps them as the typed figures of
train/events.py (ImageFigure, ScatterFigure) for `Callback.on_figure(name, figure)`; titles and
drawing are the monitor's.
"""
from __future__ import annotations

import torch

from vae_visdom.data.base import to_unit_float
from vae_visdom.insight.iwae import eval_mode
from vae_visdom.insight.pca import pca_fit
from vae_visdom.models.base import VAE
from vae_visdom.train.events import Figure, ImageFigure, ScatterFigure


def _device(model: VAE, device) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device


@torch.no_grad()
def _encode_means(model: VAE, x: torch.Tensor, device, batch: int = 1000) -> torch.Tensor:
    with eval_mode(model):
        mus = [model.encode(to_unit_float(x[i:i + batch]).to(device))[0].cpu() for i in range(0, x.shape[0], batch)]
    return torch.cat(mus).float()  # (N, D)


@torch.no_grad()
def _decode_images(model: VAE, z: torch.Tensor) -> torch.Tensor:
    with eval_mode(model):
        return torch.sigmoid(model.decode(z)).float().cpu()  # (B, C, H, W)


def latent_manifold_grid(model: VAE, n: int = 20, device=None) -> torch.Tensor:
    """Decodings of an n x n grid over a 2-D latent, (n*n, C, H, W) in [0, 1], row-major.

    Kingma & Welling (2014), Figure 4: linearly spaced coordinates on the unit square
    (0.05..0.95) through the inverse CDF of the Gaussian, so the grid covers equal prior mass.
    Columns go along z[0] (increasing), rows along z[1] (decreasing, so up is +z[1]).
    """
    if model.latent_dim != 2:
        raise ValueError(f"a manifold grid needs a 2-D latent space, this model has {model.latent_dim}")
    dev = _device(model, device)
    values = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, n))  # (n,)
    z1, z0 = torch.meshgrid(values.flip(0), values, indexing="ij")  # (n, n) each
    z = torch.stack([z0.reshape(-1), z1.reshape(-1)], dim=1)  # (n*n, 2)
    return _decode_images(model, z.to(dev))


def interpolation_strip(model: VAE, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 10,
                        device=None) -> torch.Tensor:
    """Decodings along the line between the posterior means of two images, (steps, C, H, W).

    x_a, x_b: one image each, (C, H, W) or (1, C, H, W). The ends decode mu(x_a) and mu(x_b).
    """
    dev = _device(model, device)
    pair = torch.stack([x_a.reshape(model.image_shape), x_b.reshape(model.image_shape)])  # (2, C, H, W)
    mu = _encode_means(model, pair, dev)  # (2, D)
    t = torch.linspace(0, 1, steps).unsqueeze(1)  # (steps, 1)
    return _decode_images(model, ((1 - t) * mu[0] + t * mu[1]).to(dev))


def posterior_scatter(model: VAE, x: torch.Tensor, labels: torch.Tensor | None = None,
                      max_points: int = 2000, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means of the first max_points images in 2-D: (points (N, 2), labels (N,) int64).

    D = 2: mu itself; D = 1: (mu, 0); D > 2: mu projected on its own first two principal components.
    Missing labels become zeros.
    """
    x = x[:max_points]
    mu = _encode_means(model, x, _device(model, device))  # (N, D)
    if mu.shape[1] == 1:
        points = torch.cat([mu, torch.zeros_like(mu)], dim=1)
    elif mu.shape[1] == 2:
        points = mu
    else:
        pca = pca_fit(mu, 2)
        points = pca.encode(mu)
    labels = torch.zeros(x.shape[0], dtype=torch.long) if labels is None else labels[:max_points].long().cpu()
    return points, labels


def figures_for_epoch(model: VAE, test_x: torch.Tensor, test_labels: torch.Tensor | None = None,
                      device=None, n_grid: int = 20, n_pairs: int = 4, steps: int = 10,
                      max_points: int = 2000) -> dict[str, Figure]:
    """The latent views as figures: latent_manifold (2-D latents only), interpolations, posterior_scatter."""
    figures: dict[str, Figure] = {}
    d = model.latent_dim
    if d == 2:
        figures["latent_manifold"] = ImageFigure(latent_manifold_grid(model, n_grid, device), n_grid)
    pairs = min(n_pairs, test_x.shape[0] // 2)
    if pairs:
        strips = [interpolation_strip(model, test_x[2 * i], test_x[2 * i + 1], steps, device) for i in range(pairs)]
        figures["interpolations"] = ImageFigure(torch.cat(strips), steps)
    points, labels = posterior_scatter(model, test_x, test_labels, max_points, device)
    figures["posterior_scatter"] = ScatterFigure(points, labels, projected=d > 2)
    return figures
