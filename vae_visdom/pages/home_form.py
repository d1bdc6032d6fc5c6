"""The runs home's small form: a brand-new run started from the page (dataset, model, lr, batch size, epochs).

Why it is safe enough to offer: the form is a pane of the runs home, which `vae-visdom serve` runs beside
itself; page events reach it only from the server's own pages (serve/guard.py refuses other origins),
and that server listens on a loopback address or asks for a login (serve/server.py), so only the user
(or someone holding the login) can press Start. Each field goes through the CLI's own rule
(config.parse_value), the datasets are the ones that need no data folder, and the whole is checked as
`train` checks it before anything starts: the model must fit the data's images (models/specs.py model_fits) and
the batch the training set (the batch_size rule with the data's size, config.FIXED_DATASETS). A run takes
a place under the pages' limit, shared with the panel's Fork and counted from the runs that really run
(runs/page_runs.py: `serve --max-page-runs`), so it holds across restarts. What it starts is
`vae-visdom train` with those five values and the home's runs folder and server: a process of its own
(own session, output in RUN_DIR/train.log) that outlives the home and the server, like a fork from the
panel (runs/fork.py). The verdict says "starting", then "started" only once the run has passed its own
start-up checks (it wrote its config.json), or what it refused with (the last line of its output), in
which case its folder goes. Nothing else of the machine is reachable from the form: no paths, no other
flags.
"""
from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from vae_visdom.config import (
    FIXED_DATASETS,
    ConfigError,
    TrainConfig,
    default_run_name,
    parse_value,
    shown,
    with_model_defaults,
)
from vae_visdom.models.specs import model_fits
from vae_visdom.runs import page_runs
from vae_visdom.runs.trainer_process import TRAIN_LOG, start_logged, train_command

FIELDS = ("dataset", "model", "lr", "batch_size", "epochs")
DEFAULTS = {"dataset": "mnist", "model": "mlp", "lr": "", "batch_size": "", "epochs": "10"}
MODEL_DEFAULTED = ("lr", "batch_size")  # empty: the model's default for the dataset (models/specs.py)
NO_DATA_DIR = tuple(FIXED_DATASETS)  # the datasets that need no --data-dir
ROWS = tuple(f"new_{f}" for f in FIELDS) + ("start",)
START_TIMEOUT_S = 300.0  # a run still setting up after this is said to be slow, not failed


class NewRunForm:
    def __init__(self, runs_dir: Path, server: str, port: int, say: Callable[[str], None] | None = None):
        self.runs_dir, self.server, self.port = Path(runs_dir), server, port
        self.say = say or (lambda verdict: None)  # a later verdict (started / refused), from a watcher thread
        self.values = dict(DEFAULTS)  # as typed, each one accepted by its rule
        self.started: list[subprocess.Popen] = []  # reaped when they end (no zombies); counted by page_runs

    def rows(self) -> list[dict]:
        about = {"dataset": f" ({', '.join(NO_DATA_DIR)})", "lr": " (empty: the model's)",
                 "batch_size": " (empty: the model's)"}
        rows = [{"type": "text", "name": f"new run: {f}{about.get(f, '')}", "value": self.values[f]} for f in FIELDS]
        return rows + [{"type": "button", "name": "start a new run with these values", "value": "Start"}]

    def edit(self, row: str, raw) -> str:
        """A field typed in the page: kept when its rule accepts it; the verdict either way."""
        field = row[len("new_"):]
        if field in MODEL_DEFAULTED and str(raw).strip() == "":
            self.values[field] = ""
            try:
                default = getattr(self.checked(), field)
            except ConfigError:  # another field does not fit yet: Start will say which
                return f"new run: {field} = the model's default; press Start"
            return f"new run: {field} = the model's default ({default}); press Start"
        try:
            value = self._check(field, raw)
        except ConfigError as err:
            return f"rejected: {err}"
        self.values[field] = str(raw).strip()
        return f"new run: {field} = {value}; press Start"

    def start(self) -> str:
        """Start `vae-visdom train` with the form's values; the verdict names the run and its log. Whether it
        passed its start-up checks comes later, through `say`."""
        self.started = [p for p in self.started if p.poll() is None]  # reaped
        try:
            cfg = self.checked()
        except ConfigError as err:
            return f"rejected: {err}"
        try:
            with page_runs.place(self.runs_dir, "form") as placed:
                name = default_run_name(cfg)
                while (self.runs_dir / name).exists():  # two Starts in one second
                    name += "-2"
                run_dir = self.runs_dir / name
                proc = start_logged(train_command(*self.flags(), "--runs-dir", str(self.runs_dir), "--name", name,
                                                  "--server", self.server, "--port", str(self.port)),
                                    run_dir, detached=True)
                placed(run_dir, proc.pid)
        except page_runs.PageRunsFull as err:
            return f"not started: {err}"
        except OSError as err:
            return f"not started: {err}"
        self.started.append(proc)
        threading.Thread(target=self._watch, args=(proc, run_dir), name=f"start-{name}", daemon=True).start()
        return f"starting {name} (pid {proc.pid}; output in {name}/{TRAIN_LOG}) ..."

    def checked(self) -> TrainConfig:
        """The form's values as a run's config, checked together as `train` checks them before it trains
        (the model fits the images, the batch the training set); ConfigError otherwise."""
        values = {f: self._check(f, self.values[f]) for f in FIELDS if self.values[f] != ""}
        cfg = with_model_defaults(TrainConfig(**values))  # an empty lr or batch size: the model's own
        shape, n_train = FIXED_DATASETS[cfg.dataset]
        problem = model_fits(cfg.model, shape)
        if problem:
            raise ConfigError(f"model: {problem}")
        parse_value("batch_size", cfg.batch_size, {"n_train": n_train})
        return cfg

    def flags(self) -> list[str]:
        """`vae-visdom train` flags for the fields typed; an empty one is left to the model's default."""
        return [arg for f in FIELDS if self.values[f] != "" for arg in (f"--{f.replace('_', '-')}", self.values[f])]

    def _watch(self, proc: subprocess.Popen, run_dir: Path) -> None:
        """Say "started" once the run wrote its config.json (what a trainer does after its start-up checks),
        or what it refused with; a refused run's folder (its log, its place) goes."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while proc.poll() is None and not (run_dir / "config.json").exists():
            if time.monotonic() > deadline:
                self.say(f"{run_dir.name} is still setting up after {START_TIMEOUT_S:.0f} s; see {run_dir.name}/"
                         f"{TRAIN_LOG}")
                return
            time.sleep(0.2)
        if (run_dir / "config.json").exists():
            self.say(f"started {run_dir.name} (pid {proc.pid}; output in {run_dir.name}/{TRAIN_LOG})")
            return
        said = last_line(run_dir / TRAIN_LOG) or f"exit status {proc.returncode}"
        for made in (TRAIN_LOG, page_runs.MARK):  # what this form put there; the trainer cleans up its own
            (run_dir / made).unlink(missing_ok=True)
        try:
            run_dir.rmdir()
        except OSError:  # something else is there after all: leave it
            pass
        self.say(f"not started: {run_dir.name} refused at once: {said}")

    @staticmethod
    def _check(field: str, raw):
        value = parse_value(field, raw)
        if field == "dataset" and value not in NO_DATA_DIR:
            raise ConfigError(f"dataset: {shown(raw)} needs a data folder; start it from a terminal "
                              f"(vae-visdom train --dataset {value} --data-dir DIR); here: {', '.join(NO_DATA_DIR)}")
        return value


def last_line(path: Path, limit: int = 300) -> str:
    """The last non-empty line of a log (a refused run's one line), shortened."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:limit] if lines else ""
