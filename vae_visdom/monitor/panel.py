"""The control panel: a visdom properties pane that steers the run through its Controller.

Rows (the browser sends the row's index as `propertyId`):
    0  status: <state> · epoch e/E · step s      [Pause] / [Resume]
    1  stop the run                               [Stop]
    2  lr: <when a change applies>                text, the value in force
    3  batch_size: ...                            text
    4  epochs: ...                                text
    5  log_interval: ...                          text
    6  beta: ... (the KL weight)                  text
    7  fork with: what the fork changes           text, e.g. "lr=3e-4 bs=64" (empty: nothing)
    8  fork this run at the current step          [Fork]: a new run of its own (runs/fork.py)
    9  message: <the last verdict>                [Clear]

All values are `text` inputs: visdom's `number` input takes only digits and '.', so it
could not hold 1e-3. An edit is checked by Controller.submit (the CLI's rules) on the
socket thread, and the pane is re-sent at once with the value now in force (or the
accepted one) and the verdict: visdom's pane does not reset an edited input by itself.
Every verdict also goes to the events pane, newest first, where the trainer's
on_command later marks it applied (with its latency).
"""
from __future__ import annotations

import dataclasses
import html
import time
from typing import Any
from urllib.parse import quote

from vae_visdom.config import RULES, ConfigError, shown
from vae_visdom.monitor.board import Board
from vae_visdom.monitor.event_socket import property_row, run_command
from vae_visdom.monitor.windows import PropertiesPane, TextPane
from vae_visdom.runs.fork import parse_fork
from vae_visdom.runs.records import format_value
from vae_visdom.train.controller import ACTIONS, SETTINGS, Command, Controller
from vae_visdom.train.events import CommandEvent, Status

ROWS = ("status", "stop", *SETTINGS, "fork_with", "fork", "message")  # row i; "status" carries Pause/Resume
LIVE_STATES = ("starting", "running", "paused")
MAX_EVENTS = 300  # entries kept in the events pane (events.jsonl keeps them all)


class ControlPanel:
    def __init__(self, board: Board, win: str, events_win: str, controller: Controller | None, env: str):
        self.board, self.win, self.env, self.controller = board, win, env, controller
        self.pane = board.add(PropertiesPane(win, "control", self._rows, width=460, height=420))
        self.pane.log_every = 30.0  # its step counter changes all the time; epoch ends and close log it anyway
        self.events = board.add(TextPane(events_win, "events", width=460, height=300))
        self.status = Status("starting", 0, 0, 0)
        self.values: dict[str, Any] = {}  # in force, as the trainer last reported them
        self.shown: dict[str, Any] = {}  # in force, or accepted and on its way
        self.message = "edit a value and press Enter; buttons act at the next step"
        self.fork_with = ""  # as typed: checked when typed, and again by the Fork itself
        self.ended = False
        self._flip = [False] * len(ROWS)  # see _rows
        self._entries: list[list] = []  # [key, html], oldest first
        with board.lock:
            self._refresh()
            self.events.set(self._events_html())
        if controller is not None:  # a diverged run pauses for this panel unless its server is known down
            controller.steered_by(lambda: board.connected or board.failures == 0)

    # -- training thread ------------------------------------------------------------------------
    def set_values(self, values: dict) -> None:
        with self.board.lock:
            for name in SETTINGS:
                if values.get(name) is not None:
                    self.values[name] = self.shown[name] = values[name]
            self._refresh()

    def on_status(self, status: Status) -> None:
        with self.board.lock:
            changed = status.state != self.status.state
            self.status = dataclasses.replace(status)  # a copy: on_step updates it in place
            if status.values:
                for name in SETTINGS:
                    if status.values.get(name) is not None:
                        self.values[name] = self.shown[name] = status.values[name]
            if changed and status.message:
                self.message = f"{status.state}: {status.message}"
            self.ended = status.state not in LIVE_STATES and status.state != "stopping"
            self._refresh(urgent=changed)

    def on_step(self, epoch: int, step: int) -> None:
        with self.board.lock:
            self.status.epoch, self.status.step = epoch, step
            self._refresh()

    def on_command(self, ev: CommandEvent) -> None:
        """The trainer applied (or refused) a command: mark the panel's entry, or add one."""
        key = (ev.time, ev.name, ev.source)
        with self.board.lock:
            entry = next((e for e in self._entries if e[0] == key), None)
            if entry is None:
                self._add_entry(key, ev.time, ev.source, ev.accepted, ev.message)
                entry = self._entries[-1]
            if ev.name == "fork":
                entry[1] += " " + fork_html(ev)
                self.message = ev.message
                self._refresh(urgent=True)
            elif ev.accepted:
                lat = "" if ev.latency_ms is None else f", {ev.latency_ms:.0f} ms after the request"
                entry[1] += f' <span style="color:#1a7f37">applied at epoch {ev.epoch}, step {ev.step}{lat}</span>'
            self.events.set(self._events_html(), urgent=True)

    # -- socket thread --------------------------------------------------------------------------
    def handle(self, event: dict) -> None:
        """A browser event forwarded by the server; only this run's panel in this env counts."""
        row = property_row(event, self.win, self.env, ROWS)
        order = run_command(event, self.win, self.env)  # pause/resume/stop from the runs home
        if row is not None:
            cmd, verdict = self._edit(row, event.get("value"))
        elif order is not None:
            cmd, verdict = self._order(*order)
        else:
            return
        with self.board.lock:
            if cmd is not None:
                verdict = cmd.message
                if cmd.accepted and cmd.name in SETTINGS:
                    self.shown[cmd.name] = cmd.value
                self._add_entry((cmd.wall_time, cmd.name, cmd.source), cmd.wall_time, cmd.source, cmd.accepted,
                                self._describe(cmd))
                self.events.set(self._events_html(), urgent=True)
            if verdict is not None:
                self.message = verdict
            self._flip[ROWS.index(row or "message")] ^= True
            self._refresh(urgent=True)
        self.board.wake()

    def _closed(self) -> str | None:
        """Why no command can reach this run now, or None."""
        if self.controller is None:
            return "read-only: this monitor has no controller"
        if self.ended:
            return f"the run has {self.status.state}; nothing to control"
        return None

    def _order(self, name: str, source: str) -> tuple[Command | None, str | None]:
        """A RunCommand from another client: an action only (a run's values change from its own panel)."""
        if (closed := self._closed()) is not None:
            return None, closed
        if name not in ACTIONS:
            return None, f"rejected: unknown command {shown(name)} from {source}; allowed: {', '.join(ACTIONS)}"
        assert self.controller is not None  # _closed said it is there
        return self.controller.submit(name, source=source), None

    def _edit(self, row: str, value) -> tuple[Command | None, str | None]:
        """An edit or a click in the pane: (the command submitted, or None; the verdict when there is none)."""
        if row == "message":
            return None, ""
        if (closed := self._closed()) is not None:
            return None, closed
        ctl = self.controller
        assert ctl is not None  # _closed said it is there
        if row == "status":  # its button: Pause or Resume, whichever the controller's state calls for
            return ctl.submit("resume" if ctl.paused else "pause", source="panel"), None
        if row == "fork_with":  # kept as typed, checked now and again when Fork is pressed
            self.fork_with = str(value if value is not None else "").strip()[:200]
            try:
                parse_fork(self.fork_with, ctl.context)
            except ConfigError as err:
                return None, f"rejected: {err}"
            return None, f"fork with {self.fork_with or 'the values in force'}: press Fork"
        if row in ("stop", "fork"):
            return ctl.submit(row, self.fork_with if row == "fork" else None, source="panel"), None
        return ctl.submit(row, value, source="panel"), None

    # -- rendering (under the board's lock) -----------------------------------------------------
    def _describe(self, cmd: Command) -> str:
        if cmd.accepted and cmd.name in SETTINGS:
            old = format_value(self.values.get(cmd.name), cmd.name)
            new = format_value(cmd.value, cmd.name)
            return f"{cmd.name} {old} -> {new} requested: applies {RULES[cmd.name].applies}"
        return cmd.message

    def _add_entry(self, key: tuple, wall: float, source: str, accepted: bool, text: str) -> None:
        mark = '<b style="color:#1a7f37">&#10003;</b>' if accepted else '<b style="color:#cf222e">&#10007;</b>'
        stamp = time.strftime("%H:%M:%S", time.localtime(wall))
        self._entries.append([key, f"{stamp} {html.escape(source)} {mark} {html.escape(text)}"])
        del self._entries[:-MAX_EVENTS]

    def _events_html(self) -> str:
        if not self._entries:
            return '<div style="color:#777">commands from the control panel and elsewhere appear here</div>'
        lines = "".join(f"<div>{e[1]}</div>" for e in reversed(self._entries))
        return f'<div style="font-family:monospace;font-size:12px;line-height:1.5;overflow-wrap:anywhere">{lines}</div>'

    def _rows(self) -> list[dict]:
        st = self.status
        live = st.state in LIVE_STATES and not self.ended and self.controller is not None
        paused = self.controller.paused if self.controller is not None else st.state == "paused"
        stopping = st.state == "stopping" or (self.controller is not None and self.controller.stop_requested)
        if stopping and live:
            state = "stopping"
        elif paused and live:
            state = "paused"
        else:
            state = st.state
        pause_label = ("Resume" if paused else "Pause") if live and not stopping else "-"
        stop_label = "Stop" if live and not stopping else ("Stopping" if stopping and live else "-")
        epochs = self.shown.get("epochs", st.epochs)
        rows = [
            {"type": "button", "name": f"status: {state} · epoch {st.epoch}/{epochs} · step {st.step:,}",
             "value": pause_label},
            {"type": "button", "name": "stop the run (after the current step; writes a checkpoint)",
             "value": stop_label},
        ]
        for name in SETTINGS:
            rows.append({"type": "text", "name": f"{name}: applies {RULES[name].applies}",
                         "value": format_value(self.shown.get(name), name)})
        rows.append({"type": "text", "name": "fork with: what the fork changes (e.g. lr=3e-4 bs=64)",
                     "value": self.fork_with})
        rows.append({"type": "button", "name": "fork this run at the current step (this run goes on)",
                     "value": "Fork" if live and not stopping else "-"})
        rows.append({"type": "button", "name": f"message: {self.message}", "value": "Clear"})
        # visdom's text input shows the typed text until its value prop changes; a rejected edit
        # would stay on screen when the value in force is sent back unchanged. A trailing space,
        # flipped on each edit, changes the prop (parse_value strips it if the user keeps it).
        for i, row in enumerate(rows):
            if row["type"] == "text" and self._flip[i]:
                row["value"] += " "
        return rows

    def _refresh(self, urgent: bool = False) -> None:
        self.pane.touch(urgent=urgent)


def fork_html(ev: CommandEvent) -> str:
    """How a fork went, for the events pane: a link to the new run's env, or the reason it failed."""
    if not ev.accepted:
        return f'<span style="color:#cf222e">{html.escape(ev.message)}</span>'
    env = (ev.value or {}).get("env") if isinstance(ev.value, dict) else None
    link = f'<a href="/env/{quote(env)}" target="_blank">open {html.escape(env)}</a>: ' if env else ""
    return f'<span style="color:#1a7f37">{link}{html.escape(ev.message)}</span>'
