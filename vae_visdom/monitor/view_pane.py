"""The "view" pane: step the image panes through every epoch of the run, and choose how the loss reads.

Rows (the browser sends the row's index as `propertyId`):
    0  images of epoch: <what is shown>          text: type an epoch and press Enter
    1  one epoch back                             [<]
    2  one epoch forward                          [>]
    3  follow the newest epoch                    [newest]
    4  loss y-axis: <fitted | everything>         [show all] / [fit]
    5  smoothing: EMA weight of the train loss     text, 0 to 0.99 (0: no smoothed trace)
    6  fork from the epoch shown                   [fork from epoch E]: a new run from E's kept checkpoint

Light on purpose: the page keeps one image per pane, as before. An earlier epoch is drawn from the
run folder's own PNGs (reconstruction_N.png, sample_N.png: the same bytes the pane would encode),
sent once per step the user takes; nothing is kept in memory but the list of epochs. The newest
epoch is shown and followed until the user steps back, and again after [newest] or stepping past
the last one. A visdom properties pane, as the control panel: visdom 0.2.4's image pane would
swallow every key press on the page (windows.ImageGrid says why), this pane swallows none.
"""
from __future__ import annotations

import base64
import errno
import re
import struct
import time
from collections.abc import Callable
from pathlib import Path

from vae_visdom.config import ConfigError, parse_value
from vae_visdom.monitor.board import Board
from vae_visdom.monitor.curves import Smoother
from vae_visdom.monitor.event_socket import property_row
from vae_visdom.monitor.windows import TITLES, ImageGrid, LinePlot, PropertiesPane, TextPane
from vae_visdom.runs.animate import gif_bytes
from vae_visdom.train.kept import kept_epochs, spans

ROWS = ("epoch", "back", "forward", "newest", "y_axis", "smoothing", "fork")
FILES = {"recon": "reconstruction_{}.png", "samples": "sample_{}.png"}
ANIMATION = ("samples.gif", "the prior samples, epoch by epoch")  # (the run's file, its pane's title)
PAGE_FRAMES = 50  # the page's animation: every epoch up to 50, then 50 evenly spaced (the file has them all)


def saved_epochs(run_dir: Path | None) -> list[int]:
    """The epochs whose sample PNG is in the run folder, in order."""
    if run_dir is None:
        return []
    found = (re.fullmatch(r"sample_(\d+)\.png", p.name) for p in run_dir.glob("sample_*.png"))
    return sorted(int(m.group(1)) for m in found if m)


def png_data_url(path: Path) -> tuple[str, int, int]:
    """(data URL, width, height) of a PNG file, read as it is (no decoding)."""
    data = path.read_bytes()
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii"), width, height


class EpochView:
    """The view pane and what it steers: the two image panes, the loss plot's y-axis and its EMA."""

    def __init__(self, board: Board, win: str, env: str, grids: dict[str, ImageGrid], plots: list[LinePlot],
                 smoother: Smoother, run_dir: Path | None, fork_at: Callable[[int], str] | None = None):
        """`fork_at(E)`: asks the run's trainer for a fork from epoch E's kept checkpoint, returns the verdict
        (a live run's monitor gives it; a replay has no trainer to fork)."""
        self.board, self.win, self.env, self.grids, self.plots = board, win, env, grids, plots
        self.smoother, self.run_dir, self.fork_at = smoother, run_dir, fork_at
        self.fits = {id(p): p.y_range for p in plots}  # the fitted ranges, put back after "show all"
        self.epochs: list[int] = []
        self.shown: int | None = None  # the epoch in the image panes
        self.following = True
        self.message = ""
        self._kept_seen: list[int] = []
        self._kept_checked = 0.0
        self._flip = [False] * len(ROWS)
        self.pane = board.add(PropertiesPane(win, TITLES["view"], self._rows,
                                             width=460, height=330))

    # -- training thread ------------------------------------------------------------------------
    def start(self, last_epoch: int) -> None:
        """A (resumed) run's epochs so far, from its folder; the newest shown at once."""
        with self.board.lock:
            self.epochs = [e for e in saved_epochs(self.run_dir) if e <= last_epoch]
            if self.epochs:
                self._show(self.epochs[-1])

    def on_epoch(self, epoch: int, images: dict) -> None:
        """A new epoch's images (pane kind -> tensor); drawn if the user follows the newest."""
        with self.board.lock:
            self.epochs = [e for e in self.epochs if e < epoch] + [epoch]
            if self.following:
                for kind, grid in self.grids.items():
                    grid.set(images[kind], nrow=8, caption=self._caption(epoch))
                self.shown = epoch
            self.pane.touch()

    def check_kept(self, every: float = 2.0) -> None:
        """Redraw the fork row when the kept epoch checkpoints changed (a save after an epoch's end, the budget
        letting the oldest go); looks at the folder at most every `every` seconds."""
        now = time.monotonic()
        if self.run_dir is None or now - self._kept_checked < every:
            return
        self._kept_checked = now
        kept = kept_epochs(self.run_dir)
        if kept != self._kept_seen:
            self._kept_seen = kept
            with self.board.lock:
                self.pane.touch()

    def show_animation(self) -> None:
        """The run's samples.gif (runs/animate.py, written as the run ends) in a pane of its own."""
        if self.run_dir is None:
            return
        run_dir, path = self.run_dir, self.run_dir / ANIMATION[0]
        if not path.exists():
            return
        n = len(saved_epochs(run_dir))
        data = path.read_bytes() if n <= PAGE_FRAMES else gif_bytes(run_dir, max_frames=PAGE_FRAMES)
        src = "data:image/gif;base64," + base64.b64encode(data).decode("ascii")
        shown = f"{n} epochs" if n <= PAGE_FRAMES else f"{PAGE_FRAMES} of {n} epochs, evenly spaced"
        html = (f'<img src="{src}" alt="{ANIMATION[1]}" style="width:100%;image-rendering:pixelated">'
                f'<div style="color:#555;font-size:12px">{shown}; every epoch: {path}</div>')
        with self.board.lock:
            win = f"{self.win}-animation"
            pane = self.board.windows.get(win) or self.board.add(TextPane(win, ANIMATION[1], width=480, height=560))
            assert isinstance(pane, TextPane)  # this window id is the animation pane's alone
            pane.set(html, urgent=True)

    # -- socket thread --------------------------------------------------------------------------
    def handle(self, event: dict) -> None:
        """A browser event for this pane: step, jump, follow, axis, smoothing."""
        row = property_row(event, self.win, self.env, ROWS)
        if row is None:
            return
        with self.board.lock:
            self.message = ""
            getattr(self, f"_on_{row}")(event.get("value"))
            self._flip[ROWS.index(row)] ^= True
            self.pane.touch(urgent=True)
        self.board.wake()

    def _on_epoch(self, raw) -> None:
        try:
            epoch = parse_value("epochs", raw)  # a whole number, the rules' words
        except ConfigError as err:
            self.message = f"rejected: {str(err).split(': ', 1)[-1].split(';')[0]}"
            return
        if epoch not in self.epochs:
            self.message = f"no epoch {epoch} yet" if self.epochs else "no epoch yet"
            return
        self._go(epoch)

    def _on_back(self, raw) -> None:
        earlier = [e for e in self.epochs if self.shown is None or e < self.shown]
        if earlier:
            self._go(earlier[-1])

    def _on_forward(self, raw) -> None:
        later = [e for e in self.epochs if self.shown is not None and e > self.shown]
        if later:
            self._go(later[0])

    def _on_newest(self, raw) -> None:
        if self.epochs:
            self._go(self.epochs[-1])

    def _on_y_axis(self, raw) -> None:
        if not self.plots:
            self.message = "the loss axis: in the live run's page only"
        fitted = any(p.y_range is not None for p in self.plots)
        for p in self.plots:
            p.y_range = None if fitted else self.fits[id(p)]
            p.touch(urgent=True)

    def _on_fork(self, raw) -> None:
        if self.fork_at is None:
            self.message = "a fork needs the run's trainer: `vae-visdom train --fork RUN_DIR --at-epoch E`"
            return
        if self.shown is None:
            self.message = "no epoch yet"
            return
        why = self._not_forkable(self.shown)
        if why:
            self.message = why
            return
        self.message = self.fork_at(self.shown)

    def _not_forkable(self, epoch: int) -> str:
        """Why epoch `epoch` cannot be forked from ("" when it can)."""
        kept = kept_epochs(self.run_dir) if self.run_dir is not None else []
        if epoch in kept:
            return ""
        if not kept:
            return (f"epoch {epoch} cannot be forked: this run keeps no epoch checkpoints "
                    "(--checkpoint-budget 0, or a run from before them)")
        return (f"epoch {epoch} cannot be forked: its checkpoint is not kept (kept: epochs {spans(kept)}; "
                "the oldest go first past --checkpoint-budget)")

    def _on_smoothing(self, raw) -> None:
        if not self.plots:
            self.message = "smoothing: in the live run's page only"
            return
        try:
            weight = float(str(raw).strip())
        except ValueError:
            weight = -1.0
        if not 0.0 <= weight <= 0.99:
            self.message = f"rejected: smoothing {str(raw)[:24]!r}; allowed: a number from 0 to 0.99"
            return
        self.smoother.reset(self.plots[0], weight)

    # -- under the board's lock -----------------------------------------------------------------
    def _go(self, epoch: int) -> None:
        self.following = epoch == self.epochs[-1]
        try:
            self._show(epoch)
        except OSError as err:
            self.message = f"epoch {epoch}: {err.strerror or err}"

    def _show(self, epoch: int) -> None:
        """Draw the run folder's PNGs of `epoch` into the image panes."""
        if self.run_dir is None:  # a monitor without a run folder has no PNGs to step back to
            raise FileNotFoundError(errno.ENOENT, "no run folder to read the epoch's images from")
        encoded = {k: png_data_url(self.run_dir / name.format(epoch)) for k, name in FILES.items()}
        for kind, grid in self.grids.items():
            grid.caption = self._caption(epoch)
            grid.touch(urgent=True)
            grid.store_encoded(grid.version, encoded[kind])
        self.shown = epoch

    def _fork_row(self) -> dict:
        if self.shown is None:
            return {"type": "button", "name": "fork from an epoch: none yet", "value": "fork from an epoch"}
        why = self._not_forkable(self.shown) if self.fork_at is not None else \
            "fork from an epoch: in the live run's page (or train --fork RUN_DIR --at-epoch E)"
        name = why or (f"fork from epoch {self.shown}: a new run from its checkpoint, with the control panel's "
                       "'fork with' values (this run goes on)")
        return {"type": "button", "name": name, "value": f"fork from epoch {self.shown}"}

    def _caption(self, epoch: int) -> str:
        return f"epoch {epoch}" + ("" if self.following else f" of {self.epochs[-1]} (stepped back)")

    def _rows(self) -> list[dict]:
        shown = "none yet" if self.shown is None else (
            f"{self.shown} of {self.epochs[-1]}" + (", following the newest" if self.following else ""))
        fitted = any(p.y_range is not None for p in self.plots)
        rows = [
            {"type": "text", "name": f"images of epoch ({shown}; type one, Enter)" +
             (f" · {self.message}" if self.message else ""), "value": str(self.shown or "")},
            {"type": "button", "name": "one epoch back", "value": "<"},
            {"type": "button", "name": "one epoch forward", "value": ">"},
            {"type": "button", "name": "follow the newest epoch", "value": "newest"},
            {"type": "button", "name": "loss y-axis: " + ("fitted to the later half" if fitted else "everything"),
             "value": "show all" if fitted else "fit"},
            {"type": "text", "name": "smoothing: EMA weight of the train loss (0-0.99; 0: off)",
             "value": f"{self.smoother.weight:g}"},
            self._fork_row(),
        ]
        for i, row in enumerate(rows):  # see panel._rows: a changed prop resets an edited input
            if row["type"] == "text" and self._flip[i]:
                row["value"] += " "
        return rows
