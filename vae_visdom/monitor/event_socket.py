"""The back channel: browser events (property edits, button clicks) for our windows.

visdom's server forwards every pane event to every Python client connected on
/vis_socket. visdom.Visdom(use_incoming_socket=True) opens that socket itself, but its
thread can never be stopped (it loops on a flag it only clears after a refused first
connect, and keeps the WebSocketApp to itself), so each finished run would leave a
live connection and thread behind, which a sweep of many runs in one process cannot
afford. This is the same socket with the same message format, but it closes on
close(), reconnects with a backoff while the server is away, and tells its owner when
the connection drops (a server restart loses every window not yet saved).
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import websocket  # websocket-client, a visdom dependency

from vae_visdom.monitor.windows import window_prefix

log = logging.getLogger(__name__)


class EventSocket:
    def __init__(self, server: str, port: int, base_url: str = "", cookie: Callable[[], str] | None = None,
                 on_event: Callable[[dict], None] | None = None,
                 on_disconnect: Callable[[], None] | None = None,
                 max_backoff: float = 2.0):
        parsed = urlparse(server if "://" in server else f"http://{server}")
        scheme = "wss" if parsed.scheme == "https" else "ws"
        self.url = f"{scheme}://{parsed.hostname}:{port}{base_url}/vis_socket"
        if parsed.hostname and ":" in parsed.hostname:  # IPv6 literal
            self.url = f"{scheme}://[{parsed.hostname}]:{port}{base_url}/vis_socket"
        self.cookie = cookie
        self.on_event, self.on_disconnect = on_event, on_disconnect
        self.max_backoff = max_backoff
        self.connected = threading.Event()
        self._closed = threading.Event()
        self._app: websocket.WebSocketApp | None = None
        self._thread = threading.Thread(target=self._run, name="vae-visdom-events", daemon=True)

    def start(self) -> EventSocket:
        self._thread.start()
        return self

    def send(self, msg: dict) -> bool:
        """Send one JSON message on the socket (e.g. run_command_message); False while it is not connected.
        Any thread: websocket-client serialises frames under its own lock."""
        app = self._app
        if app is None or not self.connected.is_set():
            return False
        try:
            app.send(json.dumps(msg))
        except Exception as err:  # closed half-way: the caller says it did not go
            log.debug("event socket send: %s", err)
            return False
        return True

    def close(self, timeout: float = 2.0) -> None:
        self._closed.set()
        app = self._app
        if app is not None:
            app.keep_running = False
            try:
                app.close()
            except Exception:  # already closed, or closing half-way
                pass
        if self._thread.ident is not None:  # (a socket never started has no thread to wait for)
            self._thread.join(timeout)

    # -- socket thread --------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.1
        while not self._closed.is_set():
            header = []
            if self.cookie is not None:
                header = [f"Cookie: user_password={self.cookie()}"]
            self._app = websocket.WebSocketApp(self.url, header=header, on_open=self._opened,
                                               on_message=self._message, on_close=self._closed_cb,
                                               on_error=lambda ws, err: None)
            was_connected = False
            try:
                self._app.run_forever(ping_interval=20, ping_timeout=10)
            except Exception as err:  # never let the back channel die for good
                log.debug("event socket: %s", err)
            if self.connected.is_set():
                was_connected = True
                self.connected.clear()
                if self.on_disconnect:
                    self.on_disconnect()
            if self._closed.is_set():
                break
            backoff = 0.1 if was_connected else min(backoff * 2, self.max_backoff)
            self._closed.wait(backoff)

    def _opened(self, ws) -> None:
        self.connected.set()

    def _closed_cb(self, ws, code=None, reason=None) -> None:
        pass  # handled after run_forever returns, in _run

    def _message(self, ws, message: str) -> None:
        try:
            msg = json.loads(message)
        except ValueError:
            return
        if isinstance(msg, dict) and "target" in msg and self.on_event is not None:
            try:
                self.on_event(msg)
            except Exception:  # a bad event must not close the channel
                log.exception("visdom event handler failed on %r", msg.get("event_type"))


def property_row(event: dict, win: str, env: str, rows: tuple[str, ...]) -> str | None:
    """The row of a properties pane that a browser event names (its `propertyId`), when the event is a
    PropertyUpdate of pane `win` in env `env`; None for anything else."""
    if event.get("target") != win or event.get("eid") != env or event.get("event_type") != "PropertyUpdate":
        return None
    i = property_index(event, len(rows))
    return None if i is None else rows[i]


def property_index(event: dict, n_rows: int) -> int | None:
    """The event's `propertyId` as a row index in 0..n_rows-1, or None (said in one log line): a negative
    id would wrap around to the last rows (Python's negative index; -2 was the panel's Fork), a fractional,
    boolean or other id names no row. visdom's page sends an int; a string of digits is taken too."""
    raw = event.get("propertyId")
    if isinstance(raw, int) and not isinstance(raw, bool):
        i: int | None = raw
    elif isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) < 10:
        i = int(raw)
    else:
        i = None
    if i is None or not 0 <= i < n_rows:
        log.warning("event for %s/%s dropped: propertyId %.40r is not a row (0 to %d)", event.get("eid"),
                    event.get("target"), raw, n_rows - 1)
        return None
    return i


RUN_COMMAND = "RunCommand"  # our own event type: sent by a Python client (the runs home) through visdom's "echo"


def run_command_message(env: str, run_dir, command: str, source: str = "home") -> dict:
    """The message a Python client sends on /vis_socket to steer a run from outside its page (pause, resume,
    stop): visdom's "echo" hands it to every Python client, and the run's panel (its window id comes from the
    run folder, windows.window_prefix) is the one that answers."""
    return {"cmd": "echo", "event_type": RUN_COMMAND, "eid": env,
            "target": f"{window_prefix(env, Path(run_dir))}-control", "command": str(command), "source": source}


def run_command(event: dict, win: str, env: str) -> tuple[str, str] | None:
    """(command, source) of a RunCommand for pane `win` in env `env`; None for anything else."""
    if event.get("target") != win or event.get("eid") != env or event.get("event_type") != RUN_COMMAND:
        return None
    source = "".join(c for c in str(event.get("source") or "client") if c.isalnum() or c in "-_")[:20]
    return str(event.get("command"))[:80], source or "client"
