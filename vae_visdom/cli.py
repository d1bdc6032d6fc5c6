"""`vae-visdom` command line: train, serve, replay, eval, runs, compare, home, sweep, data, assets. Nothing imports it.

The parser is quick: each subcommand's module is imported (below, by name) only when that subcommand is
the one given, so `vae-visdom --help`, `train --help` and `runs` never import torch, and a missing or
refusing visdom breaks only the commands that need it (each says so in one line).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

from vae_visdom import launch
from vae_visdom.config import DEFAULT_HOST, DEFAULT_PORT, ConfigError, UsageError
from vae_visdom.flags import add_train_arguments, config_from_args
from vae_visdom.runs import tables
from vae_visdom.runs.run_file import RunFileError, load_config
from vae_visdom.serve import assets, compat, server

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line that says what is wrong (and where --help is)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Subcommands(argparse._SubParsersAction):
    """Subcommands listed by name and help; a subcommand's real parser is built when it is the one given."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.builders: dict[str, Callable] = {}

    def add_lazy(self, name: str, help: str, build: Callable) -> None:
        """`build(self)` registers the real parser (the module's add_cli); until then a placeholder stands."""
        self.add_parser(name, help=help)
        self.builders[name] = build

    def build(self, name: str) -> argparse.ArgumentParser:
        """The real parser of `name` (built on first use)."""
        build = self.builders.pop(name, None)
        if build is not None:
            del self._name_parser_map[name]
            self._choices_actions = [a for a in self._choices_actions if a.dest != name]
            build(self)
        return self._name_parser_map[name]

    def __call__(self, parser, namespace, values, option_string=None):
        if values and values[0] in self.builders:
            self.build(values[0])
        super().__call__(parser, namespace, values, option_string)


EXIT_DIVERGED = launch.EXIT_DIVERGED  # 3: the run ended as "diverged" (1: failed, 2: refused)


def cmd_train(args: argparse.Namespace) -> int:
    if args.fork and (args.nproc_per_node or int(os.environ.get("WORLD_SIZE", "1")) > 1):
        raise UsageError("--fork runs in one process; to train a fork on several ranks, fork it first, then "
                         "`vae-visdom train --resume FORK_DIR --nproc-per-node N`")
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
    cfg = config_from_args(args, base)
    overrides = {k: getattr(args, k) for k in ("lr", "epochs", "batch_size", "log_interval", "beta")
                 if getattr(args, k, None) is not None}
    session = TrainingSession(cfg, resume=bool(args.resume), overrides=overrides)
    status = session.run(install_signal_handlers=True)
    return 0 if status.state in ("finished", "stopped") else EXIT_DIVERGED if status.state == "diverged" else 1


def add_train_cli(sub) -> None:
    p = sub.add_parser("train", help=HELP["train"],
                       description="Train a VAE. With no flags: the PyTorch example's VAE on MNIST for 10 epochs, "
                                   f"streaming to the visdom server on {DEFAULT_HOST}:{DEFAULT_PORT}.")
    add_train_arguments(p)
    launch.add_arguments(p)
    p.set_defaults(func=cmd_train)


# The heavy subcommands: each imports its module when it is the command given (torch, or visdom and torch).
def add_data_cli(sub) -> None:
    from vae_visdom.data import mnist  # late: torch

    mnist.add_cli(sub)


def add_eval_cli(sub) -> None:
    from vae_visdom.insight import eval_run  # late: torch

    eval_run.add_cli(sub)


def add_sweep_cli(sub) -> None:
    from vae_visdom import sweep  # late: torch (the model table)

    sweep.add_cli(sub)


def add_animate_cli(sub) -> None:
    from vae_visdom.runs import animate  # late: PIL and torch

    animate.add_cli(sub)


def add_replay_cli(sub) -> None:
    _need_visdom("replay")
    from vae_visdom.monitor.replay import add_cli  # late: visdom and torch (monitor's `replay` is a function)

    add_cli(sub)


def add_compare_cli(sub) -> None:
    _need_visdom("compare")
    from vae_visdom.monitor.compare import add_cli  # late: visdom and torch

    add_cli(sub)


def add_home_cli(sub) -> None:
    compat.without_torch()  # before visdom, which tries torch: the home never needs it (seconds, ~200 MB)
    _need_visdom("home")
    from vae_visdom.monitor.home import add_cli  # late: visdom

    add_cli(sub)


def _need_visdom(command: str) -> None:
    problem = compat.visdom_problem()
    if problem:
        print(f"vae-visdom {command}: error: {problem}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


HELP = {  # the list `vae-visdom --help` shows; tests/test_cli_quick.py holds each to its module's own help
    "train": "train a VAE (streams to visdom unless --no-visdom)",
    "data": "fetch and verify the MNIST / Fashion-MNIST files (offline first)",
    "replay": "draw a run's visdom windows again from RUN_DIR/visdom.log",
    "eval": "importance-weighted test log-likelihood of a finished run",
    "compare": "lay runs side by side in a visdom env",
    "home": "keep the env `runs`: every run, its status, and actions on them",
    "sweep": "train a grid of runs (comma lists) and compare them",
    "animate": "the prior samples epoch by epoch as an animated GIF",
}
LAZY = {"data": add_data_cli, "replay": add_replay_cli, "eval": add_eval_cli, "compare": add_compare_cli,
        "home": add_home_cli,
        "sweep": add_sweep_cli, "animate": add_animate_cli}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="vae-visdom", description="Train VAEs and watch (and steer) them live in visdom.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, action=Subcommands)
    add_train_cli(sub)
    server.add_cli(sub)  # serve/ imports tornado and visdom only when a server starts
    assets.add_cli(sub)
    for name in ("data", "replay", "eval", "runs", "compare", "home", "sweep", "animate"):  # the order `--help` lists them in
        if name == "runs":
            tables.add_cli(sub)  # light: the runs' files are JSON
        else:
            sub.add_lazy(name, HELP[name], LAZY[name])
    return parser


def _user_error(err: Exception) -> bool:
    """Bad input (one line, exit 2) rather than a bug (a traceback)."""
    data_base = sys.modules.get("vae_visdom.data.base")  # DataError comes only after data/ (torch) is imported
    return isinstance(err, (UsageError, ConfigError)) or (data_base is not None and isinstance(err, data_base.DataError))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Exception as err:
        if not _user_error(err):
            raise
        print(f"vae-visdom {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
