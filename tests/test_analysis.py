"""The PCA baseline against numpy's SVD, and the latent views' geometry and payloads."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from vae_visdom.insight.latent import figures_for_epoch, interpolation_strip, latent_manifold_grid, posterior_scatter
from vae_visdom.insight.pca import PCA, pca_figures, pca_fit, pca_recon_error, pca_reconstruct
from vae_visdom.models.base import VAE
from vae_visdom.models.mlp import MLPVAE
from vae_visdom.train.events import ImageFigure, NumbersFigure, ScatterFigure
from vae_visdom.train.objectives import recon_nll


def correlated_data(n: int = 400, p: int = 20, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(p, p, generator=g, dtype=torch.float64) * torch.linspace(2.0, 0.05, p, dtype=torch.float64)
    return torch.randn(n, p, generator=g, dtype=torch.float64) @ mix.T + 0.5  # (N, P)


def numpy_pca(x: torch.Tensor):
    a = x.numpy()
    centered = a - a.mean(axis=0)
    _, s, vt = np.linalg.svd(centered, full_matrices=False)
    return vt, s**2 / a.shape[0]  # components (P, P), eigenvalues (P,)


def test_pca_components_and_variances_match_numpy_svd():
    x = correlated_data()
    vt, eig = numpy_pca(x)
    pca = pca_fit(x, 6)
    comps = pca.components.numpy()
    assert comps.shape == (6, 20)
    np.testing.assert_allclose(np.abs(np.sum(comps * vt[:6], axis=1)), 1.0, atol=1e-8)  # equal up to sign
    np.testing.assert_allclose(pca.explained_variance.numpy(), eig[:6], rtol=1e-8)
    np.testing.assert_allclose(comps @ comps.T, np.eye(6), atol=1e-10)
    # the sign convention: each component's largest-magnitude entry is positive
    assert all(c[np.argmax(np.abs(c))] > 0 for c in comps)


@pytest.mark.parametrize("k", [1, 5, 12])
def test_pca_training_error_is_the_sum_of_discarded_eigenvalues(k):
    x = correlated_data()
    _, eig = numpy_pca(x)
    pca = pca_fit(x, k)
    err = pca_recon_error(pca, x)
    assert err.squared_error.mean().item() == pytest.approx(eig[k:].sum(), rel=1e-8)
    assert pca.total_variance == pytest.approx(eig.sum(), rel=1e-10)


def test_pca_with_all_components_reconstructs_exactly_and_keeps_shape():
    x = correlated_data(p=12).view(400, 1, 3, 4)
    recon = pca_reconstruct(pca_fit(x, 12), x)
    assert recon.shape == x.shape
    torch.testing.assert_close(recon, x, atol=1e-10, rtol=0)


def test_pca_cross_entropy_is_the_vae_reconstruction_term_of_clipped_reconstructions():
    x = torch.rand(300, 1, 5, 5, generator=torch.Generator().manual_seed(1))
    pca = pca_fit(x, 4)
    err = pca_recon_error(pca, x, eps=1e-3)
    clipped = pca_reconstruct(pca, x).clamp(1e-3, 1 - 1e-3)
    torch.testing.assert_close(err.bernoulli_nll, recon_nll(torch.logit(clipped), x, "bernoulli"),
                               atol=1e-4, rtol=1e-5)


def test_pca_on_real_mnist_is_fast_and_improves_with_k():
    from vae_visdom.data import DataError, load_dataset

    try:
        data = load_dataset("mnist")
    except DataError as err:
        pytest.skip(f"MNIST not available: {err}")
    t0 = time.perf_counter()
    pca = pca_fit(data.train, 50)  # uint8 (60000, 1, 28, 28), scaled to [0, 1] inside
    seconds = time.perf_counter() - t0
    assert seconds < 15, seconds
    assert pca.components.shape == (50, 784) and pca.components.dtype == torch.float32
    pixel_var = (data.train.flatten(1).double() / 255).var(dim=0, unbiased=False).sum().item()
    assert pca.total_variance == pytest.approx(pixel_var, rel=1e-4)
    train_err = pca_recon_error(pca, data.train)
    assert train_err.squared_error.mean().item() == pytest.approx(
        pca.total_variance - pca.explained_variance.sum().item(), rel=1e-3)
    first5 = PCA(pca.mean, pca.components[:5], pca.explained_variance[:5], pca.total_variance)
    bce = [pca_recon_error(p, data.test[:1000]).bernoulli_nll.mean().item() for p in (first5, pca)]
    assert bce[1] < bce[0]


class ZProbe(VAE):
    """decode(z) = z as logits of a (2, 1, 1) image; encode(x) = the image as mu: the views' geometry is readable."""

    def __init__(self):
        super().__init__()
        self.image_shape, self.latent_dim = (2, 1, 1), 2
        self.dummy = nn.Parameter(torch.zeros(()))

    def encode(self, x):
        mu = x.flatten(1)
        return mu, torch.zeros_like(mu)

    def decode(self, z):
        return z.view(-1, 2, 1, 1)


def test_manifold_grid_walks_gaussian_quantiles_row_major():
    n = 5
    images = latent_manifold_grid(ZProbe(), n=n)
    assert images.shape == (n * n, 2, 1, 1)
    z = torch.logit(images.double().view(n, n, 2))
    v = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, n)).double()
    assert v[0].item() == pytest.approx(-1.6449, abs=1e-3)
    torch.testing.assert_close(z[:, :, 0], v.expand(n, n), atol=1e-4, rtol=0)  # columns: z[0] increasing
    torch.testing.assert_close(z[:, :, 1], v.flip(0).unsqueeze(1).expand(n, n), atol=1e-4, rtol=0)  # up is +z[1]


def test_manifold_grid_needs_a_two_dimensional_latent():
    with pytest.raises(ValueError, match="2-D"):
        latent_manifold_grid(MLPVAE((1, 8, 8), latent_dim=3, hidden_dims=(8,)))


def test_interpolation_is_linear_between_posterior_means():
    a, b = torch.tensor([-1.0, 2.0]).view(2, 1, 1), torch.tensor([3.0, 0.0]).view(1, 2, 1, 1)
    strip = interpolation_strip(ZProbe(), a, b, steps=5)
    assert strip.shape == (5, 2, 1, 1)
    z = torch.logit(strip.double().view(5, 2))
    expected = torch.stack([torch.linspace(-1, 3, 5), torch.linspace(2, 0, 5)], dim=1).double()
    torch.testing.assert_close(z, expected, atol=1e-4, rtol=0)


def test_views_of_the_seed_model_have_image_shapes_in_unit_range():
    torch.manual_seed(0)
    model = MLPVAE((1, 28, 28), latent_dim=2, hidden_dims=(32,))
    grid = latent_manifold_grid(model, n=20)
    strip = interpolation_strip(model, torch.rand(1, 28, 28), torch.rand(1, 28, 28), steps=10)
    assert grid.shape == (400, 1, 28, 28) and strip.shape == (10, 1, 28, 28)
    for t in (grid, strip):
        assert t.dtype == torch.float32 and t.device.type == "cpu" and 0 <= t.min() and t.max() <= 1


def test_posterior_scatter_of_a_2d_latent_is_mu_itself():
    torch.manual_seed(0)
    model = MLPVAE((1, 8, 8), latent_dim=2, hidden_dims=(16,))
    x = (torch.rand(50, 1, 8, 8) * 255).to(torch.uint8)
    labels = torch.arange(50) % 10
    points, lab = posterior_scatter(model, x, labels, max_points=30)
    with torch.no_grad():
        mu, _ = model.encode(x[:30].float() / 255)
    assert points.shape == (30, 2)
    torch.testing.assert_close(points, mu)
    assert torch.equal(lab, labels[:30])


def test_posterior_scatter_of_a_wide_latent_is_the_pca_projection_of_mu():
    torch.manual_seed(0)
    model = MLPVAE((1, 8, 8), latent_dim=6, hidden_dims=(16,))
    x = torch.rand(200, 1, 8, 8)
    points, lab = posterior_scatter(model, x)
    with torch.no_grad():
        mu, _ = model.encode(x)
    pca = pca_fit(mu, 2)
    torch.testing.assert_close(points, (mu - pca.mean) @ pca.components.T, atol=1e-5, rtol=1e-5)
    assert points[:, 0].var() >= points[:, 1].var()
    assert torch.equal(lab, torch.zeros(200, dtype=torch.long))  # no labels given
    one_d, _ = posterior_scatter(MLPVAE((1, 8, 8), latent_dim=1, hidden_dims=(4,)), x)
    assert one_d.shape == (200, 2) and torch.all(one_d[:, 1] == 0)


@pytest.mark.parametrize("latent_dim", [2, 8])
def test_figures_for_epoch_payloads(latent_dim):
    torch.manual_seed(0)
    model = MLPVAE((1, 28, 28), latent_dim=latent_dim, hidden_dims=(32,))
    model.train()
    x = (torch.rand(64, 1, 28, 28) * 255).to(torch.uint8)
    labels = torch.arange(64) % 10
    figs = figures_for_epoch(model, x, labels, device="cpu", n_grid=6, n_pairs=3, steps=7, max_points=40)
    expected = {"interpolations", "posterior_scatter"} | ({"latent_manifold"} if latent_dim == 2 else set())
    assert set(figs) == expected
    assert model.training  # the views leave the run's mode alone
    inter = figs["interpolations"]
    assert isinstance(inter, ImageFigure) and inter.images.shape == (21, 1, 28, 28) and inter.nrow == 7
    scatter = figs["posterior_scatter"]
    assert isinstance(scatter, ScatterFigure) and scatter.points.shape == (40, 2) and scatter.labels.shape == (40,)
    assert scatter.projected == (latent_dim > 2)
    if latent_dim == 2:
        grid = figs["latent_manifold"]
        assert grid.images.shape == (36, 1, 28, 28) and grid.nrow == 6
    # typed data only: titles and HTML are the monitor's (tests/test_monitor.py checks them)
    assert all(not isinstance(v, str) for f in figs.values() for v in vars(f).values())


def test_pca_payloads_show_originals_over_reconstructions():
    x = (torch.rand(100, 1, 6, 6, generator=torch.Generator().manual_seed(2)) * 255).to(torch.uint8)
    pca = pca_fit(x, 3)
    figs = pca_figures(pca, x, n=8)
    grid = figs["pca_reconstructions"]
    assert isinstance(grid, ImageFigure) and grid.nrow == 8 and grid.images.shape == (16, 1, 6, 6)
    torch.testing.assert_close(grid.images[:8], x[:8].float() / 255)
    torch.testing.assert_close(grid.images[8:], pca_reconstruct(pca, x[:8]).clamp(0, 1))
    numbers = figs["pca_baseline"]
    assert isinstance(numbers, NumbersFigure) and numbers.values["k"] == 3 and numbers.values["images"] == 100
    err = pca_recon_error(pca, x)
    assert numbers.values["recon_nats"] == pytest.approx(float(err.bernoulli_nll.mean()))
    assert numbers.values["squared_error"] == pytest.approx(float(err.squared_error.mean()))


def test_pca_with_fewer_examples_than_pixels_matches_numpy_svd():
    import numpy as np

    from vae_visdom.insight.pca import pca_fit, pca_recon_error

    g = torch.Generator().manual_seed(3)
    x = torch.rand(40, 300, generator=g, dtype=torch.float64)  # N < P: the Gram-matrix path
    pca = pca_fit(x, 5)
    xc = (x - x.mean(0)).numpy()
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    for i in range(5):
        assert abs(abs(float(pca.components[i] @ torch.from_numpy(vt[i]))) - 1.0) < 1e-8
    assert np.allclose(pca.explained_variance.numpy(), s[:5] ** 2 / 40)
    # training-set squared error = sum of the discarded eigenvalues, as on the covariance path
    assert float(pca_recon_error(pca, x).squared_error.mean()) == pytest.approx(float((s[5:] ** 2).sum() / 40))
