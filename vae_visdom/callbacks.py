"""Observers that keep a run on disk and on the terminal (visdom is in vae_visdom.monitor).

RUN_DIR/
  config.json          the run's TrainConfig (written by the CLI)
  metrics.jsonl        one JSON object per epoch (EpochRecord.to_dict)
  steps.jsonl          one JSON object per log interval (StepLog)
  events.jsonl         every control command, accepted or rejected (CommandEvent.to_dict)
  status.json          the latest Status, for `vae-visdom runs`
  reconstruction_N.png 8 test images over their reconstructions, as the seed saves them
  sample_N.png         64 decodings of the run's fixed prior draws
  checkpoint.pt        written by the trainer (see checkpoint.py)
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from vae_visdom.events import Callback, CommandEvent, EpochImages, EpochRecord, RunInfo, Status, StepLog
from vae_visdom.imageutil import save_image


def _append_jsonl(path: Path, obj: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj) + "\n")
        f.flush()


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSON-lines file, ignoring a torn last line (a crash mid-write)."""
    rows = []
    p = Path(path)
    if not p.exists():
        return rows
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def truncate_history(run_dir: str | Path, last_epoch: int, last_step: int) -> None:
    """Forget what came after the checkpoint: a resumed run then continues without duplicated points."""
    for name, key, last in (("metrics.jsonl", "epoch", last_epoch), ("steps.jsonl", "step", last_step)):
        path = Path(run_dir) / name
        if not path.exists():
            continue
        rows = [r for r in read_jsonl(path) if r.get(key, 0) <= last]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        os.replace(tmp, path)


class RunFiles(Callback):
    """metrics.jsonl, events.jsonl, status.json and the per-epoch PNGs."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)

    def on_step(self, log: StepLog) -> None:
        _append_jsonl(self.dir / "steps.jsonl", asdict(log))

    def on_epoch_end(self, record: EpochRecord, images: EpochImages) -> None:
        _append_jsonl(self.dir / "metrics.jsonl", record.to_dict())
        n = len(images.originals)
        save_image(torch.cat([images.originals, images.reconstructions]), self.dir / f"reconstruction_{record.epoch}.png",
                   nrow=n)
        save_image(images.samples, self.dir / f"sample_{record.epoch}.png", nrow=8)

    def on_command(self, event: CommandEvent) -> None:
        _append_jsonl(self.dir / "events.jsonl", event.to_dict())

    def on_status(self, status: Status) -> None:
        if status.state != "running" or status.message in ("training", "resumed"):
            self._write_status(status)

    def on_run_end(self, status: Status) -> None:
        self._write_status(status)

    def _write_status(self, status: Status) -> None:
        tmp = self.dir / "status.json.tmp"
        tmp.write_text(json.dumps({**asdict(status), "time": time.time()}), encoding="utf-8")
        os.replace(tmp, self.dir / "status.json")


class ProgressPrinter(Callback):
    """A progress bar during an epoch and the seed's summary lines after it."""

    def __init__(self, stream=None, width: int = 24):
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.perf_counter()
        self._last_print = 0.0

    def on_run_start(self, run: RunInfo) -> None:
        cfg = run.config
        print(f"run {run.name}: {cfg['model']} on {run.dataset} ({run.n_train} train / {run.n_test} test, "
              f"{run.data_source}), device {run.device}, {run.n_params:,} parameters", file=self.stream)
        print(f"  lr {cfg['lr']:g}, batch size {cfg['batch_size']}, {cfg['optimizer']}, latent {cfg['latent_dim']}, "
              f"epochs {cfg['epochs']}; files in {run.run_dir}", file=self.stream)
        if run.url:
            print(f"  watch it live: {run.url}", file=self.stream)

    def on_step(self, log: StepLog) -> None:
        frac = log.epoch_progress - (log.epoch - 1)
        now = time.perf_counter()
        if not self.tty and frac < 1.0 and now - self._last_print < 10.0:
            return  # in a log file, one line every 10 s is plenty
        self._last_print = now
        filled = int(round(frac * self.width))
        bar = "#" * filled + "." * (self.width - filled)
        line = (f"epoch {log.epoch} [{bar}] {100 * frac:5.1f}%  loss {log.loss:8.2f}  "
                f"(recon {log.recon:.2f} + KL {log.kl:.2f})  lr {log.lr:.3g}  bs {log.batch_size}")
        if self.tty:
            self.stream.write("\r" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def on_epoch_end(self, record: EpochRecord, images: EpochImages) -> None:
        if self.tty:
            self.stream.write("\r" + " " * 100 + "\r")
        print(f"====> Epoch: {record.epoch} Average loss: {record.train_loss:.4f}  "
              f"Test set loss: {record.test_loss:.4f}  ({record.seconds:.1f} s, "
              f"{record.images_per_second:,.0f} img/s)", file=self.stream, flush=True)

    def on_command(self, event: CommandEvent) -> None:
        mark = "accepted" if event.accepted else "REJECTED"
        print(f"\n[control] {mark}: {event.name} {event.value!r} -- {event.message}", file=self.stream, flush=True)

    def on_run_end(self, status: Status) -> None:
        print(f"run {status.state}: {status.message} ({time.perf_counter() - self.t0:.1f} s)", file=self.stream,
              flush=True)
