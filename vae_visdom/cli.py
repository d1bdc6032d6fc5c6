"""`vae-visdom` command line: train, serve, replay, eval, runs, compare, sweep, data, assets."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from vae_visdom.config import (DATASETS, DEVICES, FAST_STEPS, LIKELIHOODS, OPTIMIZERS, PRECISIONS, ConfigError,
                               TrainConfig, argparse_type)

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line that says what is wrong (and where --help is)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The training flags. Defaults are None where the model's defaults fill them in (see models/__init__.py)."""
    from vae_visdom.models import MODELS

    g = p.add_argument_group("what to train")
    g.add_argument("--dataset", choices=DATASETS, default=None, help="default: mnist")
    g.add_argument("--model", choices=list(MODELS), default=None,
                   help="default: mlp. " + "; ".join(f"{k}: {v.help}" for k, v in MODELS.items()))
    g.add_argument("--data-dir", default=None, help="folder holding the data (MNIST: the raw IDX files)")
    g.add_argument("--latent-dim", type=argparse_type("latent_dim"), default=None)
    g.add_argument("--hidden-dim", type=argparse_type("hidden_dim"), default=None)
    g.add_argument("--likelihood", choices=LIKELIHOODS, default=None)
    g.add_argument("--test-fraction", type=argparse_type("test_fraction"), default=None,
                   help="image folders: share held out for testing (default 0.1)")
    g.add_argument("--subset", type=argparse_type("subset"), default=None, help="celeba, folder: use the first N images (sorted names)")
    g.add_argument("--binarize", action="store_true", default=None,
                   help="dynamically binarized pixels (the setting of published MNIST likelihoods)")
    g = p.add_argument_group("how to train (lr, batch size, epochs and log interval can change live)")
    g.add_argument("--epochs", type=argparse_type("epochs"), default=None, help="default: 10")
    g.add_argument("--batch-size", type=argparse_type("batch_size"), default=None, help="default: the model's (128)")
    g.add_argument("--lr", type=argparse_type("lr"), default=None, help="default: the model's (mlp: 1e-3)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help="default: the model's (mlp: adam)")
    g.add_argument("--seed", type=argparse_type("seed"), default=None, help="default: 1")
    g.add_argument("--device", choices=DEVICES, default=None, help="default: auto (cuda when available)")
    g.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="bf16: bf16 autocast for the forward pass where the hardware has it (default fp32)")
    g.add_argument("--fast-step", choices=FAST_STEPS, default=None,
                   help="auto (default): on a GPU the training step replayed as one CUDA graph, on the CPU "
                        "the fully connected VAE's hand-derived step, where they apply; eager: autograd")
    g.add_argument("--log-interval", type=argparse_type("log_interval"), default=None,
                   help="steps between loss points (default 10)")
    g.add_argument("--iw-every", type=argparse_type("iw_every"), default=None,
                   help="importance-weighted test log-likelihood every N epochs (0: never)")
    g.add_argument("--iw-samples", type=argparse_type("iw_samples"), default=None,
                   help="samples per test image for --iw-every (default 100)")
    g.add_argument("--no-views", dest="views", action="store_false", default=None,
                   help="skip the latent views and the PCA baseline")
    g = p.add_argument_group("where results go")
    g.add_argument("--out", default=None, help="the run directory (default: RUNS_DIR/NAME)")
    g.add_argument("--runs-dir", default=None, help="where runs live (default: ./runs)")
    g.add_argument("--name", default=None, help="run name (default: dataset-model-lr-bs-time)")
    g.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue that run where it stopped")
    g = p.add_argument_group("live monitoring")
    g.add_argument("--no-visdom", dest="visdom", action="store_false", default=None, help="do not stream to visdom")
    g.add_argument("--server", default=None, help="visdom server (default: http://127.0.0.1)")
    g.add_argument("--port", type=int, default=None, help="visdom port (default: 8097)")
    g.add_argument("--env", default=None, help="visdom env (default: the run name)")


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """Flags given on the command line override `base` (a resumed run's config) or the defaults."""
    cfg = dataclasses.replace(base) if base else TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None and f.name not in ("out", "resume"):
            setattr(cfg, f.name, value)
    if getattr(args, "out", None):
        cfg.out = args.out
    return cfg


def default_run_name(cfg: TrainConfig) -> str:
    return f"{cfg.dataset}-{cfg.model}-lr{cfg.lr:g}-bs{cfg.batch_size}-{time.strftime('%Y%m%d-%H%M%S')}"


def _writable_dir(path: Path) -> Path:
    probe = path / ".write-test"
    try:
        path.mkdir(parents=True, exist_ok=True)
        try:
            probe.write_text("ok")
        finally:
            probe.unlink(missing_ok=True)  # a full disk can fail the write after creating the file
    except OSError as err:
        raise UsageError(f"output dir {path} is not writable ({err.strerror or err}); choose another with --out")
    return path


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("device: cuda was asked for but no CUDA device is available; allowed here: auto, cpu")
    return torch.device(name)


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
                   "vae_visdom.evaluate", "vae_visdom.runs", "vae_visdom.sweep"):
        if module_exists(module):
            _add_optional(sub, module)
    return parser


def module_exists(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


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
