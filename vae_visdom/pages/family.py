"""The family view: a comparison env (compare-<root>) of a run, its parent and every fork of them.

Built when a fork starts and rebuilt after each of its epochs (on a thread of its own, at most one
build at a time, the newest asked for winning), from the runs' files alone, with the same builder as
`vae-visdom compare` (pages/compare.py): every member's train and test loss, a table of what differs,
and each member's latest samples.
"""
from __future__ import annotations

import logging
from pathlib import Path

from vae_visdom.config import env_login, fit_name
from vae_visdom.pages.compare import compare_runs
from vae_visdom.pages.rebuild import Rebuilder
from vae_visdom.runs.records import load_run
from vae_visdom.runs.run_file import read_object
from vae_visdom.train.events import Callback, EpochImages, EpochRecord, RunInfo, Status

log = logging.getLogger(__name__)


def _parent(run_dir: Path) -> Path | None:
    try:
        parent = read_object(run_dir / "config.json").get("parent")  # (a FIFO there is never opened)
    except (OSError, ValueError):
        return None
    return Path(parent) if isinstance(parent, str) and parent else None


def root_of(run_dir: Path) -> Path:
    """The oldest ancestor (by config.json's `parent`), the run itself when it is no fork."""
    seen, run = set(), Path(run_dir)
    while (parent := _parent(run)) is not None and parent.resolve() not in seen:
        seen.add(parent.resolve())
        run = parent
    return run


def members(run_dir: Path) -> list[Path]:
    """The root and every descendant found beside the runs of the family (their runs folders)."""
    root = root_of(run_dir).resolve()
    folders = {root.parent, Path(run_dir).resolve().parent}
    found = [root]
    for folder in folders:
        for cand in sorted(folder.iterdir()) if folder.is_dir() else []:
            if cand.resolve() != root and (cand / "config.json").is_file() and root_of(cand).resolve() == root:
                found.append(cand.resolve())
    return list(dict.fromkeys(found))


class FamilyView(Callback):
    """Keeps compare-<root> up to date while a fork trains."""

    def __init__(self, run_dir: str | Path, server: str, port: int):
        self.run_dir, self.server, self.port = Path(run_dir), server, port
        self.env = fit_name(f"compare-{root_of(self.run_dir).name}")
        self._rebuild = Rebuilder(f"family view {self.env}", self._draw)

    def on_run_start(self, run: RunInfo) -> None:
        self._rebuild.start()
        self._rebuild.wake()

    def on_epoch_end(self, record: EpochRecord, images: EpochImages) -> None:
        self._rebuild.wake()

    def on_run_end(self, status: Status) -> None:
        self._rebuild.wake()

    def close(self) -> None:
        self._rebuild.close(timeout=30)

    def build(self) -> bool:
        """One rebuild of the family env; False (logged, never raised) when it could not be built."""
        return self._rebuild.build()

    def _draw(self) -> None:
        records = [r for r in (load_run(m) for m in members(self.run_dir)) if r.metrics]
        if records:
            compare_runs(records, self.server, self.port, self.env, *(env_login() or (None, None)))
