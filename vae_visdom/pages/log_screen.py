"""What a run folder's visdom.log may draw: the run's own windows, into one env, rebuilt from their data.

A run folder is data, never code: `vae-visdom replay` (and so `vae-visdom serve`'s catch-up, which replays every
stale run under --runs-dir) reads a log anyone could have written. So no message passes as it was logged:

- env: a message for any env but the run's own is refused; the rest are drawn into the one target env, and
  never into the runs home's.
- windows: only those named as the monitor names a run's windows, `<env slug>-<6 hex>-<kind>`, and renamed
  to the prefix the monitor gives this run folder (windows.window_prefix: env and folder): a log cannot
  close or replace a window of another run, even one in the same env.
- text panes (visdom puts their content into the page as HTML): rebuilt by rebuild_html, which keeps only the
  text, escaped, and a fixed set of attribute-less tags; images only as PNG/GIF/JPEG data URLs.
- plots: every trace and layout field from a short list, every string escaped (plotly_text), so a legend or
  title cannot carry Plotly's markup; properties panes: rows of plain values (visdom's page shows them as
  text).
Anything else (image panes, unknown kinds, odd keys) is refused and counted.
"""
from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from vae_visdom.monitor.windows import plotly_text, slug, window_prefix

WINDOW_ID = re.compile(r"[A-Za-z0-9_.]+-[0-9a-f]{6}-([A-Za-z0-9_.-]{1,80})")
DATA_IMAGE = re.compile(r"data:image/(?:png|gif|jpeg);base64,[A-Za-z0-9+/]+={0,2}")  # a value check, not HTML
KEPT_TAGS = frozenset({"table", "thead", "tbody", "tr", "td", "th", "b", "strong", "i", "em", "p", "div", "span",
                       "ul", "ol", "li", "pre", "code", "h1", "h2", "h3", "h4", "small", "sub", "sup"})
VOID_TAGS = frozenset({"br", "hr"})
SKIPPED_TAGS = frozenset({"script", "style", "template", "textarea", "title", "noscript", "iframe", "object",
                          "svg", "math"})  # their content is code or markup of its own: not even its text
TRACE_KEYS = frozenset({"x", "y", "name", "type", "mode", "text", "hoverinfo", "line", "marker", "textposition",
                        "showlegend", "connectgaps"})
LAYOUT_KEYS = frozenset({"title", "showlegend", "margin", "xaxis", "yaxis", "legend", "width", "height"})
PROPERTY_TYPES = frozenset({"text", "number", "checkbox", "select", "button"})


class _Rebuild(HTMLParser):
    """Text and a few structural tags of an HTML fragment, every attribute dropped (one kind of img rebuilt)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.open: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in SKIPPED_TAGS:
            self.skipping += 1
        elif self.skipping:
            return
        elif tag in KEPT_TAGS:
            self.out.append(f"<{tag}>")
            self.open.append(tag)
        elif tag in VOID_TAGS:
            self.out.append(f"<{tag}>")
        elif tag == "img":
            src = dict(attrs).get("src") or ""
            alt = html.escape(dict(attrs).get("alt") or "")  # escaped: neither can leave its quotes
            if DATA_IMAGE.fullmatch(src):
                self.out.append(f'<img src="{html.escape(src)}" alt="{alt}" '
                                'style="width:100%;image-rendering:pixelated">')

    def handle_startendtag(self, tag, attrs):
        if tag in KEPT_TAGS:  # <div/>: an empty element, not an open one
            if not self.skipping:
                self.out.append(f"<{tag}></{tag}>")
        elif tag not in SKIPPED_TAGS:
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if tag in SKIPPED_TAGS:
            self.skipping = max(0, self.skipping - 1)
        elif not self.skipping and tag in self.open:
            while self.open:
                last = self.open.pop()
                self.out.append(f"</{last}>")
                if last == tag:
                    break

    def handle_data(self, data):
        if not self.skipping:
            self.out.append(html.escape(data))

    def text(self) -> str:
        self.close()
        return "".join(self.out) + "".join(f"</{t}>" for t in reversed(self.open))


def rebuild_html(fragment: Any) -> str:
    """An HTML fragment from a log, rebuilt: its text escaped, tags of KEPT_TAGS/VOID_TAGS without attributes,
    images only as data URLs. Nothing of the input reaches the output unescaped, so no script, handler, style
    or link can come through, whatever the parser makes of odd input."""
    parser = _Rebuild()
    parser.feed(fragment if isinstance(fragment, str) else "")
    return parser.text()


def _escaped(value: Any, depth: int = 0) -> Any:
    """A JSON value with every string passed through plotly_text (dicts and lists kept, 8 levels at most)."""
    if isinstance(value, str):
        return plotly_text(value)
    if depth > 8:
        return None
    if isinstance(value, dict):
        return {str(k): _escaped(v, depth + 1) for k, v in value.items() if isinstance(k, str)}
    if isinstance(value, list):
        return [_escaped(v, depth + 1) for v in value]
    return value if value is None or isinstance(value, (bool, int, float)) else None


def _trace(t: Any) -> dict | None:
    if not isinstance(t, dict) or t.get("type", "scatter") != "scatter":
        return None
    return {k: _escaped(v) for k, v in t.items() if k in TRACE_KEYS}


def _properties(rows: Any) -> list | None:
    if not isinstance(rows, list):
        return None
    kept = []
    for row in rows:
        if not isinstance(row, dict) or row.get("type") not in PROPERTY_TYPES:
            return None
        value = row.get("value")
        new = {"type": row["type"], "name": str(row.get("name", ""))[:200],
               "value": value if isinstance(value, (bool, int, float)) else str(value)[:2000]}
        if row["type"] == "select":
            new["values"] = [str(v)[:200] for v in row.get("values", []) if isinstance(v, (str, int, float))]
        kept.append(new)
    return kept


def _opts(opts: Any) -> dict:
    opts = opts if isinstance(opts, dict) else {}
    kept: dict = {"title": str(opts.get("title", ""))[:200]}  # the pane's title bar shows it as text
    for key in ("width", "height"):
        if isinstance(opts.get(key), (int, float)) and not isinstance(opts.get(key), bool):
            kept[key] = opts[key]
    for key in ("xlabel", "ylabel"):
        if isinstance(opts.get(key), str):
            kept[key] = plotly_text(opts[key])
    if isinstance(opts.get("showlegend"), bool):
        kept["showlegend"] = opts["showlegend"]
    return kept


def _content(endpoint: str, msg: dict) -> dict | None:
    """The drawing part of one message rebuilt (win and eid left out), or None when it is refused."""
    data = msg.get("data")
    if endpoint == "update":
        if not (isinstance(data, list) and all(isinstance(d, dict) for d in data)):
            return None
        points = [{k: [v for v in d.get(k, []) if v is None or isinstance(v, (int, float))]
                   for k in ("x", "y") if isinstance(d.get(k), list)} for d in data]
        return {"data": points, "name": plotly_text(str(msg.get("name", ""))), "append": bool(msg.get("append"))}
    if not (isinstance(data, list) and data and isinstance(data[0], dict)):
        return None
    kind = data[0].get("type")
    if kind == "text":
        return {"data": [{"content": rebuild_html(data[0].get("content")), "type": "text"}],
                "opts": _opts(msg.get("opts"))}
    if kind == "properties":
        rows = _properties(data[0].get("content"))
        return None if rows is None else {"data": [{"content": rows, "type": "properties"}],
                                          "opts": _opts(msg.get("opts"))}
    traces = [_trace(t) for t in data]
    if any(t is None for t in traces):
        return None
    layout = msg.get("layout")
    layout = layout if isinstance(layout, dict) else {}
    return {"data": traces, "layout": {k: _escaped(v) for k, v in layout.items() if k in LAYOUT_KEYS},
            "opts": _opts(msg.get("opts"))}


def screen(entries: list[tuple[str, dict]], own_env: str, target: str, run_dir: Path
           ) -> tuple[list[tuple[str, dict]], dict[str, int]]:
    """(the messages to draw, rebuilt for `target`, {why refused: how many}).

    own_env: the env the run drew into (a message for another env is refused); target: where to draw."""
    prefix = window_prefix(own_env, Path(run_dir))  # the ids this run folder's monitor uses
    kept: list[tuple[str, dict]] = []
    refused: dict[str, int] = {}

    def refuse(why: str) -> None:
        refused[why] = refused.get(why, 0) + 1

    for endpoint, msg in entries:
        if msg.get("eid") != own_env:
            refuse("for another env")
            continue
        match = WINDOW_ID.fullmatch(str(msg.get("win", "")))
        if match is None or not str(msg["win"]).startswith(slug(own_env)[:40] + "-"):
            refuse("not a window of this run")
            continue
        content = _content(endpoint, msg)
        if content is None:
            refuse("not a pane a run draws")
            continue
        kept.append((endpoint, {**content, "win": f"{prefix}-{match.group(1)}", "eid": target}))
    return kept, refused
