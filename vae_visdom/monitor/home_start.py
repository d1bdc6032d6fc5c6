"""The runs home's small form: a brand-new run started from the page (dataset, model, lr, batch size, epochs).

Why it is safe enough to offer: the form is a pane of the runs home, which `vae-visdom serve` runs beside
itself; page events reach it only from the server's own pages (serve/guard.py refuses other origins),
and that server listens on a loopback address or asks for a login (serve/server.py), so only the user
(or someone holding the login) can press Start. Each field goes through the CLI's own rule
(config.parse_value), the datasets are the ones that need no data folder, and at most MAX_LIVE runs
started here train at once. What it starts is `vae-visdom train` with those five values and the home's
runs folder and server: a process of its own (own session, output in RUN_DIR/train.log) that outlives
the home and the server, like a fork from the panel (runs/fork.py). Nothing else of the machine is
reachable from the form: no paths, no other flags.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from vae_visdom.config import ConfigError, TrainConfig, default_run_name, parse_value, shown
from vae_visdom.runs.trainer_process import TRAIN_LOG, start_logged, train_command

FIELDS = ("dataset", "model", "lr", "batch_size", "epochs")
DEFAULTS = {"dataset": "mnist", "model": "mlp", "lr": "1e-3", "batch_size": "128", "epochs": "10"}
NO_DATA_DIR = ("mnist", "fashion-mnist", "orl")  # the datasets that need no --data-dir
MAX_LIVE = 2
ROWS = tuple(f"new_{f}" for f in FIELDS) + ("start",)


class NewRunForm:
    def __init__(self, runs_dir: Path, server: str, port: int):
        self.runs_dir, self.server, self.port = Path(runs_dir), server, port
        self.values = dict(DEFAULTS)  # as typed, each one accepted by its rule
        self.started: list[subprocess.Popen] = []

    def rows(self) -> list[dict]:
        rows = [{"type": "text", "name": f"new run: {f}" + (" (mnist, fashion-mnist, orl)" if f == "dataset" else ""),
                 "value": self.values[f]} for f in FIELDS]
        return rows + [{"type": "button", "name": "start a new run with these values", "value": "Start"}]

    def edit(self, row: str, raw) -> str:
        """A field typed in the page: kept when its rule accepts it; the verdict either way."""
        field = row[len("new_"):]
        try:
            value = self._check(field, raw)
        except ConfigError as err:
            return f"rejected: {err}"
        self.values[field] = str(raw).strip()
        return f"new run: {field} = {value}; press Start"

    def start(self) -> str:
        """Start `vae-visdom train` with the form's values; the verdict names the run and its log."""
        self.started = [p for p in self.started if p.poll() is None]  # reaped
        if len(self.started) >= MAX_LIVE:
            return f"not started: {MAX_LIVE} runs started from this page still train; stop one first"
        try:
            cfg = TrainConfig(**{f: self._check(f, self.values[f]) for f in FIELDS})
        except ConfigError as err:
            return f"rejected: {err}"
        name = default_run_name(cfg)
        while (self.runs_dir / name).exists():  # two Starts in one second
            name += "-2"
        run_dir = self.runs_dir / name
        flags = [arg for f in FIELDS for arg in (f"--{f.replace('_', '-')}", str(getattr(cfg, f)))]
        try:
            proc = start_logged(train_command(*flags, "--runs-dir", str(self.runs_dir), "--name", name, "--server",
                                              self.server, "--port", str(self.port)), run_dir, detached=True)
        except OSError as err:
            return f"not started: {err}"
        self.started.append(proc)
        return f"started {name} (pid {proc.pid}; output in {name}/{TRAIN_LOG})"

    @staticmethod
    def _check(field: str, raw):
        value = parse_value(field, raw)
        if field == "dataset" and value not in NO_DATA_DIR:
            raise ConfigError(f"dataset: {shown(raw)} needs a data folder; start it from a terminal "
                              f"(vae-visdom train --dataset {value} --data-dir DIR); here: {', '.join(NO_DATA_DIR)}")
        return value
