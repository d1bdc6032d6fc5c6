"""`--objective iwae --k K`: the importance-weighted bound of Burda et al. (2016) as the training objective."""
from __future__ import annotations

import contextlib
import math

import pytest
import torch

from tests.conftest import synthetic_data
from vae_visdom import config
from vae_visdom.config import ConfigError, TrainConfig, parse_value
from vae_visdom.models import build_model
from vae_visdom.runs.files import read_jsonl
from vae_visdom.session import TrainingSession
from vae_visdom.train import objectives
from vae_visdom.train.objectives import iwae_bound, log_importance_weights, log_normal, recon_nll
from vae_visdom.train.step import iwae_terms

NO_AUTOCAST = contextlib.nullcontext


def model_and_batch(seed: int = 0, n: int = 64):
    torch.manual_seed(seed)
    model = build_model("mlp", (1, 28, 28), 8, 64, "bernoulli")
    x = torch.bernoulli(torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed + 1)))
    return model, x


def test_the_bound_at_k_1_is_exactly_the_one_sample_elbo_of_the_same_draw():
    model, x = model_and_batch()
    torch.manual_seed(5)
    neg_bound, trained, recon, kl = iwae_terms(model, x, 1, NO_AUTOCAST)
    # the same draw, by hand: z = mu + sigma * eps with the generator in the same state
    torch.manual_seed(5)
    mu, logvar = model.encode(x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn((1, *mu.shape))
    nll = recon_nll(model.decode(z[0]), x)
    log_ratio = log_normal(z[0], torch.zeros_like(mu), torch.zeros_like(mu)) - log_normal(z[0], mu, logvar)
    one_sample_elbo = -nll + log_ratio  # log p(x|z) + log p(z) - log q(z|x)
    assert torch.equal(neg_bound, -one_sample_elbo)
    assert torch.equal(trained, neg_bound) and torch.equal(recon, nll)
    # its mean over draws is the ELBO with the KL in closed form (the default objective), within noise
    draws = torch.stack([iwae_terms(model, x, 1, NO_AUTOCAST)[0] for _ in range(400)])  # (400, B)
    analytic = torch.stack([recon_nll(model(x)[0], x) for _ in range(400)]).mean(0) + kl
    se = draws.std(0) / math.sqrt(400)
    assert ((draws.mean(0) - analytic).abs() < 5 * se + 0.05).all()


def test_the_bound_does_not_decrease_with_k_on_a_fixed_model():
    model, x = model_and_batch(n=256)
    torch.manual_seed(0)
    with torch.no_grad():
        bounds = {k: -iwae_terms(model, x, k, NO_AUTOCAST)[0].mean().item() for k in (1, 5, 50, 500)}
    assert bounds[1] < bounds[5] < bounds[50] < bounds[500], bounds


def test_its_gradient_is_the_normalised_weights_times_the_gradients_of_the_log_weights():
    """Burda et al. eq. (14): grad L_K = sum_k w~_k grad log w_k, w~_k = w_k / sum_j w_j."""
    model, x = model_and_batch(n=16)
    model, x = model.double(), x.double()  # float64: the two sums differ only in rounding, and then by ~1e-12
    k = 7
    eps = torch.randn(k, 16, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def log_weights():
        mu, logvar = model.encode(x)
        z = mu + torch.exp(0.5 * logvar) * eps  # (K, B, D)
        nll = recon_nll(model.decode(z.flatten(0, 1)), x.expand(k, *x.shape).flatten(0, 1)).view(k, -1)
        return log_importance_weights(-nll, z, mu, logvar)

    params = list(model.parameters())
    auto = torch.autograd.grad(iwae_bound(log_weights()).sum(), params)
    log_w = log_weights()
    w_tilde = torch.softmax(log_w.detach(), dim=0)  # (K, B)
    by_formula = torch.autograd.grad((w_tilde * log_w).sum(), params)
    for a, b in zip(auto, by_formula):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_the_objective_and_k_follow_the_rule_table():
    assert objectives.OBJECTIVE_NAMES == config.OBJECTIVES
    assert parse_value("iwae_k", "50") == 50
    for bad in ("0", "5001", "2.5", "five"):
        with pytest.raises(ConfigError):
            parse_value("iwae_k", bad)
    with pytest.raises(ConfigError, match="objective"):
        TrainConfig(objective="iwea").validate()


def test_a_run_trained_on_the_iwae_bound_reports_it_beside_the_elbo(tmp_path):
    cfg = TrainConfig(model="mlp", epochs=2, batch_size=64, latent_dim=8, hidden_dim=64, visdom=False,
                      views=False, objective="iwae", iwae_k=5, out=str(tmp_path / "run"))
    status = TrainingSession(cfg, data=synthetic_data(512, 128), progress=False).run()
    assert status.state == "finished"
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        for split in ("train", "test"):
            bound, elbo = r[f"{split}_loss"], r[f"{split}_recon"] + r[f"{split}_kl"]
            assert math.isfinite(bound) and bound < elbo  # -L_5 below -ELBO: the tighter bound
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
