"""A training run as a process of its own, its output in RUN_DIR/train.log.

What a sweep (sweep.py), the panel's Fork (runs/fork.py) and the runs home's new-run form
(pages/home_form.py) share. A detached one gets a session of its own: a Ctrl-C in the starter's
terminal, or the starter's end, does not reach it (it is a run like any other, stopped from its panel).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TRAIN_LOG = "train.log"


def train_command(*args: str) -> list[str]:
    """`vae-visdom train ARGS` with this interpreter (what `python -m vae_visdom` runs)."""
    return [sys.executable, "-m", "vae_visdom", "train", *args]


def start_logged(argv: list[str], run_dir: Path, detached: bool = False,
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `argv` with stdout and stderr appended to RUN_DIR/train.log (the folder made if needed);
    `env`: the child's whole environment (None or {}: ours). Raises OSError."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / TRAIN_LOG, "ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env or None, start_new_session=detached, close_fds=True)
