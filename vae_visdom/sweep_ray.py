"""The sweep's engine: Ray Tune. Ray started in this process (default) or joined at --address / RAY_ADDRESS.

    connect(address, cpus)            ray.init: a local Ray of `cpus` CPUs, no dashboard; or the cluster
    tune_sweep(plan, space, ...)      the Tuner: one trial per run (sweep_trial.train_trial), a scheduler
                                      (fifo, asha, pbt), the driver's lines and the population's compare env

Every trial reserves one CPU (and a GPU with --device cuda); at most `--parallel N` trials run at once (Tune's
limit; with PBT, the CPUs a local Ray is started with). Tune's own state (for `sweep --resume`) lives in
RUNS_DIR/<sweep>/.tune/, beside the sweep's runs, RUNS_DIR/<sweep>/<run> (runs/layout.py).
"""
from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from vae_visdom.sweep_space import Range, Space
from vae_visdom.sweep_trial import TrialPlan, train_trial, trial_number

log = logging.getLogger(__name__)


def connect(address: str | None, cpus: int) -> None:
    """Start Ray here (`cpus` CPUs, no dashboard) or join the cluster at `address`."""
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's tables would bury the sweep's own lines
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # a report per epoch
    # Ray's notice that a new local cluster turns its token login on by default: the default stays, the notice
    # goes (Ray's genuine warnings and errors still come through)
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_NoAuthNotice())
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING,
                 _node_ip_address=_own_ip_towards(address))
    else:
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    # a failed trial is said in one line by the sweep (Lines below) and kept whole in Tune's error.txt
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)


class _NoAuthNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


def _own_ip_towards(address: str) -> str:
    """This machine's address on the route to the head (127.0.0.1 for a head on loopback): Ray would otherwise
    take the machine's first outside address, which a head listening on loopback does not answer on."""
    host = address.rpartition(":")[0].strip("[]")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))  # no packet is sent: only the route is chosen
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1" if host in ("localhost", "127.0.0.1") else host


@dataclass
class TrialOutcome:
    name: str
    state: str  # TERMINATED | ERROR | ...
    error: str = ""


@dataclass
class SweepOutcome:
    trials: list[TrialOutcome] = field(default_factory=list)
    interrupted: bool = False

    @property
    def failed(self) -> list[TrialOutcome]:
        return [t for t in self.trials if t.state == "ERROR"]


def param_space(space: Space, scheduler: str) -> dict[str, Any]:
    """Tune's search space: lists are grid axes (PBT: drawn for each member), ranges are sampled."""
    out: dict[str, Any] = {}
    for k, axis in space.axes.items():
        if isinstance(axis, Range):
            out[k] = _domain(axis)
        elif len(axis) > 1:
            out[k] = tune.choice(axis) if scheduler == "pbt" else tune.grid_search(axis)
        else:
            out[k] = axis[0]
    return out


def _domain(r: Range):
    if r.integer:
        return tune.lograndint(int(r.lo), int(r.hi) + 1) if r.log else tune.randint(int(r.lo), int(r.hi) + 1)
    return tune.loguniform(r.lo, r.hi) if r.log else tune.uniform(r.lo, r.hi)


def make_scheduler(name: str, space: Space, epochs: int, perturb_every: int):
    """fifo: None (every trial runs to the end); asha; pbt (in-force values, perturbations kept in the rules)."""
    if name == "fifo":
        return None
    if name == "asha":
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(time_attr="training_iteration", max_t=max(1, epochs), grace_period=1,
                             reduction_factor=2)
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.schedulers.pbt import _explore  # Ray's own perturbation, started from the values in force

    mutable = space.mutable()
    mutations = {k: (_domain(v) if isinstance(v, Range) else list(v)) for k, v in mutable.items()}

    def keep_in_rules(config: dict) -> dict:
        for k, axis in mutable.items():  # x0.8 / x1.2 may leave the range; the range passed train's rules
            if isinstance(axis, Range):
                config[k] = axis.clip(config[k])
        return config

    class InForcePBT(PopulationBasedTraining):
        """PBT whose perturbation starts from the values the cloned trial has in force (its panel may have
        changed them), not from the values it was started with."""

        def _get_new_config(self, trial, trial_to_clone):
            last = self._trial_state[trial_to_clone].last_result or {}
            config = dict(trial_to_clone.config)
            for k in mutable:
                if f"in_force_{k}" in last:
                    config[k] = type(config[k])(last[f"in_force_{k}"]) if k in config else last[f"in_force_{k}"]
            return _explore(config, self._hyperparam_mutations, self._resample_probability,
                            self._perturbation_factors,  # type: ignore[arg-type]  # Ray's hint: a 1-tuple; its default: 2
                            self._custom_explore_fn)

    return InForcePBT(time_attr="training_iteration", perturbation_interval=perturb_every,
                      hyperparam_mutations=mutations, custom_explore_fn=keep_in_rules,
                      quantile_fraction=0.25, resample_probability=0.25)


def tune_sweep(plan: TrialPlan, space: Space, names: list[str], *, scheduler: str, samples: int, parallel: int,
               epochs: int, perturb_every: int, storage: Path, tune_dir: str = ".tune", cpus_per_trial: float = 1,
               gpus_per_trial: float = 0,
               say: Callable[[str], None] = print, on_result: Callable[[], None] | None = None,
               resume: bool = False, live: str | None = None) -> SweepOutcome:
    """Run the sweep's trials under Tune; returns each trial's outcome (the runs' folders hold the rest)."""
    from ray.tune import CheckpointConfig, FailureConfig, RunConfig, TuneConfig

    n = len(names)
    trainable = tune.with_resources(tune.with_parameters(train_trial, plan=plan),
                                    {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
    run_config = RunConfig(name=tune_dir, storage_path=str(storage.resolve()), verbose=0,
                           callbacks=[Lines(names, say, on_result, live)],
                           # every one kept: PBT may clone any member's checkpoint, and after a kill of this process
                           # Tune's saved state may name one that a keep-N policy had already deleted
                           checkpoint_config=CheckpointConfig(num_to_keep=None),
                           failure_config=FailureConfig(max_failures=0))
    if resume:
        tuner = tune.Tuner.restore(str(storage.resolve() / tune_dir), trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, param_space=param_space(space, scheduler), run_config=run_config,
                           tune_config=TuneConfig(metric="test_loss", mode="min", num_samples=samples,
                                                  # PBT needs its whole population to exist (waiting trials
                                                  # take turns): there the CPUs Ray has bound --parallel
                                                  max_concurrent_trials=None if scheduler == "pbt" else parallel,
                                                  scheduler=make_scheduler(scheduler, space, epochs, perturb_every),
                                                  reuse_actors=False))
    outcome = SweepOutcome()
    try:
        grid = tuner.fit()
    except KeyboardInterrupt:
        outcome.interrupted = True
        return outcome
    for i in range(len(grid)):  # ResultGrid is indexed (it has no __iter__ for the type checker)
        result = grid[i]
        name = (result.metrics or {}).get("run") or ""
        if not name and result.path:  # failed before its first report: Tune's folder ends in the trial id's counter
            number = re.search(r"_(\d{5})_", Path(result.path).name)
            name = names[int(number.group(1))] if number and int(number.group(1)) < n else ""
        outcome.trials.append(TrialOutcome(name, "ERROR" if result.error else "TERMINATED",
                                           _error_line(result.error) if result.error else ""))
    return outcome


class Lines(tune.Callback):
    """The driver's lines: a trial started (again), finished (with its last test loss), failed; and a wake-up
    for the population view after each result. Tune pickles its callbacks with the experiment: the printing
    and waking functions stay behind (a restored experiment gets new ones)."""

    def __init__(self, names: list[str], say: Callable[[str], None] | None,
                 on_result: Callable[[], None] | None, live: str | None):
        self.names, self.say, self.on_result, self.live = names, say, on_result, live
        self.started: set[str] = set()

    def __getstate__(self) -> dict:
        return {"names": self.names, "say": None, "on_result": None, "live": self.live, "started": set()}

    def _name(self, trial) -> str:
        i = trial_number(trial.trial_id)
        return self.names[i] if i < len(self.names) else trial.trial_id

    def _line(self, trial, text: str) -> None:
        if self.say:
            self.say(f"[{trial_number(trial.trial_id) + 1}/{len(self.names)}] {text}")

    def on_trial_start(self, iteration, trials, trial, **info):
        again = "started again" if trial.trial_id in self.started else "started"
        self.started.add(trial.trial_id)
        where = f"; live: {self.live}/env/{self._name(trial)}" if self.live else ""
        self._line(trial, f"{again} {self._name(trial)} ({_values(trial.config)}){where}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.on_result:
            self.on_result()

    def on_trial_complete(self, iteration, trials, trial, **info):
        r = trial.last_result or {}
        self._line(trial, f"finished {self._name(trial)}: epoch {r.get('epoch', '?')}, "
                          f"test loss {r.get('test_loss', float('nan')):.2f}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trial, f"FAILED {self._name(trial)}: {_first_line(trial)}")


def _values(config: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items())


def _error_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    useful = [ln for ln in lines if "Error" in ln or "error" in ln] or lines
    return (useful[-1] if useful else type(err).__name__)[:300]


def _first_line(trial) -> str:
    path = getattr(trial, "error_file", None)
    try:
        return _error_line(RuntimeError(Path(path).read_text())) if path else "error"
    except OSError:
        return "error"


