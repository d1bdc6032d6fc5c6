"""`vae-visdom`: one table of commands (name, help, the module that handles it). Nothing imports this module.

Each command's module defines `add_arguments(parser)` and `run(args) -> int`. Only the module of the command
given is imported (by name, below), so `vae-visdom --help`, `train --help` and `runs` never import torch, and
a missing or refusing visdom breaks only the commands that need it (each says so in one line).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass

from vae_visdom.config import ConfigError, UsageError
from vae_visdom.serve import compat

EXIT_USAGE = 2


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    module: str  # defines add_arguments(parser) and run(args) -> int
    needs_visdom: bool = False  # refuse in one line when visdom is missing or will not import
    no_torch: bool = False  # keep torch out before visdom (which tries it) is imported: seconds, ~200 MB


COMMANDS = (  # in the order `vae-visdom --help` lists them
    Command("train", "train a VAE (streams to visdom unless --no-visdom)", "vae_visdom.train_command"),
    Command("serve", "run the visdom server (offline, loopback by default)", "vae_visdom.serve.server"),
    Command("assets", "install or check visdom's UI files (offline, from npm)", "vae_visdom.serve.assets"),
    Command("data", "fetch and verify the MNIST / Fashion-MNIST files (offline first)", "vae_visdom.data.mnist"),
    Command("replay", "draw a run's visdom windows again from RUN_DIR/visdom.log", "vae_visdom.pages.replay",
            needs_visdom=True),
    Command("eval", "importance-weighted test log-likelihood of a finished run", "vae_visdom.insight.eval_run"),
    Command("runs", "list the runs in a runs directory", "vae_visdom.runs.tables"),
    Command("compare", "lay runs side by side in a visdom env", "vae_visdom.pages.compare", needs_visdom=True),
    Command("home", "keep the env `runs`: every run, its status, and actions on them", "vae_visdom.pages.home",
            needs_visdom=True, no_torch=True),
    Command("sweep", "search on Ray Tune: grids, ranges, ASHA or PBT, every run live", "vae_visdom.sweep"),
    Command("animate", "the prior samples epoch by epoch as an animated GIF", "vae_visdom.runs.animate"),
)
BY_NAME = {c.name: c for c in COMMANDS}


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line that says what is wrong (and where --help is)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def command_given(argv: list[str]) -> Command | None:
    """The command named on the command line (its first word that is not an option), if it is one of ours."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return BY_NAME.get(word) if word else None


def load(command: Command):
    """The command's module, after the checks it needs before importing it."""
    if command.no_torch:
        compat.without_torch()
    if command.needs_visdom:
        problem = compat.visdom_problem()
        if problem:
            print(f"vae-visdom {command.name}: error: {problem}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE)
    return importlib.import_module(command.module)


def build_parser(argv: list[str] | None = None) -> Parser:
    """Every command listed; the arguments of the command named in `argv` only (its module is imported)."""
    parser = Parser(prog="vae-visdom", description="Train VAEs and watch (and steer) them live in visdom.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    given = command_given(sys.argv[1:] if argv is None else argv)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help)
        if command is given:
            module = load(command)
            module.add_arguments(p)
            p.set_defaults(run=module.run)
    return parser


def _user_error(err: Exception) -> bool:
    """Bad input (one line, exit 2) rather than a bug (a traceback)."""
    data_base = sys.modules.get("vae_visdom.data.base")  # DataError comes only after data/ (torch) is imported
    return isinstance(err, (UsageError, ConfigError)) or (data_base is not None
                                                          and isinstance(err, data_base.DataError))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except Exception as err:
        if not _user_error(err):
            raise
        print(f"vae-visdom {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
