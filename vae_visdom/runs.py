"""Runs on disk: `vae-visdom runs` lists them, `vae-visdom compare` lays them side by side.

Everything here reads a run's own files (config.json, status.json, metrics.jsonl,
steps.jsonl, sample_N.png; see callbacks.py), never a visdom server, so a listing
or a comparison works for finished runs, crashed runs and after a server restart.

    load_run(run_dir) -> RunRecord        one run's files, read once
    find_runs(runs_dir) -> [RunRecord]    every RUNS_DIR/*/config.json
    resolve_runs(specs, runs_dir)         run dirs, run names, or name prefixes (a sweep)
    add_cli(subparsers)                   registers `runs` and `compare`
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from vae_visdom.callbacks import read_jsonl
from vae_visdom.config import check_name

# The hyperparameters a listing and a comparison show, with their short names (legends, sweep run names).
KEY_HYPERPARAMETERS = {"model": "model", "dataset": "data", "lr": "lr", "batch_size": "bs", "optimizer": "opt",
                       "latent_dim": "latent", "epochs": "epochs", "hidden_dim": "hidden", "likelihood": "lik",
                       "binarize": "bin", "seed": "seed"}
LISTED = ("model", "dataset", "lr", "batch_size", "optimizer", "latent_dim")  # columns of `vae-visdom runs`


@dataclass
class RunRecord:
    """What a run's files say about it. Loss values are -ELBO in nats per example (lower is better)."""

    name: str
    run_dir: Path
    config: dict
    status: dict = field(default_factory=dict)  # status.json ({} before the first write)
    metrics: list[dict] = field(default_factory=list)  # metrics.jsonl: one row per epoch, by epoch
    updated: float | None = None  # newest modification time of the run's files (time.time() scale)

    @property
    def state(self) -> str:
        """starting | running | paused | stopping | stopped | finished | failed, or unknown.

        A process killed with SIGKILL cannot say so: its status stays "running" and only
        `updated` (which stops moving) tells the difference."""
        return str(self.status.get("state") or "unknown")

    @property
    def epochs_done(self) -> int:
        return int(self.metrics[-1]["epoch"]) if self.metrics else 0

    @property
    def epochs_total(self) -> int:
        """The live epoch count when the run changed it, else the configured one."""
        return int(self.status.get("epochs") or self.config.get("epochs") or 0)

    @property
    def best(self) -> dict | None:
        """The epoch row with the lowest test loss."""
        rows = [r for r in self.metrics if _finite(r.get("test_loss"))]
        return min(rows, key=lambda r: r["test_loss"]) if rows else None

    @property
    def last(self) -> dict | None:
        return self.metrics[-1] if self.metrics else None

    def hyperparameters(self, keys: Sequence[str] = tuple(KEY_HYPERPARAMETERS)) -> dict[str, Any]:
        return {k: self.config.get(k) for k in keys}

    def steps(self) -> list[dict]:
        """steps.jsonl: training loss every log interval (read on demand: it can be long)."""
        return read_jsonl(self.run_dir / "steps.jsonl")

    def last_sample(self) -> tuple[int, Path] | None:
        """(epoch, path) of the newest sample_N.png."""
        found = [(int(m.group(1)), p) for p in self.run_dir.glob("sample_*.png")
                 if (m := re.fullmatch(r"sample_(\d+)\.png", p.name))]
        return max(found) if found else None


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load_run(run_dir: str | Path) -> RunRecord:
    """Read one run directory. Raises FileNotFoundError without config.json, ValueError if it is not JSON."""
    d = Path(run_dir)
    cfg_path = d / "config.json"
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{d}: no config.json (not a run directory)") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{cfg_path}: not valid JSON ({err})") from None
    status: dict = {}
    try:
        status = json.loads((d / "status.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        pass  # not written yet, or torn: the listing says "unknown"
    by_epoch = {int(r["epoch"]): r for r in read_jsonl(d / "metrics.jsonl") if "epoch" in r}
    mtimes = [p.stat().st_mtime for p in (d / n for n in ("config.json", "status.json", "metrics.jsonl",
                                                            "steps.jsonl", "events.jsonl")) if p.exists()]
    return RunRecord(name=str(config.get("name") or d.name), run_dir=d, config=config, status=status,
                     metrics=[by_epoch[e] for e in sorted(by_epoch)], updated=max(mtimes) if mtimes else None)


def find_runs(runs_dir: str | Path) -> list[RunRecord]:
    """Every run under runs_dir (RUNS_DIR/*/config.json), least recently updated first."""
    records = []
    for cfg in sorted(Path(runs_dir).glob("*/config.json")):
        try:
            records.append(load_run(cfg.parent))
        except (OSError, ValueError) as err:
            print(f"warning: skipping {cfg.parent}: {err}", file=sys.stderr)
    return sorted(records, key=lambda r: (r.updated or 0.0, r.name))


def resolve_runs(specs: Sequence[str], runs_dir: str | Path) -> list[Path]:
    """Each spec is a run directory, a run name under runs_dir, or a name prefix matching
    several runs there (e.g. a sweep's name). Raises LookupError naming the first spec that matches nothing."""
    out: list[Path] = []
    root = Path(runs_dir)
    for spec in specs:
        if (Path(spec) / "config.json").is_file():
            found = [Path(spec)]
        elif (root / spec / "config.json").is_file():
            found = [root / spec]
        else:
            found = sorted(c.parent for c in root.glob("*/config.json") if c.parent.name.startswith(spec))
        if not found:
            raise LookupError(f"{spec}: neither a run directory nor the name (or prefix) of a run in {root} "
                              f"(see vae-visdom runs --runs-dir {root})")
        for p in found:
            if p.resolve() not in {q.resolve() for q in out}:
                out.append(p)
    return out


# -- formatting, shared by the listing, the comparison pane and the sweep's report -----------------
def format_value(v: Any) -> str:
    """1e-3 for small learning rates (as one types them), 0.02 and 128 as they are."""
    if isinstance(v, float):
        if v != 0 and abs(v) < 1e-2:
            mantissa, exp = f"{v:.3e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"
        return f"{v:g}"
    return "-" if v is None else str(v)


def differing_keys(records: Sequence[RunRecord]) -> list[str]:
    """The key hyperparameters whose values are not the same in every run."""
    return [k for k in KEY_HYPERPARAMETERS if len({json.dumps(r.config.get(k)) for r in records}) > 1]


def short_names(records: Sequence[RunRecord]) -> list[str]:
    """Names with their common prefix (up to a '-' or '_') cut: sweep-0101-lr1e-3, sweep-0101-lr3e-4 -> lr1e-3, lr3e-4."""
    names = [r.name for r in records]
    if len(names) < 2:
        return names
    prefix = names[0]
    for n in names[1:]:
        while not n.startswith(prefix):
            prefix = prefix[:-1]
    cut = max(prefix.rfind("-"), prefix.rfind("_")) + 1
    shorts = [n[cut:] for n in names]
    return shorts if all(shorts) and len(set(shorts)) == len(shorts) else names


def compact_tag(values: dict[str, Any]) -> str:
    """lr3e-4-bs64: how a sweep names a run after its grid values."""
    parts = []
    for k, v in values.items():
        abbrev = {"lr": "lr", "batch_size": "bs", "epochs": "ep", "latent_dim": "z"}.get(k, "")
        parts.append(f"{abbrev}{format_value(v)}")
    return "-".join(parts)


def run_labels(records: Sequence[RunRecord]) -> list[str]:
    """Legend names: the short run name plus the hyperparameters that differ, e.g. "lr1e-3 (lr=1e-3 bs=64)".

    A sweep's run names already are their grid values (lr1e-3-bs64); those get "lr=1e-3 bs=64" alone."""
    keys = differing_keys(records)
    labels = []
    for rec, short in zip(records, short_names(records)):
        diff = {k: rec.config.get(k) for k in keys}
        text = " ".join(f"{KEY_HYPERPARAMETERS[k]}={format_value(v)}" for k, v in diff.items())
        if not text:
            labels.append(short)
        elif short == compact_tag(diff):
            labels.append(text)
        else:
            labels.append(f"{short} ({text})")
    return labels


def best_run(records: Sequence[RunRecord]) -> RunRecord | None:
    """The run with the lowest best test loss (runs without a finished epoch cannot win)."""
    scored = [r for r in records if r.best is not None]
    return min(scored, key=lambda r: r.best["test_loss"]) if scored else None


def _age(t: float | None, now: float) -> str:
    if t is None:
        return "-"
    s = max(0.0, now - t)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.0f} {unit} ago"
    return f"{s:.0f} s ago"


def _loss(row: dict | None, key: str = "test_loss", with_epoch: bool = False) -> str:
    if row is None or not _finite(row.get(key)):
        return "-"
    return f"{row[key]:.2f}" + (f" (ep {row['epoch']})" if with_epoch else "")


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def listing(records: Sequence[RunRecord], now: float | None = None) -> str:
    """The `vae-visdom runs` table."""
    now = time.time() if now is None else now
    head = ["NAME", "STATUS", "EPOCHS", "BEST TEST", "LAST TEST", "MODEL", "DATA", "LR", "BS", "OPT", "LATENT",
            "UPDATED"]
    rows = [head]
    for r in records:
        c = r.config
        rows.append([r.name, r.state, f"{r.epochs_done}/{r.epochs_total}", _loss(r.best, with_epoch=True),
                     _loss(r.last), *(format_value(c.get(k)) for k in LISTED), _age(r.updated, now)])
    return format_table(rows)


def ranking(records: Sequence[RunRecord]) -> str:
    """Runs best first, with the numbers, and a line that says which hyperparameters won."""
    keys = differing_keys(records) or ["lr", "batch_size"]
    order = sorted(records, key=lambda r: (r.best is None, r.best["test_loss"] if r.best else 0.0))
    rows = [["", "RUN", *(KEY_HYPERPARAMETERS[k].upper() for k in keys), "BEST TEST", "LAST TEST", "LAST TRAIN",
             "EPOCHS", "STATUS"]]
    winner = best_run(records)
    for r in order:
        rows.append(["*" if r is winner else "", r.name, *(format_value(r.config.get(k)) for k in keys),
                     _loss(r.best, with_epoch=True), _loss(r.last), _loss(r.last, "train_loss"),
                     f"{r.epochs_done}/{r.epochs_total}", r.state])
    text = format_table(rows)
    if winner is not None:
        won = " ".join(f"{KEY_HYPERPARAMETERS[k]}={format_value(winner.config.get(k))}" for k in keys)
        text += (f"\nbest: {won} ({winner.name}): test loss {winner.best['test_loss']:.2f} nats "
                 f"at epoch {winner.best['epoch']}")
        others = [r for r in order if r is not winner and r.best is not None]
        if others:
            text += f"; next {others[0].best['test_loss']:.2f} ({others[0].name})"
    return text


# -- command line ----------------------------------------------------------------------------------
def add_cli(subparsers) -> None:
    """Register `vae-visdom runs` and `vae-visdom compare`."""
    p = subparsers.add_parser("runs", help="list the runs in a runs directory",
                              description="List runs (RUNS_DIR/*/config.json): status, epochs, test losses and "
                                          "key hyperparameters. A run killed hard still says 'running': "
                                          "UPDATED tells when its files last changed.")
    p.add_argument("--runs-dir", default="runs", help="where runs live (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="one JSON object per run instead of the table")
    p.set_defaults(func=cmd_runs)
    p = subparsers.add_parser("compare", help="lay runs side by side in a visdom env",
                              description="Build a visdom env comparing runs, from their files: train and test "
                                          "curves overlaid, a table of hyperparameters and losses (best run "
                                          "marked), and each run's last prior samples side by side.")
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="a run directory, a run name under --runs-dir, or a name prefix (all of a sweep's runs)")
    p.add_argument("--runs-dir", default="runs", help="where run names are looked up (default: %(default)s)")
    p.add_argument("--env", default=None, help="the comparison env (default: compare-<short run names>)")
    p.add_argument("--server", default="http://127.0.0.1", help="visdom server (default: %(default)s)")
    p.add_argument("--port", type=int, default=8097, help="visdom port (default: %(default)s)")
    p.set_defaults(func=cmd_compare)


def cmd_runs(args: argparse.Namespace) -> int:
    if not Path(args.runs_dir).is_dir():
        print(f"no runs directory {args.runs_dir} (train one with `vae-visdom train`)", file=sys.stderr)
        return 0
    records = find_runs(args.runs_dir)
    if args.json:
        for r in records:
            print(json.dumps({"name": r.name, "run_dir": str(r.run_dir), "state": r.state,
                              "epochs_done": r.epochs_done, "epochs_total": r.epochs_total, "best": r.best,
                              "last": r.last, "hyperparameters": r.hyperparameters(), "updated": r.updated}))
        return 0
    if not records:
        print(f"no runs in {args.runs_dir}")
        return 0
    print(listing(records))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from vae_visdom.config import UsageError

    if args.env is not None:
        check_name(args.env, "env")
    try:
        records = [load_run(p) for p in resolve_runs(args.runs, args.runs_dir)]
    except (LookupError, OSError, ValueError) as err:
        raise UsageError(str(err)) from None
    print(ranking(records))
    try:
        from vae_visdom.monitor.compare import compare_runs
    except ImportError as err:
        print(f"vae-visdom compare: error: visdom is not available ({err})", file=sys.stderr)
        return 1
    try:
        done = compare_runs(records, args.server, args.port, args.env)
    except ConnectionError:
        print(f"vae-visdom compare: error: no visdom server answers at {args.server}:{args.port} "
              f"(start one with `vae-visdom serve`)", file=sys.stderr)
        return 1
    print(f"comparison env: {args.server}:{args.port}/env/{done.env}")
    if len(records) > 1:
        print(f"visdom's own compare view of the runs' envs: {done.compare_view_url(args.server, args.port)}")
    return 0
