"""An env rebuilt from run folders in the background: the family view while a fork trains, the population
view while a sweep runs. At most one build at a time on a thread of its own, the newest asked for winning;
a build that fails is one log line, never an exception in the run or the sweep that asked for it."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Rebuilder:
    def __init__(self, what: str, build: Callable[[], None]):
        self.what, self._build = what, build
        self._want = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._loop, name=what, daemon=True)

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()

    def wake(self) -> None:
        """Ask for a rebuild (several asks before it starts make one)."""
        self._want.set()

    def close(self, timeout: float = 60) -> None:
        """One last rebuild, then the thread ends."""
        self._done = True
        self._want.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def build(self) -> bool:
        """One rebuild now, on the caller's thread; False (logged) when it could not be built."""
        try:
            self._build()
            return True
        except Exception as err:  # the view must never stop what it shows
            log.warning("%s not updated: %s", self.what, err)
            return False

    def _loop(self) -> None:
        while True:
            self._want.wait()
            self._want.clear()
            self.build()
            if self._done:
                return
