"""`vae-visdom replay RUN_DIR --browse`: after the replay, keep the view pane stepping through the epochs.

A finished run's trainer is gone, and with it the Python side of the view pane (view_pane.py). This
puts a small one back for a replayed env: the view pane and the two image panes, under the ids the
run used, answering the page's clicks from the run folder's PNGs until Ctrl-C (or `stop`). Given a latent
explorer (built by the caller from the run's checkpoint: this module stays free of torch), its panes answer too.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from vae_visdom.monitor.board import Board
from vae_visdom.monitor.curves import Smoother
from vae_visdom.monitor.explorer_pane import ExplorerPane
from vae_visdom.monitor.view_pane import EpochView, saved_epochs
from vae_visdom.monitor.windows import TITLES, ImageGrid


def window_ids(entries: list[tuple[str, dict]]) -> dict[str, str]:
    """{kind: window id} of a run's view and image panes, from its log's messages."""
    ids: dict[str, str] = {}
    for _, msg in entries:
        win = str(msg.get("win", ""))
        kind = win.rsplit("-", 1)[-1]
        if kind in ("view", "recon", "samples", "explorer") and "-fig-" not in win:
            ids[kind] = win
    return ids


def browse(run_dir: str | Path, entries: list[tuple[str, dict]], server: str, port: int, env: str,
           username: str | None = None, password: str | None = None,
           stop: threading.Event | None = None, ready: threading.Event | None = None, explorer=None) -> int:
    """Serve the view pane (and the latent explorer's, when one is given) of the replayed env until `stop` is
    set (or Ctrl-C); returns the epochs served."""
    ids = window_ids(entries)
    if not {"view", "recon", "samples"} <= set(ids):
        raise ValueError(f"{run_dir}: its visdom.log has no view pane (a run from before the view pane)")
    run_dir = Path(run_dir)
    handlers: list[Callable[[dict], None]] = []

    def on_event(event: dict) -> None:
        for handle in handlers:
            handle(event)

    board = Board(server, port, env, None, username, password, on_event=on_event)
    grids = {kind: ImageGrid(ids[kind], TITLES[kind]) for kind in ("recon", "samples")}
    for grid in grids.values():
        board.add(grid)
    view = EpochView(board, ids["view"], env, grids, [], Smoother(""), run_dir)
    handlers.append(view.handle)
    if explorer is not None:  # under the id the run used (a run from before the explorer: beside its view pane)
        win = ids.get("explorer", ids["view"][:-len("view")] + "explorer")
        handlers.append(ExplorerPane(board, win, env, explorer).handle)
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
