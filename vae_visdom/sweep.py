"""`vae-visdom sweep`: a grid of runs, each its own `vae-visdom train` process.

    vae-visdom sweep --lr 1e-3,3e-4 --batch-size 64,128 --epochs 10 [--parallel N] [train flags]

Every run is a separate process, so each streams live to its own env with its own
working control panel, and a run that fails (or is killed) harms no other. Runs are
named <sweep>-<grid values> (sweep-20250101-120000-lr3e-4-bs64) and write to RUN_DIR/train.log.
At the end the sweep prints the runs best first and builds the comparison env (pages/compare.py).
"""
from __future__ import annotations

import argparse
import itertools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlparse

from vae_visdom.config import (DEFAULT_HOST, DEFAULT_PORT, DEFAULT_SERVER, OPTIMIZERS, ConfigError, UsageError,
                               check_name, fit_name, parse_value, writable_dir)
from vae_visdom.flags import add_train_arguments
from vae_visdom.models.specs import MODEL_NAMES
from vae_visdom.runs.records import compact_tag, load_run
from vae_visdom.runs.tables import ranking
from vae_visdom.runs.trainer_process import TRAIN_LOG, start_logged, train_command
from vae_visdom.serve.net import server_answers

# grid flag -> dest; the order is the order of the values in run names
GRID = {"lr": "--lr", "batch_size": "--batch-size", "epochs": "--epochs", "latent_dim": "--latent-dim",
        "optimizer": "--optimizer", "model": "--model", "beta": "--beta"}
OWN = set(GRID) | {"name", "out", "resume", "env", "runs_dir", "parallel"}  # not passed through as they are


def parse_list(name: str, text: str) -> list[Any]:
    """'1e-3, 3e-4' -> [0.001, 0.0003] under the rules of `name` (config.RULES, or the choices); duplicates dropped."""
    items = [t.strip() for t in str(text).split(",")]
    if not all(items):
        raise ConfigError(f"{name}: empty value in the list {text!r}; give values separated by commas")
    choices = {"optimizer": OPTIMIZERS, "model": MODEL_NAMES}.get(name)
    values = []
    for item in items:
        if choices is not None:
            if item.lower() not in choices:
                raise ConfigError(f"{name}: unknown value {item!r}; allowed: {', '.join(choices)}")
            value: Any = item.lower()
        else:
            value = parse_value(name, item)
        if value not in values:
            values.append(value)
    return values


def grid(lists: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The cartesian product, the first key varying slowest: {lr: [a, b], bs: [1, 2]} -> (a,1) (a,2) (b,1) (b,2)."""
    keys = list(lists)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(lists[k] for k in keys))]


@dataclass
class Job:
    name: str
    argv: list[str]
    run_dir: Path
    env: dict[str, str] = field(default_factory=dict)  # the child's whole environment; {} inherits ours

    @property
    def log_path(self) -> Path:
        return self.run_dir / TRAIN_LOG


@dataclass
class JobResult:
    job: Job
    returncode: int | None  # None: never started (the sweep was interrupted)
    seconds: float = 0.0
    interrupted: bool = False  # stopped by the sweep's Ctrl-C / SIGTERM, or never started because of it

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_jobs(jobs: Sequence[Job], parallel: int = 1, on_start: Callable[[int, Job], None] | None = None,
             on_end: Callable[[int, JobResult], None] | None = None, poll: float = 0.1) -> list[JobResult]:
    """Run the jobs, at most `parallel` at once, each with stdout and stderr in its log.

    A failing job does not stop the others. Ctrl-C (KeyboardInterrupt): the running jobs get
    SIGTERM (the trainer then checkpoints and stops), the rest are not started; their
    results say `interrupted`."""
    results: list[JobResult | None] = [None] * len(jobs)
    running: dict[int, tuple[subprocess.Popen, float]] = {}
    pending = list(range(len(jobs)))
    try:
        while pending or running:
            while pending and len(running) < parallel:
                i = pending.pop(0)
                job = jobs[i]
                proc = start_logged(job.argv, job.run_dir, env=job.env)
                running[i] = (proc, time.monotonic())
                if on_start:
                    on_start(i, job)
            for i, (proc, t0) in list(running.items()):
                if proc.poll() is not None:
                    del running[i]
                    results[i] = JobResult(jobs[i], proc.returncode, time.monotonic() - t0)
                    if on_end:
                        on_end(i, results[i])
            time.sleep(poll)
    except KeyboardInterrupt:
        for proc, _ in running.values():
            proc.send_signal(signal.SIGTERM)
        for i, (proc, t0) in running.items():
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            results[i] = JobResult(jobs[i], proc.returncode, time.monotonic() - t0, interrupted=True)
        return [r or JobResult(j, None, interrupted=True) for r, j in zip(results, jobs)]
    return [r or JobResult(j, None) for r, j in zip(results, jobs)]


def _cli_flags(args: argparse.Namespace, actions: list[tuple[str, str, Any]]) -> list[str]:
    """The train flags the user gave to the sweep, as `vae-visdom train` takes them."""
    flags = []
    for dest, option, const in actions:
        value = getattr(args, dest, None)
        if value is None or dest in OWN:
            continue
        if const is not None:  # store_true / store_false: the flag carries no value
            if value == const:
                flags.append(option)
        else:
            flags += [option, repr(value) if isinstance(value, float) else str(value)]
    return flags


def plan(args: argparse.Namespace, now: float | None = None) -> tuple[str, list[Job], int]:
    """(sweep name, jobs, parallel) from the command line; raises ConfigError/UsageError before anything starts."""

    for dest, flag in (("out", "--out"), ("resume", "--resume")):
        if getattr(args, dest, None):
            raise UsageError(f"{flag} does not apply to a sweep (each run gets RUNS_DIR/<sweep>-<values>); "
                             f"use --runs-dir and --name")
    lists = {k: parse_list(k, getattr(args, k)) for k in GRID if getattr(args, k, None) is not None}
    combos = grid(lists)
    varying = [k for k, v in lists.items() if len(v) > 1]
    sweep = check_name(args.name or time.strftime("sweep-%Y%m%d-%H%M%S", time.localtime(now)), "name")
    names = [f"{sweep}-{compact_tag({k: values[k] for k in varying})}" if varying else sweep for values in combos]
    for name in names:  # a run name is the sweep's name plus its grid values: it must pass the rule too
        check_name(name, "name")
    if getattr(args, "env", None):
        check_name(args.env, "env")
    runs_dir = writable_dir(Path(args.runs_dir or "runs"))
    parallel = args.parallel
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # train.log follows the run as it goes
    if parallel > 1 and "OMP_NUM_THREADS" not in os.environ:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = str(max(1, cores // min(parallel, len(combos))))  # N runs share the cores, none oversubscribes
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    passthrough = _cli_flags(args, args.train_actions)
    jobs = []
    for name, values in zip(names, combos):
        run_dir = runs_dir / name
        if run_dir.exists():
            raise UsageError(f"run directory {run_dir} already exists; give the sweep another --name")
        argv = train_command("--name", name, "--runs-dir", str(runs_dir))
        for k, v in values.items():
            argv += [GRID[k], repr(v) if isinstance(v, float) else str(v)]
        jobs.append(Job(name, argv + passthrough, run_dir, env))
    return sweep, jobs, parallel


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


def run(args: argparse.Namespace) -> int:
    sweep, jobs, parallel = plan(args)
    n = len(jobs)
    visdom_on = args.visdom is not False
    server, port = args.server or DEFAULT_SERVER, args.port or DEFAULT_PORT
    print(f"sweep {sweep}: {n} run{'s' * (n != 1)}, at most {parallel} at once, in {jobs[0].run_dir.parent}")
    if visdom_on and not server_answers(urlparse(server).hostname or DEFAULT_HOST, port):
        print(f"note: no visdom server answers at {server}:{port}; the runs keep their windows in "
              f"RUN_DIR/visdom.log (start one with `vae-visdom serve`, or `vae-visdom replay` later)")

    def started(i: int, job: Job) -> None:
        live = f"; live: {server}:{port}/env/{job.name}" if visdom_on else ""
        print(f"[{i + 1}/{n}] started {job.name} (log: {job.log_path}{live})", flush=True)

    def ended(i: int, res: JobResult) -> None:
        if res.ok:
            rec = load_run(res.job.run_dir)
            best = f"best test loss {rec.best['test_loss']:.2f} (epoch {rec.best['epoch']})" if rec.best else ""
            print(f"[{i + 1}/{n}] finished {res.job.name} in {res.seconds:.1f} s: {best}", flush=True)
        else:
            print(f"[{i + 1}/{n}] FAILED {res.job.name} (exit {res.returncode} after {res.seconds:.1f} s): "
                  f"{_last_line(res.job.log_path)}", flush=True)

    def terminate(signum, frame):  # a `kill` stops the runs as Ctrl-C does, instead of orphaning them
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        results = run_jobs(jobs, parallel, started, ended)
    finally:
        signal.signal(signal.SIGTERM, previous)
    interrupted = any(r.interrupted for r in results)
    if interrupted:
        print(f"\nsweep {sweep} interrupted: running runs were stopped (they keep their checkpoints; "
              f"continue one with `vae-visdom train --resume RUN_DIR`)", file=sys.stderr)
    records = _report(jobs)
    if visdom_on and any(r.metrics for r in records):
        _compare(sweep, records, server, port, args.env, jobs[0].run_dir.parent)
    failed = [r for r in results if r.returncode not in (0, None) and not r.interrupted]
    if failed:
        print(f"{len(failed)} of {n} runs failed:")
        for r in failed:
            print(f"  {r.job.name}: exit {r.returncode}: {_last_line(r.job.log_path)} (log: {r.job.log_path})")
    if interrupted:
        return 130
    return 1 if failed else 0


def _report(jobs: list[Job]) -> list:
    """The runs' records, and the ranking table printed (a run that failed before its config is left out)."""
    records = []
    for job in jobs:
        try:
            records.append(load_run(job.run_dir))
        except (OSError, ValueError):
            pass  # failed before writing its config
    if records:
        print()
        print(ranking(records))
    return records


def _compare(sweep: str, records: list, server: str, port: int, env: str | None, runs_dir: Path) -> None:
    """The sweep's comparison env, or a line saying how to build it later."""
    try:
        from vae_visdom.pages.compare import compare_runs  # late: only the monitor imports visdom

        done = compare_runs([r for r in records if r.metrics], server, port, env or fit_name(f"compare-{sweep}"))
        print(f"comparison env: {server}:{port}/env/{done.env}")
        if len(done.run_envs) > 1:
            print(f"visdom's compare view of the runs' envs: {done.compare_view_url(server, port)}")
    except (ImportError, RuntimeError, ConnectionError) as err:
        print(f"comparison env not built ({type(err).__name__}: {err}); later: "
              f"vae-visdom compare {sweep} --runs-dir {runs_dir}")


def _parallel(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number >= 1")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Every `train` flag, with comma lists for the grid ones."""
    p.description = ("Train every combination of the comma-separated values, each run as its own "
                     "`vae-visdom train` process (own env, own control panel, output in RUN_DIR/train.log), "
                     "then print the runs best first and build a comparison env. Other train flags apply to "
                     "every run. Exit status 1 when a run failed.")
    p.conflict_handler = "resolve"  # the grid's flags replace train's single-value ones (set before the groups)
    add_train_arguments(p)
    # every train flag, as (dest, option, const for flags without a value): passed through unless OWN
    train_actions = [(a.dest, a.option_strings[-1], a.const if a.nargs == 0 else None)
                     for a in p._actions if a.option_strings and a.dest != "help"]
    g = p.add_argument_group("the grid (comma-separated lists; every combination is one run)")
    g.add_argument("--lr", default=None, help="e.g. 1e-3,3e-4")
    g.add_argument("--batch-size", default=None, help="e.g. 64,128")
    g.add_argument("--epochs", default=None, help="e.g. 5,10")
    g.add_argument("--latent-dim", default=None, help="e.g. 2,20")
    g.add_argument("--optimizer", default=None, help=f"from {', '.join(OPTIMIZERS)}")
    g.add_argument("--model", default=None, help="e.g. mlp,mlp-paper")
    g.add_argument("--beta", default=None, help="the KL weight, e.g. 0.5,1,2,4")
    g = p.add_argument_group("the sweep")
    g.add_argument("--parallel", type=_parallel, default=1,
                   help="runs at once (default 1; with more, each run gets cores/N threads)")
    g.add_argument("--name", default=None, help="sweep name, the prefix of its runs' names (default sweep-<time>)")
    g.add_argument("--env", default=None, help="the comparison env (default compare-<sweep name>)")
    p.set_defaults(train_actions=train_actions)
