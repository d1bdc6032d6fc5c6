"""The objective: shapes, the closed-form KL, and agreement with the seed's loss."""
import math

import torch
import torch.nn.functional as F

from vae_visdom.models import MODEL_SPECS, build_model
from vae_visdom.train.objectives import elbo_terms, gaussian_kl, recon_nll, seed_loss_function


def test_mlp_matches_the_seed_architecture_and_shapes():
    model = build_model("mlp", (1, 28, 28), 20, 400, "bernoulli")
    shapes = [tuple(p.shape) for p in model.parameters()]  # the seed's fc1, fc21, fc22, fc3, fc4, in its order
    assert shapes == [(400, 784), (400,), (20, 400), (20,), (20, 400), (20,), (400, 20), (400,), (784, 400), (784,)]
    assert sum(isinstance(m, torch.nn.ReLU) for m in model.modules()) == 2
    x = torch.rand(5, 1, 28, 28)
    logits, mu, logvar = model(x)
    assert logits.shape == (5, 1, 28, 28) and mu.shape == (5, 20) and logvar.shape == (5, 20)


def test_mlp_paper_uses_sigmoid_units_500_hidden_and_adagrad():
    spec = MODEL_SPECS["mlp-paper"]
    assert spec.defaults["optimizer"] == "adagrad" and spec.defaults["hidden_dim"] == 500
    model = build_model("mlp-paper", (1, 28, 28), 20, 500, "bernoulli")
    h = model.encoder(torch.randn(3, 784))
    assert torch.all((h > 0) & (h < 1))  # sigmoid, not ReLU


def test_kl_matches_a_monte_carlo_estimate():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(4, 3, generator=g)
    logvar = torch.randn(4, 3, generator=g) * 0.5
    std = torch.exp(0.5 * logvar)
    z = mu + std * torch.randn(200_000, 4, 3, generator=g)  # (S, B, D)
    log_q = (-0.5 * ((z - mu) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_p = (-0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)).sum(-1)
    mc = (log_q - log_p).mean(0)  # (B,)
    assert torch.allclose(gaussian_kl(mu, logvar), mc, atol=0.02), (gaussian_kl(mu, logvar), mc)


def test_kl_is_zero_at_the_prior():
    assert torch.allclose(gaussian_kl(torch.zeros(2, 5), torch.zeros(2, 5)), torch.zeros(2))


def test_loss_equals_the_seeds_formula():
    torch.manual_seed(0)
    x = torch.rand(16, 1, 28, 28)
    logits = torch.randn(16, 1, 28, 28) * 3
    mu, logvar = torch.randn(16, 20), torch.randn(16, 20) * 0.3
    recon, kl = elbo_terms(logits, x, mu, logvar)
    ours = (recon + kl).sum()
    seed = seed_loss_function(torch.sigmoid(logits).view(16, 784), x, mu, logvar)
    assert torch.allclose(ours, seed, rtol=1e-5), (ours, seed)


def test_bernoulli_term_is_stable_for_extreme_logits():
    x = torch.tensor([[[[0.0, 1.0]]]])
    logits = torch.tensor([[[[-200.0, 200.0]]]])
    assert torch.isfinite(recon_nll(logits, x)).all() and recon_nll(logits, x).item() < 1e-6
    bad = recon_nll(-logits, x).item()
    assert math.isfinite(bad) and abs(bad - 400.0) < 1e-3  # BCE from logits is exact where sigmoid+log saturates


def test_gaussian_term_is_the_gaussian_density():
    x = torch.rand(3, 1, 4, 4)
    logits = torch.randn(3, 1, 4, 4)
    log_sigma = torch.tensor(-1.0)
    expected = -torch.distributions.Normal(torch.sigmoid(logits), log_sigma.exp()).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(recon_nll(logits, x, "gaussian", log_sigma), expected, atol=1e-4)


def test_bce_terms_are_per_example_sums():
    x = torch.rand(2, 1, 28, 28)
    logits = torch.randn(2, 1, 28, 28)
    per_example = recon_nll(logits, x)
    assert per_example.shape == (2,)
    assert torch.allclose(per_example.sum(), F.binary_cross_entropy_with_logits(logits, x, reduction="sum"))
