"""Burda et al.'s benchmark pieces: the mlp-iwae model, the burda lr schedule, K=5000 evaluation in chunks."""
import json
import math
import os
import re
import signal
import subprocess
import sys

import pytest
import torch

from tests.test_trainer import At, metrics, run
from vae_visdom.config import ConfigError, TrainConfig, parse_value, with_model_defaults
from vae_visdom.insight.iwae import floats_per_pair, format_result, iw_log_likelihood
from vae_visdom.models import build_model
from vae_visdom.models.mlp import MLPVAE
from vae_visdom.train import mlp_cpu_step
from vae_visdom.train.schedule import BURDA_EPOCHS, enter_epoch, lr_factor, stage_ends
from vae_visdom.train.step import make_optimizer


def test_mlp_iwae_is_784_200_200_50_tanh_with_the_paper_parameter_count():
    cfg = with_model_defaults(TrainConfig(model="mlp-iwae"))
    assert (cfg.latent_dim, cfg.hidden_dim, cfg.batch_size, cfg.lr, cfg.optimizer) == (50, 200, 20, 1e-3, "adam")
    model = build_model("mlp-iwae", (1, 28, 28), cfg.latent_dim, cfg.hidden_dim, cfg.likelihood)
    widths = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [(784, 200), (200, 200), (200, 50), (200, 50), (50, 200), (200, 200), (200, 784)]
    assert sum(isinstance(m, torch.nn.Tanh) for m in model.modules()) == 4
    assert sum(p.numel() for p in model.parameters()) == sum(i * o + o for i, o in widths)
    x = torch.rand(7, 1, 28, 28)
    logits, mu, logvar = model(x)
    assert logits.shape == x.shape and mu.shape == logvar.shape == (7, 50)


def test_mlp_iwae_trains_with_autograd_whose_gradients_reach_every_parameter():
    model = build_model("mlp-iwae", (1, 28, 28), 50, 200, "bernoulli")
    # the hand-derived CPU step covers it (tests/test_cpu_step.py); here, autograd's own step does too
    assert mlp_cpu_step.unsupported(model, torch.device("cpu"), "fp32") is None
    from vae_visdom.train.objectives import elbo_terms

    x = torch.bernoulli(torch.rand(5, 1, 28, 28))
    logits, mu, logvar = model(x)
    recon, kl = elbo_terms(logits, x, mu, logvar, "bernoulli", None)
    (recon + kl).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_burda_schedule_gives_the_paper_lr_at_its_stage_boundaries():
    assert BURDA_EPOCHS == 3280
    assert stage_ends(3280) == [1, 4, 13, 40, 121, 364, 1093, 3280]
    first = 1
    for i, last in enumerate(stage_ends(3280)):  # 3^i epochs at 1e-3 * 10^(-i/7)
        assert last - first + 1 == 3 ** i
        for epoch in (first, last):
            assert 1e-3 * lr_factor("burda", epoch) == pytest.approx(1e-3 * 10 ** (-i / 7), rel=1e-12)
        first = last + 1
    assert lr_factor("burda", 5000) == pytest.approx(1e-1)  # past the end: the last stage's
    assert lr_factor("constant", 77) == 1.0


@pytest.mark.parametrize("total", [8, 9, 60, 500, 1000])
def test_compressed_schedule_keeps_eight_growing_stages_in_the_given_epochs(total):
    ends = stage_ends(total)
    assert len(ends) == 8 and ends[0] >= 1 and ends[-1] == total
    lengths = [b - a for a, b in zip([0] + ends, ends)]
    assert lengths[0] >= 1 and lengths == sorted(lengths)
    assert lr_factor(f"burda:{total}", total) == pytest.approx(0.1)


def test_cosine_schedule_falls_from_the_given_lr_to_its_floor_in_e_epochs():
    assert lr_factor("cosine:101", 1) == 1.0
    assert lr_factor("cosine:101", 51) == pytest.approx((1 + 0.01) / 2)  # half way: half way between 1 and 0.01
    assert lr_factor("cosine:101", 101) == pytest.approx(0.01)
    assert lr_factor("cosine:101", 500) == pytest.approx(0.01)  # past the end: the floor
    assert lr_factor("cosine:101:0.1", 101) == pytest.approx(0.1)
    factors = [lr_factor("cosine:40", e) for e in range(1, 41)]
    assert factors == sorted(factors, reverse=True) and len(set(factors)) == 40


def test_enter_epoch_carries_a_live_change_through_the_cosine_schedule():
    opt = make_optimizer("adam", [torch.nn.Parameter(torch.zeros(2))], 1e-3)
    for epoch in range(1, 11):
        enter_epoch("cosine:21", opt, epoch)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * lr_factor("cosine:21", 10))
    opt.param_groups[0]["lr"] = 5e-4  # the panel, in epoch 10
    for epoch in range(11, 22):
        enter_epoch("cosine:21", opt, epoch)
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4 * 0.01 / lr_factor("cosine:21", 10))


def test_enter_epoch_rescales_the_lr_in_force_so_a_live_change_carries_through():
    opt = make_optimizer("adam", [torch.nn.Parameter(torch.zeros(2))], 1e-3)
    for epoch in range(1, 6):
        enter_epoch("burda", opt, epoch)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 10 ** (-2 / 7))  # epoch 5: the third stage
    opt.param_groups[0]["lr"] = 5e-4  # the panel, in epoch 5
    for epoch in range(6, 15):
        enter_epoch("burda", opt, epoch)
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4 * 10 ** (-1 / 7))  # epoch 14: one stage later


@pytest.mark.parametrize("raw,ok", [("constant", True), ("burda", True), (" burda:500 ", True), ("burda:8", True),
                                    ("burda:7", False), ("burda:", False), ("cosine", False), ("cosine:1", False),
                                    ("cosine:720", True), ("cosine:720:0.05", True), ("cosine:720:0", False),
                                    ("cosine:720:1.5", False), ("step", False), (3, False)])
def test_lr_schedule_follows_the_config_rules(raw, ok):
    if ok:
        assert parse_value("lr_schedule", raw) == raw.strip()
    else:
        with pytest.raises(ConfigError, match="lr_schedule: .*allowed: constant, burda.*cosine"):
            parse_value("lr_schedule", raw)
    with pytest.raises(ConfigError, match="lr_schedule"):
        TrainConfig(lr_schedule="step").validate()


def test_short_benchmark_run_follows_the_schedule_the_panel_and_a_resume(tmp_path, tiny_data):
    """The benchmark recipe in miniature: mlp-iwae, binarized, burda:8 (one epoch a stage), paper's Adam."""
    holder = {}
    changer = At(lambda rec: holder["s"].controller.submit("lr", "3e-4", source="test"), epoch_end=2)
    from tests.builders import make_session

    holder["s"] = session = make_session(tmp_path / "live", data=tiny_data, callbacks=[changer], epochs=4,
                                         model="mlp-iwae", binarize=True, lr_schedule="burda:8", views=False)
    session.run()
    lrs = [r["lr"] for r in metrics(tmp_path, "live")]
    f = [10 ** (-i / 7) for i in range(8)]
    assert lrs == pytest.approx([1e-3, 1e-3 * f[1], 3e-4 * f[3] / f[2], 3e-4 * f[4] / f[2]])
    assert all(g["eps"] == 1e-4 and g["betas"] == (0.9, 0.999) for g in session.trainer.optimizer.param_groups)
    assert all(math.isfinite(r["test_loss"]) for r in metrics(tmp_path, "live"))

    run(tmp_path, "resumed", tiny_data, epochs=2, model="mlp-iwae", binarize=True, lr_schedule="burda:8")
    run(tmp_path, "resumed", tiny_data, resume=True, overrides={"epochs": 4})
    run(tmp_path, "straight", tiny_data, epochs=4, model="mlp-iwae", binarize=True, lr_schedule="burda:8")
    assert [r["lr"] for r in metrics(tmp_path, "resumed")] == [r["lr"] for r in metrics(tmp_path, "straight")]


def test_k5000_in_chunks_equals_one_chunk_on_real_binarized_mnist(mnist):
    torch.manual_seed(0)
    model = build_model("mlp-iwae", (1, 28, 28), 50, 200, "bernoulli")
    x = mnist.test[:3]
    per_pair = floats_per_pair(model, torch.device("cpu"))
    gen = lambda: torch.Generator().manual_seed(11)  # noqa: E731
    whole = iw_log_likelihood(model, x, 5000, binarize=True, generator=gen(), max_floats=3 * 5000 * (50 + per_pair))
    chunked = iw_log_likelihood(model, x, 5000, binarize=True, generator=gen(), max_floats=5000 * 50 + 700 * per_pair)
    assert (whole.examples_per_batch, whole.samples_per_chunk) == (3, 5000)
    assert chunked.examples_per_batch == 1 and chunked.samples_per_chunk == 700
    torch.testing.assert_close(chunked.per_example, whole.per_example, atol=1e-4, rtol=0)
    torch.testing.assert_close(chunked.per_example_elbo, whole.per_example_elbo, atol=1e-4, rtol=0)
    assert torch.all(whole.per_example >= whole.per_example_elbo)


def test_progress_bar_counts_the_images_scored_on_stderr(capsys):
    model = MLPVAE(latent_dim=4, hidden_dims=(8, 8), activation="tanh")
    x = (torch.rand(6, 1, 28, 28) * 255).to(torch.uint8)
    quiet = iw_log_likelihood(model, x, 50, generator=torch.Generator().manual_seed(2))
    assert capsys.readouterr().err == ""
    shown = iw_log_likelihood(model, x, 50, generator=torch.Generator().manual_seed(2), progress=True, batch_size=2)
    err = capsys.readouterr().err
    assert "IW K=50" in err and "6/6" in err
    torch.testing.assert_close(shown.per_example, quiet.per_example, atol=0, rtol=0)  # the bar changes nothing


class InterruptedAt(MLPVAE):
    """Raises KeyboardInterrupt (Ctrl-C) on its `at`-th encode: the third batch of images, say."""

    def __init__(self, at):
        super().__init__(latent_dim=4, hidden_dims=(8, 8), activation="tanh")
        self.at, self.calls = at, 0

    def encode(self, x):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return super().encode(x)


def test_ctrl_c_keeps_the_images_scored_so_far_equal_to_a_limited_run():
    torch.manual_seed(0)
    model = InterruptedAt(at=3)
    x = (torch.rand(6, 1, 28, 28) * 255).to(torch.uint8)
    cut = iw_log_likelihood(model, x, 50, batch_size=2, generator=torch.Generator().manual_seed(4),
                            partial_on_interrupt=True)
    assert (cut.n, cut.n_requested) == (4, 6)
    assert "interrupted: the first 4 of 6 images" in format_result(cut)
    model.at = 0  # never again
    limited = iw_log_likelihood(model, x[:4], 50, batch_size=2, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(cut.per_example, limited.per_example, atol=0, rtol=0)
    assert cut.log_likelihood == limited.log_likelihood and "interrupted" not in format_result(limited)
    model.calls, model.at = 0, 2
    with pytest.raises(KeyboardInterrupt):  # by default Ctrl-C is Ctrl-C
        iw_log_likelihood(model, x, 50, batch_size=2, generator=torch.Generator().manual_seed(4))


def _tiny_run_dir(path):
    cfg = with_model_defaults(TrainConfig(dataset="mnist", model="mlp-iwae", latent_dim=4, hidden_dim=8, seed=3))
    path.mkdir()
    (path / "config.json").write_text(cfg.to_json())
    torch.manual_seed(0)
    model = MLPVAE(latent_dim=4, hidden_dims=(8, 8), activation="tanh")
    torch.save({"model": model.state_dict(), "epoch": 1}, path / "checkpoint.pt")
    return path


def test_shuffle_scores_a_seeded_random_subset(tmp_path, mnist):
    from vae_visdom.insight.eval_run import evaluate_run, load_trained

    run_dir = _tiny_run_dir(tmp_path / "run")
    r = evaluate_run(run_dir, k=20, binarize=True, device="cpu", limit=30, shuffle=True)
    _, model, _ = load_trained(run_dir)
    picked = mnist.test[torch.randperm(10000, generator=torch.Generator().manual_seed(3))[:30]]
    ref = iw_log_likelihood(model, picked, 20, binarize=True, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(r.per_example, ref.per_example, atol=0, rtol=0)
    first = evaluate_run(run_dir, k=20, binarize=True, device="cpu", limit=30)
    assert not torch.equal(first.per_example, r.per_example)
    assert json.loads((run_dir / "eval.json").read_text())["order"] == "given"


def test_ctrl_c_on_a_background_eval_writes_the_partial_estimate(tmp_path, mnist):
    run_dir = _tiny_run_dir(tmp_path / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "vae_visdom", "eval", str(run_dir), "--iw-samples", "3000", "--batch-size", "1",
           "--shuffle", "--device", "cpu"]
    # started the way a shell starts a background job: SIGINT ignored
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    seen = b""
    try:
        while not re.search(rb" [1-9][0-9]*/10000", seen):
            chunk = os.read(proc.stderr.fileno(), 4096)
            assert chunk, f"eval ended early: {seen[-300:]!r}"
            seen += chunk
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0
    record = json.loads((run_dir / "eval.json").read_text())
    assert 1 <= record["n"] < record["n_requested"] == 10000 and record["order"] == "random"
    assert f"the first {record['n']} of 10000 images" in out.decode()
