"""`vae-visdom` command line: train, serve, replay, eval, runs, compare, sweep, data, assets. Nothing imports it."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vae_visdom import launch, sweep
from vae_visdom.config import DEFAULT_HOST, DEFAULT_PORT, ConfigError, TrainConfig, UsageError
from vae_visdom.data import DataError, mnist
from vae_visdom.flags import add_train_arguments, config_from_args
from vae_visdom.insight import eval_run
from vae_visdom.runs import tables
from vae_visdom.serve import assets, server
from vae_visdom.session import TrainingSession

try:  # the subcommands that need visdom; `train --no-visdom`, `runs` and `data` work without it
    from vae_visdom.monitor.compare import add_cli as add_compare_cli
    from vae_visdom.monitor.replay import add_cli as add_replay_cli
except (ImportError, RuntimeError):  # visdom 0.3 raises RuntimeError, not ImportError, below Python 3.12
    add_replay_cli = add_compare_cli = None

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line that says what is wrong (and where --help is)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def cmd_train(args: argparse.Namespace) -> int:
    if args.nproc_per_node:
        return launch.exec_torchrun(args)  # becomes torch's launcher, which starts this command N times
    launch.resume_after_restart(args)
    base = None
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.json").exists():
            raise UsageError(f"--resume {run_dir}: no config.json there (not a run directory)")
        base = TrainConfig.load(run_dir / "config.json")
        base.out = str(run_dir)
    cfg = config_from_args(args, base)
    overrides = {k: getattr(args, k) for k in ("lr", "epochs", "batch_size", "log_interval")
                 if getattr(args, k, None) is not None}
    session = TrainingSession(cfg, resume=bool(args.resume), overrides=overrides)
    status = session.run(install_signal_handlers=True)
    return 0 if status.state in ("finished", "stopped") else 1


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="vae-visdom", description="Train VAEs and watch (and steer) them live in visdom.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    p = sub.add_parser("train", help="train a VAE (streams to visdom unless --no-visdom)",
                       description="Train a VAE. With no flags: the PyTorch example's VAE on MNIST for 10 epochs, "
                                   f"streaming to the visdom server on {DEFAULT_HOST}:{DEFAULT_PORT}.")
    add_train_arguments(p)
    launch.add_arguments(p)
    p.set_defaults(func=cmd_train)
    for add_cli in (server.add_cli, assets.add_cli, mnist.add_cli, add_replay_cli, eval_run.add_cli, tables.add_cli,
                    add_compare_cli, sweep.add_cli):
        if add_cli is not None:  # None: needs visdom, which is not importable here
            add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UsageError, ConfigError, DataError) as err:
        print(f"vae-visdom {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
