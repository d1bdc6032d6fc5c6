"""The windows of one run and the one thread that talks to visdom for them.

Training-thread hooks change window state under `lock` (microseconds) and return.
The sender thread wakes every `tick` seconds and
- appends what changed to the run's visdom.log (every `log_every` s, and at once when
  a save or flush asks), whether or not a server is there,
- sends each changed window at most once per `min_interval` (a window marked urgent
  goes at once): the work waiting is bounded by the number of windows and nothing is
  dropped, since a window that changed ten times is sent once, as it is now. Every
  window goes whole (see windows.py for why line plots are not sent as appends); a big
  line plot at most once per `send_interval`,
- on a failed send, backs off (to `max_backoff`) and, once the server answers again,
  draws every window whole: whatever the server lost is drawn again. A restart that no
  send noticed is seen on the event socket, which drops with the server,
- after `request_save()`, asks the server to save the env to disk once it holds every
  window as it was at the request.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, TypeVar

import visdom

from vae_visdom.monitor.event_socket import EventSocket
from vae_visdom.monitor.windows import ImageGrid, Message, Window, encode_grid

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)
SENDER_NICE = 10  # the sender thread's niceness: streaming must not take CPU from training
LOG_NAME = "visdom.log"  # the windows as JSON lines in the run folder: what `vae-visdom replay` draws again
POST_TIMEOUT = (3.05, 15.0)  # connect, read: a server that hangs must not hang the sender forever


class Client(visdom.Visdom):
    """visdom's client with a timeout on every request (its own session has none)."""

    # set by visdom's constructor, but missing from its stub (visdom/__init__.pyi)
    server: str
    port: int
    send: bool
    session: requests.Session  # a property: made once, with the login
    _session: requests.Session | None

    def _handle_post(self, url, data=None):
        r = self.session.post(url, data={} if data is None else data, timeout=POST_TIMEOUT)
        if r.status_code in (400, 401, 403) and not r.text:  # visdom's answer to a request without login
            raise PermissionError(f"the visdom server at {self.server}:{self.port} wants a login "
                                  "(VISDOM_USERNAME and VISDOM_PASSWORD)")
        if r.status_code >= 500:
            log.warning("visdom server answered %s to %s", r.status_code, url)
        return r.text


def connect(server: str, port: int, env: str, username: str | None = None,
            password: str | None = None) -> Client:
    """An HTTP-only visdom client that has not talked to the server yet.

    Built with send=False, which skips the constructor's request (and its socket set-up),
    then switched on: the client, its session and its login are made once and reused by
    every retry. Its requests raise ConnectionError (fast) while nothing answers.
    """
    logging.getLogger("visdom").setLevel(logging.ERROR)  # a warning per new session: terminal noise
    # call-arg ignored: the stub (visdom/__init__.pyi) lacks the constructor's username and password
    client = Client(server=server, port=port, env=env, raise_exceptions=True,  # type: ignore[call-arg]
                     use_incoming_socket=False, username=username, password=password, send=False)
    client.send = True
    return client


W = TypeVar("W", bound=Window)


class Board:
    def __init__(self, server: str, port: int, env: str, log_path: Path | None,
                 username: str | None = None, password: str | None = None,
                 min_interval: float = 0.25, tick: float = 0.2, log_every: float = 0.5,
                 max_backoff: float = 2.0, on_event: Callable[[dict], None] | None = None):
        self.server, self.port, self.env = server, port, env
        self.username, self.password = username, password
        self.log_path = log_path
        self.min_interval, self.tick, self.log_every, self.max_backoff = min_interval, tick, log_every, max_backoff
        self.lock = threading.RLock()
        self.windows: dict[str, Window] = {}  # in creation order: the order panes appear in
        self.client: Client | None = None
        self.connected = False  # the last request reached the server
        self.sends = 0  # window messages the server took (for tests and the report)
        self.failures = 0
        self.log_failures = 0  # failed writes to the log file (warned about once)
        self.saves = 0  # env saves the server did
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._save_after: dict[str, int] | None = None  # versions the next save must include
        self._log_due = False
        self._last_log = 0.0
        self._log_file: TextIO | None = None
        self._on_event = on_event
        self._socket: EventSocket | None = None
        self._thread = threading.Thread(target=self._run, name="vae-visdom-sender", daemon=True)
        self.closed = False

    # -- any thread -----------------------------------------------------------------------------
    def add(self, window: W) -> W:
        with self.lock:
            self.windows[window.win] = window
        return window

    def wake(self) -> None:
        self._wake.set()

    def request_save(self, everything: bool = False) -> None:
        """Save the env on the server once it has every window as it is now (later changes may
        keep coming: a fast run must not put the save off for ever).

        A window with a rate of its own (the latent views) is neither waited for nor hurried: it
        reaches the server, and a later save, at its next turn; unless `everything` (a flush)."""
        with self.lock:
            hurried = [w for w in self.windows.values() if everything or not w.min_interval]
            self._save_after = {w.win: w.version for w in hurried}
            self._log_due = True
            for w in hurried:
                if w.version != w.sent:
                    w.urgent = True
        self._wake.set()

    def mark_stale(self) -> None:
        """The server may have lost our windows (it restarted): draw them all again."""
        with self.lock:
            for w in self.windows.values():
                w.sent = -1
                w.urgent = True
        self._wake.set()

    def pending(self) -> int:
        """Windows whose newest version the server does not have yet."""
        with self.lock:
            return sum(w.version != w.sent for w in self.windows.values())

    def log_pending(self) -> int:
        """Windows whose newest version is not in the log file yet."""
        if self._log_file is None:  # no log, or none that could be opened
            return 0
        with self.lock:
            self._log_due = True
            return sum(w.version != w.logged for w in self.windows.values())

    def wait_connected(self, timeout: float = 10.0) -> bool:
        """Block until the event socket is up (browser events reach us from then on)."""
        return self._socket is not None and self._socket.connected.wait(timeout)

    def start(self) -> Board:
        if self.log_path is not None:
            try:
                self._log_file = open(self.log_path, "a", encoding="utf-8")
            except OSError as err:  # no log is better than no training
                log.warning("cannot write %s (%s); the visdom windows will not be replayable", self.log_path, err)
        if self._on_event is not None:
            self._socket = EventSocket(self.server, self.port, cookie=self.login_cookie, on_event=self._on_event,
                                       on_disconnect=self.mark_stale, max_backoff=self.max_backoff).start()
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Write the log, send what is left (bounded by `timeout`), save the env, stop."""
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        self._wake.set()
        if self._thread.ident is not None:  # (a board never started has no sender to wait for)
            self._thread.join(timeout)
        if self._socket is not None:
            self._socket.close()

    # -- sender thread --------------------------------------------------------------------------
    def login_cookie(self) -> str:
        """The session's login cookie ("" before the first login): what the event socket's handshake sends."""
        client = self.client
        if client is None or client._session is None:
            return ""
        return client._session.cookies.get("user_password", "") or ""

    def _run(self) -> None:
        try:  # Linux: a thread has its own nice value; the training threads come first
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SENDER_NICE)
        except (AttributeError, OSError):
            pass
        backoff, next_try = 0.1, 0.0
        while True:
            if not self._stop.is_set():
                self._wake.wait(self.tick)
            self._wake.clear()
            stopping = self._stop.is_set()
            try:
                self._encode_images()
                self._write_log(force=stopping)
                now = time.monotonic()
                if stopping or now >= next_try:
                    if self._send_due(now, force=stopping):
                        backoff, next_try = 0.1, 0.0
                    else:
                        next_try = now + backoff
                        backoff = min(backoff * 2, self.max_backoff)
            except Exception:  # the sender must outlive any bug in one window
                log.exception("visdom sender")
            if stopping:
                break
        if self._log_file is not None:
            try:
                self._log_file.close()  # flushes what is left: fails again on a full disk (the file is closed)
            except OSError as err:  # said once already when the first write failed: no second word
                self.log_failures += 1
                if self.log_failures == 1:
                    log.warning("cannot write %s: %s", self.log_path, err)

    def _encode_images(self) -> None:
        with self.lock:
            todo = [(w, w.encode_pending()) for w in self.windows.values() if isinstance(w, ImageGrid)]
        for w, job in todo:
            if job is not None:
                version, images, nrow = job
                encoded = encode_grid(images, nrow)  # the slow part, off the lock
                with self.lock:
                    w.store_encoded(version, encoded)

    def _write_log(self, force: bool) -> None:
        if self._log_file is None:
            return
        now = time.monotonic()
        with self.lock:
            due = force or self._log_due
            if not (due or now - self._last_log >= self.log_every):
                return
            messages: list[Message] = []
            for w in self.windows.values():
                if w.logged != w.version and w.ready() and (due or now - w.last_log >= w.log_every):
                    messages += w.log_changes(self.env)  # fresh lists: safe to encode off the lock
                    w.logged, w.last_log = w.version, now
            self._log_due, self._last_log = False, now
        if messages:
            try:
                self._log_file.write("".join(json.dumps(list(m)) + "\n" for m in messages))
                self._log_file.flush()
            except OSError as err:  # a full disk must not stop training (nor fill the terminal)
                self.log_failures += 1
                if self.log_failures == 1:
                    log.warning("cannot write %s: %s", self.log_path, err)

    def _send_due(self, now: float, force: bool) -> bool:
        """Send the windows due; False when the server did not answer."""
        if self.client is None:
            self.client = connect(self.server, self.port, self.env, self.username, self.password)
        with self.lock:
            due = [w for w in self.windows.values()
                   if w.version != w.sent
                   and (force or w.urgent or now - w.last_send >= w.send_interval(self.min_interval))
                   and w.ready()]
            # whole windows (windows.py says why): a failed send or a restart loses nothing
            batch = [(w, w.version, w.full(self.env)) for w in due]
            for w in due:
                w.urgent = False
        for w, version, (endpoint, msg) in batch:
            if not self._post(msg, endpoint):
                with self.lock:
                    w.urgent = True
                return False
            with self.lock:
                w.sent, w.last_send = version, time.monotonic()
            self.sends += 1
        with self.lock:
            after = self._save_after
            save = after is not None and all(self.windows[win].sent >= v for win, v in after.items())
        if save:
            if not self._post({"data": [self.env]}, "save"):
                return False
            with self.lock:
                if self._save_after is after:
                    self._save_after = None
            self.saves += 1
        return True

    def _post(self, msg: dict, endpoint: str) -> bool:
        assert self.client is not None  # _send_due connects before it posts
        try:
            self.client._send(msg, endpoint=endpoint, quiet=True)
        except (ConnectionError, OSError, RuntimeError) as err:  # RuntimeError: login refused
            self._failed(err)
            return False
        if not self.connected:
            self.connected = True
        return True

    def _failed(self, err: Exception) -> None:
        if isinstance(err, (PermissionError, RuntimeError)) and self.failures == 0:
            log.warning("visdom: %s; training goes on, the run's windows are only in %s", err, self.log_path)
        elif self.connected or self.failures == 0:
            log.info("visdom server %s:%s not answering (%s); retrying", self.server, self.port, err)
        self.connected = False
        self.failures += 1
        with self.lock:
            for w in self.windows.values():
                w.sent = -1  # unknown: the server may have died half-way; draw again


def preload() -> None:
    """Import now what the sender thread needs later: an import there holds the GIL for
    milliseconds while training runs (PIL loads its PNG writer on the first save)."""
    from PIL import Image  # the PNG writer; our image helpers are imported with windows.py

    Image.preinit()
