"""The one narrow door for commands into a running trainer.

Any thread (the visdom panel's socket thread, a signal handler, a test) calls
`submit(name, raw)`. The value is checked at once against the same rules the CLI
uses (vae_visdom.config.RULES), so the caller gets an immediate verdict. Every
command, accepted or rejected, is queued; the trainer drains the queue between
optimizer steps (`drain`), applies the accepted ones and reports all of them to
its observers on its own thread. Pause blocks the trainer in `wait_while_paused`
on a condition variable: no CPU is burnt while paused.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vae_visdom.config import RULES, ConfigError, parse_value, shown

ACTIONS = ("pause", "resume", "stop")
SETTINGS = tuple(name for name, rule in RULES.items() if rule.live)  # lr, batch_size, epochs, log_interval, beta
FORK = "fork"  # a new run from this one's state at the current step (runs/fork.py: ForkLauncher)
AT_EPOCH = "at_epoch"  # what a fork may name besides SETTINGS: the epoch whose kept checkpoint it starts from
SHORT = {"bs": "batch_size", "batch": "batch_size", "batch_size": "batch_size", "log": "log_interval"}


def parse_fork(raw: Any, ctx: dict | None = None) -> dict[str, Any]:
    """What a fork changes, as typed: "lr=3e-4 batch_size=64" (commas or spaces between; bs for batch_size);
    empty for a fork with the values in force; at_epoch=E for a fork from epoch E's kept checkpoint. Every value
    is checked by its rule; ConfigError otherwise."""
    text = "" if raw is None else str(raw).strip()
    out: dict[str, Any] = {}
    for part in text.replace(",", " ").split():
        name, sep, value = part.partition("=")
        name = name.strip().lower().replace("-", "_")
        name = SHORT.get(name, name)
        if not sep or not value.strip():
            raise ConfigError(f"fork: {shown(part)} is not name=value; e.g. lr=3e-4 batch_size=64")
        if name == AT_EPOCH:  # from that epoch's kept checkpoint instead of the state at this step
            try:
                out[name] = parse_value("epochs", value, ctx)
            except ConfigError as err:
                raise ConfigError(f"fork: at_epoch: {str(err).split(': ', 1)[-1]}") from None
            continue
        if name not in SETTINGS:
            raise ConfigError(f"fork: {shown(name)} cannot be changed by a fork; allowed: {', '.join(SETTINGS)}")
        out[name] = parse_value(name, value, ctx)
    return out


@dataclass
class Command:
    name: str
    value: Any  # the parsed value (None for actions); the raw text when rejected
    accepted: bool
    message: str
    source: str
    submitted: float  # time.monotonic() at submission
    wall_time: float  # time.time() at submission


@dataclass(frozen=True)
class Reply:
    """How a command that an observer carries out went (a fork: started or not), told back through the
    controller, the trainer's one door in."""
    accepted: bool
    message: str
    value: Any = None


class Controller:
    def __init__(self, n_train: int | None = None) -> None:
        self._cond = threading.Condition()
        self._queue: deque[Command] = deque()
        self._paused = False
        self._stop = False
        # what validation needs to know of the run: its limits, given when it is made
        self.context: dict = {} if n_train is None else {"n_train": n_train}
        self._fork_refused: str | None = None  # why this run cannot fork (refuse_forks)
        self._replies: dict[str, Reply] = {}  # an observer's answer to the command it carried out (reply)
        self._steerer: Callable[[], bool] | None = None  # is someone there to steer the run now? (steered_by)

    def steered_by(self, present: Callable[[], bool]) -> None:
        """A face that can pause, change and resume this run (the panel) says so, with `present()` telling
        whether it can be reached now: a run that diverges then pauses for it instead of ending."""
        self._steerer = present

    def can_steer(self) -> bool:
        """Someone can steer the run now (a panel whose server answers)."""
        return self._steerer is not None and bool(self._steerer())

    def reply(self, name: str, accepted: bool, message: str, value: Any = None) -> None:
        """An observer that carries out command `name` (the fork launcher) says how it went."""
        with self._cond:
            self._replies[name] = Reply(accepted, message, value)

    def take_reply(self, name: str) -> Reply | None:
        """The trainer reads the answer to command `name`, once."""
        with self._cond:
            return self._replies.pop(name, None)

    def refuse_forks(self, why: str) -> None:
        """From now on a fork is rejected with `why` (a run no observer can start a fork for)."""
        self._fork_refused = why

    # -- any thread ---------------------------------------------------------------------------
    def submit(self, name: str, raw: Any = None, source: str = "panel") -> Command:
        """Check and queue one command; return it with its verdict."""
        name = str(name).strip().lower().replace("-", "_")
        now_m, now_w = time.monotonic(), time.time()
        if name in ACTIONS:
            cmd = Command(name, None, True, name, source, now_m, now_w)
        elif name == FORK:
            cmd = self._fork(raw, source, now_m, now_w)
        elif name in SETTINGS:
            try:
                value = parse_value(name, raw, self.context)
            except ConfigError as err:
                cmd = Command(name, raw, False, f"rejected: {err}", source, now_m, now_w)
            except Exception as err:  # a value no rule foresaw: a verdict, never a traceback on the socket thread
                cmd = Command(name, raw, False, f"rejected: {name}: {type(err).__name__}; allowed: "
                              f"{RULES[name].allowed}", source, now_m, now_w)
            else:
                cmd = Command(name, value, True, f"{name} = {value}: applies {RULES[name].applies}",
                              source, now_m, now_w)
        else:
            allowed = ", ".join(ACTIONS + SETTINGS + (FORK,))
            cmd = Command(name, raw, False, f"rejected: unknown command {shown(name)}; allowed: {allowed}",
                          source, now_m, now_w)
        with self._cond:
            if cmd.accepted and cmd.name == "pause":
                self._paused = True
            elif cmd.accepted and cmd.name == "resume":
                self._paused = False
            elif cmd.accepted and cmd.name == "stop":
                self._stop = True
                self._paused = False  # a paused run must wake up to stop
            self._queue.append(cmd)
            self._cond.notify_all()
        return cmd

    def _fork(self, raw: Any, source: str, now_m: float, now_w: float) -> Command:
        if self._fork_refused:
            return Command(FORK, raw, False, f"rejected: fork: {self._fork_refused}", source, now_m, now_w)
        try:
            changes = parse_fork(raw, self.context)
        except ConfigError as err:
            return Command(FORK, raw, False, f"rejected: {err}", source, now_m, now_w)
        said = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in changes.items())
        return Command(FORK, changes, True, f"fork{' with ' + said if said else ''}: starts at the next step",
                       source, now_m, now_w)

    def pause(self, source: str = "api") -> Command:
        return self.submit("pause", source=source)

    def stop(self, source: str = "api") -> Command:
        return self.submit("stop", source=source)

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def stop_requested(self) -> bool:
        return self._stop

    # -- the trainer's thread -----------------------------------------------------------------
    def has_pending(self) -> bool:
        """Cheap enough to call every step: no lock (a deque's truth value is atomic)."""
        return bool(self._queue)

    def drain(self) -> list[Command]:
        with self._cond:
            cmds = list(self._queue)
            self._queue.clear()
        return cmds

    def wait_while_paused(self, timeout: float = 0.5) -> bool:
        """Block until something is submitted or `timeout` passes; True while still paused.

        The trainer loops on this, draining commands between waits, so that a rejected
        value typed while paused is still answered at once.
        """
        with self._cond:
            if self._paused and not self._queue:
                self._cond.wait(timeout)
            return self._paused
