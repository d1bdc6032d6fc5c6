"""Shared pytest fixtures: a real visdom server on a free loopback port, a real headless Chromium.

Load with `pytest_plugins = ["tests.fixtures"]` in tests/conftest.py.

- `visdom_server`: one started server (tmp env path), stopped at teardown.
- `visdom_server_factory(**kw)`: more servers, or servers with extra args/env (login tests).
- `browser`: selenium Chrome driving Debian's /usr/bin/chromium through /usr/bin/chromedriver.
  Skips when they are absent, except when CI=true: there browser tests must run.
- `screenshot(browser, path)`, `wait_for(browser, css, ...)`: helpers for browser tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vae_visdom.serve.net import find_free_port, server_answers

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 30.0
CHROME_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",  # small /dev/shm in containers crashes tabs
]


class VisdomServer:
    """A `vae_visdom.serve.server` subprocess; start()/stop()/kill() keep the same port and env path."""

    def __init__(self, env_path: Path, log_path: Path, port: int | None = None, host: str = "127.0.0.1",
                 args: list[str] | None = None, env: dict[str, str] | None = None):
        self.host, self.port = host, port or find_free_port(host)
        self.env_path, self.log_path = Path(env_path), Path(log_path)
        self.args, self.env = list(args or []), dict(env or {})
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        # a runs folder of its own: the default ./runs (the repository's, with a developer's runs) would be
        # replayed into every test server by the catch-up
        runs = [] if "--runs-dir" in self.args else ["--runs-dir", str(self.env_path.parent / "runs")]
        return [sys.executable, "-m", "vae_visdom.serve.server", "--host", self.host, "--port", str(self.port),
                "--env-path", str(self.env_path), *runs, *self.args]

    def start(self, timeout: float = START_TIMEOUT_S) -> VisdomServer:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), cwd=REPO, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        deadline = time.monotonic() + timeout
        while not server_answers(self.host, self.port, timeout=0.5):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"visdom server did not come up on {self.url}:\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (envs are saved) and wait; returns the exit code."""
        return self._signal(signal.SIGTERM, timeout)

    def kill(self) -> int:
        """SIGKILL: nothing is saved."""
        return self._signal(signal.SIGKILL, 10.0)

    def _signal(self, sig: int, timeout: float) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"visdom server ignored signal {sig} for {timeout} s:\n{self.log_tail()}")
        return self.proc.returncode

    def client(self, env: str = "main", **kwargs):
        """A visdom.Visdom connected to this server (raise_exceptions on, so a dead server fails loudly)."""
        import visdom

        kwargs.setdefault("raise_exceptions", True)
        with warnings.catch_warnings():  # visdom 0.2.4 calls the deprecated logger.warn without the socket
            warnings.simplefilter("ignore", DeprecationWarning)
            return visdom.Visdom(server=f"http://{self.host}", port=self.port, env=env, **kwargs)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@pytest.fixture
def visdom_server_factory(tmp_path_factory) -> Iterator[Callable[..., VisdomServer]]:
    """make(env_path=None, port=None, host="127.0.0.1", args=None, env=None, start=True, timeout=30) -> VisdomServer."""
    made: list[VisdomServer] = []

    def make(env_path: Path | None = None, start: bool = True, timeout: float = START_TIMEOUT_S,
             **kwargs) -> VisdomServer:
        root = tmp_path_factory.mktemp("visdom")
        server = VisdomServer(env_path or root / "env", root / "server.log", **kwargs)
        made.append(server)
        return server.start(timeout) if start else server

    yield make
    for server in made:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
            try:
                server.proc.wait(15)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[VisdomServer]:
    """One server per test module, for tests that never stop it (each test uses its own env)."""
    root = tmp_path_factory.mktemp("visdom-module")
    s = VisdomServer(root / "env", root / "server.log").start()
    yield s
    s.stop()


@pytest.fixture
def visdom_server(visdom_server_factory) -> VisdomServer:
    """A running server on a free 127.0.0.1 port with an empty env path in tmp."""
    return visdom_server_factory()


def _browser_missing_reason() -> str | None:
    for name in ("chromium", "chromedriver"):
        if not (shutil.which(name) or Path(f"/usr/bin/{name}").exists()):
            return f"{name} not found (Debian: apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (pip install -e '.[test]')"
    return None


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium (selenium), 1400x1000, fresh profile; never downloads a browser or driver."""
    reason = _browser_missing_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests must run in CI: {reason}")
        print(f"skipping browser test: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in CHROME_FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1400,1000"]:
        opts.add_argument(flag)
    # an explicit driver path keeps Selenium Manager (which downloads drivers) out of the picture
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_window_size(1400, 1000)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(browser, css: str, min_count: int = 1, timeout: float = 20.0) -> list:
    """Wait until `css` matches at least min_count elements; return them (fails with the page's state)."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    while True:
        found = browser.find_elements(By.CSS_SELECTOR, css)
        if len(found) >= min_count:
            return found
        if time.monotonic() > deadline:
            logs = ""
            try:
                logs = "\n".join(str(e) for e in browser.get_log("browser")[-10:])
            except Exception:  # get_log is not in every driver
                pass
            pytest.fail(f"{css!r}: {len(found)} element(s) after {timeout} s at {browser.current_url}\n{logs}")
        time.sleep(0.2)


def until(predicate, what: str, timeout: float = 60.0, every: float = 0.05):
    """Poll predicate() until it is truthy and return its value; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(every)


def screenshot(browser, path: str | os.PathLike) -> Path:
    """Save a PNG of the browser window (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(path))
    return path


def properties_pane(browser, says: str):
    """The page's properties pane whose text holds `says` (the view pane, the explorer...), or None; None also
    when the page redraws it under our feet."""
    from selenium.webdriver.common.by import By

    try:
        for pane in browser.find_elements(By.CSS_SELECTOR, ".content-properties"):
            if says in pane.text:
                return pane
    except Exception:  # noqa: BLE001  (a stale element: the pane was redrawn; ask again)
        pass
    return None


def pane_text(browser, says: str) -> str:
    pane = properties_pane(browser, says)
    try:
        return pane.text if pane is not None else ""
    except Exception:  # noqa: BLE001  (redrawn under our feet)
        return ""


def click_in_pane(browser, says: str, label: str, timeout: float = 30.0) -> None:
    """Click the button labelled `label` in the properties pane that says `says`, retrying while the page
    redraws the pane under the click."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    while True:
        try:
            pane = until(lambda: properties_pane(browser, says), f"the pane that says {says!r}", timeout)
            next(b for b in pane.find_elements(By.CSS_SELECTOR, "button") if b.text.strip() == label).click()
            return
        except Exception:  # noqa: BLE001  (stale, or the button not drawn yet)
            if time.monotonic() > deadline:
                pytest.fail(f"no button {label!r} in the pane that says {says!r}")
            time.sleep(0.1)


def home_statuses(browser) -> dict[str, str]:
    """run -> its status cell in the runs home's table as the page shows it, the column found by its header
    (read in one script: the pane is redrawn under us)."""
    heads, rows = browser.execute_script(
        "const t = document.querySelector('.layout table'); if (!t) return [[], []];"
        "return [[...t.querySelectorAll('th')].map(th => th.innerText.trim().toLowerCase()),"
        "[...t.querySelectorAll('tr')].map(tr => [...tr.querySelectorAll('td')].map(td => td.innerText.trim()))]")
    if "status" not in heads:
        return {}
    at = heads.index("status")
    return {cells[0]: cells[at] for cells in rows if len(cells) > max(at, 2)}
