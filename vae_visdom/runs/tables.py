"""`vae-visdom runs`: the listing and the ranking tables of runs read from their folders."""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from vae_visdom.runs.jsonl import read_jsonl
from vae_visdom.runs.records import (
    KEY_HYPERPARAMETERS,
    LISTED,
    RunRecord,
    best_first,
    best_run,
    differing_keys,
    find_runs,
    format_value,
    is_finite_number,
)
from vae_visdom.runs.run_file import RunFileError
from vae_visdom.train.steering import format_steering, from_events


def _age(t: float | None, now: float) -> str:
    if t is None:
        return "-"
    s = max(0.0, now - t)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.0f} {unit} ago"
    return f"{s:.0f} s ago"


def loss_cell(row: dict | None, key: str = "test_loss", with_epoch: bool = False) -> str:
    if row is None or not is_finite_number(row.get(key)):
        return "-"
    return f"{row[key]:.2f}" + (f" (ep {row['epoch']})" if with_epoch else "")


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def listing(records: Sequence[RunRecord], now: float | None = None) -> str:
    """The `vae-visdom runs` table."""
    now = time.time() if now is None else now
    head = ["NAME", "SWEEP", "STATUS", "EPOCHS", "BEST TEST", "LAST TEST", "MODEL", "DATA", "LR", "BS", "OPT", "LATENT",
            "UPDATED", "PROBLEM"]
    rows = [head]
    for r in records:
        c = r.config
        rows.append([r.name, r.sweep or "-", r.state, f"{r.epochs_done}/{r.epochs_total}",
                     loss_cell(r.best, with_epoch=True), loss_cell(r.last), *(format_value(c.get(k)) for k in LISTED),
                     _age(r.updated, now), "; ".join(r.problems)])
    if not any(r.problems for r in records):
        rows = [row[:-1] for row in rows]
    if not any(r.sweep for r in records):  # the SWEEP column only where a sweep's runs are listed
        rows = [row[:1] + row[2:] for row in rows]
    return format_table(rows)


def ranking(records: Sequence[RunRecord]) -> str:
    """Runs best first, with the numbers, and a line that says which hyperparameters won."""
    keys = differing_keys(records) or ["lr", "batch_size"]
    order = sorted(records, key=best_first)
    rows = [["", "RUN", *(KEY_HYPERPARAMETERS[k].upper() for k in keys), "BEST TEST", "LAST TEST", "LAST TRAIN",
             "EPOCHS", "STATUS"]]
    winner = best_run(records)
    for r in order:
        rows.append(["*" if r is winner else "", r.name, *(format_value(r.config.get(k)) for k in keys),
                     loss_cell(r.best, with_epoch=True), loss_cell(r.last), loss_cell(r.last, "train_loss"),
                     f"{r.epochs_done}/{r.epochs_total}", r.state])
    text = format_table(rows)
    if winner is not None:
        won = " ".join(f"{KEY_HYPERPARAMETERS[k]}={format_value(winner.config.get(k))}" for k in keys)
        best = winner.best
        assert best is not None  # best_run picks only among runs with a best epoch
        text += f"\nbest: {won} ({winner.name}): test loss {best['test_loss']:.2f} nats at epoch {best['epoch']}"
        others = [(r.name, b) for r in order if r is not winner and (b := r.best) is not None]
        if others:
            name, b = others[0]
            text += f"; next {b['test_loss']:.2f} ({name})"
    return text


# -- command line ----------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("List runs (RUNS_DIR/<run>, and a sweep's RUNS_DIR/<sweep>/<run>): status, epochs, test "
                     "losses and key hyperparameters. A run whose trainer is gone without a word "
                     "(kill -9, a power cut) says 'crashed' where this machine can tell "
                     "(its trainer.lock is free: Linux, same host); elsewhere it keeps "
                     "its last status, and UPDATED tells when its files last changed.")
    p.add_argument("--runs-dir", default="runs", help="where runs live (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="one JSON object per run instead of the table")
    p.add_argument("--steering", metavar="RUN_DIR", default=None,
                   help="print that run's steering instead: every live change it accepted, where it was applied "
                        "(a file for `train --steering`)")


def run(args: argparse.Namespace) -> int:
    if args.steering:
        return print_steering(Path(args.steering))
    if not Path(args.runs_dir).is_dir():
        print(f"no runs directory {args.runs_dir} (train one with `vae-visdom train`)", file=sys.stderr)
        return 0
    records = find_runs(args.runs_dir)
    if args.json:
        for r in records:
            print(json.dumps({"name": r.name, "run_dir": str(r.run_dir), "sweep": r.sweep, "state": r.state,
                              "held": r.held,
                              "epochs_done": r.epochs_done, "epochs_total": r.epochs_total, "best": r.best,
                              "last": r.last, "hyperparameters": r.hyperparameters(), "updated": r.updated,
                              "problems": r.problems}))
        return 0
    if not records:
        print(f"no runs in {args.runs_dir}")
        return 0
    print(listing(records))
    return 0


def print_steering(run_dir: Path) -> int:
    """`runs --steering RUN_DIR`: the run's accepted live changes as a steering file, on stdout."""
    if not (run_dir / "config.json").is_file():
        print(f"--steering {run_dir}: no config.json there (not a run directory)", file=sys.stderr)
        return 2
    try:
        events = read_jsonl(run_dir / "events.jsonl")
    except RunFileError as err:
        print(f"--steering {run_dir}: {err}", file=sys.stderr)
        return 2
    print(format_steering(from_events(events), f"steering of {run_dir}"), end="")
    return 0
