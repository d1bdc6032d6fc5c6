"""`vae-visdom replay RUN_DIR --browse`: after the replay, keep the view pane stepping through the epochs.

A finished run's trainer is gone, and with it the Python side of the view pane (view_pane.py). This
puts a small one back for a replayed env: the view pane and the two image panes, under the ids the
run used, answering the page's clicks from the run folder's PNGs until Ctrl-C (or `stop`).
"""
from __future__ import annotations

import threading
from pathlib import Path

from vae_visdom.monitor.board import Board
from vae_visdom.monitor.curves import Smoother
from vae_visdom.monitor.view_pane import EpochView, saved_epochs
from vae_visdom.monitor.windows import TITLES, ImageGrid


def window_ids(entries: list[tuple[str, dict]]) -> dict[str, str]:
    """{kind: window id} of a run's view and image panes, from its log's messages."""
    ids: dict[str, str] = {}
    for _, msg in entries:
        win = str(msg.get("win", ""))
        kind = win.rsplit("-", 1)[-1]
        if kind in ("view", "recon", "samples") and "-fig-" not in win:
            ids[kind] = win
    return ids


def browse(run_dir: str | Path, entries: list[tuple[str, dict]], server: str, port: int, env: str,
           username: str | None = None, password: str | None = None,
           stop: threading.Event | None = None, ready: threading.Event | None = None) -> int:
    """Serve the view pane of the replayed env until `stop` is set (or Ctrl-C); returns the epochs served."""
    ids = window_ids(entries)
    if set(ids) != {"view", "recon", "samples"}:
        raise ValueError(f"{run_dir}: its visdom.log has no view pane (a run from before the view pane)")
    run_dir = Path(run_dir)
    holder: dict[str, EpochView] = {}
    board = Board(server, port, env, None, username, password, on_event=lambda e: holder["view"].handle(e))
    grids = {kind: ImageGrid(ids[kind], TITLES[kind]) for kind in ("recon", "samples")}
    for grid in grids.values():
        board.add(grid)
    view = holder["view"] = EpochView(board, ids["view"], env, grids, [], Smoother(""), run_dir)
    epochs = saved_epochs(run_dir)
    view.start(epochs[-1] if epochs else 0)
    board.start()
    stop = stop or threading.Event()
    try:
        board.wait_connected(10)
        if ready is not None:
            ready.set()
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        board.close(timeout=5.0)
    return len(epochs)
