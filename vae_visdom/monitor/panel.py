"""The control panel: a visdom properties pane that steers the run through its Controller.

Rows (the browser sends the row's index as `propertyId`):
    0  status: <state> · epoch e/E · step s      [Pause] / [Resume]
    1  stop the run                               [Stop]
    2  lr: <when a change applies>                text, the value in force
    3  batch_size: ...                            text
    4  epochs: ...                                text
    5  log_interval: ...                          text
    6  beta: ... (the KL weight)                  text
    7  message: <the last verdict>                [Clear]

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

from vae_visdom.config import RULES, shown
from vae_visdom.train.controller import ACTIONS, SETTINGS, Command, Controller
from vae_visdom.train.events import CommandEvent, Status
from vae_visdom.monitor.board import Board
from vae_visdom.monitor.event_socket import property_row, run_command
from vae_visdom.monitor.windows import PropertiesPane, TextPane
from vae_visdom.runs.records import format_value

ROWS = ("status", "stop", *SETTINGS, "message")  # row i of the pane; "status" carries Pause/Resume
LIVE_STATES = ("starting", "running", "paused")
MAX_EVENTS = 300  # entries kept in the events pane (events.jsonl keeps them all)


class ControlPanel:
    def __init__(self, board: Board, win: str, events_win: str, controller: Controller | None, env: str):
        self.board, self.win, self.env, self.controller = board, win, env, controller
        self.pane = board.add(PropertiesPane(win, "control", self._rows, width=460, height=360))
        self.pane.log_every = 30.0  # its step counter changes all the time; epoch ends and close log it anyway
        self.events = board.add(TextPane(events_win, "events", width=460, height=300))
        self.status = Status("starting", 0, 0, 0)
        self.values: dict[str, Any] = {}  # in force, as the trainer last reported them
        self.shown: dict[str, Any] = {}  # in force, or accepted and on its way
        self.message = "edit a value and press Enter; buttons act at the next step"
        self.ended = False
        self._flip = [False] * len(ROWS)  # see _rows
        self._entries: list[list] = []  # [key, html], oldest first
        with board.lock:
            self._refresh()
            self.events.set(self._events_html())

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
            if ev.accepted:
                lat = "" if ev.latency_ms is None else f", {ev.latency_ms:.0f} ms after the request"
                entry[1] += f' <span style="color:#1a7f37">applied at epoch {ev.epoch}, step {ev.step}{lat}</span>'
            self.events.set(self._events_html(), urgent=True)

    # -- socket thread --------------------------------------------------------------------------
    def handle(self, event: dict) -> None:
        """A browser event forwarded by the server; only this run's panel in this env counts."""
        row = property_row(event, self.win, self.env, ROWS)
        order = run_command(event, self.win, self.env)  # pause/resume/stop from the runs home
        if row is None and order is None:
            return
        value = event.get("value")
        cmd = None
        if row is None:
            row = "message"
            if self.controller is None:
                verdict = "read-only: this monitor has no controller"
            elif self.ended:
                verdict = f"the run has {self.status.state}; nothing to control"
            elif order[0] not in ACTIONS:  # a run's values change from its own panel only
                verdict = f"rejected: unknown command {shown(order[0])} from {order[1]}; allowed: {', '.join(ACTIONS)}"
            else:
                cmd = self.controller.submit(order[0], source=order[1])
        elif row == "message":
            verdict = ""
        elif self.controller is None:
            verdict = "read-only: this monitor has no controller"
        elif self.ended:
            verdict = f"the run has {self.status.state}; nothing to control"
        elif row == "status":  # its button: Pause or Resume, whichever the controller's state calls for
            cmd = self.controller.submit("resume" if self.controller.paused else "pause", source="panel")
        elif row == "stop":
            cmd = self.controller.submit("stop", source="panel")
        else:
            cmd = self.controller.submit(row, value, source="panel")
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
            self._flip[ROWS.index(row)] ^= True
            self._refresh(urgent=True)
        self.board.wake()

    # -- rendering (under the board's lock) -----------------------------------------------------
    def _describe(self, cmd: Command) -> str:
        if cmd.accepted and cmd.name in SETTINGS:
            old = format_value(self.values.get(cmd.name), cmd.name)
            return f"{cmd.name} {old} -> {format_value(cmd.value, cmd.name)} requested: applies {RULES[cmd.name].applies}"
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
