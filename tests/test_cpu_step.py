"""The hand-derived CPU step of the fully connected VAE (vae_visdom/train/mlp_cpu_step.py) against autograd."""
import contextlib
import copy
import json

import pytest
import torch

from tests.builders import make_session
from tests.conftest import synthetic_data
from vae_visdom.models import build_model
from vae_visdom.train.mlp_cpu_step import MLPStep, unsupported
from vae_visdom.train.step import backward_and_step


def twins(model_name: str, hidden: int = 64, latent: int = 5, optimizer: str = "adam"):
    torch.manual_seed(0)
    a = build_model(model_name, (1, 28, 28), latent, hidden, "bernoulli")
    b = copy.deepcopy(a)
    make = (lambda m: torch.optim.Adam(m.parameters(), lr=1e-3, fused=True)) if optimizer == "adam" else \
        (lambda m: torch.optim.Adagrad(m.parameters(), lr=1e-2))
    return (a, make(a)), (b, make(b))


@pytest.mark.parametrize("model_name,optimizer", [("mlp", "adam"), ("mlp-paper", "adagrad")])
def test_gradients_losses_and_steps_equal_autograd(model_name, optimizer):
    (ma, oa), (mb, ob) = twins(model_name, optimizer=optimizer)
    step = MLPStep(mb, ob)
    x_all = torch.rand(200, 1, 28, 28)
    for i, batch in enumerate((64, 64, 7, 64)):  # a short batch and a size change on the way
        x = x_all[i * 40:i * 40 + batch]
        oa.zero_grad(set_to_none=True)
        torch.manual_seed(100 + i)
        want = backward_and_step(ma, oa, x, contextlib.nullcontext)
        torch.manual_seed(100 + i)  # the same z draws
        got = step(x)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-3)
        for (name, pa), pb in zip(ma.named_parameters(), mb.parameters()):
            torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-4, atol=1e-5, msg=f"{name} grad, step {i}")
            torch.testing.assert_close(pb, pa, rtol=1e-5, atol=5e-5, msg=f"{name}, step {i}")  # Adam: lr-sized steps


def test_gradients_replaced_by_someone_else_are_taken_back():
    """An eager step in between (zero_grad(set_to_none=True) gives new .grad tensors) must not leave the
    hand-derived step writing into buffers the optimizer no longer reads."""
    (ma, oa), (mb, ob) = twins("mlp")
    step = MLPStep(mb, ob)
    x = torch.rand(32, 1, 28, 28)
    for i, kind in enumerate(("fast", "eager", "fast")):
        oa.zero_grad(set_to_none=True)
        torch.manual_seed(i)
        backward_and_step(ma, oa, x, contextlib.nullcontext)
        torch.manual_seed(i)
        if kind == "fast":
            step(x)
        else:
            ob.zero_grad(set_to_none=True)
            backward_and_step(mb, ob, x, contextlib.nullcontext)
    for pa, pb in zip(ma.parameters(), mb.parameters()):
        torch.testing.assert_close(pb, pa, rtol=1e-5, atol=5e-5)


def test_the_trainer_uses_it_on_the_cpu_only_where_it_applies(tmp_path):
    def step_of(**kw):
        return make_session(tmp_path / str(len(kw)), data=synthetic_data(256, 64), epochs=1, device="cpu",
                            **kw).trainer.step_fn

    assert isinstance(step_of(), MLPStep)
    assert isinstance(step_of(model="mlp-paper"), MLPStep)
    assert not isinstance(step_of(fast_step="eager"), MLPStep)
    assert not isinstance(step_of(model="conv"), MLPStep)
    conv = build_model("conv", (1, 28, 28), 20, 400, "bernoulli")
    assert "fully connected" in unsupported(conv, torch.device("cpu"), "fp32")
    mlp = build_model("mlp", (1, 28, 28), 20, 400, "bernoulli")
    assert "fp32" in unsupported(mlp, torch.device("cpu"), "bf16")
    assert unsupported(mlp, torch.device("cpu"), "fp32") is None


def test_an_epoch_learns_the_same_as_the_eager_step(tmp_path):
    """Whole epochs of the real trainer: the same losses as autograd's step, to float rounding."""
    losses = {}
    for kind in ("auto", "eager"):
        session = make_session(tmp_path / kind, data=synthetic_data(1024, 256), epochs=2, device="cpu",
                               fast_step=kind, batch_size=64, hidden_dim=128, views=False)
        assert isinstance(session.trainer.step_fn, MLPStep) == (kind == "auto")
        session.run()
        records = [json.loads(line) for line in (tmp_path / kind / "metrics.jsonl").read_text().splitlines()]
        losses[kind] = [(r["train_loss"], r["test_loss"]) for r in records]
    assert len(losses["auto"]) == len(losses["eager"]) == 2
    for (ta, va), (te, ve) in zip(losses["auto"], losses["eager"]):
        assert ta == pytest.approx(te, rel=1e-4) and va == pytest.approx(ve, rel=1e-4)


@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_the_deeper_models_step_equals_autograd_also_with_a_kl_weight(beta):
    """mlp-iwae (two tanh layers each side, the same MLPStep): losses, gradients and Adam's steps
    against autograd's, with the ELBO and with beta != 1; a short batch on the way; the trainer takes it."""
    from vae_visdom.train.kl_weight import KLWeight

    (ma, oa), (mb, ob) = twins("mlp-iwae", hidden=32, latent=6)
    kl = KLWeight(beta, 0)
    step = MLPStep(mb, ob, kl)
    x_all = torch.bernoulli(torch.rand(200, 1, 28, 28))
    for i, batch in enumerate((64, 64, 7, 64)):
        x = x_all[i * 40:i * 40 + batch]
        oa.zero_grad(set_to_none=True)
        torch.manual_seed(100 + i)
        want = backward_and_step(ma, oa, x, contextlib.nullcontext, None if beta == 1.0 else beta)
        torch.manual_seed(100 + i)
        got = step(x)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-3)
        for (name, pa), pb in zip(ma.named_parameters(), mb.parameters()):
            torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-4, atol=1e-5, msg=f"{name} grad, step {i}")
            torch.testing.assert_close(pb, pa, rtol=1e-5, atol=5e-5, msg=f"{name}, step {i}")


def test_the_trainer_takes_the_deeper_step_for_mlp_iwae_on_the_cpu(tmp_path):
    def step_of(**kw):
        return make_session(tmp_path / str(len(kw)), data=synthetic_data(256, 64), model="mlp-iwae", epochs=1,
                            device="cpu", **kw).trainer.step_fn

    assert isinstance(step_of(), MLPStep)
    assert not isinstance(step_of(fast_step="eager"), MLPStep)


class OneLayerMLPVAE(torch.nn.Module):
    """The fully connected VAE as it was written before mlp-iwae's model joined it: fc1..fc4, the layout of
    every checkpoint an mlp or mlp-paper run saved until then."""

    def __init__(self, hidden: int, latent: int):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = (torch.nn.Linear(784, hidden), torch.nn.Linear(hidden, latent),
                                          torch.nn.Linear(hidden, latent))
        self.fc3, self.fc4 = torch.nn.Linear(latent, hidden), torch.nn.Linear(hidden, 784)

    def encode(self, x):
        h = torch.relu(self.fc1(x.flatten(1)))
        return self.fc21(h), self.fc22(h)

    def decode(self, z):
        return self.fc4(torch.relu(self.fc3(z))).view(-1, 1, 28, 28)


def test_a_checkpoint_of_the_old_one_layer_layout_loads_and_computes_the_same(tmp_path):
    """An mlp run's checkpoint from before the merge (fc1.weight, ..., fc4.bias) loads into today's MLPVAE,
    strictly, and encodes and decodes exactly as the old class did; a seed builds the same initial weights."""
    torch.manual_seed(5)
    old = OneLayerMLPVAE(32, 4)
    torch.save({"model": old.state_dict()}, tmp_path / "checkpoint.pt")
    torch.manual_seed(5)
    new = build_model("mlp", (1, 28, 28), 4, 32, "bernoulli")
    for (name, p_old), p_new in zip(old.named_parameters(), new.parameters()):
        torch.testing.assert_close(p_new, p_old, rtol=0, atol=0, msg=f"{name}: the seed's initial weights")
    fresh = build_model("mlp", (1, 28, 28), 4, 32, "bernoulli")
    fresh.load_state_dict(torch.load(tmp_path / "checkpoint.pt")["model"])  # strict: no key missing or left
    x, z = torch.rand(3, 1, 28, 28), torch.randn(3, 4)
    with torch.no_grad():
        for got, want in zip(fresh.encode(x), old.encode(x)):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
        torch.testing.assert_close(fresh.decode(z), old.decode(z), rtol=0, atol=0)
    assert sorted(fresh.state_dict()) == sorted(new.state_dict())  # saved again, it saves today's names
