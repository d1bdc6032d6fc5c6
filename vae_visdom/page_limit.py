"""How many runs the pages may start at once, as recorded in a runs folder: `RUNS_DIR/.page-runs.json`.

`vae-visdom serve --max-page-runs N` (and `vae-visdom home --max-page-runs N`) write it; the runs home's form
and every trainer whose panel forks read it from the folder they start runs into (runs/page_runs.py counts
and places). A file rather than a flag passed down: a trainer started from the command line, a fork of a
fork, a run resumed after a server restart all learn the server's limit from the folder, with nothing to
pass along. No file (a runs folder no server keeps), or one that cannot be read: the default.
Torch- and visdom-free: the server records it.
"""
from __future__ import annotations

import json
from pathlib import Path

from vae_visdom.config import ConfigError, parse_value
from vae_visdom.safe_io import atomic_write

DEFAULT_MAX_PAGE_RUNS = 2
LIMIT_FILE = ".page-runs.json"


def write_limit(runs_dir: str | Path, limit: int) -> None:
    """Record the limit for everyone who starts runs into `runs_dir` (the folder made if needed). OSError."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(runs_dir / LIMIT_FILE, json.dumps({"max_page_runs": limit}) + "\n")


def read_limit(runs_dir: str | Path) -> int:
    """The limit recorded for `runs_dir`; the default when none is (or it cannot be read)."""
    try:
        raw = json.loads((Path(runs_dir) / LIMIT_FILE).read_text(encoding="utf-8"))["max_page_runs"]
        return parse_value("max_page_runs", raw)
    except (OSError, ValueError, KeyError, TypeError, ConfigError):
        return DEFAULT_MAX_PAGE_RUNS
