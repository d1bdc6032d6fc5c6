"""Where a convolutional VAE's epoch goes on this device: one table of phases, seconds per epoch.

Trains `--epochs` epochs of the real Trainer (built by TrainingSession, the run files on, visdom off)
and splits each epoch's wall time into the phases of a step (batch assembly, forward + ELBO, backward,
optimizer), the test pass, and what runs after it (the run files' images and rows, the checkpoint).
The phases of a step are timed by hand around the same calls the eager step makes, in the same order,
so the sum is one epoch of that step (the trainer's own step, whichever `--fast-step` chose, gives
the "training, trainer's step" row).

    python benchmarks/conv_profile.py --model conv --epochs 2
    python benchmarks/conv_profile.py --model conv64 --epochs 5
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

import torch  # noqa: E402

from vae_visdom.config import FAST_STEPS, TrainConfig  # noqa: E402
from vae_visdom.data.base import to_unit_float  # noqa: E402
from vae_visdom.session import TrainingSession  # noqa: E402
from vae_visdom.train.choose_step import describe_step  # noqa: E402
from vae_visdom.train.conv_cpu_step import ConvStep  # noqa: E402
from vae_visdom.train.events import Callback  # noqa: E402
from vae_visdom.train.objectives import elbo_terms  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from epoch_time import load_data  # noqa: E402


class LastRecord(Callback):
    def __init__(self):
        self.record = None

    def on_epoch_end(self, record, images) -> None:
        self.record = record


def phase_epoch(trainer) -> dict[str, float]:
    """One epoch of eager steps on the trainer's model and optimizer, each phase timed apart."""
    t = dict.fromkeys(("batch", "forward + ELBO", "backward", "optimizer"), 0.0)
    model, opt = trainer.model, trainer.optimizer
    cl = isinstance(trainer.step_fn, ConvStep)
    model.train()
    perm = torch.randperm(trainer.n_train, generator=trainer.data_gen)
    for i in range(0, trainer.n_train, trainer.batch_size):
        t0 = time.perf_counter()
        x = to_unit_float(trainer.train_x.index_select(0, perm[i:i + trainer.batch_size]))
        if cl:  # the channels_last step's own copy of the batch
            x = x.contiguous(memory_format=torch.channels_last)
        t1 = time.perf_counter()
        with trainer.autocast():
            logits, mu, logvar = model(x)
        recon, kl = elbo_terms(logits.float(), x, mu.float(), logvar.float(), model.likelihood, model.log_sigma)
        loss = recon.sum() + kl.sum()
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        for k, a, b in (("batch", t0, t1), ("forward + ELBO", t1, t2), ("backward", t2, t3), ("optimizer", t3, t4)):
            t[k] += b - a
    return t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("conv", "conv64"), default="conv")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--fast-step", choices=FAST_STEPS, default="auto")
    p.add_argument("--limit", type=int, default=None)
    args = p.parse_args(argv)
    data, dataset = load_data(args.model, args.limit)
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="vae-prof-") as tmp:
        cfg = TrainConfig(dataset=dataset, model=args.model, epochs=args.epochs, device="cpu", seed=1,
                          out=tmp, visdom=False, precision=args.precision, fast_step=args.fast_step)
        session = TrainingSession(cfg, data=data, progress=False)
        tr = session.trainer
        print(f"{args.model} on {dataset}: {tr.n_train} train / {len(tr.test_x)} test images "
              f"{tuple(tr.train_x.shape[1:])}, batch {tr.batch_size}, {torch.get_num_threads()} threads, "
              f"torch {torch.__version__}; trainer's step: {describe_step(tr.step_fn)}", flush=True)
        last = LastRecord()
        tr.add_callback(last)
        session.announce()
        tr.begin()
        for _ in range(args.epochs):
            for k, v in phase_epoch(tr).items():
                rows.setdefault(f"step phase: {k}", []).append(v)
            t0 = time.perf_counter()
            tr.run_epoch()
            wall = time.perf_counter() - t0
            rec = last.record
            for k, v in (("training, trainer's step", rec.seconds), ("test pass", rec.test_seconds),
                         ("images, rows, checkpoint (after test)", wall - rec.seconds - rec.test_seconds),
                         ("epoch, whole (trainer)", wall)):
                rows.setdefault(k, []).append(v)
        tr.end()
        session.close()
    print(f"{'phase':<34} {'s/epoch (median)':>16}")
    for k, v in rows.items():
        print(f"{k:<34} {statistics.median(v):16.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
