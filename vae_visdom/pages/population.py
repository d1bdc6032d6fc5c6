"""A sweep's population now, as one table in its compare env: every run, its parent (PBT's last exploit), the
values in force (from its status.json, so a change from its panel shows), its state and best test loss.

Drawn by the sweep's live view (sweep_ray.PopulationView) next to the comparison of monitor/compare.py.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

from vae_visdom.monitor.board import connect
from vae_visdom.monitor.windows import TextPane, slug
from vae_visdom.runs.records import RunRecord

TITLE = "population now"
IN_FORCE = (("lr", "lr"), ("beta", "beta"), ("batch_size", "batch size"))


def _value(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else "-" if v is None else str(v)


def population_html(runs: Sequence[RunRecord]) -> str:
    th = "text-align:left;padding:2px 10px;border-bottom:1px solid #ccc"
    td = "padding:2px 10px"
    head = "".join(f'<th style="{th}">{h}</th>' for h in
                   ("run (its env)", "parent", "forked at", *(t for _, t in IN_FORCE), "epochs", "status",
                    "best test"))
    rows = []
    for rec in runs:
        values = rec.status.get("values") or {}
        parent = rec.config.get("parent")
        at = rec.config.get("forked_at") or {}
        cells = [rec.name, Path(parent).name if parent else "-", f"epoch {at['epoch']}" if at.get("epoch") else "-",
                 *(_value(values.get(k, rec.config.get(k))) for k, _ in IN_FORCE),
                 f"{rec.epochs_done}/{rec.epochs_total}", rec.state,
                 f"{rec.best['test_loss']:.2f} (ep {rec.best['epoch']})" if rec.best else "-"]
        rows.append("<tr>" + "".join(f'<td style="{td}">{html.escape(str(c))}</td>' for c in cells) + "</tr>")
    return (f'<div style="font-size:13px"><table style="border-collapse:collapse"><tr>{head}</tr>{"".join(rows)}'
            f'</table><p style="color:#666">values in force now (a change from a run\'s panel shows here); '
            f'parent: the run whose state PBT copied last</p></div>')


def draw_population(runs: Sequence[RunRecord], server: str, port: int, env: str) -> None:
    """Put the table into `env` (replacing the previous one) and save the env. Raises ConnectionError."""
    vis = connect(server, port, env)
    pane = TextPane(f"{slug(env)[:60]}-population", TITLE, population_html(runs), width=940, height=120 + 32 * len(runs))
    endpoint, msg = pane.full(env)
    vis._send(msg, endpoint=endpoint)
    vis.save([env])
