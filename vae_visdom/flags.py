"""The `train` flags, shared by `vae-visdom train` and `vae-visdom sweep`, and the config they make."""
from __future__ import annotations

import argparse
import dataclasses

from vae_visdom.config import (
    DATASETS,
    DEFAULT_PORT,
    DEFAULT_SERVER,
    DEVICES,
    FAST_STEPS,
    LIKELIHOODS,
    OBJECTIVES,
    OPTIMIZERS,
    PRECISIONS,
    TrainConfig,
    argparse_type,
)
from vae_visdom.models.specs import MODEL_NAMES, MODEL_SPECS


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The training flags. Defaults are None where the model's defaults fill them in (see models/__init__.py)."""
    for add in (_what_to_train, _how_to_train, _where_results_go, _live_monitoring):
        add(p)


def _what_to_train(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to train")
    g.add_argument("--dataset", choices=DATASETS, default=None, help="default: mnist")
    g.add_argument("--model", choices=MODEL_NAMES, default=None,
                   help="default: mlp. " + "; ".join(f"{k}: {spec.help}" for k, spec in MODEL_SPECS.items()))
    g.add_argument("--data-dir", default=None, help="folder holding the data (MNIST: the raw IDX files)")
    g.add_argument("--latent-dim", type=argparse_type("latent_dim"), default=None)
    g.add_argument("--hidden-dim", type=argparse_type("hidden_dim"), default=None)
    g.add_argument("--likelihood", choices=LIKELIHOODS, default=None)
    g.add_argument("--test-fraction", type=argparse_type("test_fraction"), default=None,
                   help="image folders: share held out for testing (default 0.1)")
    g.add_argument("--subset", type=argparse_type("subset"), default=None,
                   help="celeba, folder: use the first N images (sorted names)")
    g.add_argument("--binarize", action="store_true", default=None,
                   help="dynamically binarized pixels (the setting of published MNIST likelihoods)")


def _how_to_train(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("how to train (lr, batch size, epochs, log interval and beta can change live)")
    g.add_argument("--epochs", type=argparse_type("epochs"), default=None, help="default: 10")
    g.add_argument("--batch-size", type=argparse_type("batch_size"), default=None, help="default: the model's (128)")
    g.add_argument("--lr", type=argparse_type("lr"), default=None, help="default: the model's (mlp: 1e-3)")
    g.add_argument("--beta", type=argparse_type("beta"), default=None,
                   help="weight of the KL term (default 1: the ELBO; changeable live)")
    g.add_argument("--kl-warmup", type=argparse_type("kl_warmup"), default=None,
                   help="steps over which the KL weight rises linearly from 0 to --beta (default 0)")
    g.add_argument("--objective", choices=OBJECTIVES, default=None,
                   help="elbo (default) or iwae: the importance-weighted bound of Burda et al. (2016) with --k samples")
    g.add_argument("--k", dest="iwae_k", type=argparse_type("iwae_k"), default=None, metavar="K",
                   help="samples per image of --objective iwae (default 5; 1 is the ELBO)")
    g.add_argument("--lr-schedule", type=argparse_type("lr_schedule"), default=None,
                   help="constant (default); burda or burda:E: Burda et al.'s lr stages; cosine:E[:F]: a cosine "
                        "decay to F (default 0.01) times the lr in E epochs. The live lr rescales any of them")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help="default: the model's (mlp: adam)")
    g.add_argument("--seed", type=argparse_type("seed"), default=None, help="default: 1")
    g.add_argument("--device", choices=DEVICES, default=None, help="default: auto (cuda when available)")
    g.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="bf16: bf16 autocast for the forward pass where the hardware has it (default fp32)")
    g.add_argument("--fast-step", choices=FAST_STEPS, default=None,
                   help="auto (default): on a GPU the training step replayed as one CUDA graph, on the CPU "
                        "the fully connected VAEs' hand-derived step (mlp, mlp-paper, mlp-iwae) or the conv VAEs' "
                        "channels_last step, where they apply; eager: autograd; compile: the conv VAEs' step "
                        "through torch.compile (CPU)")
    g.add_argument("--log-interval", type=argparse_type("log_interval"), default=None,
                   help="steps between loss points (default 10)")
    g.add_argument("--iw-every", type=argparse_type("iw_every"), default=None,
                   help="importance-weighted test log-likelihood every N epochs (0: never)")
    g.add_argument("--iw-samples", type=argparse_type("iw_samples"), default=None,
                   help="samples per test image for --iw-every (default 100)")
    g.add_argument("--no-views", dest="views", action="store_false", default=None,
                   help="skip the latent views and the PCA baseline")


def _where_results_go(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where results go")
    g.add_argument("--out", default=None, help="the run directory (default: RUNS_DIR/NAME)")
    g.add_argument("--runs-dir", default=None, help="where runs live (default: ./runs)")
    g.add_argument("--name", default=None, help="run name (default: dataset-model-lr-bs-time)")
    g.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue that run where it stopped")
    g.add_argument("--fork", metavar="RUN_DIR", default=None,
                   help="start a new run from that run's newest checkpoint and history (the parent is only read); "
                        "named <parent>-fork<N> unless --name; the other flags given apply to the fork")
    g.add_argument("--at-epoch", type=argparse_type("epochs"), default=None, metavar="E",
                   help="with --fork: start from the parent's checkpoint of epoch E (kept by --keep-checkpoints)")
    g.add_argument("--steer-like", metavar="RUN_DIR", default=None,
                   help="a new run with that run's configuration that re-applies every live change it accepted "
                        "(lr, batch_size, epochs, log_interval, beta) at the same epoch and step")
    g.add_argument("--steering", metavar="FILE", default=None,
                   help="apply the changes of a steering file (`[epoch E] step S: lr=3e-4 ...` a line; "
                        "`vae-visdom runs --steering RUN_DIR` prints a run's) at their steps; with --steer-like "
                        "it replaces that run's")
    g.add_argument("--keep-checkpoints", action="store_true", default=None,
                   help="keep RUN_DIR/checkpoints/epoch_E.pt of every epoch, whatever --checkpoint-budget says")
    g.add_argument("--checkpoint-budget", type=argparse_type("checkpoint_budget"), default=None, metavar="MB",
                   help="disk for the epochs' checkpoints that forks from an epoch start from, the newest kept "
                        "first (default 100; 0: keep none)")


def _live_monitoring(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("live monitoring")
    g.add_argument("--no-visdom", dest="visdom", action="store_false", default=None, help="do not stream to visdom")
    g.add_argument("--server", type=argparse_type("server"), default=None,
                   help=f"visdom server (default: {DEFAULT_SERVER})")
    g.add_argument("--port", type=argparse_type("port"), default=None, help=f"visdom port (default: {DEFAULT_PORT})")
    g.add_argument("--env", default=None, help="visdom env (default: the run name)")


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """Flags given on the command line override `base` (a resumed run's config) or the defaults."""
    cfg = dataclasses.replace(base) if base else TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None and f.name not in ("out", "resume", "parent", "forked_at"):
            setattr(cfg, f.name, value)
    if getattr(args, "out", None):
        cfg.out = args.out
    return cfg
