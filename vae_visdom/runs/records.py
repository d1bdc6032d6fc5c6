"""Runs read back from their folders: RunRecord, load/find/resolve runs, labels and the value formatter.

Everything here reads a run's own files (config.json, status.json, metrics.jsonl,
steps.jsonl, sample_N.png; see files.py), never a visdom server, so a listing
or a comparison works for finished runs, crashed runs and after a server restart.

    load_run(run_dir) -> RunRecord        one run's files, read once
    find_runs(runs_dir) -> [RunRecord]    every run: RUNS_DIR/<run>, and RUNS_DIR/<sweep>/<run> (runs/layout.py)
    resolve_runs(specs, runs_dir)         run dirs, run names, or name prefixes (a sweep)
"""
from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vae_visdom.runs.jsonl import read_jsonl
from vae_visdom.runs.layout import is_sweep, run_folders, sweep_of
from vae_visdom.runs.lock import is_held
from vae_visdom.runs.run_file import RunFileError, read_lines, read_object

# The hyperparameters a listing and a comparison show, with their short names (legends, sweep run names).
KEY_HYPERPARAMETERS = {"model": "model", "dataset": "data", "lr": "lr", "batch_size": "bs", "optimizer": "opt",
                       "latent_dim": "latent", "epochs": "epochs", "hidden_dim": "hidden", "likelihood": "lik",
                       "binarize": "bin", "seed": "seed", "beta": "beta"}
LIVE_STATES = ("starting", "running", "paused", "stopping")  # status.json states of a trainer still at work
STATUS_FIELDS = {"state": str, "message": str, "epoch": int, "step": int, "epochs": int, "values": dict}
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
    held: bool | None = None  # its trainer.lock held by a live trainer (lock.is_held); None: cannot be told
    problems: list[str] = field(default_factory=list)  # what is wrong with which file, one line each
    sweep: str | None = None  # the sweep whose folder holds the run (RUNS_DIR/<sweep>/<run>), else None

    @property
    def state(self) -> str:
        """starting | running | paused | stopping | stopped | finished | failed | diverged | crashed, or unknown.

        A process killed with SIGKILL cannot say so: its status.json keeps a live state. "crashed" is
        that state with evidence that no trainer holds the folder any more (lock.is_held is False);
        without evidence (no /proc/locks, another host) the status.json state stands."""
        state = str(self.status.get("state") or "unknown")
        return "crashed" if state in LIVE_STATES and self.held is False else state

    @property
    def epochs_done(self) -> int:
        return int(self.metrics[-1]["epoch"]) if self.metrics else 0

    @property
    def epochs_total(self) -> int:
        """The live epoch count when the run changed it, else the configured one."""
        return _whole(self.status.get("epochs")) or _whole(self.config.get("epochs")) or 0

    @property
    def best(self) -> dict | None:
        """The epoch row with the lowest test loss."""
        rows = [r for r in self.metrics if is_finite_number(r.get("test_loss"))]
        return min(rows, key=lambda r: r["test_loss"]) if rows else None

    @property
    def last(self) -> dict | None:
        return self.metrics[-1] if self.metrics else None

    def hyperparameters(self, keys: Sequence[str] = tuple(KEY_HYPERPARAMETERS)) -> dict[str, Any]:
        return {k: self.config.get(k) for k in keys}

    def steps(self) -> list[dict]:
        """steps.jsonl: training loss every log interval (read on demand: it can be long). One that cannot
        be read (not a regular file) gives no rows and a line in `problems`."""
        try:
            return read_jsonl(self.run_dir / "steps.jsonl")
        except RunFileError as err:
            if str(err) not in self.problems:
                self.problems.append(str(err))
            return []

    def last_sample(self) -> tuple[int, Path] | None:
        """(epoch, path) of the newest sample_N.png."""
        found = [(int(m.group(1)), p) for p in self.run_dir.glob("sample_*.png")
                 if (m := re.fullmatch(r"sample_(\d+)\.png", p.name))]
        return max(found) if found else None


def is_finite_number(v: Any) -> bool:
    """A JSON number that is finite (true and false are not numbers here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _whole(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def load_run(run_dir: str | Path, lenient: bool = False) -> RunRecord:
    """Read one run directory through run_file (no FIFO is ever opened, no shape of JSON breaks it).
    Raises FileNotFoundError without config.json. A damaged config.json raises run_file.RunFileError (a
    ValueError naming the file), or with `lenient` (the listing, the home) gives a record with an empty
    config; whatever else is wrong (status.json, metrics.jsonl) is said in `problems`, the rest is kept."""
    d = Path(run_dir)
    problems: list[str] = []
    try:
        config = read_object(d / "config.json")
    except FileNotFoundError:
        raise FileNotFoundError(f"{d}: no config.json (not a run directory)") from None
    except RunFileError as err:
        if not lenient:
            raise RunFileError(d / "config.json", f"{err.reason} (in {d})") from None
        config = {}
        problems.append(str(err))
    status = _read_status(d, problems)
    held = None
    if status.get("state") in LIVE_STATES:
        held = is_held(d)
        if held is False:  # the run may have ended between the two reads: its last word counts
            problems = [p for p in problems if not p.startswith("status.json")]
            status = _read_status(d, problems)
    try:
        rows, torn, odd = read_lines(d / "metrics.jsonl")
    except RunFileError as err:
        rows, torn, odd = [], [], []
        problems.append(str(err))
    by_epoch: dict[int, dict] = {r["epoch"]: r for r in rows if _whole(r.get("epoch")) is not None}
    bad = len(torn) + len(odd) + len(rows) - sum(1 for r in rows if _whole(r.get("epoch")) is not None)
    if bad:
        problems.append(f"metrics.jsonl: {bad} line(s) that are not epoch rows, skipped")
    mtimes = []
    for n in ("config.json", "status.json", "metrics.jsonl", "steps.jsonl", "events.jsonl"):
        try:
            mtimes.append((d / n).stat().st_mtime)
        except OSError:
            pass
    given = config.get("name")
    name = given if isinstance(given, str) and given else d.name
    return RunRecord(name=name, run_dir=d, config=config, status=status,
                     metrics=[by_epoch[e] for e in sorted(by_epoch)], updated=max(mtimes) if mtimes else None,
                     held=held, problems=problems, sweep=sweep_of(d))


def _read_status(d: Path, problems: list[str]) -> dict:
    """status.json's fields that have their type; each one that does not is a problem, and dropped."""
    try:
        status = read_object(d / "status.json")
    except FileNotFoundError:
        return {}  # not written yet: the listing says "unknown"
    except RunFileError as err:
        problems.append(str(err))
        return {}
    for key, kind in STATUS_FIELDS.items():
        value = status.get(key)
        if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            problems.append(f"status.json: {key} is {json.dumps(value)[:40]}, not {_KINDS[kind]}; ignored")
            del status[key]
    return status


_KINDS = {str: "text", int: "a whole number", dict: "an object"}


def find_runs(runs_dir: str | Path) -> list[RunRecord]:
    """Every run under runs_dir (RUNS_DIR/<run> and a sweep's RUNS_DIR/<sweep>/<run>), least recently updated
    first; a run with a damaged file is listed too, with its `problems`."""
    records = []
    for folder in run_folders(runs_dir):
        try:
            records.append(load_run(folder, lenient=True))
        except (OSError, ValueError) as err:  # gone between the listing and the read
            print(f"warning: skipping {folder}: {err}", file=sys.stderr)
    return sorted(records, key=lambda r: (r.updated or 0.0, r.name))


def resolve_runs(specs: Sequence[str], runs_dir: str | Path) -> list[Path]:
    """Each spec is a run directory, a sweep's folder (its runs), a run name under runs_dir (in a sweep's folder
    too), or a name prefix matching several runs there (e.g. a sweep's name). Raises LookupError naming the
    first spec that matches nothing."""
    out: list[Path] = []
    root = Path(runs_dir)
    every = run_folders(root)
    for spec in specs:
        if (Path(spec) / "config.json").is_file():
            found = [Path(spec)]
        elif is_sweep(folder := Path(spec)) or is_sweep(folder := root / spec):
            found = [p for p in run_folders(folder.parent) if p.parent == folder]
        else:
            found = [p for p in every if p.name == spec] or sorted(
                (p for p in every if p.name.startswith(spec)), key=lambda p: p.name)
        if not found:
            raise LookupError(f"{spec}: neither a run directory nor the name (or prefix) of a run in {root} "
                              f"(see vae-visdom runs --runs-dir {root})")
        for p in found:
            if p.resolve() not in {q.resolve() for q in out}:
                out.append(p)
    return out


# -- formatting, shared by the listing, the comparison pane and the sweep's report -----------------
def format_value(v: Any, setting: str | None = None) -> str:
    """The one value formatter. Tables, legends, run names: 1e-3 for small learning rates (as one types
    them), 0.02 and 128 as they are, "-" for none. A live `setting` (the panel, the run pane) as its input
    box shows it: lr 0.001, nothing for none."""
    if setting is not None:
        if v is None:
            return ""
        return f"{float(v):g}" if setting in ("lr", "beta") else str(v)
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
    """Names with their common prefix (up to a '-' or '_') cut:
    sweep-0101-lr1e-3, sweep-0101-lr3e-4 -> lr1e-3, lr3e-4."""
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
        abbrev = {"lr": "lr", "batch_size": "bs", "epochs": "ep", "latent_dim": "z", "beta": "beta"}.get(k, "")
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
    return min(scored, key=best_first) if scored else None


def best_first(record: RunRecord) -> tuple[bool, float]:
    """The sort key that puts runs with a finished epoch first, by their best test loss."""
    best = record.best
    return (True, 0.0) if best is None else (False, best["test_loss"])
