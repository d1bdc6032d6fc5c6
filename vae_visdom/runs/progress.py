"""The terminal observer: a tqdm bar during an epoch on a terminal, one plain line per epoch elsewhere."""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

from vae_visdom.train.events import Callback, CommandEvent, EpochImages, EpochRecord, RunInfo, Status, StepLog


class ProgressPrinter(Callback):
    """On a terminal: a tqdm bar per epoch (percent, loss, recon + KL, lr, batch size), then the seed's summary
    line. Not a terminal (a log file, a pipe): no bar, one plain line per epoch holding the same figures."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.perf_counter()
        self.bar: tqdm | None = None

    def _print(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)  # above the bar, which is drawn again below it
        else:
            print(text, file=self.stream, flush=True)

    def on_run_start(self, run: RunInfo) -> None:
        cfg = run.config
        self._print(f"run {run.name}: {cfg['model']} on {run.dataset} ({run.n_train} train / {run.n_test} test, "
                    f"{run.data_source}), device {run.device}, {run.n_params:,} parameters")
        self._print(f"  lr {cfg['lr']:g}, batch size {cfg['batch_size']}, {cfg['optimizer']}, "
                    f"latent {cfg['latent_dim']}, epochs {cfg['epochs']}; files in {run.run_dir}")
        if run.url:
            self._print(f"  watch it live: {run.url}")

    def on_step(self, log: StepLog) -> None:
        if not self.tty:
            return  # not a terminal: the epoch's line says it all
        if self.bar is None:
            self.bar = tqdm(total=100.0, file=self.stream, desc=f"epoch {log.epoch}", leave=False, dynamic_ncols=True,
                            bar_format="{desc} |{bar:24}| {percentage:5.1f}%  {postfix}")
        self.bar.n = round(100.0 * (log.epoch_progress - (log.epoch - 1)), 1)
        self.bar.set_postfix_str(f"loss {log.loss:8.2f}  (recon {log.recon:.2f} + KL {log.kl:.2f})  "
                                 f"lr {log.lr:.3g}  bs {log.batch_size}", refresh=True)

    def on_epoch_end(self, record: EpochRecord, images: EpochImages) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        line = (f"====> Epoch: {record.epoch} Average loss: {record.train_loss:.4f}  "
                f"Test set loss: {record.test_loss:.4f}  ({record.seconds:.1f} s, "
                f"{record.images_per_second:,.0f} img/s)")
        if not self.tty:  # the figures the bar showed, on the same line
            line += (f"  train recon {record.train_recon:.2f} + KL {record.train_kl:.2f}  lr {record.lr:.3g}  "
                     f"bs {record.batch_size}")
        self._print(line)

    def on_command(self, event: CommandEvent) -> None:
        mark = "accepted" if event.accepted else "REJECTED"
        self._print(f"[control] {mark}: {event.name} {event.value!r} -- {event.message}")

    def on_run_end(self, status: Status) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if status.state == "failed":
            return  # said once, by the session (or by the traceback of a bug)
        self._print(f"run {status.state}: {status.message} ({time.perf_counter() - self.t0:.1f} s)")
