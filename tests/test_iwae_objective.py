"""`--objective iwae --k K`: the importance-weighted bound of Burda et al. (2016) as the training objective."""
from __future__ import annotations

import contextlib
import math

import pytest
import torch

from tests.builders import make_session
from vae_visdom import config
from vae_visdom.config import ConfigError, TrainConfig, parse_value
from vae_visdom.models import build_model
from vae_visdom.runs.files import read_jsonl
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
    status = make_session(tmp_path / "run", model="mlp", epochs=2, batch_size=64, latent_dim=8, hidden_dim=64,
                          views=False, objective="iwae", iwae_k=5).run()
    assert status.state == "finished"
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        for split in ("train", "test"):
            bound, elbo = r[f"{split}_loss"], r[f"{split}_recon"] + r[f"{split}_kl"]
            assert math.isfinite(bound) and bound < elbo  # -L_5 below -ELBO: the tighter bound
    assert rows[1]["train_loss"] < rows[0]["train_loss"]


def test_the_page_draws_the_bound_with_the_elbo_beside_it_live_and_after_a_resume(server, tmp_path):
    from tests.test_monitor import STEPS_PER_EPOCH, Observers, feed_epoch, record, run_info, window_data
    from vae_visdom.monitor import VisdomMonitor
    from vae_visdom.runs.files import RunFiles
    from vae_visdom.runs.resume import reconcile

    def iwae_info(**kw):
        info = run_info(tmp_path, **kw)
        info.config.update(objective="iwae", iwae_k=5)
        return info

    def loss_and_run_pane(m):
        panes = window_data(server, "iwae")
        loss = {t["name"]: t for t in panes[m.windows["loss"]]["content"]["data"]}
        return loss, panes[m.windows["run"]]["content"]

    m = VisdomMonitor(port=server.port, env="iwae", run_dir=tmp_path)
    run = Observers(m, RunFiles(tmp_path))
    run.on_run_start(iwae_info())
    for e in (1, 2):
        feed_epoch(run, e)
    m.close()
    loss, run_pane = loss_and_run_pane(m)
    for split in ("train", "test"):
        elbo = [getattr(record(e), f"{split}_recon") + getattr(record(e), f"{split}_kl") for e in (1, 2)]
        assert loss[f"{split} -ELBO (recon + KL)"]["y"] == pytest.approx(elbo)
        assert loss[split]["y"] == pytest.approx([getattr(record(e), f"{split}_loss") for e in (1, 2)])
    assert "importance-weighted bound with K=5" in run_pane
    reconcile(tmp_path, {"epoch": 2, "step": 2 * STEPS_PER_EPOCH})
    m2 = VisdomMonitor(port=server.port, env="iwae", run_dir=tmp_path)
    run2 = Observers(m2, RunFiles(tmp_path))
    run2.on_run_start(iwae_info(resumed=True, start_epoch=3))  # redrawn from metrics.jsonl, then epoch 3
    feed_epoch(run2, 3)
    m2.close()
    loss, _ = loss_and_run_pane(m2)
    assert loss["test -ELBO (recon + KL)"]["x"] == [1, 2, 3]
    assert m.hook_errors == m2.hook_errors == []
