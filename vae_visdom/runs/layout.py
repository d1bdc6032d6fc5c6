"""Where runs live in a runs folder: RUNS_DIR/<run>, and a sweep's runs in RUNS_DIR/<sweep>/<run>.

    RUNS_DIR/<run>/config.json                 a run (train, a fork, a run started from the home)
    RUNS_DIR/<sweep>/sweep.json                a sweep's folder (sweep.py): what `sweep --resume` needs
    RUNS_DIR/<sweep>/<run>/config.json         one of its runs (a trial, or a fork of a trial, beside it)
    RUNS_DIR/<sweep>/.tune/                    Ray Tune's own state: never a run, never looked into

    run_folders(runs_dir)     every run folder, both levels (sorted); only folders with a config.json
    sweep_of(run_dir)         the name of the sweep whose folder holds the run, else None
    runs_root(run_dir)        the runs folder a run belongs to (RUNS_DIR, also for a sweep's run)
"""
from __future__ import annotations

import os
from pathlib import Path

SWEEP_FILE = "sweep.json"
RUN_FILE = "config.json"


def is_sweep(folder: Path) -> bool:
    """A sweep's folder: it has sweep.json and is no run itself."""
    return (folder / SWEEP_FILE).is_file() and not os.path.lexists(folder / RUN_FILE)


def run_folders(runs_dir: str | Path, marker: str = RUN_FILE) -> list[Path]:
    """RUNS_DIR/*/<marker>'s folders and those of RUNS_DIR/<sweep>/*/<marker>, sorted; hidden folders (Tune's
    .tune) are skipped. A marker that is there in any form counts (a damaged config.json, a FIFO in its place:
    the run is listed with its problem); nothing is opened here."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        if os.path.lexists(folder / marker):
            found.append(folder)
        elif is_sweep(folder):
            found += [run for run in sorted(folder.iterdir())
                      if not run.name.startswith(".") and os.path.lexists(run / marker)]
    return found


def sweep_of(run_dir: str | Path) -> str | None:
    parent = Path(run_dir).parent
    return parent.name if is_sweep(parent) else None


def runs_root(run_dir: str | Path) -> Path:
    parent = Path(run_dir).parent
    return parent.parent if is_sweep(parent) else parent
