"""The runs home's table: every run of a runs folder as one HTML table (pages/home.py sends it).

Everything shown comes from the runs' own files (runs/records.py) and is HTML-escaped: a run
folder is written by whoever can write there, and the page is visdom's, where a script in a
text pane could press every button. The values change at most once a minute when no run does
(ages are whole minutes), so an idle home sends nothing.
"""
from __future__ import annotations

import html
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from vae_visdom.runs.records import RunRecord, format_value
from vae_visdom.runs.tables import loss_cell  # the listing's own loss cell: 105.67 (ep 10), or -

STATE_COLORS = {  # crashed stands out: a run that will never finish by itself
    "starting": "#1a7f37", "running": "#1a7f37", "paused": "#bf8700", "stopping": "#bf8700",
    "finished": "#0969da", "stopped": "#57606a", "failed": "#cf222e", "crashed": "#cf222e", "diverged": "#cf222e",
    "unknown": "#8c959f",
}
COLUMNS = ("run", "sweep", "status", "epoch", "best test", "last test", "lr", "batch size", "model", "dataset",
           "parent", "last update")
CELL = "padding:3px 8px;text-align:left;white-space:nowrap"
PROBLEM_CHARS = 60  # a damaged file's note in the status cell; the whole of it is the cell's tooltip


def env_of(rec: RunRecord) -> str:
    """The visdom env a run streams to (config "env", else its name)."""
    return str(rec.config.get("env") or rec.name)


def env_link(env: str, text: str | None = None) -> str:
    """A link to an env's page, opened beside the home (both visdom versions serve /env/NAME)."""
    return (f'<a href="/env/{quote(env, safe="")}" target="_blank">'
            f"{html.escape(env if text is None else text)}</a>")


def live_value(rec: RunRecord, key: str):
    """A setting as the trainer last reported it (status.json's values; the panel can change lr and batch
    size mid-run), else as configured."""
    reported = rec.status.get("values")
    values = reported if isinstance(reported, dict) else {}
    return values.get(key) if values.get(key) is not None else rec.config.get(key)


def age(t: float | None, now: float) -> str:
    """"12:03:44, 5 min ago": whole minutes, so the table changes once a minute at most while nothing happens."""
    if t is None:
        return "-"
    minutes = int(max(0.0, now - t) // 60)
    ago = "just now" if minutes < 1 else f"{minutes} min ago" if minutes < 120 else f"{minutes // 60} h ago"
    return f"{time.strftime('%H:%M:%S', time.localtime(t))}, {ago}"


def row_cells(rec: RunRecord, envs: set[str] | None, now: float) -> list[str]:
    env = env_of(rec)
    if envs is None or env in envs:
        name = env_link(env, rec.name)
    else:  # visdom 0.3.0 answers 404 for /env/NAME of an env without windows: no link rather than a dead one
        name = (f'<span title="no windows on this server (vae-visdom replay {html.escape(str(rec.run_dir))} '
                f'draws them from its visdom.log)">{html.escape(rec.name)}</span>')
    state = rec.state
    color = STATE_COLORS.get(state, STATE_COLORS["unknown"])
    weight = "bold" if state in ("crashed", "failed", "diverged", "running") else "normal"
    status = f'<span style="color:{color};font-weight:{weight}">{html.escape(state)}</span>'
    if rec.problems:  # a damaged file is said in the run's own row; the full text on hover
        text = "; ".join(rec.problems)
        short = text if len(text) <= PROBLEM_CHARS else text[:PROBLEM_CHARS - 1] + "\u2026"
        status += (f' <span style="color:#cf222e" title="{html.escape(text)}">&#9888; '
                   f"{html.escape(short)}</span>")
    parent = rec.config.get("parent")
    return [name, html.escape(rec.sweep or "-"), status, f"{rec.epochs_done}/{rec.epochs_total}",
            loss_cell(rec.best, with_epoch=True), loss_cell(rec.last),
            html.escape(format_value(live_value(rec, "lr"))), html.escape(format_value(live_value(rec, "batch_size"))),
            html.escape(format_value(rec.config.get("model"))), html.escape(format_value(rec.config.get("dataset"))),
            html.escape(Path(str(parent)).name) if parent else "-", html.escape(age(rec.updated, now))]


def table_html(records: Sequence[RunRecord], runs_dir: str, envs: set[str] | None = None,
               comparison: str | None = None, now: float | None = None) -> str:
    """The table, records in the order given (the home gives newest first). `envs`: the envs the server
    has (None: unknown, link every run); `comparison`: the env of the last comparison built, linked on top."""
    now = time.time() if now is None else now
    head = "".join(f'<th style="{CELL};border-bottom:1px solid #999">{c}</th>' for c in COLUMNS)
    body = "".join("<tr>" + "".join(f'<td style="{CELL}">{c}</td>' for c in row_cells(r, envs, now)) + "</tr>"
                   for r in records)
    if not records:
        body = f'<tr><td colspan="{len(COLUMNS)}" style="{CELL};color:#777">no runs yet: ' \
               f"vae-visdom train --runs-dir {html.escape(runs_dir)}</td></tr>"
    counts: dict[str, int] = {}
    for r in records:
        counts[r.state] = counts.get(r.state, 0) + 1
    summary = ", ".join(f"{n} {html.escape(s)}" for s, n in sorted(counts.items())) or "none"
    top = f"comparison: {env_link(comparison)} &middot; " if comparison else ""
    return (f'<div style="font-size:13px"><p>{top}{len(records)} run(s) in <code>{html.escape(runs_dir)}</code> '
            f'({summary}); newest first. Tick runs in <i>actions</i> to compare, pause, resume or stop them.</p>'
            f'<table style="border-collapse:collapse">{"<tr>" + head + "</tr>"}{body}</table>'
            f'<p style="color:#666">losses: -ELBO in nats per example, lower is better; '
            f'<span style="color:#cf222e">crashed</span>: its status says it is at work, but no trainer holds '
            f'its folder any more (killed, or the machine went down)</p></div>')
