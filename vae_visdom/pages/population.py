"""A sweep's population now, as one table in its compare env: every run, its parent (PBT's last exploit), the
values in force (from its status.json, so a change from its panel shows), its state and best test loss.

Drawn by the sweep's live view (PopulationView, below) next to the comparison of pages/compare.py.
"""
from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from pathlib import Path

from vae_visdom.config import env_login
from vae_visdom.monitor.board import connect
from vae_visdom.monitor.windows import TextPane, slug
from vae_visdom.pages.compare import compare_runs
from vae_visdom.pages.rebuild import Rebuilder
from vae_visdom.runs.records import RunRecord, load_run

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


def draw_population(runs: Sequence[RunRecord], server: str, port: int, env: str, username: str | None = None,
                    password: str | None = None) -> None:
    """Put the table into `env` (replacing the previous one) and save the env. Raises ConnectionError."""
    vis = connect(server, port, env, username, password)
    pane = TextPane(f"{slug(env)[:60]}-population", TITLE, population_html(runs), width=940,
                    height=120 + 32 * len(runs))
    endpoint, msg = pane.full(env)
    vis._send(msg, endpoint=endpoint)
    vis.save([env])


class PopulationView:
    """compare-<sweep>, rebuilt from the runs' files as results come in (pages/rebuild.py): every trial's curves,
    fork markers where PBT exploited, and the population table; logged in with the server's credentials."""

    def __init__(self, run_dirs: Callable[[], list[Path]], server: str, port: int, env: str):
        self.run_dirs, self.server, self.port, self.env = run_dirs, server, port, env
        self._rebuild = Rebuilder(f"population view {env}", self._draw)
        self._rebuild.start()

    def wake(self) -> None:
        self._rebuild.wake()

    def close(self) -> None:
        self._rebuild.close()

    def build(self) -> bool:
        return self._rebuild.build()

    def _draw(self) -> None:
        records = [r for r in (load_run(d) for d in self.run_dirs() if (d / "config.json").is_file()) if r.metrics]
        if records:
            login = env_login() or (None, None)
            compare_runs(records, self.server, self.port, self.env, *login)
            draw_population(records, self.server, self.port, self.env, *login)
