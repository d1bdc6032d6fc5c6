"""One sweep trial: a normal training run (its folder, env, panel) driven epoch by epoch inside a Ray Tune trial.

`train_trial(config, plan)` is the Tune function trainable. It builds the project's own TrainingSession
(session.py), then runs the Trainer one epoch at a time (begin, run_epoch, end) and after each epoch
reports the test loss with the run's own checkpoint file as the trial's checkpoint:

    <tmp>/checkpoint.pt   RUN_DIR/checkpoint.pt, hard-linked (no second format)
    <tmp>/trial.json      whose run it is, its epoch and step, and the live values in force (lr, beta, batch size)

When Tune starts the trial again with a checkpoint (tune.get_checkpoint()):
  - its own (a scheduler's pause, a worker that died): the file goes back as RUN_DIR/checkpoint.pt and the
    run resumes through the resume path (runs/resume.py: rows after the checkpoint dropped, nothing doubled);
  - another trial's (PBT's exploit of trial A into this trial B): B's folder becomes a fork of A at that
    checkpoint, as runs/fork.py makes one (A's rows and images up to it, config.json's `parent` and
    `forked_at`), B's own events.jsonl kept, and PBT's new values applied as --resume overrides; events.jsonl
    and the events pane get "PBT: from A at epoch 4, lr 0.001 -> 0.0012" (source "pbt").
Imports Ray and torch; only the sweep's engine (sweep_ray.py) imports this module.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vae_visdom import safe_io
from vae_visdom.config import TrainConfig, check_name
from vae_visdom.runs import resume as resuming
from vae_visdom.runs.fork import COPIED, PNG
from vae_visdom.runs.jsonl import read_jsonl
from vae_visdom.runs.lock import RunLock
from vae_visdom.runs.records import compact_tag
from vae_visdom.runs.trainer_process import TRAIN_LOG
from vae_visdom.sweep_space import MUTABLE
from vae_visdom.train.checkpoint import CHECKPOINT, PREVIOUS
from vae_visdom.train.events import Callback, CommandEvent, EpochRecord

TRIAL_INFO = "trial.json"
EXPLOITS = "pbt.jsonl"  # RUN_DIR/pbt.jsonl: a line per exploit (parent, forked_at, changes), for the population view


@dataclass
class TrialPlan:
    """What every trial of one sweep shares (sent to the workers with the trainable)."""

    sweep: str
    runs_dir: str  # absolute: a worker's working directory is Ray's
    base: dict  # the train flags given to the sweep, as TrainConfig fields
    varying: list[str] = field(default_factory=list)
    named_by_values: bool = True  # a plain grid: runs named <sweep>-<values>; otherwise <sweep>-<trial number>
    subset: int | None = None  # test use only: train on the first N training images (and N // 6 test images)


def trial_number(trial_id: str) -> int:
    """Tune's trial ids end in a counter (3f2a1_00007 -> 7)."""
    tail = trial_id.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def run_name(plan: TrialPlan, values: dict, number: int) -> str:
    if plan.named_by_values:
        tag = compact_tag({k: values[k] for k in plan.varying if k in values})
        return check_name(f"{plan.sweep}-{tag}" if tag else plan.sweep, "name")  # too long: refused, as before
    return check_name(f"{plan.sweep}-{number}", "name")


class _LastEpoch(Callback):
    """Remembers the last epoch row the trainer wrote (what a report sends)."""

    def __init__(self) -> None:
        self.record: EpochRecord | None = None

    def on_epoch_end(self, record, images) -> None:
        self.record = record


def train_trial(config: dict, plan: TrialPlan) -> None:
    """The Tune function trainable (see the module's docstring); its output goes to RUN_DIR/train.log."""
    from ray import tune

    values = {k: v for k, v in config.items() if not k.startswith("_")}
    name = run_name(plan, values, trial_number(tune.get_context().get_trial_id()))
    run_dir = Path(plan.runs_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / TRAIN_LOG, "a", encoding="utf-8", buffering=1) as out, \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):  # one trial per worker process
        try:
            import ray

            print(f"trial {name} on Ray node {ray.get_runtime_context().get_node_id()}", flush=True)  # a cluster's
            _train(tune, values, plan, name, run_dir)
        except Exception as err:  # the run's log says why in one line, as `train` would; Tune gets the rest
            print(f"run failed: {type(err).__name__}: {err}", flush=True)
            raise


def _train(tune, values: dict, plan: TrialPlan, name: str, run_dir: Path) -> None:
    from vae_visdom.session import TrainingSession  # late: torch

    restored = tune.get_checkpoint()
    overrides: dict = {}
    pbt_event: CommandEvent | None = None
    if restored is None:
        cfg = TrainConfig.from_dict({**plan.base, **values, "name": name, "runs_dir": plan.runs_dir, "out": None})
        resume = False
    else:
        with restored.as_directory() as d:
            info = json.loads((Path(d) / TRIAL_INFO).read_text())
            if Path(info["run_dir"]).resolve() == run_dir.resolve():
                _put_back(Path(d) / CHECKPOINT, run_dir)
            else:
                overrides, pbt_event = exploit(run_dir, Path(d) / CHECKPOINT, info, values)
        cfg = TrainConfig.load(run_dir / "config.json")
        cfg.out, resume = str(run_dir), True
    session = TrainingSession(cfg, resume=resume, overrides=overrides, progress=False,
                              data=_subset(cfg, plan.subset) if plan.subset else None)
    last = _LastEpoch()
    t = session.trainer
    t.add_callback(last)
    reported = t.epoch if resume else 0
    try:
        session.announce()
        if resume and session.monitor is not None:  # a restarted trial's pane starts empty: its exploits again
            for row in read_jsonl(run_dir / "events.jsonl"):
                if row.get("source") == "pbt":
                    session.monitor.on_command(CommandEvent(**row))
        if pbt_event is not None:
            t.tell(lambda cb: cb.on_command(pbt_event))  # events.jsonl (RunFiles) and the events pane say so
        t.begin()
        status = None
        try:
            while status is None:
                going = t.run_epoch()
                if not going or t.epoch >= t.epochs and t.epoch_state is None:
                    status = t.end()  # before the last report: Tune may end this worker right after it
                if last.record is not None and last.record.epoch > reported:
                    reported = last.record.epoch
                    _report(tune, t, last.record, run_dir, name)
        except SystemExit:  # Tune ended the trial inside report (ASHA, PBT's pause, a Ctrl-C): a stop, checkpointed
            if status is None:
                status = _stopped_by_scheduler(t)
        except Exception as err:  # the run's own files say it failed, as Trainer.fit says it
            status = t.fail(err)
            raise
    finally:
        session.close()
    if status.state not in ("finished", "stopped"):
        raise RuntimeError(f"run {name} {status.state}: {status.message}")


def _stopped_by_scheduler(t) -> Any:
    """The run's final status at once: the worker ends soon after Tune's decision, and the checkpoint of the
    epoch just reported is current (no second save, whose time the worker may not have)."""
    message = f"stopped by the sweep after epoch {t.epoch} (ASHA's early stop, PBT's pause, or the sweep " \
              "stopping); checkpoint written"
    return t.stopped_outside(message, "sweep")


def _report(tune, t, record: EpochRecord, run_dir: Path, name: str) -> None:
    """One epoch's result, with the run's checkpoint file as the trial's checkpoint."""
    from ray.tune import Checkpoint

    in_force = {"lr": t.lr, "beta": t.kl.beta, "batch_size": t.batch_size}
    tmp = Path(tempfile.mkdtemp(prefix="vae-visdom-trial-"))
    try:
        try:
            os.link(run_dir / CHECKPOINT, tmp / CHECKPOINT)  # the same file: no copy, no second format
        except OSError:
            shutil.copyfile(run_dir / CHECKPOINT, tmp / CHECKPOINT)
        (tmp / TRIAL_INFO).write_text(json.dumps({"run_dir": str(run_dir), "name": name, "epoch": record.epoch,
                                                  "step": record.step, "in_force": in_force}))
        metrics = {"test_loss": record.test_loss, "train_loss": record.train_loss, "epoch": record.epoch,
                   "run": name, **{f"in_force_{k}": v for k, v in in_force.items()}}
        tune.report(metrics, checkpoint=Checkpoint.from_directory(str(tmp)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _put_back(src: Path, run_dir: Path) -> None:
    """The trial's own checkpoint as RUN_DIR/checkpoint.pt (the folder may have gone past it: resume cuts)."""
    tmp = run_dir / (CHECKPOINT + ".restoring")
    shutil.copyfile(src, tmp)
    os.replace(tmp, run_dir / CHECKPOINT)


def exploit(run_dir: Path, src: Path, info: dict, values: dict) -> tuple[dict, CommandEvent]:
    """Make trial B's folder a fork of trial A (info: A's trial.json) at A's checkpoint `src`; returns
    (the values PBT changed, as --resume overrides; the event that says so)."""
    from vae_visdom.train import checkpoint  # late: torch

    parent = Path(info["run_dir"])
    state = checkpoint.read(src)
    in_force = info.get("in_force", {})
    changes = {k: v for k, v in values.items() if k in MUTABLE and k in in_force and in_force[k] != v}
    lock = RunLock(run_dir)
    lock.acquire()  # B's previous process is gone; nothing else may write here meanwhile
    try:
        for p in [run_dir / n for n in (CHECKPOINT, PREVIOUS, "metrics.jsonl", "steps.jsonl")] + \
                 [p for p in run_dir.iterdir() if PNG.fullmatch(p.name)]:
            p.unlink(missing_ok=True)
        tmp = run_dir / (CHECKPOINT + ".restoring")
        shutil.copyfile(src, tmp)
        os.replace(tmp, run_dir / CHECKPOINT)
        for f in (f for f in COPIED if f != "events.jsonl"):  # B's own events stay: its page's history
            if (parent / f).is_file():
                shutil.copyfile(parent / f, run_dir / f)
        for png in parent.iterdir():
            if PNG.fullmatch(png.name):
                shutil.copyfile(png, run_dir / png.name)
        resuming.reconcile(run_dir, state)  # A's rows and images after its checkpoint go, as a resume cuts them
        cfg = TrainConfig.load(run_dir / "config.json")
        cfg.parent, cfg.forked_at = str(parent), {"epoch": state["epoch"], "step": state["step"]}
        safe_io.atomic_write(run_dir / "config.json", cfg.to_json())
        said = ", ".join(f"{k} {_short(in_force[k])} -> {_short(v)}" for k, v in changes.items())
        message = f"PBT: from {parent.name} at epoch {state['epoch']}" + (f", {said}" if said else ", values kept")
        safe_io.append_line(run_dir / EXPLOITS, json.dumps({
            "time": time.time(), "parent": str(parent), "forked_at": cfg.forked_at,
            "changes": {k: [in_force[k], v] for k, v in changes.items()}}))
    finally:
        lock.release()
    print(message, file=sys.stderr, flush=True)
    event = CommandEvent(time.time(), state["epoch"], state["step"], "pbt",
                         {"parent": parent.name, "changes": {k: [in_force[k], v] for k, v in changes.items()}},
                         True, message, "pbt", None)
    return changes, event


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _subset(cfg: TrainConfig, n: int) -> Any:
    """The run's data cut to its first n training images and n // 6 test images (tests keep trials short)."""
    from vae_visdom.data import ImageData, load_dataset  # late: torch

    data = load_dataset(cfg.dataset, cfg.data_dir, seed=cfg.seed, test_fraction=cfg.test_fraction,
                        subset=cfg.subset)
    m = max(1, n // 6)
    def cut(t, k):
        return None if t is None else t[:k]

    return ImageData(data.name, data.train[:n], data.test[:m], cut(data.train_labels, n), cut(data.test_labels, m),
                     f"{data.source}, first {n} training and {m} test images")
