"""The latent explorer's panes: a properties pane that moves the point, and the 3x3 grid of its decodings.

Rows (the browser sends the row's index as `propertyId`):
    0  start from: a test image's number, or "origin"      text, Enter
    1  directions: principal | latent dimensions          [switch]
    2  first direction (1..D) and second (1..D)           text "1 2"
    3  step, in standard deviations                       text
    4  one step back along the first direction            [<]
    5  one step forward along the first direction         [>]
    6  one step down the second direction                 [v]
    7  one step up the second direction                   [^]

Every action decodes at once, on the socket thread, from the explorer's own copy of the model (the explorer
decodes under its lock; the trainer only swaps the copy's weights, between two steps): nothing here waits for
the training loop, so the page answers while the run trains, while it is paused, and after it ended.
"""
from __future__ import annotations

import time

from vae_visdom.monitor.board import Board
from vae_visdom.monitor.event_socket import property_row
from vae_visdom.monitor.windows import ImageGrid, PropertiesPane

ROWS = ("start", "basis", "directions", "step", "back", "forward", "down", "up")
TITLE = "latent explorer: a point in latent space (centre) and its 8 neighbours one step away"
GRID_TITLE = "latent explorer: decodings (first direction left to right, second bottom to top)"
MAX_STEP = 10.0


class ExplorerPane:
    """The two panes of one explorer; `handle` takes the browser's events for the control pane."""

    def __init__(self, board: Board, win: str, env: str, explorer):
        self.board, self.win, self.env, self.explorer = board, win, env, explorer
        self.message = ""
        self.last_ms: float | None = None
        self._flip = [False] * len(ROWS)
        self.grid = board.add(ImageGrid(f"{win}-grid", GRID_TITLE, nrow=3, display_width=300))
        self.pane = board.add(PropertiesPane(win, TITLE, self._rows, width=460, height=330))
        self.redraw()

    def redraw(self) -> None:
        """Decode the point's neighbourhood with the copy as it is now, and show it."""
        with self.explorer.lock:
            decoded = self.explorer.decode()
        self.last_ms = decoded.seconds * 1000
        assert isinstance(self.grid, ImageGrid)  # this window id is the explorer grid's alone
        with self.board.lock:
            self.grid.set(decoded.images, nrow=3, caption=decoded.caption)
            self.pane.touch(urgent=True)
        self.board.wake()

    # -- the socket thread ------------------------------------------------------------------------
    def handle(self, event: dict) -> None:
        row = property_row(event, self.win, self.env, ROWS)
        if row is None:
            return
        t0 = time.perf_counter()
        self.message = ""
        with self.explorer.lock:
            getattr(self, f"_on_{row}")(str(event.get("value", "")).strip())
        self._flip[ROWS.index(row)] ^= True
        self.redraw()
        self.last_ms = (time.perf_counter() - t0) * 1000

    def _on_start(self, raw: str) -> None:
        e = self.explorer
        if raw.lower() in ("", "origin", "0,0", "o"):
            e.start_at(None)
            return
        if not raw.isdigit() or not 0 <= int(raw) < e.n_images():
            self.message = f"rejected: {raw[:24]!r}; allowed: a test image from 0 to {e.n_images() - 1}, or origin"
            return
        e.start_at(int(raw))

    def _on_basis(self, raw: str) -> None:
        e = self.explorer
        e.choose("dimension" if e.basis == "principal" else "principal", *e.axes, e.step)

    def _on_directions(self, raw: str) -> None:
        e = self.explorer
        parts = raw.replace(",", " ").split()
        if len(parts) != 2 or not all(p.isdigit() and 1 <= int(p) <= e.latent_dim for p in parts):
            self.message = f"rejected: {raw[:24]!r}; allowed: two numbers from 1 to {e.latent_dim}, e.g. 1 2"
            return
        e.choose(e.basis, int(parts[0]) - 1, int(parts[1]) - 1, e.step)

    def _on_step(self, raw: str) -> None:
        e = self.explorer
        try:
            step = float(raw)
        except ValueError:
            step = -1.0
        if not 0.0 < step <= MAX_STEP:
            self.message = f"rejected: step {raw[:24]!r}; allowed: a number above 0, at most {MAX_STEP:g}"
            return
        e.choose(e.basis, *e.axes, step)

    def _on_back(self, raw: str) -> None:
        self.explorer.move(0, -1)

    def _on_forward(self, raw: str) -> None:
        self.explorer.move(0, 1)

    def _on_down(self, raw: str) -> None:
        self.explorer.move(1, -1)

    def _on_up(self, raw: str) -> None:
        self.explorer.move(1, 1)

    # -- under the board's lock -------------------------------------------------------------------
    def _rows(self) -> list[dict]:
        e = self.explorer
        kind = "principal directions of the posterior means" if e.basis == "principal" else "latent dimensions"
        took = f" · decoded in {self.last_ms:.0f} ms" if self.last_ms is not None else ""
        start = "origin" if e.start is None else str(e.start)
        rows = [
            {"type": "text", "name": f"start from: a test image (0-{e.n_images() - 1}) or origin; Enter{took}" +
             (f" · {self.message}" if self.message else ""), "value": start},
            {"type": "button", "name": f"directions: {kind}",
             "value": "use latent dimensions" if e.basis == "principal" else "use principal directions"},
            {"type": "text", "name": f"first and second direction (1-{e.latent_dim}), e.g. 1 2",
             "value": f"{e.axes[0] + 1} {e.axes[1] + 1}"},
            {"type": "text", "name": "step, in standard deviations", "value": f"{e.step:g}"},
            {"type": "button", "name": "first direction: one step back", "value": "<"},
            {"type": "button", "name": "first direction: one step forward", "value": ">"},
            {"type": "button", "name": "second direction: one step down", "value": "v"},
            {"type": "button", "name": "second direction: one step up", "value": "^"},
        ]
        for i, row in enumerate(rows):  # see panel._rows: a changed prop resets an edited input
            if row["type"] == "text" and self._flip[i]:
                row["value"] += " "
        return rows
