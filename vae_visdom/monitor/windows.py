"""What each visdom window shows, kept in memory, and the messages that draw it.

The monitor keeps the whole content of every window here, so any window can be drawn
whole again at any time (visdom's `events` endpoint replaces a window): a lost message
or a restarted server is repaired by the next send. Two readers follow the windows,
the server and the run's log file (visdom.log, in visdom's `log_to_filename` format).
The log gets what changed since its last entry: a line trace's new points as an
`update` append, everything else whole; replaying it into an empty env therefore ends
in the same windows. The server always gets a changed window whole: visdom 0.2.4's
`update` handler deep-copies the window and diffs old against new in Python on every
append (`jsonpatch.make_patch`), which costs O(points) of server CPU per message:
measured on this project's CPU machine, 27.5 ms for one append to a 3-trace plot of
1500 points against 1.5 ms for posting the whole plot, and 7.5 ms against 0.5 ms at
400 points. Big plots are sent less often instead (LinePlot.send_interval).

No visdom import here: the messages are the plain dicts visdom's client would post
(see visdom.Visdom.scatter / text / properties), built under the board's lock and
cheap to build; the one costly conversion (tensor -> PNG) is done by the board, off
the lock, and cached per version.
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import math
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vae_visdom.runs.images import make_grid, to_uint8_hwc

Message = tuple[str, dict]
PLOT_DIGITS = 7  # significant digits of a plotted point: float32's precision, half the JSON of a Python float
POINTS_PER_SECOND = 5000  # a line plot bigger than this is sent whole less often than once a second

def num(v: Any, digits: int | None = None) -> float | None:
    """A float JSON (and the browser's JSON.parse) can carry: NaN/inf become None (a gap);
    `digits`: rounded to that many significant digits (shorter JSON for every reader)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(f):
        return None
    return f if digits is None else float(f"{f:.{digits}g}")


class Window:
    """One pane. `version` counts changes; the board compares it with what was sent and logged."""

    def __init__(self, win: str, title: str):
        self.win, self.title = win, title
        self.version = 0
        self.sent = -1  # version the server has (-1: nothing, or unknown after a failure)
        self.logged = -1  # version the log file has
        self.last_send = 0.0  # time.monotonic() of the last send
        self.urgent = False  # send at once, skipping the per-window rate limit
        self.min_interval = 0.0  # this window's own least seconds between sends (0: the board's)
        self.log_every = 0.0  # seconds between log entries; 0: the board's default
        self.last_log = 0.0

    def touch(self, urgent: bool = False) -> None:
        self.version += 1
        self.urgent = self.urgent or urgent

    def full(self, env: str) -> Message:
        """The message that draws the whole window (called under the board's lock)."""
        raise NotImplementedError

    def log_changes(self, env: str) -> list[Message]:
        """Messages that bring the log from its last entry for this window to now.
        Only line plots do better than the whole window."""
        return [self.full(env)]

    def ready(self) -> bool:
        """False while a message would show stale content (an image not encoded yet)."""
        return True

    def send_interval(self, base: float) -> float:
        """Least seconds between two sends of this window to the server (unless urgent)."""
        return max(base, self.min_interval)


@dataclass
class Trace:
    name: str
    mode: str = "lines"  # plotly mode: lines | lines+markers | markers | markers+text
    style: dict = field(default_factory=dict)  # extra plotly trace fields (line, marker, textposition)
    x: list = field(default_factory=list)
    y: list = field(default_factory=list)
    text: list | None = None  # hover/label text per point; such traces are logged whole
    logged: int = 0  # points the log has

    def plotly(self) -> dict:
        d = {"x": list(self.x), "y": list(self.y), "name": self.name, "type": "scatter", "mode": self.mode}
        if self.text is not None:
            d["text"] = list(self.text)
            d["hoverinfo"] = "text+x+y"
        d.update(self.style)
        return d


class LinePlot(Window):
    """A plotly scatter/line figure with named traces, each a growing list of points."""

    def __init__(self, win: str, title: str, traces: list[Trace], xlabel: str = "", ylabel: str = "",
                 width: int = 560, height: int = 380):
        super().__init__(win, title)
        self.traces = {t.name: t for t in traces}
        self.xlabel, self.ylabel, self.width, self.height = xlabel, ylabel, width, height
        self.log_whole = True  # the log's next entry must be the whole figure
        self.y_range: Callable[[LinePlot], list | None] | None = None  # the default y-axis range (None: auto)

    def add(self, name: str, x: Any, y: Any, text: str | None = None) -> None:
        t = self.traces[name]
        t.x.append(num(x, PLOT_DIGITS))
        t.y.append(num(y, PLOT_DIGITS))
        if t.text is not None:
            t.text.append(text or "")
        self.touch()

    def truncate(self, keep) -> None:
        """Drop the points for which keep(trace_name, x) is false (a resumed run re-logs them)."""
        for t in self.traces.values():
            idx = [i for i, x in enumerate(t.x) if x is None or keep(t.name, x)]
            t.x, t.y = [t.x[i] for i in idx], [t.y[i] for i in idx]
            if t.text is not None:
                t.text = [t.text[i] for i in idx]
        self.redraw()

    def replace(self, traces: list[Trace]) -> None:
        self.traces = {t.name: t for t in traces}
        self.redraw()

    def redraw(self) -> None:
        """Points were removed or replaced: an append cannot say that, the log gets it whole."""
        self.log_whole = True
        self.touch()

    def full(self, env: str) -> Message:
        opts = {"title": self.title, "xlabel": self.xlabel, "ylabel": self.ylabel, "showlegend": True,
                "width": self.width, "height": self.height}
        layout: dict[str, Any] = {
            "title": {"text": self.title, "x": 0.02}, "showlegend": True,  # left: the tool icons are right
            "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
            "xaxis": {"title": self.xlabel}, "yaxis": {"title": self.ylabel},
            "legend": {"orientation": "h", "y": -0.2}}
        y_range = self.y_range(self) if self.y_range is not None else None
        if y_range is not None:
            layout["yaxis"]["range"] = y_range
        data = [t.plotly() for t in self.traces.values()]
        if not data:  # visdom reads data[0]["type"] to pick the pane kind
            data = [Trace("").plotly()]
        return "events", {"data": data, "win": self.win, "eid": env, "layout": layout, "opts": opts}

    def points(self) -> int:
        return sum(len(t.x) for t in self.traces.values())

    def send_interval(self, base: float) -> float:
        """Seconds between two sends of the whole plot: `base`, longer for a big plot, so the
        server's work stays about the same however long the run (~1 s per 5000 points)."""
        return max(super().send_interval(base), self.points() / POINTS_PER_SECOND)

    def log_changes(self, env: str) -> list[Message]:
        # a trace with hover text is logged whole: visdom's append extends only x and y
        whole = self.log_whole or any(t.text is not None and len(t.x) > t.logged for t in self.traces.values())
        out: list[Message] = [self.full(env)] if whole else [
            ("update", {"win": self.win, "eid": env, "name": t.name, "append": True,  # visdom's UpdateHandler
                        "data": [{"x": t.x[t.logged:], "y": t.y[t.logged:]}]})       # appends to that trace
            for t in self.traces.values() if len(t.x) > t.logged]
        for t in self.traces.values():
            t.logged = len(t.x)
        self.log_whole = False
        return out


class TextPane(Window):
    def __init__(self, win: str, title: str, html: str = "", width: int = 420, height: int = 380):
        super().__init__(win, title)
        self.html, self.width, self.height = html, width, height

    def set(self, html: str, urgent: bool = False) -> None:
        if html != self.html:
            self.html = html
            self.touch(urgent)

    def full(self, env: str) -> Message:
        return "events", {"data": [{"content": self.html, "type": "text"}], "win": self.win, "eid": env,
                          "opts": {"title": self.title, "width": self.width, "height": self.height}}


class PropertiesPane(Window):
    """visdom's properties pane. `render()` returns the list visdom.Visdom.properties takes;
    it is called when a message is built, so a change only costs a touch()."""

    def __init__(self, win: str, title: str, render: Callable[[], list[dict]], width: int = 460,
                 height: int = 400):
        super().__init__(win, title)
        self.render = render
        self.width, self.height = width, height

    def full(self, env: str) -> Message:
        rows = [{**row, "name": breakable(str(row["name"]))} if "name" in row else row for row in self.render()]
        return "events", {"data": [{"content": rows, "type": "properties"}],
                          "win": self.win, "eid": env,
                          "opts": {"title": self.title, "width": self.width, "height": self.height}}


class ImageGrid(Window):
    """The latest batch of images as one grid (torchvision's layout, as the run's PNGs).

    Drawn as an <img> in a *text* pane, not as visdom's image pane: in visdom 0.2.4 every
    image pane calls preventDefault() on every keydown on the page (ImagePane.js subscribes
    to the global key events without checking focus), so with one on the page nobody can
    type into the control panel. A text pane only does that while it has the focus. The
    grid is scaled by CSS, pixelated, so a 28x28 digit stays sharp at any pane size.
    """

    def __init__(self, win: str, title: str, nrow: int = 8, caption: str = "", display_width: int = 480):
        super().__init__(win, title)
        self.nrow, self.caption, self.display_width = nrow, caption, display_width
        self.images = None  # (B, C, H, W) float in [0, 1], a private copy
        self._encoded: tuple[int, str, int, int] | None = None  # (version, data URL, width, height)

    def set(self, images, nrow: int | None = None, caption: str | None = None, urgent: bool = True) -> None:
        self.images = images
        self.nrow = nrow or self.nrow
        self.caption = self.caption if caption is None else caption
        self.touch(urgent=urgent)

    def encode_pending(self) -> tuple[int, Any, int] | None:
        """Under the lock: what encode_grid() needs, or None when the cached PNG is current."""
        if self.images is None or (self._encoded and self._encoded[0] == self.version):
            return None
        return self.version, self.images, self.nrow

    def store_encoded(self, version: int, encoded: tuple[str, int, int]) -> None:
        self._encoded = (version, *encoded)

    def full(self, env: str) -> Message:
        caption = html.escape(self.caption)
        if self._encoded is None:
            content = '<div style="color:#777;padding:8px">images appear after the first epoch</div>'
            width, height = self.display_width, 120
        else:
            _, src, w, h = self._encoded
            scale = max(1.0, min(4.0, self.display_width / w))
            content = (f'<img src="{src}" alt="{caption}" style="width:100%;image-rendering:pixelated;'
                       f'image-rendering:crisp-edges"><div style="color:#555;font-size:12px">{caption}</div>')
            width, height = round(w * scale) + 20, round(h * scale) + 70
        return "events", {"data": [{"content": content, "type": "text"}], "win": self.win, "eid": env,
                          "opts": {"title": self.title, "width": width, "height": height}}

    def ready(self) -> bool:
        return self.images is None or (self._encoded is not None and self._encoded[0] == self.version)


BREAK = "\u200b"  # zero-width space: a place the browser may break a line, invisible otherwise
_UNBROKEN = re.compile(r"[^\s\-\u200b]{25,}")  # a run of characters with no place to break a line


def breakable(text: str, every: int = 24) -> str:
    """`text` with a zero-width space after every `every` characters of a run that has no space or hyphen.

    visdom's properties pane draws a row's name as plain text in a table cell that we cannot style: a long
    name without a break (a run name of 68 letters, an accepted fork-with value) widened the table and
    pushed every control of the pane out of view. Where a name is read back (the runs home's pane_data),
    unbreakable() gives it back as it was."""
    return _UNBROKEN.sub(lambda m: BREAK.join(m[0][i:i + every] for i in range(0, len(m[0]), every)), text)


def unbreakable(text: str) -> str:
    return text.replace(BREAK, "")


def encode_grid(images, nrow: int) -> tuple[str, int, int]:
    """(B, C, H, W) in [0, 1] -> (PNG data URL, width, height). Off the training thread."""
    from PIL import Image

    arr = to_uint8_hwc(make_grid(images, nrow=nrow))  # (H, W, C) uint8
    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)  # grey stays grey (mode L)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), img.width, img.height


def plotly_text(text: str) -> str:
    """Text for a Plotly legend, title or label shown as it is: Plotly reads <b>, <span style=...>, <a href=...>
    in those strings as markup, and turns &lt; &gt; &amp; back into characters."""
    return html.escape(text, quote=False)


def slug(text: str) -> str:
    """A name made safe for a window id (letters, digits, _ and .)."""
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("_") or "run"


def window_prefix(env: str, run_dir: Path | None) -> str:
    """`<env>-<token>`: the token from the run directory, so a resumed run draws into its old windows."""
    token = (hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:6] if run_dir is not None
             else secrets.token_hex(3))
    return f"{slug(env)[:40]}-{token}"


# the run's panes: titles are the same for every run, so visdom's compare view merges runs by title
TITLES = {
    "loss": "loss",
    "terms": "loss terms (recon, KL)",
    "recon": "reconstructions (top: test images, bottom: reconstructions)",
    "samples": "samples from the prior",
    "view": "view: every epoch's images, the loss axis",
    "run": "run",
    "control": "control",
    "events": "events",
}
BLUE, ORANGE, GREY = "#1f77b4", "#ff7f0e", "#9aa7b4"


def line_style(color: str, dash: str = "solid", width: float = 2) -> dict:
    """A plotly trace style: a line and its markers in one colour."""
    return {"line": {"color": color, "dash": dash, "width": width}, "marker": {"color": color, "size": 6}}
