"""The terminal observer: a tqdm bar during an epoch on a terminal, one plain line per epoch elsewhere."""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

from vae_visdom.train.events import Callback, CommandEvent, EpochImages, EpochRecord, RunInfo, Status, StepLog


class ProgressPrinter(Callback):
    """On a terminal: a tqdm bar per epoch (percent, loss, recon + KL, lr, batch size), then the seed's summary
    line. Not a terminal (a log file, a pipe): instead of the bar, one plain line per epoch with the same figures
    (the epoch's last log interval), then the summary line."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.perf_counter()
        self.bar: tqdm | None = None
        self.last: StepLog | None = None
        self.iwae = False  # the loss is -L_K (--objective iwae), not the -ELBO

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
        self.iwae = cfg.get("objective") == "iwae"
        if self.iwae:
            self._print(f"  objective: the IWAE bound with K={cfg.get('iwae_k')}; loss is -L_K, beside it the -ELBO "
                        "(recon + KL)")
        if run.url:
            self._print(f"  watch it live: {run.url}")

    def on_step(self, log: StepLog) -> None:
        self.last = log
        if not self.tty:
            return  # not a terminal: one line at the epoch's end
        if self.bar is None:
            self.bar = tqdm(total=100.0, file=self.stream, desc=f"epoch {log.epoch}", leave=False, dynamic_ncols=True,
                            bar_format="{desc} |{bar:24}| {percentage:5.1f}%  {postfix}")
        self.bar.n = round(100.0 * (log.epoch_progress - (log.epoch - 1)), 1)
        self.bar.set_postfix_str(_figures(log, self.iwae), refresh=True)

    def on_epoch_end(self, record: EpochRecord, images: EpochImages) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if not self.tty and self.last is not None and self.last.epoch == record.epoch:
            frac = self.last.epoch_progress - (record.epoch - 1)  # the line says what the bar showed
            self._print(f"epoch {record.epoch} {100 * frac:5.1f}%  {_figures(self.last, self.iwae)}")
        self._print(f"====> Epoch: {record.epoch} Average loss: {record.train_loss:.4f}  "
                    f"Test set loss: {record.test_loss:.4f}  ({record.seconds:.1f} s, "
                    f"{record.images_per_second:,.0f} img/s)")

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


def _figures(log: StepLog, iwae: bool = False) -> str:
    terms = f"recon {log.recon:.2f} + KL {log.kl:.2f}"  # the -ELBO, which is the loss unless it is -L_K
    if iwae:
        terms = f"-ELBO {log.recon + log.kl:.2f}: {terms}"
    return f"loss {log.loss:8.2f}  ({terms})  lr {log.lr:.3g}  bs {log.batch_size}"
