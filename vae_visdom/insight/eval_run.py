"""`vae-visdom eval RUN_DIR`: a trained run's importance-weighted test log-likelihood, into RUN_DIR/eval.json."""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

import torch

from vae_visdom.config import DEVICES, UsageError, argparse_type, with_model_defaults
from vae_visdom.data import load_dataset
from vae_visdom.insight.iwae import DEFAULT_MAX_FLOATS, IWResult, format_result, iw_log_likelihood
from vae_visdom.models import build_model
from vae_visdom.runs.run_file import load_config
from vae_visdom.safe_io import atomic_write
from vae_visdom.train import checkpoint
from vae_visdom.train.step import resolve_device


def load_trained(run_dir: str | Path, device: str | torch.device = "cpu"):
    """(config, model with the checkpoint's weights, data) of a run directory.

    Expects RUN_DIR/config.json (TrainConfig.to_json) and RUN_DIR/checkpoint.pt, a dict whose
    "model" entry is the state_dict (a bare state_dict is accepted too).
    """
    run_dir = Path(run_dir)
    for name in ("config.json", "checkpoint.pt"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name} not found: is {run_dir} a run directory?")
    cfg = with_model_defaults(load_config(run_dir / "config.json"))  # a damaged one: RunFileError, one line
    data = load_dataset(cfg.dataset, cfg.data_dir, seed=cfg.seed, test_fraction=cfg.test_fraction,
                        subset=cfg.subset)
    # every model's defaults name these three, so with_model_defaults has filled them
    assert cfg.latent_dim is not None and cfg.hidden_dim is not None and cfg.likelihood is not None
    model = build_model(cfg.model, data.image_shape, cfg.latent_dim, cfg.hidden_dim, cfg.likelihood)
    ckpt = checkpoint.load(run_dir)
    model.load_state_dict(ckpt["model"] if "model" in ckpt else ckpt)
    return cfg, model.to(device), data


def evaluate_run(run_dir: str | Path, k: int | None = None, binarize: bool | None = None, device: str = "auto",
                 batch_size: int | None = None, seed: int | None = None, limit: int | None = None,
                 max_floats: int = DEFAULT_MAX_FLOATS, progress: bool = False,
                 partial_on_interrupt: bool = False, shuffle: bool = False) -> IWResult:
    """Score a run's test set and write RUN_DIR/eval.json. None means: as the run was configured.

    With `partial_on_interrupt` (the `eval` command), Ctrl-C keeps the images scored so far: eval.json
    then holds n < n_requested, the numbers `--limit n` gives."""
    dev = resolve_device(device)
    cfg, model, data = load_trained(run_dir, dev)
    k = cfg.iw_samples if k is None else k
    binarize = cfg.binarize if binarize is None else binarize
    seed = cfg.seed if seed is None else seed
    test = data.test
    if shuffle:  # a seeded random order: --limit N (or a Ctrl-C) then keeps a random subset, not the first N
        test = test[torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))]
    test = test if limit is None else test[:limit]
    result = iw_log_likelihood(model, test, k, batch_size=batch_size, binarize=binarize,
                               generator=torch.Generator().manual_seed(seed), device=dev, max_floats=max_floats,
                               progress=progress, partial_on_interrupt=partial_on_interrupt)
    record = {"split": "test", "dataset": cfg.dataset, "model": cfg.model, "device": str(dev), "seed": seed,
              "order": "random" if shuffle else "given",
              **result.to_dict()}
    atomic_write(Path(run_dir) / "eval.json", json.dumps(record, indent=2) + "\n")
    return result


def run(args: argparse.Namespace) -> int:
    # Ctrl-C (SIGINT) keeps the images scored so far, also for a run started in the background, where the
    # shell hands Python SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = evaluate_run(args.run_dir, k=args.iw_samples, binarize=args.binarize, device=args.device,
                              batch_size=args.batch_size, seed=args.seed, limit=args.limit,
                              max_floats=int(args.max_floats), progress=args.progress,
                              partial_on_interrupt=True, shuffle=args.shuffle)
    except (OSError, ValueError, RuntimeError, UsageError) as err:  # missing files, bad budget, no CUDA, ...
        print(f"vae-visdom eval: error: {err}", file=sys.stderr)
        return 1
    print(format_result(result))
    print(f"({result.n} images{', binarized' if result.binarized else ''}, {result.seconds:.1f} s; "
          f"wrote {Path(args.run_dir) / 'eval.json'})")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Estimate log p(x) on the run's test set with K importance samples "
                     "(Burda et al. 2016) and write RUN_DIR/eval.json.")
    p.add_argument("run_dir", help="a run directory (config.json, checkpoint.pt)")
    p.add_argument("--iw-samples", type=argparse_type("iw_samples"), default=None, metavar="K",
                   help="importance samples per image (default: the run's iw_samples; the IWAE paper uses 5000)")
    p.add_argument("--binarize", action=argparse.BooleanOptionalAction, default=None,
                   help="Bernoulli-sample the pixels, the setting of published MNIST numbers (default: as trained)")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--batch-size", type=argparse_type("batch_size"), default=None,
                   help="images per batch (default: as many as the memory budget allows)")
    p.add_argument("--seed", type=argparse_type("seed"), default=None, help="noise seed (default: the run's)")
    p.add_argument("--limit", type=argparse_type("subset"), default=None, metavar="N",
                   help="score only the first N test images")
    p.add_argument("--max-floats", type=float, default=DEFAULT_MAX_FLOATS,
                   help="floats live at once (default 2e7, ~80 MB)")
    p.add_argument("--shuffle", action="store_true",
                   help="score the test images in a random order (seeded): --limit N or a Ctrl-C then keeps a "
                        "random subset (MNIST's first 5000 test digits are the easier half)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="a progress bar of the images scored, on stderr (default: on)")
