"""`vae-visdom` command line: train, serve, replay, eval, runs, compare, sweep, data, assets."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vae_visdom.config import ConfigError, TrainConfig, UsageError
from vae_visdom.flags import add_train_arguments, config_from_args

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line that says what is wrong (and where --help is)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def cmd_train(args: argparse.Namespace) -> int:
    from vae_visdom.session import TrainingSession

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


def _add_optional(sub, module: str) -> None:
    """Subcommands that live with their modules register themselves (add_cli)."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError as err:  # e.g. visdom missing: `train --no-visdom` must still work
        if "visdom" not in str(err):
            raise
        return
    if hasattr(mod, "add_cli"):
        mod.add_cli(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="vae-visdom", description="Train VAEs and watch (and steer) them live in visdom.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    p = sub.add_parser("train", help="train a VAE (streams to visdom unless --no-visdom)",
                       description="Train a VAE. With no flags: the PyTorch example's VAE on MNIST for 10 epochs, "
                                   "streaming to the visdom server on 127.0.0.1:8097.")
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)
    for module in ("vae_visdom.server", "vae_visdom.assets", "vae_visdom.data.mnist", "vae_visdom.monitor",
                   "vae_visdom.insight.eval_run", "vae_visdom.runs.tables", "vae_visdom.monitor.compare", "vae_visdom.sweep"):
        _add_optional(sub, module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from vae_visdom.data import DataError

    try:
        return int(args.func(args) or 0)
    except (UsageError, ConfigError, DataError) as err:
        print(f"vae-visdom {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
