"""The convolutional VAEs' CPU step (vae_visdom/train/conv_cpu_step.py): channels_last, compiled only when it pays."""
import copy
import json

import pytest
import torch

from tests.builders import make_session
from vae_visdom.data import ImageData, load_dataset
from vae_visdom.models import build_model
from vae_visdom.train import conv_cpu_step
from vae_visdom.train.choose_step import describe_step
from vae_visdom.train.events import Callback


@pytest.fixture(scope="module")
def mnist_subset():
    data = load_dataset("mnist")
    return ImageData("mnist", data.train[:1024].clone(), data.test[:256].clone(), source="MNIST, first 1024/256")


class Announced(Callback):
    def __init__(self):
        self.run = None

    def on_run_start(self, run) -> None:
        self.run = run


def test_a_conv_run_learns_the_same_as_eager_fp32(tmp_path, mnist_subset):
    """Whole epochs of the real trainer on real MNIST: the channels_last step's test losses are the eager
    fp32 step's within noise (other rounding in the convolutions, so not bit for bit)."""
    losses = {}
    for kind in ("auto", "eager"):
        session = make_session(tmp_path / kind, data=mnist_subset, dataset="mnist", model="conv", epochs=3,
                               device="cpu", fast_step=kind, batch_size=64, hidden_dim=64, views=False)
        step = session.trainer.step_fn
        assert isinstance(step, conv_cpu_step.ConvStep) == (kind == "auto"), describe_step(step)
        session.run()
        records = [json.loads(line) for line in (tmp_path / kind / "metrics.jsonl").read_text().splitlines()]
        losses[kind] = [r["test_loss"] for r in records]
    assert len(losses["auto"]) == 3
    for got, want in zip(losses["auto"], losses["eager"]):
        assert got == pytest.approx(want, rel=0.01), losses
    assert losses["auto"][-1] < losses["auto"][0]  # it learns


def test_auto_does_not_compile_a_short_run_and_says_so_in_the_run_pane(tmp_path):
    data = load_dataset("orl")
    seen = Announced()
    session = make_session(tmp_path, data=data, callbacks=[seen], dataset="orl", model="conv64", epochs=10,
                           device="cpu")
    step = session.trainer.step_fn
    assert isinstance(step, conv_cpu_step.ConvStep) and step.compiled is None
    session.announce()
    assert "step: channels_last, eager autograd (auto: " in seen.run.device
    session.close()


def test_auto_compiles_only_where_the_run_is_long_enough_to_pay(monkeypatch):
    """Twice the compile's cost in saved seconds: with the measured saving (none on the project's CPU) never;
    with a saving of 0.1 ms an image, a 10-epoch ORL run (3,600 images) still never, 10 MNIST epochs yes."""
    assert not conv_cpu_step.compile_pays("conv", 10 ** 9)
    monkeypatch.setitem(conv_cpu_step.COMPILE_SAVING_S_PER_IMAGE, "conv64", 1e-4)
    monkeypatch.setitem(conv_cpu_step.COMPILE_SAVING_S_PER_IMAGE, "conv", 1e-4)
    monkeypatch.setattr(conv_cpu_step, "COMPILE_COST_S", 25.0)
    assert not conv_cpu_step.compile_pays("conv64", 3_600)
    assert conv_cpu_step.compile_pays("conv", 600_000)
    assert not conv_cpu_step.compile_pays("conv", None)
    assert not conv_cpu_step.compile_pays("mlp", 10 ** 9)
    assert conv_cpu_step.describe(False, "auto", 3_600, conv_cpu_step.compile_pays_from("conv64")) == (
        "channels_last, eager autograd (auto: 3,600 images left to train; a compile pays from 500,000)")


def test_adam_moments_follow_the_weights_into_channels_last():
    """Fused Adam reads a weight and its moments as flat memory: converting the weights mid-run must
    convert the moments too, or the update lands on the wrong elements."""
    torch.manual_seed(0)
    a = build_model("conv", (1, 28, 28), 4, 16, "bernoulli")
    b = copy.deepcopy(a)
    oa, ob = (torch.optim.Adam(m.parameters(), lr=1e-2, fused=True) for m in (a, b))
    x = torch.rand(8, 1, 28, 28)
    for i in range(3):
        if i == 1:
            conv_cpu_step.to_channels_last(b, ob)
            assert b.encoder[0].weight.is_contiguous(memory_format=torch.channels_last)
        for m, o in ((a, oa), (b, ob)):
            o.zero_grad(set_to_none=True)
            torch.manual_seed(i)
            logits, mu, logvar = m(x)
            (logits.square().sum() + mu.square().sum() + logvar.square().sum()).backward()
            o.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pb, pa, rtol=1e-3, atol=1e-4)  # other rounding; misaligned: ~lr (1e-2) off
