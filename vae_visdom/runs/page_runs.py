"""How many processes the pages may start: one limit for the runs home's new-run form and the panel's Fork.

Every process a page starts is a training run of its own (0.2-0.4 GB each), so a page (or a hand on a
button) could start them without end: forks of forks fork too. The limit is counted from what really
runs, never from a counter in memory, so it holds across a restart of the server or the home, and across
processes (the home and every trainer that forks start runs into the same runs folder):

- A run started from a page gets `RUN_DIR/page_start.json` ({"by": "form" | "fork", "pid", "started"}),
  written by its starter right after the process is started.
- It counts while its folder's trainer holds `trainer.lock` (runs/lock.py is_held), or while the process
  that was started is still alive (its first seconds, before it takes the lock). A run that ended, crashed
  or was killed stops counting at once: the kernel drops its lock and its process is gone.
- Counting and starting happen under an flock on `RUNS_DIR/.page-runs.lock`, so two presses at the same
  moment (two trainers forking, the form and a Fork) cannot both take the last place.
- The limit is `vae-visdom serve --max-page-runs N` (default 2), recorded in the runs folder
  (page_limit.py), where the home and every trainer read it when a page asks for a run.

Runs started from the command line (`train`, `train --fork`, `sweep`) are neither counted nor limited.
"""
from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

from vae_visdom.page_limit import read_limit
from vae_visdom.runs.layout import run_folders
from vae_visdom.runs.lock import alive, is_held
from vae_visdom.safe_io import atomic_write

fcntl: ModuleType | None  # the module, or None where the platform has none (as in lock.py)
try:
    import fcntl
except ImportError:  # not POSIX: counting without the lock (two exact-same-moment presses may both pass)
    fcntl = None

LOCK_FILE = ".page-runs.lock"
MARK = "page_start.json"


class PageRunsFull(Exception):
    """No place left for a run started from a page; str() says which runs hold the places and what to do."""


def running(runs_dir: str | Path) -> list[str]:
    """The runs under `runs_dir` started from a page that still run, by folder name (sorted)."""
    live = []
    for mark in (folder / MARK for folder in run_folders(runs_dir, MARK)):  # a sweep's folder too
        try:
            info = json.loads(mark.read_text(encoding="utf-8"))
            pid, started = int(info["pid"]), float(info["started"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if is_held(mark.parent) is True or alive(pid, started):
            live.append(mark.parent.name)
    return live


@contextlib.contextmanager
def place(runs_dir: str | Path, by: str) -> Iterator[Callable[[Path, int], None]]:
    """Hold the runs folder's start lock while a page's run is started; PageRunsFull when none is free.

        with place(runs_dir, "fork") as started:
            ...make the folder and start the process...
            started(run_dir, proc.pid)      # counted from now on
    """
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    with open(runs_dir / LOCK_FILE, "a+") as lock:
        if fcntl is not None:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # held for a moment: a count and a process start
        limit, live = read_limit(runs_dir), running(runs_dir)
        if len(live) >= limit:
            names = ", ".join(live[:3]) + (f" and {len(live) - 3} more" if len(live) > 3 else "")
            held = f" ({names})" if live else ""
            raise PageRunsFull(f"{len(live)} run(s) started from a page are running{held}, the most this server "
                               f"allows (vae-visdom serve --max-page-runs {limit}); stop one first")
        t0 = time.time()

        def started(run_dir: Path, pid: int) -> None:
            atomic_write(Path(run_dir) / MARK, json.dumps({"by": by, "pid": pid, "started": t0}) + "\n")

        yield started
