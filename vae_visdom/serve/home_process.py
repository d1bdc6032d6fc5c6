"""The runs home beside the server: `vae-visdom home` as a child process of `vae-visdom serve`.

A process of its own, not a thread: whatever the home does (a bug, a huge runs folder, a stuck
read on a network mount), the server's loop never waits for it, and a crash of the home costs
one log line, never the server. It is ended when the server stops. It is not niced: the runs its
new-run form starts are its children and would inherit a low priority (it sleeps between looks).
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

log = logging.getLogger("vae_visdom.serve.server")


class HomeProcess:
    def __init__(self, runs_dir: Path, server: str, port: int, max_page_runs: int | None = None):
        self.runs_dir = runs_dir
        self.cmd = [sys.executable, "-m", "vae_visdom", "home", "--runs-dir", str(runs_dir), "--server", server,
                    "--port", str(port), "--parent", str(os.getpid())]  # it ends with this process
        self.cmd += [] if max_page_runs is None else ["--max-page-runs", str(max_page_runs)]
        self.proc: subprocess.Popen | None = None
        self.stopping = False
        self._watch: threading.Thread | None = None

    def start(self) -> HomeProcess:
        """Start it; a failure to start is one log line."""
        try:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE)
        except OSError as err:
            log.warning("runs home: not started (%s); the server goes on without it", err)
            return self
        log.info("runs home: env runs for %s (pid %d)", self.runs_dir, self.proc.pid)
        self._watch = threading.Thread(target=self._wait, name="runs-home", daemon=True)
        self._watch.start()
        return self

    def _wait(self) -> None:
        """Read its stderr (so it never blocks on a full pipe) and say once why it ended, if it did."""
        assert self.proc is not None and self.proc.stderr is not None
        tail: list[str] = []
        for line in self.proc.stderr:
            tail = (tail + [line.decode("utf-8", "replace").rstrip()])[-3:]
        code = self.proc.wait()
        if not self.stopping:
            log.warning("runs home: exited with code %s (%s); the server goes on without it", code,
                        " | ".join(t for t in tail if t) or "no message")

    def stop(self, timeout: float = 3.0) -> None:
        self.stopping = True
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
