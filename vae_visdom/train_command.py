"""`vae-visdom train`: the train flags (flags.py) and the launcher's (launch.py), then one session.

Light at import: torch comes in only when a run starts, so `train --help` stays quick.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from vae_visdom import launch
from vae_visdom.config import DEFAULT_HOST, DEFAULT_PORT, UsageError
from vae_visdom.flags import add_train_arguments, config_from_args
from vae_visdom.runs.jsonl import read_jsonl
from vae_visdom.runs.run_file import RunFileError, load_config, read_text
from vae_visdom.train.controller import SETTINGS
from vae_visdom.train.steering import Change, from_events, parse_steering


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Train a VAE. With no flags: the PyTorch example's VAE on MNIST for 10 epochs, "
                     f"streaming to the visdom server on {DEFAULT_HOST}:{DEFAULT_PORT}.")
    add_train_arguments(p)
    launch.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    if args.fork and (args.nproc_per_node or int(os.environ.get("WORLD_SIZE", "1")) > 1):
        raise UsageError("--fork runs in one process; to train a fork on several ranks, fork it first, then "
                         "`vae-visdom train --resume FORK_DIR --nproc-per-node N`")
    steered = args.steer_like or args.steering
    if steered and (args.resume or args.fork or args.nproc_per_node):
        raise UsageError("--steer-like and --steering start a new run in one process: not with --resume, --fork "
                         "or --nproc-per-node")
    if args.nproc_per_node:
        return launch.run_torchrun(args)  # torch's launcher, which starts this command N times
    from vae_visdom.runs import fork  # late: torch (checkpoints) only when a run starts, not for --help
    from vae_visdom.session import TrainingSession  # late: torch only when a run starts, not for --help

    launch.resume_after_restart(args)
    base = None
    if args.fork or args.at_epoch:  # a new folder from the parent's checkpoint; then the same path as --resume
        args.resume = str(fork.start(args))
    if args.resume:
        run_dir = Path(args.resume)
        try:
            base = load_config(run_dir / "config.json")  # never opens a FIFO; a damaged file is one line
        except FileNotFoundError:
            raise UsageError(f"--resume {run_dir}: no config.json there (not a run directory)") from None
        except RunFileError as err:
            raise UsageError(f"--resume {run_dir}: {err}") from None
        base.out = str(run_dir)
    plan: list[Change] | None = None
    if args.steer_like:
        base, plan = steer_like(Path(args.steer_like))
    if args.steering:
        try:
            plan = parse_steering(read_text(args.steering), args.steering)
        except (OSError, RunFileError) as err:
            raise UsageError(f"--steering {args.steering}: {getattr(err, 'strerror', None) or err}") from None
    cfg = config_from_args(args, base)
    # the live settings given as flags win over the values the checkpoint had in force (torch-free table)
    overrides = {k: getattr(args, k) for k in SETTINGS if getattr(args, k, None) is not None}
    session = TrainingSession(cfg, resume=bool(args.resume), overrides=overrides)
    if plan is not None:
        session.follow(plan, f"steering of {args.steering or args.steer_like}")
    status = session.run(install_signal_handlers=True)
    return 0 if status.state in ("finished", "stopped") else launch.EXIT_DIVERGED if status.state == "diverged" else 1


def steer_like(run_dir: Path) -> tuple:
    """(the configuration RUN_DIR started with, as a new run's; the changes it accepted) for --steer-like."""
    try:
        base = load_config(run_dir / "config.json")
        events = read_jsonl(run_dir / "events.jsonl")
    except FileNotFoundError:
        raise UsageError(f"--steer-like {run_dir}: no config.json there (not a run directory)") from None
    except RunFileError as err:
        raise UsageError(f"--steer-like {run_dir}: {err}") from None
    if base.parent:
        raise UsageError(f"--steer-like {run_dir}: a fork starts from its parent's checkpoint, which a new run "
                         f"cannot; steer like its parent ({base.parent}) instead")
    base.name = base.out = base.env = None  # a new run of its own
    for name, value in (base.started_with or {}).items():  # from where it started, not where it went on
        setattr(base, name, value)
    return base, from_events(events)
