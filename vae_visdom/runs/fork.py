"""A fork: a new run folder that starts from a parent run's checkpoint and history, the parent untouched.

`vae-visdom train --fork PARENT [--at-epoch E]` makes RUNS_DIR/<parent>-fork<N> (or --name) holding
  - checkpoint.pt: the parent's newest checkpoint, or PARENT/checkpoints/epoch_E.pt with --at-epoch
    (kept within the parent's --checkpoint-budget, newest first, or all with --keep-checkpoints),
  - the parent's rows (metrics, steps, events) and epoch PNGs, cut at that checkpoint by the same
    code a resume uses (runs/resume.py: reconcile),
  - config.json: the parent's, with `parent` (its folder) and `forked_at` ({"epoch", "step"}) set, its
    own name and env, and streaming on (a fork is made to be watched beside its parent).
The session then resumes the new folder like any other, with the flags given on the command line
applied on top (the same path as `--resume` overrides). The parent's folder is only read.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from vae_visdom.config import ConfigError, TrainConfig, UsageError, check_name, fit_name, parse_value, shown
from vae_visdom.runs import page_runs
from vae_visdom.runs import resume as resuming
from vae_visdom.runs.files import read_jsonl
from vae_visdom.runs.layout import runs_root
from vae_visdom.runs.run_file import RunFileError, load_config
from vae_visdom.runs.trainer_process import TRAIN_LOG, start_logged, train_command
from vae_visdom.safe_io import RunWriteError, atomic_write
from vae_visdom.train import checkpoint
from vae_visdom.train.controller import SETTINGS, Controller, Offer
from vae_visdom.train.events import Callback, Snapshot
from vae_visdom.train.kept import kept_epochs, kept_path, spans

FORK = "fork"  # the command the panel's Fork and the view pane's "fork from epoch E" send
AT_EPOCH = "at_epoch"  # what a fork may name besides the live settings: the epoch whose kept checkpoint it starts from
SHORT = {"bs": "batch_size", "batch": "batch_size", "batch_size": "batch_size", "log": "log_interval"}
COPIED = ("metrics.jsonl", "steps.jsonl", "events.jsonl")


def parse_fork(raw, ctx: dict | None = None) -> dict:
    """What a fork changes, as typed: "lr=3e-4 batch_size=64" (commas or spaces between; bs for batch_size);
    empty for a fork with the values in force; at_epoch=E for a fork from epoch E's kept checkpoint. Every value
    is checked by its rule; ConfigError otherwise."""
    text = "" if raw is None else str(raw).strip()
    out: dict = {}
    for part in text.replace(",", " ").split():
        name, sep, value = part.partition("=")
        name = name.strip().lower().replace("-", "_")
        name = SHORT.get(name, name)
        if not sep or not value.strip():
            raise ConfigError(f"fork: {shown(part)} is not name=value; e.g. lr=3e-4 batch_size=64")
        if name == AT_EPOCH:  # from that epoch's kept checkpoint instead of the state at this step
            try:
                out[name] = parse_value("epochs", value, ctx)
            except ConfigError as err:
                raise ConfigError(f"fork: at_epoch: {str(err).split(': ', 1)[-1]}") from None
            continue
        if name not in SETTINGS:
            raise ConfigError(f"fork: {shown(name)} cannot be changed by a fork; allowed: {', '.join(SETTINGS)}")
        out[name] = parse_value(name, value, ctx)
    return out


def describe_fork(changes: dict) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in changes.items())


FORK_OFFER = Offer(parse_fork, describe_fork)  # a run that cannot fork refuses it: Controller.refuse(FORK, why)
PNG = re.compile(r"(?:sample|reconstruction)_\d+\.png")


def fork_name(parent: Path, runs_dir: Path) -> str:
    """<parent>-fork<N>, N the first number not taken in runs_dir."""
    n = 1
    while (runs_dir / fit_name(f"{parent.name}-fork{n}")).exists():
        n += 1
    return fit_name(f"{parent.name}-fork{n}")


def source_checkpoint(parent: Path, at_epoch: int | None) -> Path:
    """The checkpoint file the fork starts from; UsageError saying what exists when there is none."""
    if at_epoch is None:
        for name in (checkpoint.CHECKPOINT, checkpoint.PREVIOUS):
            if (parent / name).is_file():
                return parent / name
        raise UsageError(f"--fork {parent}: no checkpoint there yet (the run never finished an epoch)")
    path = kept_path(parent, at_epoch)
    if not path.is_file():
        kept = kept_epochs(parent)
        have = f"kept epochs: {spans(kept)}" if kept else \
            "it keeps no per-epoch checkpoints (its --checkpoint-budget is 0, or it predates them)"
        raise UsageError(f"--fork {parent} --at-epoch {at_epoch}: no checkpoint of epoch {at_epoch}; {have}; "
                         "or leave out --at-epoch to fork from its newest checkpoint")
    return path


def create(parent: str | Path, at_epoch: int | None, runs_dir: str | Path, name: str | None = None,
           out: str | None = None, state: dict | None = None) -> tuple[Path, TrainConfig]:
    """Make the fork's folder from the parent's checkpoint (or from `state`, a live trainer's, for a fork
    from the panel); returns (its folder, its config). Raises UsageError."""
    parent = Path(parent)
    if not (parent / "config.json").is_file():
        raise UsageError(f"--fork {parent}: no config.json there (not a run directory)")
    src = source_checkpoint(parent, at_epoch) if state is None else None  # a live trainer's state: no file
    if src is not None:
        try:
            state = checkpoint.read(src)
        except checkpoint.CheckpointError as err:
            raise UsageError(f"--fork {parent}: {err}") from None
    assert state is not None  # read from the file, or given by the caller
    try:
        cfg = load_config(parent / "config.json")  # never opens a FIFO; a damaged file is one line
    except (OSError, RunFileError) as err:
        raise UsageError(f"--fork {parent}: {err}") from None
    try:
        child_name = check_name(name, "name") if name else None
    except ConfigError as err:
        raise UsageError(str(err)) from None
    child = Path(out) if out else Path(runs_dir) / (child_name or fork_name(parent, Path(runs_dir)))
    if child.exists() and any(child.iterdir()):
        raise UsageError(f"--fork: {child} exists and is not empty; give another --name")
    child.mkdir(parents=True, exist_ok=True)
    if src is not None:
        shutil.copyfile(src, child / checkpoint.CHECKPOINT)
    else:
        checkpoint.save(child, state, rotate=False)
    for f in COPIED:
        if (parent / f).is_file():
            shutil.copyfile(parent / f, child / f)
    for png in parent.iterdir():
        if PNG.fullmatch(png.name):
            shutil.copyfile(png, child / png.name)
    resuming.reconcile(child, state)  # rows and images after the fork point go, as a resume cuts them
    _cut_events(child / "events.jsonl", state["step"])
    cfg.name, cfg.out, cfg.env = child_name or child.name, str(child), None
    cfg.visdom = True  # a fork is for watching beside its parent: it streams unless --no-visdom is given
    cfg.parent, cfg.forked_at = str(parent), {"epoch": state["epoch"], "step": state["step"]}
    atomic_write(child / "config.json", cfg.to_json())
    return child, cfg


def _cut_events(path: Path, step: int) -> None:
    """Keep the commands applied up to the fork point (the change markers of the history)."""
    if path.is_file():
        kept = [r for r in read_jsonl(path) if isinstance(r.get("step"), int) and r["step"] <= step]
        atomic_write(path, "".join(json.dumps(r) + "\n" for r in kept))


def start(args) -> Path:
    """`train --fork`: make the fork's folder from the command line's flags; its path (to resume)."""
    if not args.fork:
        raise UsageError("--at-epoch goes with --fork RUN_DIR")
    if args.resume:
        raise UsageError("--fork and --resume: give one of them")
    parent = Path(args.fork)
    child, _ = create(parent, args.at_epoch, args.runs_dir or parent.parent, args.name, args.out)
    print(f"fork of {parent.name} at {_at(child)}: {child}", file=sys.stderr)
    return child


def _at(child: Path) -> str:
    at = TrainConfig.load(child / "config.json").forked_at or {}
    return f"epoch {at.get('epoch')}, step {at.get('step')}"


class ForkLauncher(Callback):
    """Starts the forks asked for from the panel (point 5 of the design: who owns the processes).

    The trainer that is forked makes the new run's folder (create, from its state at the current step,
    without stopping) and starts `vae-visdom train --resume CHILD --lr ...` as a process of its own: its own
    session (a Ctrl-C or the end of the parent does not reach it), its output in CHILD/train.log, its own
    lock, env and panel. It outlives the parent and the server like any run; the parent only reaps it
    (no zombie) if it ends first. `vae-visdom runs` and the runs home learn that it died from its lock.
    A fork is a process a page started: it takes a place under the pages' limit (runs/page_runs.py) or is
    refused with the reason in the panel.
    """

    def __init__(self, run_dir: str | Path, controller: Controller):
        self.run_dir = Path(run_dir)
        self.controller = controller  # the forked trainer's door in: how each fork went
        self.children: list[subprocess.Popen] = []
        controller.offer(FORK, FORK_OFFER)

    def on_snapshot(self, snapshot: Snapshot) -> None:
        if snapshot.name != FORK:
            return
        asked = {"changes": snapshot.value, "run": None, "env": None}
        changes = {k: v for k, v in snapshot.value.items() if k != AT_EPOCH}
        at_epoch = snapshot.value.get(AT_EPOCH)  # a rewind: from that epoch's kept checkpoint, not from now
        try:
            # the pages' limit (runs/page_runs.py) is the runs folder's, also for a sweep's run; the fork goes
            # beside its parent (in the sweep's folder)
            with page_runs.place(runs_root(self.run_dir), "fork") as started:
                child, cfg = create(self.run_dir, at_epoch, self.run_dir.parent,
                                    state=snapshot.state if at_epoch is None else None)
                proc = spawn(child, changes)
                started(child, proc.pid)
        except page_runs.PageRunsFull as err:
            self.controller.reply(FORK, False, f"fork refused: {err}", asked)
            return
        except (UsageError, OSError, RunWriteError) as err:  # a verdict in the panel, never a stopped parent
            self.controller.reply(FORK, False, f"fork failed: {err}", asked)
            return
        self.children.append(proc)
        assert cfg.forked_at is not None  # create() records where the fork starts
        self.controller.reply(FORK, True, f"forked as {child.name} at epoch {cfg.forked_at['epoch']}, step "
                              f"{cfg.forked_at['step']} (pid {proc.pid}, output in {child.name}/{TRAIN_LOG}): "
                              f"env {cfg.name}", {**asked, "run": str(child), "env": cfg.name})

    def on_epoch_end(self, record, images) -> None:
        self._reap()

    def close(self) -> None:
        self._reap()  # the living ones go on: they are runs of their own

    def _reap(self) -> None:
        self.children = [p for p in self.children if p.poll() is None]  # the ended ones leave no zombie


def spawn(child: Path, changes: dict) -> subprocess.Popen:
    """`vae-visdom train --resume CHILD` with the changed values as flags, detached, output to CHILD/train.log."""
    flags = [arg for k, v in changes.items() for arg in (f"--{k.replace('_', '-')}", repr(v))]
    return start_logged(train_command("--resume", str(child), *flags), child, detached=True)
