"""What the model learned: the PCA baseline and views of the latent space.

Every function returns CPU tensors; `figures_for_epoch` and `pca_payloads` wrap them as the
payloads of `Callback.on_figure(name, payload)`:
    {"kind": "images", "tensor": (B, C, H, W) float in [0, 1], "nrow": int, "title": str}
    {"kind": "scatter", "points": (N, 2) float, "labels": (N,) int64, "title": str}
    {"kind": "text", "html": str, "title": str}
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vae_visdom.evaluate import eval_mode, to_unit_float


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1]; float tensors keep their precision (PCA tests run in float64)."""
    return x if x.is_floating_point() else to_unit_float(x)

# ---------------------------------------------------------------- PCA, the linear baseline


@dataclass
class PCA:
    """x ~ mean + codes @ components: the best rank-k linear autoencoder in squared error."""

    mean: torch.Tensor  # (P,)
    components: torch.Tensor  # (k, P), orthonormal rows, largest variance first
    explained_variance: torch.Tensor  # (k,), covariance eigenvalues (1/N normalisation)
    total_variance: float  # trace of the covariance: the mean squared error with k = 0

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1).to(self.mean.dtype) - self.mean) @ self.components.T  # (N, k)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes @ self.components + self.mean  # (N, P)


def pca_fit(x_train: torch.Tensor, k: int) -> PCA:
    """Top-k principal components of x_train (N, P) (or images, flattened; uint8 scaled to [0, 1]).

    With N >= P: eigendecomposition of the P x P covariance (about 0.6 s for 60000 x 784 on
    2 cores). With fewer examples than pixels (faces at 64x64 RGB: P = 12288), the same
    eigenvectors come from the N x N Gram matrix: if (Xc Xc^T / N) u = lambda u, then
    v = Xc^T u / sqrt(N lambda) is a unit eigenvector of the covariance with eigenvalue lambda.
    Signs are fixed so that each component's largest-magnitude entry is positive.
    """
    x = _as_float(x_train).flatten(1)  # (N, P)
    n, p = x.shape
    if not 1 <= k <= p:
        raise ValueError(f"k must be in 1..{p}, got {k}")
    mean = x.mean(dim=0)  # (P,)
    xc = x - mean
    if n >= p:
        cov = (xc.T @ xc).double() / n  # (P, P)
        eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending
        top_vals = torch.flip(eigvals[-k:], dims=[0])
        top = torch.flip(eigvecs[:, -k:], dims=[1]).T  # (k, P)
        total = float(torch.diagonal(cov).sum())
    else:
        xd = xc.double()
        gram = xd @ xd.T / n  # (N, N)
        eigvals, u = torch.linalg.eigh(gram)  # ascending; the nonzero ones are the covariance's
        kk = min(k, n)
        top_vals = torch.flip(eigvals[-kk:], dims=[0]).clamp(min=1e-12)
        u = torch.flip(u[:, -kk:], dims=[1])  # (N, kk)
        top = (xd.T @ u / torch.sqrt(n * top_vals)).T  # (kk, P), orthonormal rows
        if kk < k:  # more components asked than examples: the rest carry no variance
            top = torch.cat([top, torch.zeros(k - kk, p, dtype=top.dtype)])
            top_vals = torch.cat([top_vals, torch.zeros(k - kk, dtype=top_vals.dtype)])
        total = float((xd * xd).sum() / n)
    signs = torch.sign(top.gather(1, top.abs().argmax(dim=1, keepdim=True)))
    signs[signs == 0] = 1
    return PCA(mean=mean, components=(top * signs).to(x.dtype),
               explained_variance=top_vals.clamp(min=0).to(x.dtype), total_variance=total)


def pca_reconstruct(pca: PCA, x: torch.Tensor) -> torch.Tensor:
    """Project onto the components and back; same shape as x, unclipped."""
    return pca.decode(pca.encode(_as_float(x))).view(x.shape)


@dataclass
class PCAReconError:
    """Per-example reconstruction errors, (N,) each, summed over pixels."""

    squared_error: torch.Tensor  # ||x - x_hat||^2: what PCA minimises; not a likelihood
    bernoulli_nll: torch.Tensor  # -sum log Bernoulli(x; clip(x_hat)), nats


def pca_recon_error(pca: PCA, x: torch.Tensor, eps: float = 1e-3) -> PCAReconError:
    """Both errors of the PCA reconstruction of x (N, ...).

    `bernoulli_nll` is the one to set beside the VAE: it is computed as the VAE's reconstruction
    term is (`recon_nll(..., 'bernoulli')`: binary cross-entropy summed over pixels, nats), with
    the reconstruction clipped to [eps, 1 - eps] because PCA's output is unbounded. It compares with
    the VAE's *reconstruction* term only: PCA pays no KL, so it is no bound on log p(x) and must not
    be compared with the ELBO or the IW log-likelihood. The mean squared error on the training set
    equals the sum of the discarded covariance eigenvalues.
    """
    target = _as_float(x).flatten(1).to(pca.mean.dtype)  # (N, P)
    recon = pca.decode(pca.encode(target))  # (N, P)
    squared = (target - recon).pow(2).sum(dim=1)
    r = recon.clamp(eps, 1 - eps)
    bce = -(target * torch.log(r) + (1 - target) * torch.log1p(-r)).sum(dim=1)
    return PCAReconError(squared_error=squared, bernoulli_nll=bce)


def pca_payloads(pca: PCA, x: torch.Tensor, n: int = 8) -> dict[str, dict]:
    """on_figure payloads: n test images over their PCA reconstructions, and the errors as text."""
    images = to_unit_float(x[:n]).cpu()  # (n, C, H, W)
    recon = pca_reconstruct(pca, images).clamp(0, 1).to(images.dtype)
    err = pca_recon_error(pca, x)
    k = pca.components.shape[0]
    html = (f"<b>PCA, k={k}</b> on {x.shape[0]} images<br>"
            f"reconstruction cross-entropy: {err.bernoulli_nll.mean():.2f} nats/image "
            f"(compare with the VAE's reconstruction term, not its loss)<br>"
            f"squared error: {err.squared_error.mean():.2f} per image")
    return {
        "pca_reconstructions": {"kind": "images", "tensor": torch.cat([images, recon]), "nrow": n,
                                "title": f"PCA baseline (k={k}): originals, reconstructions"},
        "pca_baseline": {"kind": "text", "html": html, "title": f"PCA baseline (k={k})"},
    }


# ---------------------------------------------------------------- latent views


def _device(model: nn.Module, device) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device


@torch.no_grad()
def _encode_means(model: nn.Module, x: torch.Tensor, device, batch: int = 1000) -> torch.Tensor:
    with eval_mode(model):
        mus = [model.encode(to_unit_float(x[i:i + batch]).to(device))[0].cpu() for i in range(0, x.shape[0], batch)]
    return torch.cat(mus).float()  # (N, D)


@torch.no_grad()
def _decode_images(model: nn.Module, z: torch.Tensor) -> torch.Tensor:
    with eval_mode(model):
        return torch.sigmoid(model.decode(z)).float().cpu()  # (B, C, H, W)


def latent_manifold_grid(model: nn.Module, n: int = 20, device=None) -> torch.Tensor:
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


def interpolation_strip(model: nn.Module, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 10,
                        device=None) -> torch.Tensor:
    """Decodings along the line between the posterior means of two images, (steps, C, H, W).

    x_a, x_b: one image each, (C, H, W) or (1, C, H, W). The ends decode mu(x_a) and mu(x_b).
    """
    dev = _device(model, device)
    pair = torch.stack([x_a.reshape(model.image_shape), x_b.reshape(model.image_shape)])  # (2, C, H, W)
    mu = _encode_means(model, pair, dev)  # (2, D)
    t = torch.linspace(0, 1, steps).unsqueeze(1)  # (steps, 1)
    return _decode_images(model, ((1 - t) * mu[0] + t * mu[1]).to(dev))


def posterior_scatter(model: nn.Module, x: torch.Tensor, labels: torch.Tensor | None = None,
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


def figures_for_epoch(model: nn.Module, test_x: torch.Tensor, test_labels: torch.Tensor | None = None,
                      device=None, n_grid: int = 20, n_pairs: int = 4, steps: int = 10,
                      max_points: int = 2000) -> dict[str, dict]:
    """The latent views as on_figure payloads: manifold (2-D latents only), interpolations, scatter."""
    figures: dict[str, dict] = {}
    d = model.latent_dim
    if d == 2:
        figures["latent_manifold"] = {
            "kind": "images", "tensor": latent_manifold_grid(model, n_grid, device), "nrow": n_grid,
            "title": "Latent manifold: decodings over Gaussian quantiles 0.05..0.95 (Kingma & Welling Fig. 4)"}
    pairs = min(n_pairs, test_x.shape[0] // 2)
    if pairs:
        strips = [interpolation_strip(model, test_x[2 * i], test_x[2 * i + 1], steps, device) for i in range(pairs)]
        figures["interpolations"] = {"kind": "images", "tensor": torch.cat(strips), "nrow": steps,
                                     "title": "Interpolations between posterior means"}
    points, labels = posterior_scatter(model, test_x, test_labels, max_points, device)
    how = "mu" if d <= 2 else "mu, first two principal components"
    figures["posterior_scatter"] = {"kind": "scatter", "points": points, "labels": labels,
                                    "title": f"Posterior means of {points.shape[0]} test images ({how})"}
    return figures
