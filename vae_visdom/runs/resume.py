"""What a resumed run finds in its folder, and how it is put right before training goes on.

The checkpoint is the truth. The trainer ends an epoch in this order:
  1. sample_N.png, reconstruction_N.png (each: tmp, fsync, rename), then the epoch's row appended
     to metrics.jsonl (its step rows were appended as they were logged);
  2. steps.jsonl and metrics.jsonl fsynced (Callback.on_save_checkpoint);
  3. checkpoint.pt written to a tmp file and fsynced; the current one hard-linked and renamed to
     checkpoint.prev.pt; the new one renamed to checkpoint.pt (train/checkpoint.py).
A checkpoint therefore never covers a row or image that is not on disk, so after a kill at any point
- rows and images after the checkpoint are from work the resumed run will do again: they are
  dropped (metrics.jsonl, steps.jsonl rewritten atomically; sample_N.png, reconstruction_N.png
  removed);
- every epoch the checkpoint covers has its row. When one is missing anyway (a torn line, a file
  damaged or edited by hand) and the previous checkpoint comes before it, the run resumes from
  the previous checkpoint and trains that epoch again (the same numbers: resuming is exact);
  otherwise the row is reported lost;
- a damaged checkpoint.pt (empty, truncated, garbage, or failing its checksum: checkpoint.py) gives way
  to checkpoint.prev.pt; it is kept as checkpoint.pt.broken.
The resumed run's plots are drawn again from these rows (monitor/content.py: restore_from_rows), not
from visdom.log, which can lag behind the rows (it is written every half second) or run ahead of
the checkpoint. Each problem is one line on stderr and a record in events.jsonl (source "resume").
Dropping what came after the checkpoint is what resuming means, and is not reported.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from vae_visdom import safe_io
from vae_visdom.runs.run_file import read_lines
from vae_visdom.train import checkpoint
from vae_visdom.train.checkpoint import CHECKPOINT, PREVIOUS, CheckpointError

HISTORY = {"metrics.jsonl": "epoch", "steps.jsonl": "step"}  # file -> the key its rows are ordered by
PNG = re.compile(r"(?:sample|reconstruction)_(\d+)\.png")
RUN_FILES = ("metrics.jsonl", "steps.jsonl", "events.jsonl", "status.json", "eval.json", "visdom.log",
             "visdom.log.before-resume")


class NothingToResume(Exception):
    """No usable checkpoint; str() is one line that says what to do."""


@dataclass
class Rows:
    rows: list[dict] = field(default_factory=list)  # in file order
    torn: list[int] = field(default_factory=list)  # 1-based numbers of lines that are not JSON objects


def read_rows(path: Path) -> Rows:
    """A history file's rows; lines that are not JSON objects count as torn. Raises run_file.RunFileError
    (one line) for a file that is not a regular file: it is never opened."""
    rows, torn, odd = read_lines(path)
    return Rows(rows, sorted(torn + odd))


@dataclass
class ResumePoint:
    state: dict  # the checkpoint resumed from
    name: str  # its file name
    checkpoint_at: tuple[int, int] | None  # (epoch, step) of the checkpoint.pt left on disk (None: none)
    notes: list[str]  # problems, one line each


def _where(state: dict) -> str:
    return f"epoch {state['epoch']}, step {state['step']}"


def _lines(numbers: list[int]) -> str:
    return ("line " if len(numbers) == 1 else "lines ") + ", ".join(map(str, numbers))


def _epochs(numbers: list[int]) -> str:
    return ("epoch " if len(numbers) == 1 else "epochs ") + ", ".join(map(str, numbers))


def choose(run_dir: Path, map_location="cpu") -> ResumePoint:
    """The checkpoint to resume from, and what is wrong on the way. Raises NothingToResume."""
    cur, prev = run_dir / CHECKPOINT, run_dir / PREVIOUS
    if not cur.exists() and not prev.exists():
        raise NothingToResume(f"--resume {run_dir}: no checkpoint.pt there yet (the run never finished an epoch)")
    notes: list[str] = []
    state, name, on_disk = _readable(run_dir, map_location, notes)
    return _with_every_row(run_dir, state, name, on_disk, notes, map_location)


def _readable(run_dir: Path, map_location, notes: list[str]) -> tuple[dict, str, tuple | None]:
    """(state, its file name, (epoch, step) of checkpoint.pt when readable): checkpoint.pt, or the
    one before it when checkpoint.pt is missing or damaged (then set aside as .broken)."""
    cur, prev = run_dir / CHECKPOINT, run_dir / PREVIOUS
    damage: CheckpointError | str = f"there is no {CHECKPOINT}"  # (both may go between a caller's check and here)
    if cur.exists():
        try:
            state = checkpoint.read(cur, map_location)
            return state, CHECKPOINT, (state["epoch"], state["step"])
        except CheckpointError as err:
            damage = err
    try:
        earlier = checkpoint.read(prev, map_location) if prev.exists() else None
    except CheckpointError as err:
        raise NothingToResume(f"--resume {run_dir}: " + (f"{damage}; " if cur.exists() else "") +
                              f"{err} too; no checkpoint left to resume from: start the run again "
                              "without --resume (or restore a copy of the folder)") from None
    if earlier is None:
        raise NothingToResume(f"--resume {run_dir}: {damage} and there is no {PREVIOUS} to fall back to: "
                              "start the run again without --resume (or restore a copy of the folder)")
    if cur.exists():
        broken = cur.with_name(cur.name + ".broken")
        os.replace(cur, broken)  # kept for a look; the next save must not make it the previous one
        notes.append(f"{damage}; resuming from {PREVIOUS} ({_where(earlier)}); the damaged file is kept "
                     f"as {broken.name}")
    else:
        notes.append(f"there is no {CHECKPOINT}; resuming from {PREVIOUS} ({_where(earlier)})")
    return earlier, PREVIOUS, None


def _with_every_row(run_dir: Path, state: dict, name: str, on_disk, notes: list[str], map_location) -> ResumePoint:
    """Prefer the earlier checkpoint when metrics.jsonl lacks a row the later one covers (that epoch is
    trained again); otherwise say which rows are lost or torn."""
    prev = run_dir / PREVIOUS
    metrics = read_rows(run_dir / "metrics.jsonl")
    missing = _missing(metrics, state["epoch"])
    torn = f" ({_lines(metrics.torn)} torn)" if metrics.torn else ""
    if missing and name == CHECKPOINT and prev.exists():
        try:
            earlier = checkpoint.read(prev, map_location)
        except CheckpointError:
            earlier = None
        if earlier is not None and min(missing) > earlier["epoch"]:
            notes.append(f"metrics.jsonl lacks the row of {_epochs(missing)}{torn}, which {CHECKPOINT} covers; "
                         f"resuming from {PREVIOUS} ({_where(earlier)}) to train {_epochs(missing)} again")
            return ResumePoint(earlier, PREVIOUS, on_disk, notes)
    if missing:
        notes.append(f"metrics.jsonl lacks the row of {_epochs(missing)}{torn}, which {name} covers "
                     f"({_where(state)}); no earlier checkpoint to train it again from: that row is lost")
    elif metrics.torn:
        notes.append(f"metrics.jsonl: {_lines(metrics.torn)} torn (a write cut short) and dropped; every epoch "
                     f"{name} covers has its row")
    return ResumePoint(state, name, on_disk, notes)


def _missing(metrics: Rows, epochs_done: int) -> list[int]:
    have = {r.get("epoch") for r in metrics.rows}
    return [e for e in range(1, epochs_done + 1) if e not in have]


def reconcile(run_dir: Path, state: dict) -> list[str]:
    """Make the folder agree with `state`: drop rows and images after it. Returns problems found
    on the way (torn step lines, rows written twice), one line each."""
    notes = []
    last = {"epoch": state["epoch"], "step": state["step"]}
    for name, key in HISTORY.items():
        path = run_dir / name
        found = read_rows(path)
        by_key: dict = {}
        for row in found.rows:
            if isinstance(row.get(key), int) and row[key] <= last[key]:
                by_key[row[key]] = row  # a row written twice (before this folder had a lock): the last
        doubled = len([r for r in found.rows if isinstance(r.get(key), int) and r[key] <= last[key]]) - len(by_key)
        if name == "steps.jsonl" and found.torn:
            notes.append(f"steps.jsonl: {_lines(found.torn)} torn (a write cut short) and dropped")
        if doubled:
            notes.append(f"{name}: {doubled} row(s) written twice; kept the last of each")
        kept = [by_key[k] for k in sorted(by_key)]
        if path.exists() and (kept != found.rows or found.torn):  # a torn tail must not glue onto the next row
            safe_io.atomic_write(path, "".join(json.dumps(r) + "\n" for r in kept))
    for png in run_dir.glob("*.png"):
        m = PNG.fullmatch(png.name)
        if m and int(m.group(1)) > state["epoch"]:
            os.unlink(png)
    return notes


def report(run_dir: Path, state: dict, notes: list[str], stream=None) -> None:
    """Each note: one line on stderr, one record in events.jsonl (CommandEvent's fields)."""
    for note in notes:
        print(f"resume: {note}", file=stream or sys.stderr, flush=True)
        safe_io.append_line(run_dir / "events.jsonl", json.dumps(
            {"time": time.time(), "epoch": state["epoch"], "step": state["step"], "name": "resume-check",
             "value": None, "accepted": True, "message": note, "source": "resume", "latency_ms": None}))


def start_afresh(run_dir: Path) -> str | None:
    """A new run in a folder that held one: its checkpoints first (so a kill half-way cannot leave
    an old checkpoint beside new rows), then its rows and images. Returns a note, or None."""
    old = [run_dir / n for n in (CHECKPOINT, PREVIOUS, CHECKPOINT + ".broken", *RUN_FILES)]
    old += [p for p in run_dir.glob("*.png") if PNG.fullmatch(p.name)]
    old = [p for p in old if p.exists()]
    if not old:
        return None
    done = read_rows(run_dir / "metrics.jsonl").rows
    for p in old:
        os.unlink(p)
    return (f"{run_dir} held a run ({len(done)} epoch row(s)); a new run starts there: its checkpoints, rows and "
            f"images are gone (use --resume {run_dir} to continue a run)")
