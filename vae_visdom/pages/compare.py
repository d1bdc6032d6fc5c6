"""A comparison env: several runs laid over each other, drawn from their files only.

    build_comparison(runs, vis, env=None) -> Comparison   draw into a connected visdom client
    compare_runs(runs, server, port, env=None)             connect, draw, save the env
    add_arguments(p), run(args)                            the `vae-visdom compare` command

Windows: loss per epoch (train dashed, test solid, one colour per run), train loss every
log interval, a table of hyperparameters and losses with the best run marked, and each
run's last prior samples side by side. Legends are the run's short name plus the
hyperparameters that differ between the runs (runs/records.py, run_labels).

Each run's own env keeps the monitor's titles ("loss", "samples from the prior", ...),
so visdom's compare view, /compare/ENV_A+ENV_B, also merges them by title; it is
linked as `Comparison.compare_view_url` (visdom 0.2.4 merges correctly only when the
env names come in sorted order, so they are sorted there).
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from PIL import Image, ImageDraw, ImageFont

from vae_visdom.config import DEFAULT_PORT, DEFAULT_SERVER, UsageError, add_server_arguments, check_name, env_login
from vae_visdom.monitor.board import connect
from vae_visdom.monitor.windows import LinePlot, TextPane, Trace, num, plotly_text, slug
from vae_visdom.runs.records import (
    KEY_HYPERPARAMETERS,
    LISTED,
    RunRecord,
    best_first,
    best_run,
    differing_keys,
    format_value,
    load_run,
    resolve_runs,
    run_labels,
    short_names,
)
from vae_visdom.runs.tables import ranking

TITLES = {
    "epochs": "loss per epoch (train dashed, test solid)",
    "steps": "train loss (every log interval)",
    "table": "runs compared",
    "samples": "last samples from the prior",
}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


@dataclass
class Comparison:
    env: str
    windows: dict[str, str]  # kind (TITLES' keys) -> window id
    best: str | None  # name of the run with the lowest test loss
    run_envs: list[str] = field(default_factory=list)  # the runs' own envs

    def compare_view_url(self, server: str, port: int) -> str:
        return f"{server}:{port}/compare/" + "+".join(quote(e, safe="") for e in sorted(set(self.run_envs)))


def default_env(runs: Sequence[RunRecord]) -> str:
    """compare-<short names>, e.g. compare-lr1e-3-bs64_lr3e-4-bs64; long ones end in a hash."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", "compare-" + "_".join(short_names(runs))).strip("_")
    if len(name) > 80:
        name = name[:70] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return name


def _style(color: str, dash: str) -> dict:
    return {"line": {"color": color, "dash": dash, "width": 2}, "marker": {"color": color, "size": 6}}


def curves(runs: Sequence[RunRecord], labels: Sequence[str], win: str) -> tuple[LinePlot, LinePlot]:
    """(per-epoch train and test loss, train loss every log interval), one colour per run.

    Legends are built from run folders (names, config values): escaped, Plotly would read markup in them."""
    per_epoch, per_step = [], []
    for i, (rec, label) in enumerate(zip(runs, [plotly_text(label) for label in labels])):
        color = PALETTE[i % len(PALETTE)]
        epochs = [r["epoch"] for r in rec.metrics]
        for split, dash in (("train", "dash"), ("test", "solid")):
            per_epoch.append(Trace(f"{label} {split}", "lines+markers", _style(color, dash), list(epochs),
                                   [num(r.get(f"{split}_loss")) for r in rec.metrics]))
        steps = rec.steps()
        per_step.append(Trace(label, "lines", {"line": {"color": color, "width": 1.5}},
                              [num(s.get("epoch_progress")) for s in steps], [num(s.get("loss")) for s in steps]))
    marks = fork_points(runs, labels)
    if marks is not None:
        per_epoch.append(marks)
    ylabel = "-ELBO, nats per example"
    return (LinePlot(f"{win}-epochs", TITLES["epochs"], per_epoch, "epoch", ylabel, width=620, height=460),
            LinePlot(f"{win}-steps", TITLES["steps"], per_step, "epoch", ylabel, width=620, height=460))


def fork_points(runs: Sequence[RunRecord], labels: Sequence[str]) -> Trace | None:
    """A marker where each fork leaves its parent's curve (config's forked_at: epochs complete then), or None."""
    xs, ys, texts = [], [], []
    for rec, label in zip(runs, labels):
        at = rec.config.get("forked_at")
        row = next((r for r in rec.metrics if isinstance(at, dict) and r.get("epoch") == at.get("epoch")), None)
        if row is not None:
            xs.append(row["epoch"])
            ys.append(num(row.get("test_loss")))
            texts.append(plotly_text(f"fork: {label}"))
    style = {"marker": {"symbol": "diamond", "size": 11, "color": "#d62728"}, "textposition": "top center"}
    return Trace("fork points", "markers+text", style, xs, ys, text=texts) if xs else None


def table_html(runs: Sequence[RunRecord], labels: Sequence[str]) -> str:
    """Hyperparameters and final/best metrics, one row per run, the best run marked and first."""
    diff = differing_keys(runs)
    keys = list(LISTED) + [k for k in diff if k not in LISTED]
    winner = best_run(runs)
    order = sorted(range(len(runs)), key=lambda i: best_first(runs[i]))
    th = "padding:2px 6px;text-align:left;border-bottom:1px solid #999"
    head = "".join(f'<th style="{th}{";color:#b00" if k in diff else ""}">{KEY_HYPERPARAMETERS[k]}</th>'
                   for k in keys)
    rows = []
    for i in order:
        r = runs[i]
        best, last = r.best, r.last
        cells = ["&#9733; best" if r is winner else "", html.escape(labels[i]),
                 f'<a href="{quote(str(r.config.get("env") or r.name), safe="")}" target="_blank">'
                 f"{html.escape(r.name)}</a>",
                 *(html.escape(format_value(r.config.get(k))) for k in keys),
                 f"{r.epochs_done}/{r.epochs_total}", html.escape(r.state),
                 f"{best['test_loss']:.2f} (epoch {best['epoch']})" if best else "-",
                 f"{last['test_loss']:.2f}" if last else "-", f"{last['train_loss']:.2f}" if last else "-"]
        bg = "background:#fff3c4;font-weight:bold" if r is winner else ""
        rows.append(f'<tr style="{bg}">' + "".join(f'<td style="padding:2px 6px">{c}</td>' for c in cells)
                    + "</tr>")
    summary = "no run has finished an epoch yet"
    if winner is not None:
        won = " ".join(f"{KEY_HYPERPARAMETERS[k]}={format_value(winner.config.get(k))}" for k in (diff or ["lr"]))
        best = winner.best
        assert best is not None  # best_run picks only among runs with a best epoch
        summary = (f"best: <b>{html.escape(won)}</b> ({html.escape(winner.name)}), test loss "
                   f"<b>{best['test_loss']:.2f}</b> nats at epoch {best['epoch']}")
    return (f'<div style="font-size:13px"><p>{summary}</p><table style="border-collapse:collapse">'
            f'<tr><th style="{th}"></th><th style="{th}">legend</th><th style="{th}">run (its env)</th>{head}'
            f'<th style="{th}">epochs</th><th style="{th}">status</th><th style="{th}">best test</th>'
            f'<th style="{th}">last test</th><th style="{th}">last train</th></tr>{"".join(rows)}</table>'
            f'<p style="color:#666">losses: -ELBO in nats per example, lower is better; '
            f'<span style="color:#b00">red</span> columns differ between the runs</p></div>')


def samples_png(runs: Sequence[RunRecord], labels: Sequence[str]) -> tuple[str, int, int] | None:
    """Each run's last sample_N.png side by side under its label: (PNG data URL, width, height)."""
    tiles = []
    for rec, label in zip(runs, labels):
        found = rec.last_sample()
        if found is not None:
            epoch, path = found
            with Image.open(path) as im:
                tiles.append((label, epoch, im.convert("RGB")))
    if not tiles:
        return None
    tw, th = max(t[2].width for t in tiles), max(t[2].height for t in tiles)
    scale = 2 if tw * len(tiles) < 400 else 1  # small MNIST grids: whole-pixel enlargement stays sharp
    gap, strip = 12, 34
    canvas = Image.new("RGB", (len(tiles) * (tw * scale + gap) + gap, th * scale + strip + gap), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for i, (label, epoch, tile) in enumerate(tiles):
        x = gap + i * (tw * scale + gap)
        if scale > 1:
            tile = tile.resize((tile.width * scale, tile.height * scale), Image.Resampling.NEAREST)
        canvas.paste(tile, (x, strip))
        for line_no, text in enumerate((label, f"epoch {epoch}")):
            while text and draw.textlength(text, font=font) > tw * scale:
                text = text[:-2] + "…" if len(text) > 2 else ""
            draw.text((x, 3 + 15 * line_no), text, fill="black", font=font)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), canvas.width, canvas.height


def build_comparison(runs: Sequence[RunRecord], vis, env: str | None = None) -> Comparison:
    """Draw the comparison of `runs` into `env` through the visdom client `vis` (replacing an earlier one)."""
    if not runs:
        raise ValueError("nothing to compare: no runs")
    env = env or default_env(runs)
    labels = run_labels(runs)
    win = f"{slug(env)[:60]}-cmp"
    per_epoch, per_step = curves(runs, labels, win)
    table = TextPane(f"{win}-table", TITLES["table"], table_html(runs, labels), width=940,
                     height=150 + 40 * len(runs))
    for pane in (per_epoch, per_step, table):
        endpoint, msg = pane.full(env)
        vis._send(msg, endpoint=endpoint)
    windows = {"epochs": per_epoch.win, "steps": per_step.win, "table": table.win}
    encoded = samples_png(runs, labels)
    if encoded is not None:
        src, w, h = encoded
        windows["samples"] = f"{win}-samples"
        vis._send({"data": [{"content": {"src": src, "caption": " | ".join(labels)}, "type": "image"}],
                   "win": windows["samples"], "eid": env,
                   "opts": {"title": TITLES["samples"], "width": w + 20, "height": h + 60}}, endpoint="events")
    winner = best_run(runs)
    return Comparison(env, windows, winner.name if winner else None, [str(r.config.get("env") or r.name) for r in runs])


def compare_runs(runs: Sequence[RunRecord], server: str = DEFAULT_SERVER, port: int = DEFAULT_PORT,
                 env: str | None = None, username: str | None = None, password: str | None = None) -> Comparison:
    """Connect, build the comparison env and save it on the server. Raises ConnectionError without a server."""
    env = env or default_env(runs)
    vis = connect(server, port, env, username, password)
    done = build_comparison(runs, vis, env)
    vis.save([env])
    return done


# -- command line ----------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """`vae-visdom compare`."""
    p.description = ("Build a visdom env comparing runs, from their files: train and test "
                     "curves overlaid, a table of hyperparameters and losses (best run "
                     "marked), and each run's last prior samples side by side.")
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="a run directory, a run name under --runs-dir, or a name prefix (all of a sweep's runs)")
    p.add_argument("--runs-dir", default="runs", help="where run names are looked up (default: %(default)s)")
    p.add_argument("--env", default=None, help="the comparison env (default: compare-<short run names>)")
    add_server_arguments(p)


def run(args: argparse.Namespace) -> int:
    if args.env is not None:
        check_name(args.env, "env")
    try:
        records = [load_run(p) for p in resolve_runs(args.runs, args.runs_dir)]
    except (LookupError, OSError, ValueError) as err:
        raise UsageError(str(err)) from None
    print(ranking(records))
    try:
        done = compare_runs(records, args.server, args.port, args.env, *(env_login() or (None, None)))
    except ConnectionError:
        print(f"vae-visdom compare: error: no visdom server answers at {args.server}:{args.port} "
              f"(start one with `vae-visdom serve`)", file=sys.stderr)
        return 1
    print(f"comparison env: {args.server}:{args.port}/env/{done.env}")
    if len(records) > 1:
        print(f"visdom's own compare view of the runs' envs: {done.compare_view_url(args.server, args.port)}")
    return 0
