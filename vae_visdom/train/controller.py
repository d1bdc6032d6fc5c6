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
class Offer:
    """A command that an observer carries out (e.g. runs/fork.py's): `parse(raw, context)` checks what
    was typed (ConfigError: rejected), `describe(value)` says it in the verdict; `refused`: why this run
    turns every such command down (set by whoever knows, e.g. a run of several processes)."""
    parse: Callable[[Any, dict], Any]
    describe: Callable[[Any], str]
    refused: str | None = None


@dataclass(frozen=True)
class Reply:
    """How a command that an observer carries out went (started or not), told back through the
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
        self._offers: dict[str, Offer] = {}  # commands observers carry out (offer)
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
        """An observer that carries out command `name` (one that offered it) says how it went."""
        with self._cond:
            self._replies[name] = Reply(accepted, message, value)

    def take_reply(self, name: str) -> Reply | None:
        """The trainer reads the answer to command `name`, once."""
        with self._cond:
            return self._replies.pop(name, None)

    def offer(self, name: str, offer: Offer) -> None:
        """An observer carries out command `name`: the trainer, when it is accepted, hands its state at that
        step to its observers (`Callback.on_snapshot`), and the observer answers with `reply`."""
        self._offers[name] = offer

    def refuse(self, name: str, why: str) -> None:
        """From now on command `name` is rejected with `why` (offered or not: nobody here can carry it out)."""
        offer = self._offers.get(name, Offer(lambda raw, ctx: raw, str))
        self._offers[name] = Offer(offer.parse, offer.describe, why)

    def offered(self, name: str) -> bool:
        """Command `name` is carried out by an observer (the trainer snapshots its state for it)."""
        offer = self._offers.get(name)
        return offer is not None and offer.refused is None

    # -- any thread ---------------------------------------------------------------------------
    def submit(self, name: str, raw: Any = None, source: str = "panel") -> Command:
        """Check and queue one command; return it with its verdict."""
        name = str(name).strip().lower().replace("-", "_")
        now_m, now_w = time.monotonic(), time.time()
        if name in ACTIONS:
            cmd = Command(name, None, True, name, source, now_m, now_w)
        elif name in self._offers:
            cmd = self._offered(name, raw, source, now_m, now_w)
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
            allowed = ", ".join(ACTIONS + SETTINGS + tuple(self._offers))
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

    def _offered(self, name: str, raw: Any, source: str, now_m: float, now_w: float) -> Command:
        offer = self._offers[name]
        if offer.refused:
            return Command(name, raw, False, f"rejected: {name}: {offer.refused}", source, now_m, now_w)
        try:
            value = offer.parse(raw, self.context)
        except ConfigError as err:
            return Command(name, raw, False, f"rejected: {err}", source, now_m, now_w)
        said = offer.describe(value)
        return Command(name, value, True, f"{name}{' with ' + said if said else ''}: starts at the next step",
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
