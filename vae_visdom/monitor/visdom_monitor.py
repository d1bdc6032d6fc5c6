"""VisdomMonitor: the observer that draws a run in visdom and carries the control panel.

Hooks run on the training thread and only change in-memory window state (see
board.py for the thread that sends it, and windows.py for the messages). Window ids
are unique per run (`<env>-<token>-<kind>`, the token derived from the run directory,
so a resumed run draws into its old windows); titles are the same for every run, so
visdom's compare view (/compare/envA+envB) lays runs over each other by title.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vae_visdom.config import DEFAULT_PORT, DEFAULT_SERVER, env_login
from vae_visdom.monitor.board import LOG_NAME, Board, preload
from vae_visdom.monitor.content import figure_html, figure_title, restore_from_rows, run_html, scatter_traces
from vae_visdom.monitor.curves import OBJECTIVE, Smoother, cut_resumed, elbo_trace, ensure, fit_range
from vae_visdom.monitor.explorer_pane import ExplorerPane
from vae_visdom.monitor.panel import ControlPanel
from vae_visdom.monitor.view_pane import EpochView
from vae_visdom.monitor.windows import (
    BLUE,
    GREY,
    ORANGE,
    TITLES,
    ImageGrid,
    LinePlot,
    TextPane,
    Trace,
    Window,
    line_style,
    slug,
    window_prefix,
)
from vae_visdom.runs.fork import AT_EPOCH
from vae_visdom.runs.records import format_value
from vae_visdom.train.controller import SETTINGS, Controller
from vae_visdom.train.events import (
    Callback,
    CommandEvent,
    EpochImages,
    EpochRecord,
    ExplorerFigure,
    Figure,
    ImageFigure,
    NumbersFigure,
    RunInfo,
    ScatterFigure,
    Status,
    StepLog,
)
from vae_visdom.train.steering import PLANNED

# the latent views (posterior scatter, interpolations, PCA) go to the server at most this often: a
# browser on the same CPU redraws them (a 2000-point SVG scatter among them) and they change slowly.
# Measured with a headless Chromium watching on the 2-core machine: they were ~40% of its CPU.
FIGURE_INTERVAL = 10.0
log = logging.getLogger(__name__)


def _guarded(hook: Callable) -> Callable:
    """A monitor must never stop training: an error in a hook is logged and kept, not raised."""

    @functools.wraps(hook)
    def run(self, *args):
        try:
            return hook(self, *args)
        except Exception as err:
            self.hook_errors.append(f"{hook.__name__}: {type(err).__name__}: {err}")
            if len(self.hook_errors) <= 3:
                log.exception("visdom monitor: %s failed; training goes on", hook.__name__)

    return run


class VisdomMonitor(Callback):
    def __init__(self, server: str = DEFAULT_SERVER, port: int = DEFAULT_PORT, env: str | None = None,
                 run_dir: str | Path | None = None, controller: Controller | None = None,
                 win_prefix: str | None = None, *, username: str | None = None, password: str | None = None,
                 min_interval: float = 1.0):
        self.hook_errors: list[str] = []  # see _guarded; tests check it stays empty
        preload()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.env = env or (slug(self.run_dir.name) if self.run_dir is not None else "main")
        self.server, self.port, self.controller = server, port, controller
        self.prefix = win_prefix or window_prefix(self.env, self.run_dir)
        self.log_path = self.run_dir / LOG_NAME if self.run_dir is not None else None
        # the credentials `vae-visdom serve --login` reads, unless given
        login = env_login() or (None, None)
        username = username if username is not None else login[0]
        password = password if password is not None else login[1]
        if not (username and password):
            username = password = None
        self.board = Board(server, port, self.env, self.log_path, username, password,
                           min_interval=min_interval, on_event=self._on_event)
        self._add_windows(controller)
        self.figures: dict[str, Window] = {}
        self.explorer: ExplorerPane | None = None  # made when the run's latent explorer is handed over
        self.info: RunInfo | None = None
        self.status = Status("starting", 0, 0, 0)
        self.record: EpochRecord | None = None
        self.values: dict[str, Any] = {}
        self._last_point: tuple[float, float | None] = (0.0, None)  # (x, train loss) of the last step log
        self._unplaced: list[str] = []  # changes applied before any loss was logged
        self._resume_cut: int | None = None  # start epoch of a resumed run, until its first step log
        self._started = False
        self._closed = False
        self._t0 = time.time()

    def _add_windows(self, controller: Controller | None) -> None:
        """The run's panes, in the order visdom should lay them out."""
        w = self.windows = {kind: f"{self.prefix}-{kind}" for kind in TITLES}
        b = self.board
        # each pane is made, then added: the attributes keep the pane's own type (Board.add returns a Window)
        self.loss = LinePlot(w["loss"], TITLES["loss"], [
            Trace("train (every log interval)", "lines", line_style(GREY, width=1)),
            Trace("train", "lines+markers", line_style(BLUE)),
            Trace("test", "lines+markers", line_style(ORANGE)),
            Trace("changes", "markers+text", {"marker": {"symbol": "diamond", "size": 11, "color": "#d62728"},
                                              "textposition": "top center"}, text=[]),
        ], "epoch", "-ELBO, nats per example")
        b.add(self.loss)
        self.terms = LinePlot(w["terms"], TITLES["terms"], [
            Trace("train recon", "lines+markers", line_style(BLUE)),
            Trace("test recon", "lines+markers", line_style(ORANGE)),
            Trace("train KL", "lines+markers", line_style(BLUE, "dash")),
            Trace("test KL", "lines+markers", line_style(ORANGE, "dash")),
            Trace("train recon (every log interval)", "lines", line_style(GREY, width=1)),
            Trace("train KL (every log interval)", "lines", line_style(GREY, "dot", width=1)),
        ], "epoch", "nats per example")
        b.add(self.terms)
        self.loss.y_range = self.terms.y_range = fit_range  # the readable part; plotly's Autoscale shows all
        self.smoother = Smoother("train (every log interval)")
        self.recon = ImageGrid(w["recon"], TITLES["recon"], nrow=8)
        b.add(self.recon)
        self.samples = ImageGrid(w["samples"], TITLES["samples"], nrow=8)
        b.add(self.samples)
        self.run_pane = TextPane(w["run"], TITLES["run"], width=460, height=420)
        b.add(self.run_pane)
        self.panel = ControlPanel(b, w["control"], w["events"], controller, self.env)
        self.view = EpochView(b, w["view"], self.env, {"recon": self.recon, "samples": self.samples},
                              [self.loss, self.terms], self.smoother, self.run_dir,
                              fork_at=self._fork_at if controller is not None else None)
        # visdom lays panes out in the order they first reach it: curves and controls on top
        order = [w[k] for k in ("loss", "control", "terms", "view", "recon", "samples", "events", "run")]
        b.windows = {win: b.windows[win] for win in order}

    @property
    def url(self) -> str:
        return f"{self.server}:{self.port}/env/{self.env}"

    # -- hooks (training thread) ----------------------------------------------------------------
    @_guarded
    def on_run_start(self, run: RunInfo) -> None:
        self.info = run
        self.values = {k: run.config.get(k, 1.0 if k == "beta" else None) for k in SETTINGS}  # no beta: the ELBO
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            if self.log_path.exists() and run.resumed:  # kept for a look; the curves come from the rows
                self.log_path.replace(self.log_path.with_name(LOG_NAME + ".before-resume"))
                self._resume_cut = run.start_epoch
            elif self.log_path.exists():
                self.log_path.unlink()  # a new run in an old directory starts a new log
        if run.resumed and self.run_dir is not None:
            # the run's own rows, cut at its checkpoint, are the truth; the log may lag behind them
            # (it is written every half second) or run ahead (points after the checkpoint)
            self._resume_cut = run.start_epoch
            with self.board.lock:
                restore_from_rows(self.run_dir, self.loss, self.terms, self._iw_trace, run.config.get("forked_at"),
                                  run.config.get("objective") == "iwae")
                self.smoother.reset(self.loss)
        self.panel.set_values(self.values)
        self.view.start(run.start_epoch - 1)  # a resumed run's epochs so far, from its folder
        with self.board.lock:
            self.status = Status("starting", run.start_epoch - 1, 0, int(run.config.get("epochs") or 0))
            self._render_run()
        self._start()

    @_guarded
    def on_step(self, log: StepLog) -> None:
        if self._resume_cut is not None:
            self._cut_resumed(self._resume_cut, log.epoch_progress)
        x = log.epoch_progress
        with self.board.lock:
            self.loss.add("train (every log interval)", x, log.loss)
            self.smoother.add(self.loss, x, log.loss)
            if log.objective is not None:  # beta != 1: what the optimizer minimises, apart from the -ELBO
                self.loss.add(ensure(self.loss, OBJECTIVE, "#9467bd", "dot", 1.5), x, log.objective)
            self.terms.add("train recon (every log interval)", x, log.recon)
            self.terms.add("train KL (every log interval)", x, log.kl)
            self._last_point = (x, log.loss)
            for label in self._unplaced:  # the first point that shows their effect
                self.loss.add("changes", x, log.loss, text=label)
            self._unplaced.clear()
            self.status.epoch, self.status.step = log.epoch, log.step
        self.panel.on_step(log.epoch, log.step)
        self.view.check_kept()  # the epoch checkpoint saved since the last look: its fork row
        if not self._started:
            self._start()

    @_guarded
    def on_epoch_end(self, record: EpochRecord, images: EpochImages) -> None:
        recon = torch.cat([images.originals, images.reconstructions]).detach().to("cpu", copy=True)  # (16, C, H, W)
        samples = images.samples.detach().to("cpu", copy=True)  # (64, C, H, W)
        e = record.epoch
        with self.board.lock:
            self.record = record
            self.loss.add("train", e, record.train_loss)
            self.loss.add("test", e, record.test_loss)
            if self.info is not None and self.info.config.get("objective") == "iwae":  # the bound; the ELBO beside
                for split in ("train", "test"):
                    elbo = getattr(record, f"{split}_recon") + getattr(record, f"{split}_kl")
                    self.loss.add(elbo_trace(self.loss, split), e, elbo)
            if "test_iw_ll" in record.extra:  # the IWAE bound on -log p(x): below the test -ELBO
                self.loss.add(self._iw_trace(), e, -float(record.extra["test_iw_ll"]))
            for split in ("train", "test"):
                self.terms.add(f"{split} recon", e, getattr(record, f"{split}_recon"))
                self.terms.add(f"{split} KL", e, getattr(record, f"{split}_kl"))
            self.view.on_epoch(e, {"recon": recon, "samples": samples})  # drawn unless the user stepped back
            self.status.epoch, self.status.step = e, record.step
            self._render_run()
        if self.explorer is not None:  # the explorer's copy of the model was refreshed after the test pass
            self.explorer.redraw()
        self.board.request_save()  # a server restart then loses nothing up to this epoch

    @_guarded
    def on_status(self, status: Status) -> None:
        with self.board.lock:
            self.status = dataclasses.replace(status)
            self.values.update({k: v for k, v in status.values.items() if k in SETTINGS})
            self._render_run()
        self.panel.on_status(status)
        self.view.check_kept(every=0.0)  # paused or ended right after an epoch's checkpoint: its fork row now

    @_guarded
    def on_command(self, event: CommandEvent) -> None:
        self.panel.on_command(event)
        if event.name == "fork" and event.source == "view":  # how the view pane's fork went, said there too
            with self.board.lock:
                self.view.message = event.message
                self.view.pane.touch(urgent=True)
        if event.accepted and (event.name in SETTINGS or event.name == "fork"):
            old, new = self.values.get(event.name), event.value
            x, y = self._last_point
            label = f"fork: {new.get('env')}" if event.name == "fork" else \
                f"{event.name} {format_value(old, event.name)} -> {format_value(new, event.name)}"
            rewound = (new.get("changes") or {}).get(AT_EPOCH) if event.name == "fork" else None
            if rewound is not None:  # a fork from an earlier epoch's checkpoint: marked at that epoch's test loss
                label = f"fork from epoch {rewound}: {new.get('env')}"
                x, y = self._epoch_point(rewound, (x, y))
            if event.source == PLANNED:  # from a steering schedule, not typed live
                label = f"planned: {label}"
            with self.board.lock:
                if y is None:
                    self._unplaced.append(label)
                else:
                    self.loss.add("changes", x, y, text=label)
                if event.name in SETTINGS:
                    self.values[event.name] = new
                self._render_run()

    @_guarded
    def on_figure(self, name: str, figure: Figure) -> None:
        if isinstance(figure, ExplorerFigure):  # steered by the page itself; one per run
            if self.explorer is None:
                self.explorer = ExplorerPane(self.board, f"{self.prefix}-explorer", self.env, figure.explorer)
            if not self._started:
                self._start()
            return
        title = figure_title(name, figure)
        win = f"{self.prefix}-fig-{slug(name)}"
        with self.board.lock:
            pane = self.figures.get(name)
            # a figure's name keeps its kind (the probes' names are fixed), so its pane keeps its class
            if isinstance(figure, ImageFigure):
                pane = pane or self.board.add(ImageGrid(win, title))
                assert isinstance(pane, ImageGrid)
                pane.title = title
                pane.set(torch.as_tensor(figure.images).detach().to("cpu", copy=True), nrow=figure.nrow, urgent=False)
            elif isinstance(figure, ScatterFigure):
                pane = pane or self.board.add(LinePlot(win, title, [], "", ""))
                assert isinstance(pane, LinePlot)
                pane.title = title
                pane.replace(scatter_traces(figure))
            elif isinstance(figure, NumbersFigure):
                pane = pane or self.board.add(TextPane(win, title))
                assert isinstance(pane, TextPane)
                pane.title = title
                pane.set(figure_html(name, figure))
            else:
                return
            pane.min_interval = FIGURE_INTERVAL
            self.figures[name] = pane
        if not self._started:
            self._start()

    @_guarded
    def on_run_end(self, status: Status) -> None:
        self.on_status(status)
        self.view.show_animation()  # the run files wrote it just before
        self.board.request_save()

    @_guarded
    def close(self) -> None:
        """Send what is left (at most ~10 s), save the env, stop the threads."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            self.board.request_save()
            self.board.close(timeout=10.0)

    # -- for tests and tools --------------------------------------------------------------------
    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every window is on the server and in the log; False on timeout."""
        self.board.request_save(everything=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.board.pending() == 0 and self.board.log_pending() == 0:
                return True
            time.sleep(0.02)
        return False

    def wait_connected(self, timeout: float = 10.0) -> bool:
        """Wait until the control panel's back channel is connected (tests, scripted use)."""
        return self.board.wait_connected(timeout)

    # -- internals ------------------------------------------------------------------------------
    def _start(self) -> None:
        if not self._started and not self._closed:
            self._started = True
            self.board.start()

    def _fork_at(self, epoch: int) -> str:
        """The view pane's fork from a shown epoch: the panel's Fork, with the epoch and the panel's values."""
        assert self.controller is not None  # the view pane is given this only with a controller
        changes = " ".join(filter(None, [self.panel.fork_with, f"{AT_EPOCH}={epoch}"]))
        return self.controller.submit("fork", changes, source="view").message

    def _epoch_point(self, epoch: int, otherwise: tuple[float, float | None]) -> tuple[float, float | None]:
        """The loss plot's test point of `epoch` (x, y), or `otherwise` when the plot has none."""
        test = self.loss.traces["test"]
        return next(((x, y) for x, y in zip(test.x, test.y) if x == epoch), otherwise)

    def _on_event(self, event: dict) -> None:
        self.panel.handle(event)
        self.view.handle(event)
        if self.explorer is not None:
            self.explorer.handle(event)

    def _render_run(self) -> None:
        """The run pane (under the board's lock)."""
        self.run_pane.set(run_html(self.info, self.status, self.values, self.record, self.env, self.url, self._t0))

    def _iw_trace(self) -> str:
        """The loss plot's trace of the importance-weighted estimate, made on first use (under the lock)."""
        return ensure(self.loss, "test -log p(x), IW estimate", "#2ca02c", mode="lines+markers")

    def _cut_resumed(self, cut: int, first_x: float) -> None:
        """Drop the old curves' points that the resumed run is about to draw again (from epoch `cut`)."""
        self._resume_cut = None
        with self.board.lock:
            cut_resumed([self.loss, self.terms], cut, first_x)
            self.smoother.reset(self.loss)

