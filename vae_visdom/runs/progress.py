"""The terminal observer: a progress bar during an epoch and the seed's summary lines after it."""
from __future__ import annotations

import sys
import time

from vae_visdom.train.events import Callback, CommandEvent, EpochImages, EpochRecord, RunInfo, Status, StepLog


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
        if status.state == "failed":
            return  # said once, by the session (or by the traceback of a bug)
        print(f"run {status.state}: {status.message} ({time.perf_counter() - self.t0:.1f} s)", file=self.stream,
              flush=True)
