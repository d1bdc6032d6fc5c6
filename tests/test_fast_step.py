"""The captured CUDA step (vae_visdom/train/graph_step.py) and the epoch-time benchmark (benchmarks/epoch_time.py)."""
import copy
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.builders import make_session
from tests.conftest import synthetic_data
from vae_visdom.models import build_model
from vae_visdom.train import checkpoint
from vae_visdom.train import step as step_module
from vae_visdom.train.graph_step import make_step
from vae_visdom.train.step import prepare_optimizer
from vae_visdom.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "epoch_time.py"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device: the captured step only exists on a GPU")


def load_benchmark():
    spec = importlib.util.spec_from_file_location("epoch_time", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def twin_setups(device, model_name="mlp", shape=(1, 28, 28)):
    """Two identical models with identical Adam optimizers on `device`."""
    torch.manual_seed(0)
    a = build_model(model_name, shape, 20, 64, "bernoulli").to(device)
    b = build_model(model_name, shape, 20, 64, "bernoulli").to(device)
    b.load_state_dict(a.state_dict())
    return (a, torch.optim.Adam(a.parameters(), lr=1e-3)), (b, torch.optim.Adam(b.parameters(), lr=1e-3))


def eager_step(model, optimizer):
    """The eager autograd step (step.py) over (model, optimizer), fp32, beta 1: the ELBO."""
    import contextlib

    return step_module.eager_step(model, optimizer, contextlib.nullcontext)


# -- CPU: the captured step does not exist, and nothing changes ----------------------------------------------

def test_make_step_on_cpu_returns_none_and_leaves_the_optimizer_alone():
    (model, opt), _ = twin_setups("cpu")
    before = [dict((k, v) for k, v in g.items() if k != "params") for g in opt.param_groups]
    assert make_step(model, opt, "bernoulli", 32, torch.device("cpu")) is None
    assert [dict((k, v) for k, v in g.items() if k != "params") for g in opt.param_groups] == before


def run_session(tmp_path, name, fast_step):
    session = make_session(tmp_path / name, data=synthetic_data(n_train=200, n_test=64), epochs=2, batch_size=48,
                           log_interval=3, device="cpu", fast_step=fast_step)
    status = session.run()
    return session, status


def test_cpu_training_with_graph_is_the_eager_step_and_auto_the_hand_derived_one(tmp_path):
    """fast_step=graph on CPU (no CUDA graph there) trains exactly as the eager step: same weights, bit for
    bit. auto takes the hand-derived MLP step (tests/test_cpu_step.py compares it with autograd)."""
    from vae_visdom.train.mlp_cpu_step import MLPStep

    runs = {mode: run_session(tmp_path, mode, mode) for mode in ("eager", "auto", "graph")}
    for mode, (session, status) in runs.items():
        assert status.state == "finished", mode
        if mode == "auto":
            assert isinstance(session.trainer.step_fn, MLPStep)
        else:
            assert getattr(session.trainer.step_fn, "__func__", None) is Trainer._eager_step, mode
    ref = checkpoint.load(tmp_path / "eager")["model"]
    got = checkpoint.load(tmp_path / "graph")["model"]
    for k in ref:
        assert torch.equal(ref[k], got[k]), k


def test_prepare_optimizer_lets_a_gpu_checkpoint_resume_on_cpu():
    """A captured GPU run saves capturable=True; Adam refuses that on CPU until prepare_optimizer resets it."""
    (model_a, opt_a), (model_b, opt_b) = twin_setups("cpu")
    x = torch.rand(16, 1, 28, 28)
    for model, opt in ((model_a, opt_a), (model_b, opt_b)):
        torch.manual_seed(3)
        eager_step(model, opt)(x)
    state = opt_b.state_dict()
    for group in state["param_groups"]:
        group["capturable"] = True  # what a checkpoint written by the captured step holds
    opt_b.load_state_dict(state)
    torch.manual_seed(4)
    with pytest.raises((RuntimeError, AssertionError), match="capturable"):
        eager_step(model_b, opt_b)(x)
    prepare_optimizer(opt_b, capturable=False)
    for model, opt in ((model_a, opt_a), (model_b, opt_b)):
        torch.manual_seed(5)
        eager_step(model, opt)(x)
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(pa, pb)


# -- CUDA: the captured step gives the eager step's numbers --------------------------------------------------

@needs_cuda
@pytest.mark.parametrize("model_name,shape", [("mlp", (1, 28, 28)), ("conv", (1, 28, 28))])
def test_captured_step_matches_the_eager_step(model_name, shape):
    dev = torch.device("cuda")
    (ma, oa), (mb, ob) = twin_setups(dev, model_name, shape)
    eager = eager_step(ma, oa)
    captured = make_step(mb, ob, "bernoulli", 32, dev, fallback=eager_step(mb, ob))
    assert captured is not None
    g = torch.Generator().manual_seed(1)
    batches = [torch.rand(32, *shape, generator=g) for _ in range(6)] + [torch.rand(7, *shape, generator=g)]
    batches += [torch.rand(32, *shape, generator=g) for _ in range(3)]
    for i, x in enumerate(batches):
        if i == 4:  # a live lr change (control panel) must reach the captured graph
            for opt in (oa, ob):
                opt.param_groups[0]["lr"] = 3e-3
        x = x.to(dev)
        torch.cuda.manual_seed(100 + i)
        want = eager(x)
        torch.cuda.manual_seed(100 + i)
        got = captured(x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3, msg=f"step {i}")
    for pa, pb in zip(ma.parameters(), mb.parameters()):
        torch.testing.assert_close(pb, pa, rtol=1e-4, atol=1e-5)
    assert (captured.captures, captured.replays, captured.fallbacks) == (1, 9, 1)
    assert isinstance(ob.param_groups[0]["lr"], float)  # checkpoints and the status pane see a float


@needs_cuda
def test_captured_step_recaptures_after_the_optimizer_state_is_replaced():
    """A resume loads new optimizer state tensors: replaying the old graph would update stale ones."""
    dev = torch.device("cuda")
    (ma, oa), (mb, ob) = twin_setups(dev)
    eager = eager_step(ma, oa)
    captured = make_step(mb, ob, "bernoulli", 16, dev)
    x = torch.rand(16, 1, 28, 28, device=dev)
    for i in range(5):
        if i == 3:
            for opt in (oa, ob):  # what a resume does: state read back from a checkpoint file
                opt.load_state_dict(copy.deepcopy(opt.state_dict()))
        torch.cuda.manual_seed(i)
        eager(x)
        torch.cuda.manual_seed(i)
        captured(x)
    assert captured.captures == 2
    assert all(s["step"].item() == 5 for s in ob.state.values())
    for pa, pb in zip(ma.parameters(), mb.parameters()):
        torch.testing.assert_close(pb, pa, rtol=1e-4, atol=1e-5)


# -- the benchmark -------------------------------------------------------------------------------------------

def test_seed_dataset_matches_torchvision_mnist(mnist):
    """The seed's data path is torchvision's MNIST item by item: same tensors from the same bytes."""
    from vae_visdom.data import default_cache_dir
    from vae_visdom.data.mnist_sources import import_torchvision

    tv = import_torchvision()
    if not (default_cache_dir() / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.skip("MNIST raw files not in the app cache")
    reference = tv.datasets.MNIST(str(default_cache_dir()), train=True, download=False,
                                  transform=tv.transforms.ToTensor())
    ours = load_benchmark().PILDataset(mnist.train, mnist.train_labels)
    for i in (0, 1, 12345, len(reference) - 1):
        (xa, ya), (xb, yb) = reference[i], ours[i]
        assert ya == yb and xa.dtype == xb.dtype and torch.equal(xa, xb), i


@pytest.mark.slow
def test_benchmark_runs_and_both_loops_learn_the_same(mnist):
    out = subprocess.run([sys.executable, str(BENCH), "--device", "cpu", "--epochs", "1", "--limit", "2000"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert re.fullmatch(r"speedup: \d+\.\d\d", lines[-1]), lines[-1]
    rows = {m.group(1): (float(m.group(2)), float(m.group(3)))
            for m in (re.match(r"\s*1\s+(ours|seed)\s+[\d.]+\s+\d+\s+([\d.]+)\s+([\d.]+)$", line) for line in lines)
            if m}
    assert set(rows) == {"ours", "seed"}, out.stdout
    # same data, same model, same objective: the epoch's losses agree (different shuffles and noise only)
    for (train_o, test_o), (train_s, test_s) in [(rows["ours"], rows["seed"])]:
        assert abs(train_o - train_s) / train_s < 0.03
        assert abs(test_o - test_s) / test_s < 0.03


@pytest.mark.slow
def test_benchmark_streaming_mode_measures_visdom_off_and_on(mnist):
    out = subprocess.run([sys.executable, str(BENCH), "--device", "cpu", "--epochs", "2", "--limit", "2000",
                          "--streaming", "--streaming-block", "1", "--streaming-rounds", "1"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    for what in ("training seconds", "whole epoch with a synchronous flush", "whole run"):
        assert re.search(rf"streaming overhead, {what}.*: [+-]\d+\.\d%", text), (what, text[-1500:])
    assert len(re.findall(r"^\s+\d+\s+visdom (off|on)\s", text, re.M)) == 4  # 2 epochs each, alternating
    assert re.search(r"^speedup: \d+\.\d\d$", text, re.M)
