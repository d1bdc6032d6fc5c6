"""The KL weight beta and its warm-up: the step's gradient, the records, the panel, the rules."""
from __future__ import annotations

import contextlib
import copy
import math
import threading

import pytest
import torch

from tests.builders import make_config, make_session
from tests.conftest import synthetic_data
from tests.fixtures import until
from tests.test_panel import page  # noqa: F401  (the fixture: a browser page's websocket)
from vae_visdom.config import ConfigError, TrainConfig, parse_value
from vae_visdom.models import build_model
from vae_visdom.runs.files import read_jsonl
from vae_visdom.train.controller import Controller
from vae_visdom.train.kl_weight import KLWeight
from vae_visdom.train.mlp_cpu_step import MLPStep
from vae_visdom.train.step import backward_and_step


def test_warm_up_rises_linearly_from_zero_and_a_typed_beta_is_its_new_end():
    kl = KLWeight(4.0, warmup=100)
    assert [kl.at(s) for s in (0, 25, 50, 100, 1000)] == [0.0, 1.0, 2.0, 4.0, 4.0]
    assert kl.weighted and kl.current == 0.0
    kl.set_beta(2.0, 50)
    assert kl.current == 1.0 and kl.at(100) == 2.0
    plain = KLWeight()
    assert plain.advance(10) == 1.0 and not plain.weighted


@pytest.mark.parametrize("beta", [0.0, 0.5, 4.0])
def test_the_hand_derived_step_takes_autograds_gradient_of_recon_plus_beta_kl(beta):
    torch.manual_seed(0)
    ma = build_model("mlp", (1, 28, 28), 5, 64, "bernoulli")
    mb = copy.deepcopy(ma)
    oa, ob = (torch.optim.SGD(m.parameters(), lr=1e-3) for m in (ma, mb))
    step = MLPStep(mb, ob, KLWeight(beta))
    x = torch.rand(32, 1, 28, 28)
    torch.manual_seed(7)
    want = backward_and_step(ma, oa, x, contextlib.nullcontext, beta)
    torch.manual_seed(7)
    got = step(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-3)  # the -ELBO, not the objective
    for (name, pa), pb in zip(ma.named_parameters(), mb.parameters()):
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-4, atol=1e-5, msg=name)
    # and the gradient does depend on beta: the encoder's mean layer feels the KL term
    mc = copy.deepcopy(ma)
    torch.manual_seed(7)
    backward_and_step(mc, torch.optim.SGD(mc.parameters(), lr=0.0), x, contextlib.nullcontext, beta + 1.0)
    assert not torch.allclose(mc.fc_mu.weight.grad, ma.fc_mu.weight.grad)


def test_beta_one_is_the_elbo_bit_for_bit():
    torch.manual_seed(0)
    ma = build_model("mlp", (1, 28, 28), 5, 64, "bernoulli")
    mb = copy.deepcopy(ma)
    sa = MLPStep(ma, torch.optim.Adam(ma.parameters()))
    sb = MLPStep(mb, torch.optim.Adam(mb.parameters()), KLWeight(1.0))
    x = torch.rand(32, 1, 28, 28)
    for i in range(3):
        torch.manual_seed(i)
        a = sa(x)
        torch.manual_seed(i)
        assert torch.equal(sb(x), a)
    assert all(torch.equal(p, q) for p, q in zip(ma.parameters(), mb.parameters()))


def run(tmp_path, name, **kw):
    make_session(tmp_path / name, epochs=2, device="cpu", batch_size=64, hidden_dim=64, latent_dim=5, views=False,
                 log_interval=2, **kw).run()
    return read_jsonl(tmp_path / name / "metrics.jsonl"), read_jsonl(tmp_path / name / "steps.jsonl")


@pytest.mark.parametrize("fast_step", ["auto", "eager"])
def test_the_kl_term_answers_beta_and_the_records_carry_it(tmp_path, fast_step):
    rows = {b: run(tmp_path, f"b{b}-{fast_step}", beta=b, fast_step=fast_step) for b in (0.2, 1.0, 8.0)}
    kls = [rows[b][0][-1]["train_kl"] for b in (0.2, 1.0, 8.0)]
    assert kls[0] > kls[1] > kls[2], kls  # a heavier KL weight, a smaller KL
    metrics, steps = rows[8.0]
    assert [r["beta"] for r in metrics] == [8.0, 8.0] and all(s["beta"] == 8.0 for s in steps)
    s = steps[-1]
    assert s["objective"] == pytest.approx(s["recon"] + 8.0 * s["kl"], rel=1e-5)
    assert metrics[-1]["train_objective"] == pytest.approx(metrics[-1]["train_recon"] + 8 * metrics[-1]["train_kl"],
                                                           rel=1e-5)
    assert all(s["objective"] is None and s["beta"] == 1.0 for s in rows[1.0][1])


def test_warm_up_reaches_the_step_records(tmp_path):
    _, steps = run(tmp_path, "warm", beta=2.0, kl_warmup=12)  # 8 steps an epoch, logged every 2
    betas = [s["beta"] for s in steps]
    assert betas[0] == pytest.approx(2.0 * 1 / 12) and betas == sorted(betas) and betas[-1] == 2.0
    assert betas[4] == pytest.approx(2.0 * 9 / 12)


@pytest.mark.parametrize("raw", ["-1", "nan", "inf", "abc", "", "1e9", "0x1p3"])
def test_bad_betas_are_refused_with_one_line(raw):
    with pytest.raises(ConfigError) as err:
        parse_value("beta", raw)
    assert "allowed: a number from 0 to 1000" in str(err.value) and "\n" not in str(err.value)
    cmd = Controller().submit("beta", raw)
    assert not cmd.accepted and cmd.message.startswith("rejected: beta")
    with pytest.raises(ConfigError):
        TrainConfig(beta=raw).validate()
    assert parse_value("kl_warmup", "0") == 0
    with pytest.raises(ConfigError):
        parse_value("kl_warmup", "-5")


def test_a_beta_sent_as_the_browser_sends_it_is_applied_and_marked(server, page, tmp_path):  # noqa: F811
    from tests.test_monitor import window_data
    from vae_visdom.monitor.panel import ROWS

    session = make_session(tmp_path / "live", server=server, env="betalive", data=synthetic_data(512, 64), epochs=3,
                           device="cpu", batch_size=64, hidden_dim=32, latent_dim=4, views=False, log_interval=2)
    session.controller.pause()
    done = threading.Thread(target=session.run)
    done.start()
    try:
        until(lambda: session.monitor.wait_connected(0.1) and session.monitor.flush(5), "the panel on the server", 30)
        page(session.monitor.windows["control"], "betalive", ROWS.index("beta"), "3")
        until(lambda: any(e["name"] == "beta" for e in read_jsonl(tmp_path / "live" / "events.jsonl")),
              "the beta command applied", 20)
    finally:
        session.controller.submit("resume", source="test")
        done.join(120)
    (ev,) = [e for e in read_jsonl(tmp_path / "live" / "events.jsonl") if e["name"] == "beta"]
    assert ev["accepted"] and ev["value"] == 3.0 and ev["source"] == "panel"
    steps = read_jsonl(tmp_path / "live" / "steps.jsonl")
    assert all(s["beta"] == 3.0 and s["objective"] is not None for s in steps)
    loss = {t["name"]: t for t in window_data(server, "betalive")[session.monitor.windows["loss"]]["content"]["data"]}
    assert "beta 1 -> 3" in loss["changes"]["text"]
    objective = loss["train objective: recon + beta KL (every log interval)"]
    assert len(objective["y"]) == len(steps) and not math.isnan(objective["y"][-1])


def test_sweep_takes_a_list_of_betas_under_the_same_rules():
    from vae_visdom.sweep import GRID, parse_list

    assert GRID["beta"] == "--beta" and parse_list("beta", "0.5, 1,2,4") == [0.5, 1.0, 2.0, 4.0]
    with pytest.raises(ConfigError, match="beta"):
        parse_list("beta", "1,-2")


def test_a_run_stopped_mid_epoch_resumes_with_its_beta_and_objective(tmp_path):
    from vae_visdom.train.events import Callback

    def session(name, resume=False, **kw):
        cfg = make_config(tmp_path / name, epochs=2, device="cpu", batch_size=64, hidden_dim=32, latent_dim=4,
                          views=False, log_interval=2, beta=1.0, **kw)
        return make_session(cfg=cfg, data=synthetic_data(512, 64), resume=resume)  # a resume on this same config

    class StopAt(Callback):
        def __init__(self, controller):
            self.controller = controller

        def on_step(self, log):
            if log.step == 6 and not self.controller.stop_requested:
                self.controller.submit("beta", "3", source="test")  # a live change, then a stop mid-epoch
                self.controller.stop(source="test")

    whole = session("whole")
    whole.controller.submit("beta", "3", source="test")  # applied at the first step: differs from `cut`
    cut = session("cut")
    cut.trainer.add_callback(StopAt(cut.controller))
    assert cut.run().state == "stopped"
    resumed = session("cut", resume=True)
    assert resumed.trainer.kl.beta == 3.0  # from the checkpoint
    assert resumed.run().state == "finished"
    rows = read_jsonl(tmp_path / "cut" / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["beta"] == 3.0
    steps = read_jsonl(tmp_path / "cut" / "steps.jsonl")
    assert [s["beta"] for s in steps] == [1.0, 1.0, 1.0, 3.0] + [3.0] * 4  # 8 steps an epoch, logged every 2
    assert steps[0]["objective"] is None
    assert steps[3]["objective"] == pytest.approx(steps[3]["recon"] + 3 * steps[3]["kl"])
    for r in rows:  # the epoch's objective is its intervals' (2 steps of 64 each), across the stop and the resume
        intervals = [s for s in steps if s["epoch"] == r["epoch"]]
        want = sum(s["loss"] if s["objective"] is None else s["objective"] for s in intervals) / len(intervals)
        assert r["train_objective"] == pytest.approx(want, rel=1e-5)
    whole.run()
