"""The importance-weighted log-likelihood (Burda et al. 2016) against a model with a closed-form p(x)."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from vae_visdom.config import TrainConfig, with_model_defaults
from vae_visdom.insight.iwae import (
    DEFAULT_MAX_FLOATS,
    IWResult,
    chunk_plan,
    eval_mode,
    floats_per_pair,
    format_result,
    iw_log_likelihood,
)
from vae_visdom.models.base import VAE
from vae_visdom.models.mlp import MLPVAE
from vae_visdom.train.objectives import recon_nll


class LinearGaussianVAE(VAE):
    """p(z) = N(0, I), p(x|z) = N(Wz + b, s^2 I), so p(x) = N(b, WW^T + s^2 I) exactly.

    W has orthogonal columns, so the true posterior N(m, V) has a diagonal V and the encoder
    can be exact (shrink = inflate = 1) or deliberately wrong: mean m * shrink, variance V * inflate.
    """

    def __init__(self, p: int = 16, d: int = 3, sigma: float = 0.5, shrink: float = 1.0, inflate: float = 1.0,
                 seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(p, d, generator=g))  # (P, D) orthonormal columns
        scales = torch.linspace(0.5, 2.0, d)
        self.W = nn.Parameter(q * scales, requires_grad=False)  # (P, D)
        self.b = nn.Parameter(0.3 * torch.randn(p, generator=g), requires_grad=False)  # (P,)
        self.sigma, self.shrink, self.inflate = sigma, shrink, inflate
        self.image_shape, self.latent_dim, self.likelihood = (1, 1, p), d, "gaussian"
        self.post_var = 1.0 / (1.0 + scales.pow(2) / sigma**2)  # (D,) diag of (I + W^T W / s^2)^-1

    def true_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = (x.flatten(1) - self.b) @ self.W / self.sigma**2 * self.post_var  # (B, D)
        return mean, self.post_var.expand_as(mean)

    def encode(self, x):
        mean, var = self.true_posterior(x)
        return self.shrink * mean, torch.log(self.inflate * var)

    def decode(self, z):
        return (z @ self.W.T + self.b).view(-1, *self.image_shape)

    def log_px_given_z(self, x, z):
        return torch.distributions.Normal(z @ self.W.T + self.b, self.sigma).log_prob(x.flatten(1)).sum(1)

    def sample(self, n: int, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.latent_dim, generator=g)
        x = z @ self.W.T + self.b + self.sigma * torch.randn(n, self.W.shape[0], generator=g)
        return x.view(n, *self.image_shape)

    def exact_log_px(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.W.double(), self.b.double()
        cov = w @ w.T + self.sigma**2 * torch.eye(w.shape[0], dtype=torch.float64)
        return torch.distributions.MultivariateNormal(b, cov).log_prob(x.flatten(1).double())  # (N,)

    def exact_elbo(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) - KL(q(z|x) || p(z|x)), both Gaussians with diagonal covariance."""
        m_p, v_p = (t.double() for t in self.true_posterior(x))
        m_q, logv_q = (t.double() for t in self.encode(x))
        v_q = logv_q.exp()
        kl = 0.5 * (v_q / v_p + (m_p - m_q).pow(2) / v_p - 1 + v_p.log() - logv_q).sum(1)
        return self.exact_log_px(x) - kl


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_exact_posterior_gives_exact_log_likelihood_for_every_k():
    model = LinearGaussianVAE()
    x = model.sample(50)
    exact = model.exact_log_px(x)
    for k in (1, 7):
        r = iw_log_likelihood(model, x, k, generator=gen())
        # every importance weight equals p(x): zero variance, no bias
        torch.testing.assert_close(r.per_example, exact, atol=2e-4, rtol=0)
        torch.testing.assert_close(r.per_example_elbo, exact, atol=2e-4, rtol=0)


def test_imperfect_encoder_estimate_lands_on_closed_form():
    model = LinearGaussianVAE(shrink=0.8, inflate=2.0)
    x = model.sample(300)
    exact = model.exact_log_px(x)
    r = iw_log_likelihood(model, x, k=500, generator=gen())
    assert isinstance(r, IWResult) and r.n == 300 and r.k == 500
    assert abs(r.log_likelihood - exact.mean().item()) < 3 * r.stderr
    assert r.stderr == pytest.approx(r.per_example.std().item() / math.sqrt(300))
    # paired with the exact value the Monte Carlo error is far smaller than the spread over examples
    diff = r.per_example - exact
    assert abs(diff.mean().item()) < 3 * diff.std().item() / math.sqrt(300) + 0.01
    assert diff.abs().max().item() < 0.5
    # the ELBO from the same draws is the closed-form ELBO (log p(x) - KL to the true posterior)
    elbo_exact = model.exact_elbo(x)
    elbo_diff = r.per_example_elbo - elbo_exact
    assert abs(elbo_diff.mean().item()) < 3 * elbo_diff.std().item() / math.sqrt(300) + 0.01
    assert exact.mean() - elbo_exact.mean() > 0.3  # the encoder really is wrong: a real gap to close
    assert r.log_likelihood > r.elbo


def test_larger_k_is_tighter_and_never_below_the_elbo():
    model = LinearGaussianVAE(shrink=0.5, inflate=3.0)
    x = model.sample(200)
    exact = model.exact_log_px(x).mean().item()
    results = [iw_log_likelihood(model, x, k, generator=gen(k)) for k in (1, 10, 100, 1000)]
    means = [r.log_likelihood for r in results]
    assert means == sorted(means) and len(set(means)) == 4, means
    assert means[-1] <= exact + 0.05
    assert exact - means[-1] < 0.25 * (exact - means[0])  # most of the gap closed by K=1000
    for r in results:
        # log mean exp >= mean log, example by example (Jensen), not only on average
        assert torch.all(r.per_example >= r.per_example_elbo - 1e-9)
    assert results[0].log_likelihood == pytest.approx(results[0].elbo)  # K=1 is the ELBO


def test_chunking_and_batch_size_do_not_change_the_estimate():
    model = LinearGaussianVAE(shrink=0.7, inflate=2.0)
    x = model.sample(37)
    whole = iw_log_likelihood(model, x, k=300, generator=gen(5))
    per_pair = floats_per_pair(model, torch.device("cpu"))
    tiny = iw_log_likelihood(model, x, k=300, generator=gen(5), max_floats=300 * 3 + 40 * per_pair)
    batched = iw_log_likelihood(model, x, k=300, generator=gen(5), batch_size=4)
    assert (whole.examples_per_batch, whole.samples_per_chunk) == (37, 300)
    assert tiny.examples_per_batch == 1 and tiny.samples_per_chunk == 40
    assert batched.examples_per_batch == 4
    for other in (tiny, batched):
        torch.testing.assert_close(other.per_example, whole.per_example, atol=1e-5, rtol=0)
        torch.testing.assert_close(other.per_example_elbo, whole.per_example_elbo, atol=1e-5, rtol=0)
    reseeded = iw_log_likelihood(model, x, k=300, generator=gen(6))
    assert not torch.allclose(reseeded.per_example, whole.per_example, atol=1e-4, rtol=0)


@pytest.mark.parametrize("n,k,d,per_pair,budget,batch", [
    (10000, 5000, 20, 5544, DEFAULT_MAX_FLOATS, None),
    (10000, 1, 20, 5544, DEFAULT_MAX_FLOATS, None),
    (10000, 100, 2, 20000, 10**6, None),
    (10000, 100, 2, 100, 10**6, 128),
    (3, 100000, 64, 5544, DEFAULT_MAX_FLOATS, None),
])
def test_chunk_plan_stays_within_the_memory_budget(n, k, d, per_pair, budget, batch):
    b, s = chunk_plan(n, k, d, per_pair, budget, batch)
    assert 1 <= b <= n and 1 <= s <= k
    assert b * k * d + b * s * per_pair <= budget
    if batch is not None:
        assert b == batch


def test_chunk_plan_refuses_noise_that_cannot_fit():
    with pytest.raises(ValueError, match="max_floats"):
        chunk_plan(10, 100000, 4096, 5000, DEFAULT_MAX_FLOATS)


def test_k5000_on_the_seed_model_fits_the_default_budget():
    torch.manual_seed(0)
    model = MLPVAE((1, 28, 28), latent_dim=20, hidden_dims=(400,))
    x = (torch.rand(3, 1, 28, 28) * 255).to(torch.uint8)
    r = iw_log_likelihood(model, x, k=5000, generator=gen())
    per_pair = floats_per_pair(model, torch.device("cpu"))
    assert per_pair >= 4 * 784 + 400
    assert r.examples_per_batch * (5000 * 20 + r.samples_per_chunk * per_pair) <= DEFAULT_MAX_FLOATS
    assert r.samples_per_chunk < 5000  # the samples really were chunked
    assert math.isfinite(r.log_likelihood) and r.log_likelihood >= r.elbo


def test_log_weight_is_decoder_likelihood_plus_prior_minus_posterior():
    # one sample per image, reproduced by hand from the documented seeding (key + example index)
    torch.manual_seed(0)
    model = MLPVAE((1, 8, 8), latent_dim=3, hidden_dims=(16,), likelihood="gaussian")
    with torch.no_grad():
        model.log_sigma.fill_(-1.5)
    x = torch.rand(5, 1, 8, 8)
    r = iw_log_likelihood(model, x, k=1, generator=gen(3))
    key = int(torch.randint(0, 2**32, (1,), generator=gen(3)))
    with torch.no_grad():
        mu, logvar = model.encode(x)
        eps = torch.cat([torch.randn(1, 3, generator=gen((key + i) % 2**32)) for i in range(5)])
        std = torch.exp(0.5 * logvar)
        z = mu + std * eps
        log_px = -recon_nll(model.decode(z), x, "gaussian", model.log_sigma)
        normal = torch.distributions.Normal
        log_w = log_px + normal(0, 1).log_prob(z).sum(1) - normal(mu, std).log_prob(z).sum(1)
    torch.testing.assert_close(r.per_example, log_w.double(), atol=1e-4, rtol=1e-6)


class RecordingMLP(MLPVAE):
    def encode(self, x):
        self.seen = x.clone()
        return super().encode(x)


def test_binarize_samples_pixels_and_leaves_binary_images_alone():
    torch.manual_seed(0)
    model = RecordingMLP((1, 28, 28), latent_dim=4, hidden_dims=(32,))
    grey = torch.full((64, 1, 28, 28), 0.3)
    iw_log_likelihood(model, grey, k=2, binarize=True, generator=gen())
    seen = model.seen
    assert set(seen.unique().tolist()) == {0.0, 1.0}
    assert abs(seen.mean().item() - 0.3) < 0.01
    binary = (torch.rand(20, 1, 28, 28) < 0.5).to(torch.uint8) * 255
    a = iw_log_likelihood(model, binary, k=4, binarize=True, generator=gen(1))
    b = iw_log_likelihood(model, binary, k=4, binarize=False, generator=gen(1))
    torch.testing.assert_close(a.per_example, b.per_example, atol=0, rtol=0)
    assert a.binarized and not b.binarized


def test_evaluation_runs_in_eval_mode_and_restores_training_mode():
    class DropoutMLP(MLPVAE):
        def encode(self, x):
            assert not self.training
            return super().encode(x)

    model = DropoutMLP((1, 8, 8), latent_dim=2, hidden_dims=(8,))
    model.train()
    iw_log_likelihood(model, torch.rand(4, 1, 8, 8), k=3, generator=gen())
    assert model.training
    with eval_mode(model):
        assert not model.training
    assert model.training


def test_eval_subcommand_scores_a_run_dir_and_writes_eval_json(tmp_path, capsys):
    from vae_visdom.cli import build_parser

    cfg = with_model_defaults(TrainConfig(dataset="mnist", model="mlp", latent_dim=4, hidden_dim=32, seed=3))
    (tmp_path / "config.json").write_text(cfg.to_json())
    torch.manual_seed(0)
    model = MLPVAE((1, 28, 28), latent_dim=4, hidden_dims=(32,))
    torch.save({"model": model.state_dict(), "epoch": 1}, tmp_path / "checkpoint.pt")

    parser = build_parser(["eval"])
    args = parser.parse_args(["eval", str(tmp_path), "--iw-samples", "20", "--binarize", "--device", "cpu",
                              "--limit", "40"])
    assert args.run(args) == 0
    out = capsys.readouterr().out
    record = json.loads((tmp_path / "eval.json").read_text())
    assert record["k"] == 20 and record["n"] == 40 and record["binarized"] is True
    assert record["log_likelihood"] >= record["elbo"]
    assert f"test log-likelihood (IW, K=20): {record['log_likelihood']:.2f} ± {record['stderr']:.2f} nats" in out
    assert f"ELBO: {record['elbo']:.2f} nats" in out
    with pytest.raises(SystemExit):  # the rules of config.py: K >= 1
        parser.parse_args(["eval", str(tmp_path), "--iw-samples", "0"])


def test_eval_subcommand_reports_a_missing_run_dir_without_a_traceback(tmp_path, capsys):
    from vae_visdom.cli import build_parser

    args = build_parser(["eval"]).parse_args(["eval", str(tmp_path / "nope")])
    assert args.run(args) == 1
    assert "config.json not found" in capsys.readouterr().err


def test_format_result_reads_like_a_paper_table():
    r = IWResult(log_likelihood=-86.7612, stderr=0.4049, elbo=-90.123, k=5000, n=10000, binarized=True,
                 seconds=1.0, examples_per_batch=1, samples_per_chunk=5000, per_example=torch.zeros(1),
                 per_example_elbo=torch.zeros(1))
    assert format_result(r) == "test log-likelihood (IW, K=5000): -86.76 ± 0.40 nats; ELBO: -90.12 nats"
