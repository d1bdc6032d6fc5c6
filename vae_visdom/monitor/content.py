"""What the run pane and the extra figures show, and the curves a resumed run takes back.

Plain functions of the events' data, called by VisdomMonitor under the board's lock.
"""
from __future__ import annotations

import html
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vae_visdom.monitor.curves import OBJECTIVE, elbo_trace, ensure
from vae_visdom.monitor.windows import PLOT_DIGITS, LinePlot, Trace, num
from vae_visdom.runs.files import read_jsonl
from vae_visdom.runs.records import format_value
from vae_visdom.train.controller import SETTINGS
from vae_visdom.train.events import EpochRecord, Figure, ImageFigure, NumbersFigure, RunInfo, ScatterFigure, Status


def run_html(r: RunInfo | None, st: Status, values: dict[str, Any], rec: EpochRecord | None, env: str,
             url: str, since: float) -> str:
    """The run pane: what runs where, on what, with which settings, how fast."""
    rows: list[tuple[str, str]] = []
    if r is not None:
        c = r.config
        objective = ("-ELBO" if c.get("objective", "elbo") == "elbo" else
                     f"-L_K, the importance-weighted bound with K={c.get('iwae_k')} (the -ELBO dashed beside it)")
        rows += [("run", r.name + (" (resumed)" if r.resumed else "")), ("run dir", r.run_dir),
                 ("watch at", r.url or url), ("env", env),
                 ("data", f"{r.dataset}: {r.n_train:,} train / {r.n_test:,} test images of "
                          f"{'x'.join(map(str, r.image_shape))}"), ("data source", r.data_source),
                 ("model", f"{c.get('model')} ({r.n_params:,} parameters), latent {c.get('latent_dim')}, "
                           f"hidden {c.get('hidden_dim')}, {c.get('likelihood')} likelihood"),
                 ("objective", objective), ("optimizer", str(c.get("optimizer"))), ("device", r.device),
                 ("seed", str(c.get("seed")))]
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


def figure_title(name: str, fig: Figure) -> str:
    """The pane title of a probe's figure: said here, not by the probe (unknown names keep the name)."""
    if name == "latent_manifold":
        return "Latent manifold: decodings over Gaussian quantiles 0.05..0.95 (Kingma & Welling Fig. 4)"
    if name == "interpolations":
        return "Interpolations between posterior means"
    if name == "posterior_scatter" and isinstance(fig, ScatterFigure):
        how = "mu, first two principal components" if fig.projected else "mu"
        return f"Posterior means of {len(fig.points)} test images ({how})"
    if name.startswith("pca_") and isinstance(fig, (ImageFigure, NumbersFigure)):
        k = (fig.values if isinstance(fig, NumbersFigure) else fig.about).get("k")
        size = f" (k={k})" if k is not None else ""
        return f"PCA baseline{size}" + (": originals, reconstructions" if isinstance(fig, ImageFigure) else "")
    return name


def figure_html(name: str, fig: NumbersFigure) -> str:
    """A NumbersFigure as the text pane's HTML; the PCA baseline gets its sentence."""
    v = fig.values
    if name == "pca_baseline" and {"k", "images", "recon_nats", "squared_error"} <= set(v):
        return (f"<b>PCA, k={v['k']}</b> on {v['images']} images<br>"
                f"reconstruction cross-entropy: {v['recon_nats']:.2f} nats/image "
                f"(compare with the VAE's reconstruction term, not its loss)<br>"
                f"squared error: {v['squared_error']:.2f} per image")
    cells = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{format_value(val, str(k))}</td></tr>"
                    for k, val in v.items())
    return f"<table>{cells}</table>"


def scatter_traces(fig: ScatterFigure) -> list[Trace]:
    """One trace of markers per label; NaN coordinates become gaps (null), never broken JSON."""
    pts = torch.as_tensor(fig.points).detach().float().cpu()  # (N, 2)
    labels = torch.zeros(len(pts), dtype=torch.long) if fig.labels is None else torch.as_tensor(fig.labels).cpu()
    # 4 significant digits: finer than a pixel of the pane, and ~40% of the JSON the server parses
    return [Trace(str(lab), "markers", {"marker": {"size": 4}}, _nums(pts[labels == lab][:, 0], 4),
                  _nums(pts[labels == lab][:, 1], 4)) for lab in torch.unique(labels).tolist()]


def _nums(t: torch.Tensor, digits: int | None = None) -> list:
    return [num(v, digits) for v in t.tolist()]


def change_marks(events_path: Path, steps: list[tuple[int, dict]], limit: int) -> list[tuple[float, float, str]]:
    """The loss plot's change markers, from events.jsonl's accepted settings up to step `limit` (the
    checkpoint's), placed as the live monitor placed them: at the last logged step at or before the
    change, or the first one after it when there was none yet. The label is "lr 0.001 -> 0.0003", the
    old value from the change before it or else the step row before it."""
    marks: list[tuple[float, float, str]] = []
    last: dict[str, Any] = {}  # setting -> its value after the latest accepted change
    for ev in read_jsonl(events_path):
        name, step = ev.get("name"), ev.get("step")
        if not (ev.get("accepted") and name in SETTINGS and isinstance(step, int) and step <= limit):
            continue
        before = [r for s, r in steps if s <= step]
        at = before[-1:] or [r for s, r in steps if s > step][:1]
        old = last.get(name, before[-1].get(name) if before else None)
        last[name] = ev.get("value")
        if at:
            label = f"{name} {format_value(old, name)} -> {format_value(ev.get('value'), name)}"
            marks.append((at[0]["epoch_progress"], at[0]["loss"], label))
    return marks


PARENT_TRACES = {"train": "parent: train", "test": "parent: test",
                 "train (every log interval)": "parent: every log interval"}


def _parent_history(loss: LinePlot, steps: list, forked_at: dict) -> None:
    """A fork's inherited history moves to light grey traces of its own, up to the fork point; the
    fork's own traces start at the fork point, so the two meet there."""
    step_x = [r["epoch_progress"] for s, r in steps if s <= forked_at.get("step", 0)]
    cuts = {"train": forked_at.get("epoch", 0), "test": forked_at.get("epoch", 0),
            "train (every log interval)": step_x[-1] if step_x else 0.0}
    light = {"line": {"color": "#c5ccd3", "width": 1.5}, "marker": {"color": "#c5ccd3", "size": 4}}
    new = [name for name in PARENT_TRACES.values() if name not in loss.traces]
    if new:
        loss.replace([*loss.traces.values(), *(Trace(n, "lines", light) for n in new)])
    for name, parent in PARENT_TRACES.items():
        own, inherited, cut = loss.traces[name], loss.traces[parent], cuts[name]
        pairs = list(zip(own.x, own.y))
        inherited.x, inherited.y = [x for x, _ in pairs if x <= cut], [y for x, y in pairs if x <= cut]
        own.x, own.y = [x for x, _ in pairs if x >= cut], [y for x, y in pairs if x >= cut]


def restore_from_rows(run_dir: Path, loss: LinePlot, terms: LinePlot, iw_trace: Callable[[], str],
                      forked_at: dict | None = None, iwae: bool = False) -> bool:
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
    if iwae:  # the loss traces are -L_K; the -ELBO beside them
        for split in ("train", "test"):
            name = elbo_trace(loss, split)  # first: making the trace replaces loss.traces
            t = loss.traces[name]
            kept = [r for _, r in epochs if isinstance(r.get(f"{split}_recon"), (int, float))
                    and isinstance(r.get(f"{split}_kl"), (int, float))]
            t.x = [num(r["epoch"], PLOT_DIGITS) for r in kept]
            t.y = [num(r[f"{split}_recon"] + r[f"{split}_kl"], PLOT_DIGITS) for r in kept]
    if any("test_iw_ll" in r for _, r in epochs):
        put(loss, iw_trace(), epochs, "epoch", "test_iw_ll", sign=-1.0)
    put(loss, "train (every log interval)", steps, "epoch_progress", "loss")
    if any(r.get("objective") is not None for _, r in steps):
        put(loss, ensure(loss, OBJECTIVE, "#9467bd", "dot", 1.5), steps, "epoch_progress", "objective")
    put(terms, "train recon (every log interval)", steps, "epoch_progress", "recon")
    put(terms, "train KL (every log interval)", steps, "epoch_progress", "kl")
    changes = loss.traces["changes"]
    changes.x, changes.y, changes.text = [], [], []
    if forked_at:
        _parent_history(loss, steps, forked_at)
    limit = max([r.get("step", 0) for _, r in epochs], default=0)
    for x, y, label in change_marks(Path(run_dir) / "events.jsonl", steps, limit):
        changes.x.append(num(x, PLOT_DIGITS))
        changes.y.append(num(y, PLOT_DIGITS))
        changes.text.append(label)
    loss.redraw()
    terms.redraw()
    return True
