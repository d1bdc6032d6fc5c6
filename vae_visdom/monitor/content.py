"""What the run pane and the extra figures show, and the curves a resumed run takes back.

Plain functions of the events' data, called by VisdomMonitor under the board's lock.
"""
from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

from vae_visdom.train.events import EpochRecord, RunInfo, Status
from vae_visdom.monitor.curves import OBJECTIVE, ensure
from vae_visdom.monitor.windows import PLOT_DIGITS, LinePlot, Trace, num
from vae_visdom.runs.files import read_jsonl
from vae_visdom.runs.records import format_value


def run_html(r: RunInfo | None, st: Status, values: dict[str, Any], rec: EpochRecord | None, env: str,
             url: str, since: float) -> str:
    """The run pane: what runs where, on what, with which settings, how fast."""
    rows: list[tuple[str, str]] = []
    if r is not None:
        c = r.config
        rows += [("run", r.name + (" (resumed)" if r.resumed else "")), ("run dir", r.run_dir),
                 ("watch at", r.url or url), ("env", env),
                 ("data", f"{r.dataset}: {r.n_train:,} train / {r.n_test:,} test images of "
                          f"{'x'.join(map(str, r.image_shape))}"), ("data source", r.data_source),
                 ("model", f"{c.get('model')} ({r.n_params:,} parameters), latent {c.get('latent_dim')}, "
                           f"hidden {c.get('hidden_dim')}, {c.get('likelihood')} likelihood"),
                 ("optimizer", str(c.get("optimizer"))), ("device", r.device), ("seed", str(c.get("seed")))]
    rows.append(("status", f"{st.state}, epoch {st.epoch}/{values.get('epochs') or st.epochs}, "
                           f"step {st.step:,}" + (f" ({st.message})" if st.message else "")))
    rows.append(("in force", ", ".join(f"{k} {format_value(v, k)}" for k, v in values.items())))
    if rec is not None:
        rows += [("last epoch", f"{rec.epoch}: train {rec.train_loss:.3f}, test {rec.test_loss:.3f} nats"),
                 ("epoch time", f"{rec.seconds:.2f} s train + {rec.test_seconds:.2f} s test, "
                                f"{rec.images_per_second:,.0f} images/s")]
        rows += [(k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in rec.extra.items()]
    rows.append(("monitor since", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))))
    cells = "".join(f'<tr><td style="color:#555;padding-right:8px;vertical-align:top">{html.escape(k)}</td>'
                    f"<td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table style="font-size:13px">{cells}</table>'


def figure_traces(kind: str, payload: dict) -> list[Trace]:
    """on_figure payloads of kind "scatter" (one trace per label) or "line" (one per column)."""
    if kind == "scatter":
        pts = torch.as_tensor(payload["points"]).detach().float().cpu()  # (N, 2)
        labels = payload.get("labels")
        labels = torch.zeros(len(pts), dtype=torch.long) if labels is None else torch.as_tensor(labels).cpu()
        # 4 significant digits: finer than a pixel of the pane, and ~40% of the JSON the server parses
        return [Trace(str(lab), "markers", {"marker": {"size": 4}}, _nums(pts[labels == lab][:, 0], 4),
                      _nums(pts[labels == lab][:, 1], 4)) for lab in torch.unique(labels).tolist()]
    y = torch.as_tensor(payload["y"]).detach().float().cpu()  # (N,) or (N, M)
    y = y[:, None] if y.ndim == 1 else y
    x = payload.get("x")
    x = torch.arange(len(y)).float() if x is None else torch.as_tensor(x).float().cpu()
    legend = payload.get("legend") or [str(i + 1) for i in range(y.shape[1])]
    return [Trace(str(legend[j]), "lines", {}, _nums(x, PLOT_DIGITS), _nums(y[:, j], PLOT_DIGITS))
            for j in range(y.shape[1])]


def _nums(t: torch.Tensor, digits: int | None = None) -> list:
    return [num(v, digits) for v in t.tolist()]


def restore_from_rows(run_dir: Path, loss: LinePlot, terms: LinePlot, iw_trace: Callable[[], str]) -> bool:
    """A resumed run's curves from its metrics.jsonl and steps.jsonl (already cut at the checkpoint
    it resumes from): each epoch and each logged step once. False (nothing changed) when the run
    folder has neither file. `iw_trace()` names the loss plot's IW trace, making it when needed."""
    paths = [Path(run_dir) / name for name in ("metrics.jsonl", "steps.jsonl")]
    if not any(p.exists() for p in paths):
        return False
    epochs = sorted({r["epoch"]: r for r in read_jsonl(paths[0]) if "epoch" in r}.items())
    steps = sorted({r["step"]: r for r in read_jsonl(paths[1]) if "step" in r}.items())

    def put(plot: LinePlot, name: str, rows: list, x: str, y: str, sign: float = 1.0) -> None:
        t = plot.traces[name]
        kept = [r for _, r in rows if isinstance(r.get(y), (int, float))]
        t.x = [num(r[x], PLOT_DIGITS) for r in kept]
        t.y = [num(sign * r[y], PLOT_DIGITS) for r in kept]

    for split in ("train", "test"):
        put(loss, split, epochs, "epoch", f"{split}_loss")
        put(terms, f"{split} recon", epochs, "epoch", f"{split}_recon")
        put(terms, f"{split} KL", epochs, "epoch", f"{split}_kl")
    if any("test_iw_ll" in r for _, r in epochs):
        put(loss, iw_trace(), epochs, "epoch", "test_iw_ll", sign=-1.0)
    put(loss, "train (every log interval)", steps, "epoch_progress", "loss")
    if any(r.get("objective") is not None for _, r in steps):
        put(loss, ensure(loss, OBJECTIVE, "#9467bd", "dot", 1.5), steps, "epoch_progress", "objective")
    put(terms, "train recon (every log interval)", steps, "epoch_progress", "recon")
    put(terms, "train KL (every log interval)", steps, "epoch_progress", "kl")
    loss.redraw()
    terms.redraw()
    return True


def restore_curves(path: Path, plots: list[LinePlot]) -> None:
    """Apply a visdom.log's messages for these plots to their traces.

    Matched by the kind at the end of the window id (`...-loss`), not the whole id: a run
    resumed into another env has another prefix.
    """
    by_kind = {p.win.rsplit("-", 1)[-1]: p for p in plots}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            endpoint, msg = json.loads(line)
            win = str(msg.get("win"))
            plot = None if "-fig-" in win else by_kind.get(win.rsplit("-", 1)[-1])
            if plot is None:
                continue
            if endpoint == "events":  # the whole figure: start over
                for t in plot.traces.values():
                    t.x, t.y, t.text = [], [], ([] if t.text is not None else None)
            for d in msg.get("data", []):
                t = plot.traces.get(msg.get("name") or d.get("name"))
                if t is not None:
                    t.x += d.get("x", [])
                    t.y += d.get("y", [])
                    if t.text is not None:
                        t.text += d.get("text", [""] * len(d.get("x", [])))
        except (ValueError, AttributeError, TypeError):
            continue  # a torn last line after a crash
    for plot in plots:
        plot.redraw()
