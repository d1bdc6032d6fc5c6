"""The PCA baseline: the best rank-k linear autoencoder, set beside the VAE's reconstruction term.

Every function returns CPU tensors; `pca_figures` wraps them as the typed figures of train/events.py
for `Callback.on_figure(name, figure)`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from vae_visdom.data.base import to_unit_float
from vae_visdom.train.events import Figure, ImageFigure, NumbersFigure


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1]; float tensors keep their precision (PCA tests run in float64)."""
    return x if x.is_floating_point() else to_unit_float(x)


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


def pca_figures(pca: PCA, x: torch.Tensor, n: int = 8) -> dict[str, Figure]:
    """n test images over their PCA reconstructions (pca_reconstructions), and the errors
    (pca_baseline: k, images, reconstruction cross-entropy in nats/image, squared error/image)."""
    images = to_unit_float(x[:n]).cpu()  # (n, C, H, W)
    recon = pca_reconstruct(pca, images).clamp(0, 1).to(images.dtype)
    err = pca_recon_error(pca, x)
    numbers = {"k": pca.components.shape[0], "images": x.shape[0],
               "recon_nats": float(err.bernoulli_nll.mean()), "squared_error": float(err.squared_error.mean())}
    return {"pca_reconstructions": ImageFigure(torch.cat([images, recon]), n, {"k": numbers["k"]}),
            "pca_baseline": NumbersFigure(numbers)}
