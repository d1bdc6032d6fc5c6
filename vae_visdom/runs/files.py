"""The run folder's writer (RunFiles, an observer); its reader, read_jsonl, lives in jsonl.py (no torch).

RUN_DIR/
  config.json          the run's TrainConfig (written by the session)
  metrics.jsonl        one JSON object per epoch (EpochRecord.to_dict)
  steps.jsonl          one JSON object per log interval (StepLog)
  events.jsonl         every control command, accepted or rejected (CommandEvent.to_dict), and what a
                       resume found wrong (source "resume")
  status.json          the latest Status, for `vae-visdom runs`
  steering.txt         the steering schedule the run followed (train --steer-like / --steering), if any
  reconstruction_N.png 8 test images over their reconstructions, as the seed saves them
  sample_N.png         64 decodings of the run's fixed prior draws
  samples.gif          the sample_N.png as one animation, written when the run ends (animate.py)
  checkpoint.pt        written by the trainer (see train/checkpoint.py), checkpoint.prev.pt the one before it
  trainer.lock         held by the trainer writing here (see lock.py)

Every file that is replaced is replaced atomically, appends are whole lines (safe_io.py). An
epoch's PNGs and row are written, and the rows fsynced, before the checkpoint that covers them;
a resume drops what came after its checkpoint (resume.py says why that loses nothing).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from vae_visdom import safe_io
from vae_visdom.runs.animate import GIF_NAME, animate, sample_files
from vae_visdom.runs.images import save_image
from vae_visdom.runs.jsonl import read_jsonl  # noqa: F401  (its home before runs/jsonl.py)
from vae_visdom.train.events import Callback, CommandEvent, EpochImages, EpochRecord, Reason, Status, StepLog


class RunFiles(Callback):
    """metrics.jsonl, steps.jsonl, events.jsonl, status.json and the per-epoch PNGs.

    A write that fails raises safe_io.RunWriteError, which ends the run as "failed" (trainer.py);
    except the final status.json, whose failure is kept in `status_error` for the run's last line.
    """

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.status_error: OSError | None = None

    def on_step(self, log: StepLog) -> None:
        safe_io.append_line(self.dir / "steps.jsonl", json.dumps(asdict(log)))

    def on_epoch_end(self, record: EpochRecord, images: EpochImages) -> None:
        # images first, then the row: a row on disk means its images are there too
        n = len(images.originals)
        save_image(torch.cat([images.originals, images.reconstructions]),
                   self.dir / f"reconstruction_{record.epoch}.png", nrow=n)
        save_image(images.samples, self.dir / f"sample_{record.epoch}.png", nrow=8)
        safe_io.append_line(self.dir / "metrics.jsonl", json.dumps(record.to_dict()))

    def on_save_checkpoint(self, epoch: int, step: int) -> None:
        for name in ("steps.jsonl", "metrics.jsonl"):  # on disk before a checkpoint says they happened
            safe_io.sync(self.dir / name)

    def on_command(self, event: CommandEvent) -> None:
        safe_io.append_line(self.dir / "events.jsonl", json.dumps(event.to_dict()))

    def on_status(self, status: Status) -> None:
        if status.state != "running" or status.reason in (Reason.STARTED, Reason.RESUMED):  # not every change
            self._write_status(status)

    def on_run_end(self, status: Status) -> None:
        try:
            self._write_status(status)
        except OSError as err:  # the run is over: say so in its last line rather than raise again
            self.status_error = err
        if status.state != "failed" and sample_files(self.dir):  # a failed run's one line stays one line
            try:
                animate(self.dir)
            except (OSError, ValueError) as err:  # the animation is a view of files that are all there
                print(f"warning: no {GIF_NAME} ({err})", file=sys.stderr)

    def _write_status(self, status: Status) -> None:
        path = self.dir / "status.json"
        text = json.dumps({**asdict(status), "time": time.time()})
        try:
            safe_io.atomic_write(path, text)
        except safe_io.RunWriteError as err:
            try:  # a full disk has no room for a new file, but status.json has its own blocks
                safe_io.overwrite_in_place(path, text)
            except OSError:
                raise err from None
