"""The loss plots' extra traces and their default view: the objective trained when beta != 1, an
exponential moving average of the per-interval loss, and a y-range fitted to the part worth reading.

The first log interval of a run sits near 550 nats and the rest between 100 and 120: an autoscaled
axis shows the part a person tunes for as a flat line. `fit_range` fits the y-axis to the points in
the later half of the run so far (epoch curves and step points alike); plotly's "Autoscale" button
(and a double click) shows everything. Plain functions, called under the board's lock.
"""
from __future__ import annotations

import bisect

from vae_visdom.monitor.windows import PLOT_DIGITS, LinePlot, Trace, line_style, num

OBJECTIVE = "train objective: recon + beta KL (every log interval)"
# --objective iwae: the loss traces are -L_K; the -ELBO of the same epochs (recon + KL) is drawn beside them
ELBO_TRACES = {"train": "train -ELBO (recon + KL)", "test": "test -ELBO (recon + KL)"}
ELBO_COLORS = {"train": "#1f77b4", "test": "#ff7f0e"}  # the train and test traces' own colours, dashed


def elbo_trace(plot: LinePlot, split: str) -> str:
    """The -ELBO trace of `split` beside an IWAE run's bound, made on first use."""
    return ensure(plot, ELBO_TRACES[split], ELBO_COLORS[split], "dash", 1.5, "lines+markers")
EMA = "train (EMA of every log interval)"
STEP_TRACES = ("train (every log interval)", "train recon (every log interval)", "train KL (every log interval)",
               "changes", OBJECTIVE, EMA)  # drawn at fractional epochs (a resume cuts them at its first step)
PAD = 0.08  # of the fitted span, above and below


def ensure(plot: LinePlot, name: str, color: str, dash: str = "solid", width: float = 2,
           mode: str = "lines") -> str:
    """The trace `name` of `plot`, made (empty) on first use; returns the name."""
    if name not in plot.traces:
        plot.replace([*plot.traces.values(), Trace(name, mode, line_style(color, dash, width))])
    return name


def fit_range(plot: LinePlot) -> list[float | None] | None:
    """[low, high] for the y-axis: every point at x >= half the last x (all of them in the first
    epoch but its first half), padded; None (autoscale) with fewer than 3 such points. Called under
    the board's lock at each send: a bisection per trace (points are appended in x order) and C-speed
    min/max, ~0.2 ms for 10,000 points."""
    traces = [t for t in plot.traces.values() if t.name != "changes" and t.x]
    xs = [t.x[-1] for t in traces if t.x[-1] is not None]
    if not xs:
        return None
    last = max(xs)
    since = last / 2 if last > 1 else last / 4
    lows: list[float] = []
    highs: list[float] = []
    n = 0
    for t in traces:
        try:  # (`None in list` compares every float: slower than the bisection and min/max together)
            seg = t.y[bisect.bisect_left(t.x, since):]
            low, high = (min(seg), max(seg)) if seg else (None, None)
        except TypeError:  # a gap (None) among the points: the slow way
            seg = [y for x, y in zip(t.x, t.y) if x is not None and y is not None and x >= since]
            low, high = (min(seg), max(seg)) if seg else (None, None)
        # low is None also for a lone gap ([None]: min() compares nothing), which has no range to give
        if low is not None and high is not None:
            lows.append(low)
            highs.append(high)
            n += len(seg)
    if n < 3:
        return None
    lo, hi = min(lows), max(highs)
    pad = max((hi - lo) * PAD, abs(hi) * 1e-3, 1e-6)
    return [num(lo - pad, 5), num(hi + pad, 5)]


class Smoother:
    """TensorBoard's smoothing of one trace into EMA: a debiased exponential moving average, kept
    point by point (a weight change recomputes it once). Weight 0 (the default): no EMA trace; the
    view pane sets it (TensorBoard's default is 0.6)."""

    def __init__(self, source: str, weight: float = 0.0, color: str = "#111111"):
        self.source, self.weight, self.color = source, weight, color
        self.last = self.norm = 0.0

    def add(self, plot: LinePlot, x: float, y: float | None) -> None:
        if self.weight <= 0:
            return
        ensure(plot, EMA, self.color, width=1.5)
        if y is not None:
            self.last = self.weight * self.last + (1 - self.weight) * y
            self.norm = self.weight * self.norm + (1 - self.weight)
        plot.add(EMA, x, self.last / self.norm if self.norm else None)

    def reset(self, plot: LinePlot, weight: float | None = None) -> None:
        """Recompute the whole EMA trace (a new weight, or the source was restored or cut)."""
        self.weight = self.weight if weight is None else weight
        self.last = self.norm = 0.0
        if EMA in plot.traces:
            plot.replace([t for t in plot.traces.values() if t.name != EMA])
        src = plot.traces[self.source]
        for x, y in zip(list(src.x), list(src.y)):
            self.add(plot, x, y)


def cut_resumed(plots: list[LinePlot], cut: int, first_x: float) -> None:
    """Drop the points a resumed run is about to draw again: step traces from its first step,
    epoch traces from its first epoch `cut`."""
    # compared as stored: a plotted x is rounded to PLOT_DIGITS, and 1.085333 (a logged
    # 1.0853333...) is below the unrounded 1.0853333..., which drew that point twice (fault 11)
    first = num(first_x, PLOT_DIGITS)
    assert first is not None  # an epoch position is a finite number

    def keep(name: str, x: float) -> bool:
        return x < first if name in STEP_TRACES else x < cut

    for plot in plots:
        plot.truncate(keep)
