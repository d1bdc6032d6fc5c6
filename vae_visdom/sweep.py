"""`vae-visdom sweep`: many runs of one search, each a Ray Tune trial (sweep_ray.py), each a normal run.

    vae-visdom sweep --lr 1e-3,3e-4 --batch-size 64,128 --epochs 10 [--parallel N] [train flags]
    vae-visdom sweep --lr log:1e-4:1e-2 --beta 0.5:4 --samples 8 --scheduler asha
    vae-visdom sweep --scheduler pbt --samples 4 --lr log:1e-4:3e-3 --perturb-every 1 --epochs 6
    vae-visdom sweep ... --address HOST:PORT        (a Ray cluster; or RAY_ADDRESS)

Comma lists are a grid, ranges are sampled (sweep_space.py), every value checked by train's rules before
anything starts. A sweep has a folder of its own, RUNS_DIR/<sweep> (runs/layout.py): its plan (sweep.json), Ray
Tune's state (.tune/) and its runs. Every trial is a run of its own (RUNS_DIR/<sweep>/<sweep>-<grid values>, or
RUNS_DIR/<sweep>/<sweep>-<trial number> when values are sampled or mutated), streaming live to its own env
(named as the run: unique) with its own working control panel; its output goes to RUN_DIR/train.log. At the
end the sweep prints the runs best first and builds the comparison env (monitor/compare.py), which is kept up
to date while the trials train.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

from vae_visdom.config import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_SERVER,
    OPTIMIZERS,
    TrainConfig,
    UsageError,
    check_name,
    fit_name,
    writable_dir,
)
from vae_visdom.flags import add_train_arguments
from vae_visdom.runs.layout import SWEEP_FILE
from vae_visdom.runs.records import load_run
from vae_visdom.runs.tables import ranking
from vae_visdom.serve.net import is_loopback, server_answers
from vae_visdom.sweep_space import SWEPT, Space, parse_list, parse_space  # noqa: F401  (parse_list: its old home)
from vae_visdom.sweep_trial import TrialPlan, run_name

# the flags not passed to the runs as they are
OWN = set(SWEPT) | {"name", "out", "resume", "env", "runs_dir", "parallel", "fork", "at_epoch"}
GRID = SWEPT  # the flags a sweep varies (kept under its old name)
SCHEDULERS = ("fifo", "asha", "pbt")


def check_address(address: str) -> tuple[str, int]:
    """HOST:PORT of a Ray head that accepts a connection; UsageError (one line) otherwise."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--address {address!r}: give HOST:PORT of a Ray head (`ray start --head --port PORT`)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=3):
            pass
    except OSError as err:
        raise UsageError(f"--address {address}: no Ray cluster answers there ({err.strerror or err}); start one "
                         f"with `ray start --head --port {port}`, or leave out --address to run on this "
                         "machine") from None
    return host, int(port)


@dataclass
class SweepPlan:
    sweep: str
    space: Space
    trial: TrialPlan
    names: list[str]  # the runs' names, in trial order
    runs_dir: Path
    storage: Path  # the sweep's folder, RUNS_DIR/<sweep> (before: RUNS_DIR/<sweep>.sweep, its runs beside it)
    scheduler: str
    samples: int
    parallel: int
    epochs: int
    perturb_every: int
    address: str | None
    gpus_per_trial: float
    resume: bool = False  # continue the sweep whose Tune state is in `storage`
    tune_dir: str = ".tune"  # Tune's state in `storage` (a sweep of before: "tune")

    @property
    def run_dirs(self) -> list[Path]:
        return [Path(self.trial.runs_dir) / name for name in self.names]


def plan(args: argparse.Namespace, now: float | None = None) -> SweepPlan:
    """The sweep from the command line; raises ConfigError/UsageError before anything starts."""
    from vae_visdom.flags import config_from_args

    if getattr(args, "resume", None):
        return resumed(Path(args.resume), args)
    for dest, flag in (("out", "--out"), ("fork", "--fork")):
        if getattr(args, dest, None):
            raise UsageError(f"{flag} does not apply to a sweep (each run gets RUNS_DIR/<sweep>/<sweep>-<values>); "
                             f"use --runs-dir and --name")
    if args.scheduler not in SCHEDULERS:
        raise UsageError(f"--scheduler {args.scheduler!r}: unknown; choose from {', '.join(SCHEDULERS)}")
    space = parse_space({k: getattr(args, k, None) for k in SWEPT})
    if args.perturb_every is not None and args.scheduler != "pbt":
        raise UsageError("--perturb-every goes with --scheduler pbt")
    if args.scheduler == "pbt" and not space.mutable():
        raise UsageError("--scheduler pbt needs something to mutate: a range or a list of at least two values "
                         "for --lr, --beta or --batch-size (e.g. --lr log:1e-4:3e-3)")
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    if address in ("local",):
        address = None
    if address and address != "auto":
        check_address(address)
    base = config_from_args(args)
    for k in SWEPT:  # the swept values come with each trial (a single value too)
        setattr(base, k, getattr(TrainConfig(), k))
    base.validate()
    sweep = check_name(args.name or time.strftime("sweep-%Y%m%d-%H%M%S", time.localtime(now)), "name")
    if getattr(args, "env", None):
        check_name(args.env, "env")
    runs_dir = Path(args.runs_dir or "runs").resolve()
    storage = runs_dir / sweep  # the sweep's folder: its plan, Tune's state and its runs
    pbt = args.scheduler == "pbt"
    by_values = not space.ranges and args.samples == 1 and not pbt
    trial = TrialPlan(sweep, str(storage), {k: v for k, v in asdict(base).items() if k not in OWN and v is not None},
                      space.varying, by_values, args.test_subset)
    combos = space.grid()
    n = args.samples if pbt else len(combos) * args.samples
    names = [run_name(trial, combos[i % len(combos)] if by_values else {}, i) for i in range(n)]
    if storage.exists():
        raise UsageError(f"{storage} already exists (a run or a sweep of that name); give the sweep another --name")
    writable_dir(runs_dir)  # made only once everything is known to be right
    epochs_axis = space.axes.get("epochs")
    epochs = max(epochs_axis) if isinstance(epochs_axis, list) else int(getattr(epochs_axis, "hi", 0) or base.epochs)
    gpus = 1.0 if (args.device == "cuda") else 0.0
    return SweepPlan(sweep, space, trial, names, runs_dir, storage, args.scheduler, args.samples, args.parallel,
                     epochs, args.perturb_every or 1, address, gpus)


PLAN_FILE = SWEEP_FILE  # RUNS_DIR/<sweep>/sweep.json: what `sweep --resume` needs besides Tune's state


def save_plan(p: SweepPlan, live: dict) -> None:
    from vae_visdom import safe_io

    safe_io.atomic_write(p.storage / PLAN_FILE, json.dumps({
        "sweep": p.sweep, "trial": asdict(p.trial), "names": p.names, "runs_dir": str(p.runs_dir),
        "scheduler": p.scheduler, "samples": p.samples, "parallel": p.parallel, "epochs": p.epochs,
        "perturb_every": p.perturb_every, "address": p.address, "gpus_per_trial": p.gpus_per_trial, "live": live},
        indent=2))


def resumed(storage: Path, args: argparse.Namespace) -> SweepPlan:
    """The plan of the sweep whose folder is `storage` (RUNS_DIR/<sweep>; or RUNS_DIR/<sweep>.sweep, a sweep made
    before its runs lived in its folder), to continue it."""
    try:
        saved = json.loads((storage / PLAN_FILE).read_text())
    except (OSError, ValueError):
        raise UsageError(f"--resume {storage}: no readable {PLAN_FILE} there (give the sweep's folder, "
                         f"RUNS_DIR/<sweep>)") from None
    tune_dir = next((d for d in (".tune", "tune") if (storage / d).is_dir()), None)
    if tune_dir is None:
        raise UsageError(f"--resume {storage}: no Tune state there (the sweep never started its trials)")
    address = args.address or os.environ.get("RAY_ADDRESS") or saved["address"]
    if address and address not in ("auto", "local"):
        check_address(address)
    args.visdom = saved["live"]["visdom"] if args.visdom is None else args.visdom
    args.server, args.port = args.server or saved["live"]["server"], args.port or saved["live"]["port"]
    args.env = args.env or saved["live"]["env"]
    return SweepPlan(saved["sweep"], parse_space({}), TrialPlan(**saved["trial"]), saved["names"],
                     Path(saved["runs_dir"]), storage.resolve(), saved["scheduler"], saved["samples"],
                     saved["parallel"], saved["epochs"], saved["perturb_every"],
                     None if address in (None, "local") else address, saved["gpus_per_trial"], resume=True,
                     tune_dir=tune_dir)


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


def run(args: argparse.Namespace) -> int:
    p = plan(args)
    if p.address and is_loopback(p.address.rpartition(":")[0].strip("[]")):
        # Ray swaps a loopback head address for this machine's outside address, where a head started on
        # loopback does not answer; this setting (read when Ray is imported) keeps it on loopback
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        from vae_visdom import sweep_ray  # late: Ray
    except ImportError as err:
        raise UsageError(f"sweep runs its trials on Ray Tune, which is not installed here ({err}); install it with "
                         f"`pip install 'ray[tune]'` (scripts/setup.sh does)") from None

    n = len(p.names)
    visdom_on = args.visdom is not False
    server, port = args.server or DEFAULT_SERVER, args.port or DEFAULT_PORT
    where = f"the Ray cluster at {p.address}" if p.address else "this machine"
    print(f"sweep {p.sweep}: {n} run{'s' * (n != 1)} ({p.scheduler}), at most {p.parallel} at once on {where}, "
          f"in {p.storage}", flush=True)
    if visdom_on:
        print(f"live: each run at {server}:{port}/env/<run name>, the population at "
              f"{server}:{port}/env/{args.env or fit_name(f'compare-{p.sweep}')}", flush=True)
        if not server_answers(urlparse(server).hostname or DEFAULT_HOST, port):
            print(f"note: no visdom server answers at {server}:{port}; the runs keep their windows in "
                  f"RUN_DIR/visdom.log (start one with `vae-visdom serve`, or `vae-visdom replay` later)")
    run_dirs = p.run_dirs
    env = args.env or fit_name(f"compare-{p.sweep}")
    view = None
    if visdom_on:
        from vae_visdom.pages.population import PopulationView  # late: visdom

        view = PopulationView(lambda: [d for d in run_dirs if d.is_dir()], server, port, env)
    if not p.resume:
        p.storage.mkdir(parents=True)
        save_plan(p, {"visdom": visdom_on, "server": server, "port": port, "env": args.env})
    import ray

    stopping = []

    def stop(signum, frame):  # Ctrl-C or a `kill`: Tune's own graceful stop (its SIGUSR1), noted to say so after
        stopping.append(signal.Signals(signum).name)
        if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):  # Tune is not listening yet
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGUSR1)

    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours, above, instead: Tune's would not tell us
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    outcome = sweep_ray.SweepOutcome(interrupted=True)
    try:
        sweep_ray.connect(p.address, cpus=max(1, p.parallel))
        for sig in previous:  # again: Ray's core installs its own on connecting (a SIGTERM would end us at once)
            signal.signal(sig, stop)
        outcome = sweep_ray.tune_sweep(p.trial, p.space, p.names, scheduler=p.scheduler, samples=p.samples,
                                       parallel=p.parallel, epochs=p.epochs, perturb_every=p.perturb_every,
                                       storage=p.storage, tune_dir=p.tune_dir, gpus_per_trial=p.gpus_per_trial,
                                       say=lambda line: print(line, flush=True),
                                       on_result=view.wake if view else None,
                                       live=f"{server}:{port}" if visdom_on else None, resume=p.resume)
    except KeyboardInterrupt:
        pass  # before Tune started: nothing ran
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        ray.shutdown()
        if view:
            view.close()
    outcome.interrupted = outcome.interrupted or bool(stopping)
    if outcome.interrupted:
        say_interrupted(run_dirs, p.storage)
        print(f"\nsweep {p.sweep} interrupted: the runs at work were ended and keep their last checkpoints; "
              f"continue the sweep with `vae-visdom sweep --resume {p.storage}`", file=sys.stderr)
    records = _report(run_dirs)
    if visdom_on and any(r.metrics for r in records):
        _compare(p.sweep, records, server, port, args.env, p.runs_dir)
    failed = outcome.failed
    if failed:
        print(f"{len(failed)} of {n} runs failed:")
        for t in failed:
            log = Path(p.trial.runs_dir) / t.name / "train.log" if t.name else None
            print(f"  {t.name or '(a trial)'}: {t.error}" + (f" (log: {log})" if log else ""))
    if outcome.interrupted:
        return 130
    return 1 if failed else 0


def say_interrupted(run_dirs: list[Path], folder: Path, wait_s: float = 15.0) -> list[Path]:
    """A trial caught mid-epoch by the sweep's stop (Ctrl-C, a `kill`) is ended by Ray before it can write its
    own last status: its status.json still says it is at work, which would list it as crashed. Once no trainer
    holds its folder (runs/lock.py), its status says what happened: stopped, interrupted in that epoch, with the
    checkpoint of its last epoch. Returns the runs it wrote; a run whose lock cannot be told is left as it is."""
    from vae_visdom import safe_io
    from vae_visdom.runs.records import LIVE_STATES

    said, deadline = [], time.monotonic() + wait_s
    for d in run_dirs:
        while True:
            try:
                rec = load_run(d, lenient=True)
            except (OSError, ValueError):  # never started
                break
            if rec.status.get("state") not in LIVE_STATES or rec.held is None:
                break
            if rec.held is False:
                done = rec.epochs_done
                kept = f"its checkpoint is of epoch {done}" if (d / "checkpoint.pt").is_file() and done else \
                    "no checkpoint yet (interrupted in its first epoch)"
                message = (f"interrupted by the sweep's stop during epoch {done + 1} (Ray ended it before it could "
                           f"say so); {kept}; `vae-visdom sweep --resume {folder}` continues it")
                try:
                    safe_io.atomic_write(d / "status.json", json.dumps({
                        **rec.status, "state": "stopped", "message": message, "reason": "stopped", "epoch": done,
                        "step": (rec.last or {}).get("step", rec.status.get("step", 0)),
                        "time": time.time()}))
                    said.append(d)
                except (OSError, safe_io.RunWriteError):
                    pass  # listed as crashed, its checkpoint there all the same
                break
            if time.monotonic() > deadline:  # still held: its worker outlives the sweep's Ray
                break
            time.sleep(0.2)
    return said


def _report(run_dirs: list[Path]) -> list:
    """The runs' records, and the ranking table printed (a run that failed before its config is left out)."""
    records = []
    for d in run_dirs:
        try:
            records.append(load_run(d))
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
    """Every `train` flag, with comma lists or ranges for the swept ones."""
    p.description = ("Train every combination of the comma-separated values (and --samples draws of each range), "
                     "each run a Ray Tune trial on this machine or a Ray cluster (--address), with its own env, "
                     "control panel and RUN_DIR/train.log; then print the runs best first and build a comparison "
                     "env. Other train flags apply to every run. Exit status 1 when a run failed.")
    p.conflict_handler = "resolve"  # the swept flags replace train's single-value ones (set before the groups)
    add_train_arguments(p)
    g = p.add_argument_group("what is swept: comma lists (every combination is one run) or ranges LO:HI, "
                             "log:LO:HI (drawn --samples times)")
    g.add_argument("--lr", default=None, help="e.g. 1e-3,3e-4 or log:1e-4:1e-2")
    g.add_argument("--batch-size", default=None, help="e.g. 64,128 or 32:256")
    g.add_argument("--epochs", default=None, help="e.g. 5,10")
    g.add_argument("--latent-dim", default=None, help="e.g. 2,20")
    g.add_argument("--optimizer", default=None, help=f"from {', '.join(OPTIMIZERS)}")
    g.add_argument("--model", default=None, help="e.g. mlp,mlp-paper")
    g.add_argument("--beta", default=None, help="the KL weight, e.g. 0.5,1,2,4 or 0.5:4")
    g = p.add_argument_group("the sweep")
    g.add_argument("--samples", type=_parallel, default=1,
                   help="draws of the ranges per grid point (default 1); with --scheduler pbt: the population")
    g.add_argument("--scheduler", default="fifo",
                   help="fifo (default: every run to the end), asha (stops weak runs early on the test loss), "
                        "pbt (population-based training: weak runs copy a strong one's state, lr/beta/batch size "
                        "perturbed)")
    g.add_argument("--perturb-every", type=_parallel, default=None, metavar="E",
                   help="with --scheduler pbt: epochs between exploits (default 1)")
    g.add_argument("--parallel", type=_parallel, default=1,
                   help="runs at once (default 1; each reserves one CPU, or a GPU with --device cuda)")
    g.add_argument("--address", default=None, metavar="HOST:PORT",
                   help="run on the Ray cluster there (default: $RAY_ADDRESS, else Ray started on this machine)")
    g.add_argument("--name", default=None,
                   help="sweep name: its folder RUNS_DIR/<name>, the prefix of its runs' names (default sweep-<time>)")
    g.add_argument("--env", default=None, help="the comparison env (default compare-<sweep name>)")
    g.add_argument("--resume", metavar="SWEEP_DIR", default=None,
                   help="continue a sweep that was stopped or killed: its folder, RUNS_DIR/<sweep> (its runs go on "
                        "from their last checkpoints; finished ones stay finished)")
    g.add_argument("--test-subset", type=_parallel, default=None, help=argparse.SUPPRESS)  # tests: N images
