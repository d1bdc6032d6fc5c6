"""The control panel: browser events (the exact websocket message visdom's page sends) reach
the run's Controller, the verdict and the value in force are shown at once, and no other run
hears them. The last test drives the real page in headless Chromium."""
from __future__ import annotations

import json
import threading
import time

import pytest

from tests.test_monitor import feed_epoch, run_info, window_data
from vae_visdom.monitor import VisdomMonitor
from vae_visdom.monitor.panel import ROWS
from vae_visdom.train.controller import Controller
from vae_visdom.train.events import CommandEvent, Status, StepLog

VALUES = dict(lr=1e-3, batch_size=128, epochs=3, log_interval=10)


@pytest.fixture
def page(server):
    """A browser page's websocket: send(win, env, property_id, value) as visdom's PropertiesPane does."""
    import websocket

    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/socket", timeout=5)

    def send(win: str, env: str, prop: int, value) -> float:
        msg = {"cmd": "forward_to_vis", "data": {"target": win, "eid": env, "event_type": "PropertyUpdate",
                                                  "propertyId": prop, "value": value}}
        t0 = time.monotonic()
        ws.send(json.dumps(msg))
        return t0

    yield send
    ws.close()


def started(server, tmp_path, env: str, name: str = "run", **kw) -> tuple[VisdomMonitor, Controller]:
    ctl = Controller()
    run_dir = tmp_path / name
    run_dir.mkdir()
    m = VisdomMonitor(port=server.port, env=env, run_dir=run_dir, controller=ctl, **kw)
    m.on_run_start(run_info(run_dir, name))
    m.on_status(Status("running", 1, 0, 3, "training", dict(VALUES)))
    assert m.flush(10) and m.wait_connected(10)
    return m, ctl


def commands(ctl: Controller, n: int = 1, timeout: float = 5.0) -> list:
    got, deadline = [], time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += ctl.drain()
        time.sleep(0.005)
    return got


def panel(server, m: VisdomMonitor, until=lambda rows: True, timeout: float = 5.0) -> dict[str, dict]:
    """The control pane's rows by name (ROWS), once `until(rows)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        rows = dict(zip(ROWS, window_data(server, m.env)[m.windows["control"]]["content"]))
        if until(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_an_edit_in_the_browser_reaches_the_controller_and_is_shown(server, page, tmp_path):
    m, ctl = started(server, tmp_path, "edit")
    t_sent = page(m.windows["control"], "edit", ROWS.index("lr"), "3e-4")
    (cmd,) = commands(ctl)
    print(f"websocket message -> Controller.submit: {(cmd.submitted - t_sent) * 1e3:.2f} ms")
    assert (cmd.name, cmd.value, cmd.accepted, cmd.source) == ("lr", 3e-4, True, "panel")
    rows = panel(server, m, lambda r: r["lr"]["value"].strip() == "0.0003")
    assert rows["lr"]["value"].strip() == "0.0003"  # the accepted value, before the trainer applies it
    assert rows["message"]["name"] == f"message: {cmd.message}"
    assert "from the next optimizer step" in rows["lr"]["name"]  # when it applies, from config.RULES
    m.close()


BAD = [("lr", v) for v in ("abc", "-1", "0", "1e9", "nan", "inf", "")] + \
      [("batch_size", v) for v in ("0", "-1", "2.5", "1e9", "x")] + [("epochs", "0"), ("log_interval", "-3")]


def test_bad_values_are_refused_and_the_value_in_force_stays(server, page, tmp_path):
    m, ctl = started(server, tmp_path, "bad")
    for name, raw in BAD:
        before = panel(server, m)[name]["value"]
        page(m.windows["control"], "bad", ROWS.index(name), raw)
        (cmd,) = commands(ctl)
        assert not cmd.accepted and cmd.message.startswith(f"rejected: {name}: "), (raw, cmd.message)
        assert "allowed:" in cmd.message or "empty" in cmd.message
        rows = panel(server, m, lambda r, cmd=cmd: r["message"]["name"] == f"message: {cmd.message}")
        assert rows["message"]["name"] == f"message: {cmd.message}", raw
        # the value in force comes back, changed as a prop (so the browser drops the typed text)
        assert rows[name]["value"].strip() == str(VALUES[name] if name != "lr" else "0.001")
        assert rows[name]["value"] != before
    assert not ctl.paused and not ctl.stop_requested
    m.close()


def test_the_pause_button_follows_the_state_and_stop_stops(server, page, tmp_path):
    m, ctl = started(server, tmp_path, "buttons")
    win = m.windows["control"]
    assert panel(server, m)["status"]["value"] == "Pause"
    page(win, "buttons", ROWS.index("status"), "clicked")
    assert [c.name for c in commands(ctl)] == ["pause"] and ctl.paused
    assert panel(server, m, lambda r: r["status"]["value"] == "Resume")["status"]["value"] == "Resume"
    page(win, "buttons", ROWS.index("status"), "clicked")
    assert [c.name for c in commands(ctl)] == ["resume"] and not ctl.paused
    page(win, "buttons", ROWS.index("stop"), "clicked")
    assert [c.name for c in commands(ctl)] == ["stop"] and ctl.stop_requested
    rows = panel(server, m, lambda r: r["stop"]["value"] == "Stopping")
    assert rows["stop"]["value"] == "Stopping" and rows["status"]["name"].startswith("status: stopping")
    m.on_run_end(Status("stopped", 1, 5, 3, "stopped by request"))
    page(win, "buttons", ROWS.index("status"), "clicked")  # a finished run takes no more commands
    rows = panel(server, m, lambda r: "nothing to control" in r["message"]["name"])
    assert "the run has stopped" in rows["message"]["name"] and commands(ctl, timeout=0.3) == []
    m.close()


def test_another_runs_panel_hears_nothing(server, page, tmp_path):
    a, ctl_a = started(server, tmp_path, "two", "a")
    b, ctl_b = started(server, tmp_path, "two", "b")
    page(a.windows["control"], "two", ROWS.index("lr"), "0.01")
    assert [c.value for c in commands(ctl_a)] == [0.01]
    assert commands(ctl_b, timeout=0.5) == []
    # the same window id in another env is not this run's panel either
    other = server.client("elsewhere", use_incoming_socket=False)
    other.properties([{"type": "text", "name": "lr", "value": "1"}], win=a.windows["control"], env="elsewhere")
    page(a.windows["control"], "elsewhere", ROWS.index("lr"), "0.02")
    assert commands(ctl_a, timeout=0.5) == [] and commands(ctl_b, timeout=0.1) == []
    a.close(), b.close()


def test_the_events_pane_lists_verdicts_newest_first_and_marks_them_applied(server, page, tmp_path):
    m, ctl = started(server, tmp_path, "events")
    feed_epoch(m, 1)
    win = m.windows["control"]
    page(win, "events", ROWS.index("lr"), "abc")
    page(win, "events", ROWS.index("batch_size"), "64")
    cmds = commands(ctl, 2)
    for cmd in cmds:  # what the trainer reports after applying (or refusing) them
        m.on_command(CommandEvent(cmd.wall_time, 1, 20, cmd.name, cmd.value, cmd.accepted, cmd.message,
                                  cmd.source, 3.0))
    assert m.flush(10)
    text = window_data(server, "events")[m.windows["events"]]["content"]
    assert text.index("batch_size 128 -&gt; 64 requested") < text.index("rejected: lr: &#x27;abc&#x27;")
    assert text.count("applied at epoch 1, step 20, 3 ms after the request") == 1  # the accepted one only
    assert text.count("rejected: lr") == 1  # the trainer's report of it is not listed twice
    m.close()


def test_typing_a_bad_lr_in_the_real_page_shows_the_refusal(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from tests.fixtures import wait_for

    m, ctl = started(server, tmp_path, "browser", min_interval=0.25)  # redraws 4x a second: the hard case
    # training goes on meanwhile: the panel (its step counter) is redrawn every 0.25 s while the user types
    stop = threading.Event()

    def train() -> None:
        step = 0
        while not stop.is_set():
            step += 1
            m.on_step(StepLog(1, step, step / 1e5, 100.0, 90.0, 10.0, 1e-3, 128))
            time.sleep(0.01)

    trainer = threading.Thread(target=train, daemon=True)
    trainer.start()
    browser.get(f"{server.url}/env/browser")
    inputs = wait_for(browser, ".content-properties input", min_count=4)
    lr = inputs[0]
    assert lr.get_attribute("value").strip() == "0.001"

    def type_into(element, text: str) -> None:
        element.click()
        element.send_keys(Keys.CONTROL, "a")
        for char in text:  # slowly: redraws arrive between the keys
            element.send_keys(char)
            time.sleep(0.15)
        element.send_keys(Keys.ENTER)

    def pane_text() -> str:
        return browser.find_element(By.CSS_SELECTOR, ".content-properties").text

    type_into(lr, "abc")
    deadline = time.monotonic() + 10
    while "rejected: lr: 'abc' is not a number" not in pane_text():
        assert time.monotonic() < deadline, pane_text()
        time.sleep(0.1)
    (cmd,) = commands(ctl)
    assert not cmd.accepted
    lr = browser.find_elements(By.CSS_SELECTOR, ".content-properties input")[0]
    assert lr.get_attribute("value").strip() == "0.001"  # the typed text is gone; the value in force is back
    type_into(lr, "3e-4")
    (cmd,) = commands(ctl)
    assert cmd.accepted and cmd.value == 3e-4
    deadline = time.monotonic() + 10
    while browser.find_elements(By.CSS_SELECTOR, ".content-properties input")[0].get_attribute("value").strip() \
            != "0.0003":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    stop.set()
    trainer.join()
    assert "step" in pane_text() and m.board.sends > 20  # the panel really was redrawn meanwhile
    m.close()


def test_a_server_with_login_needs_the_credentials_and_works_with_them(visdom_server_factory, tmp_path,
                                                                        monkeypatch):
    import hashlib

    import requests
    import websocket

    monkeypatch.delenv("VISDOM_USERNAME", raising=False)
    monkeypatch.delenv("VISDOM_PASSWORD", raising=False)
    srv = visdom_server_factory(args=["--login"], env={"VISDOM_USERNAME": "ada", "VISDOM_PASSWORD": "s3cret"})
    stranger = VisdomMonitor(port=srv.port, env="login", run_dir=tmp_path / "x", controller=Controller())
    stranger.on_run_start(run_info(tmp_path / "x"))
    assert not stranger.flush(1.0) and stranger.board.failures > 0  # refused, and training went on
    stranger.close()

    ctl = Controller()
    monkeypatch.setenv("VISDOM_USERNAME", "ada")  # what `vae-visdom serve --login` reads too
    monkeypatch.setenv("VISDOM_PASSWORD", "s3cret")
    m = VisdomMonitor(port=srv.port, env="login", run_dir=tmp_path / "y", controller=ctl)
    m.on_run_start(run_info(tmp_path / "y"))
    assert m.flush(10) and m.wait_connected(10)
    # a logged-in browser page (the page posts sha256(password) and gets a cookie)
    session = requests.Session()
    session.post(srv.url, json={"username": "ada", "password": hashlib.sha256(b"s3cret").hexdigest()})
    ws = websocket.create_connection(f"ws://127.0.0.1:{srv.port}/socket", timeout=5,
                                     cookie=f"user_password={session.cookies.get('user_password')}")
    ws.send(json.dumps({"cmd": "forward_to_vis", "data": {"target": m.windows["control"], "eid": "login",
                                                          "event_type": "PropertyUpdate",
                                                          "propertyId": ROWS.index("epochs"), "value": "7"}}))
    assert [(c.name, c.value) for c in commands(ctl)] == [("epochs", 7)]
    ws.close()
    m.close()


def test_a_very_long_value_leaves_every_control_inside_the_pane_even_after_a_reload(server, page, browser, tmp_path):
    """120+ characters without a space once pushed every input and button out of the pane:
    the verdict echoed them whole. Typed in the real page and sent as 100 kB over the socket."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from tests.fixtures import wait_for

    m, ctl = started(server, tmp_path, "longvalue")
    browser.get(f"{server.url}/env/longvalue")
    lr = wait_for(browser, ".content-properties input", min_count=4)[0]
    lr.click()
    lr.send_keys(Keys.CONTROL, "a")
    lr.send_keys("x" * 150 + Keys.ENTER)
    (cmd,) = commands(ctl)
    assert not cmd.accepted and cmd.value == "x" * 150  # the whole value is kept (events.jsonl)
    page(m.windows["control"], "longvalue", ROWS.index("batch_size"), "9" * 100_000)
    (cmd,) = commands(ctl)
    assert not cmd.accepted
    rows = panel(server, m, lambda r: "rejected: batch_size" in r["message"]["name"])

    outside_js = """
        const pane = document.querySelector('.content-properties').closest('.react-grid-item');
        const box = pane.getBoundingClientRect();
        const controls = [...pane.querySelectorAll('input, button:not([hidden])')];
        const out = controls.filter(el => {
            const r = el.getBoundingClientRect();
            return r.left < box.left - 1 || r.right > box.right + 1 || r.width === 0;
        });
        return out.length + '/' + controls.length + ' ' + out.map(el => el.outerHTML.slice(0, 60)).join(' ');"""

    def outside() -> str:
        deadline = time.monotonic() + 10
        while "rejected: batch_size" not in browser.find_element(By.CSS_SELECTOR, ".content-properties").text:
            assert time.monotonic() < deadline, browser.find_element(By.CSS_SELECTOR, ".content-properties").text
            time.sleep(0.1)
        return browser.execute_script(outside_js)

    assert outside().startswith("0/"), outside()
    browser.refresh()
    wait_for(browser, ".content-properties input", min_count=4)
    assert outside().startswith("0/"), outside()
    assert "100000 characters" in rows["message"]["name"] and len(rows["message"]["name"]) < 200
    m.close()


def test_a_run_command_from_another_client_steers_this_run_alone(server, tmp_path):
    """What the runs home sends over its own /vis_socket (visdom's "echo"): pause, resume and stop reach the
    run it names and no other; anything else is refused with a verdict."""
    import websocket

    from vae_visdom.monitor.event_socket import run_command_message

    a, ctl_a = started(server, tmp_path, "home-a", "a")
    b, ctl_b = started(server, tmp_path, "home-b", "b")
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/vis_socket", timeout=5)
    try:
        for name in ("pause", "resume", "stop"):
            ws.send(json.dumps(run_command_message("home-a", tmp_path / "a", name, source="home")))
            (cmd,) = commands(ctl_a)
            assert (cmd.name, cmd.accepted, cmd.source) == (name, True, "home")
        assert ctl_a.stop_requested and commands(ctl_b, timeout=0.3) == []
        ws.send(json.dumps(run_command_message("home-b", tmp_path / "b", "lr=1", source="home")))
        rows = panel(server, b, lambda r: "unknown command" in r["message"]["name"])
        assert "rejected: unknown command" in rows["message"]["name"] and commands(ctl_b, timeout=0.3) == []
    finally:
        ws.close()
        a.close(), b.close()


def test_a_property_id_outside_the_panes_rows_is_refused_with_one_log_line(server, page, tmp_path, caplog):
    """propertyId -2 used to wrap around (Python's negative index) to the fork row: a crafted event pressed
    Fork. Negative, too large, fractional, boolean or non-numeric ids name no row: one log line each, nothing
    reaches the controller."""
    import logging

    from vae_visdom.monitor.event_socket import property_row

    win, rows = "w", ("a", "b", "c")

    def ev(i) -> dict:
        return {"target": win, "eid": "e", "event_type": "PropertyUpdate", "propertyId": i}

    assert [property_row(ev(i), win, "e", rows) for i in (0, 2, "1")] == ["a", "c", "b"]
    with caplog.at_level(logging.WARNING, logger="vae_visdom.monitor.event_socket"):
        for bad in (-1, -2, 3, 10**30, 1.5, 1.0, "1.0", True, None, "x", "-2", [1], " 1"):
            caplog.clear()
            assert property_row(ev(bad), win, "e", rows) is None, bad
            (line,) = [r.getMessage() for r in caplog.records]
            assert "propertyId" in line and "\n" not in line, line
    m, ctl = started(server, tmp_path, "wrap")
    assert ROWS[-2] == "fork"
    page(m.windows["control"], "wrap", -2, "clicked")  # what pressed Fork
    page(m.windows["control"], "wrap", -len(ROWS), "clicked")  # row 0 from the end: Pause
    page(m.windows["control"], "wrap", len(ROWS), "clicked")
    assert commands(ctl, timeout=1.0) == []
    m.close()


OUTSIDE_JS = """
    const out = [], all = [];
    for (const pane of document.querySelectorAll('.react-grid-item')) {
        const box = pane.getBoundingClientRect();
        for (const el of pane.querySelectorAll('input, button:not([hidden])')) {
            const r = el.getBoundingClientRect();
            all.push(el);
            if (r.left < box.left - 1 || r.right > box.right + 1 || r.width === 0) out.push(el);
        }
    }
    return out.length + '/' + all.length + ' ' + out.map(el => el.outerHTML.slice(0, 60)).join(' ');"""


def controls_outside(browser) -> str:
    """'OUT/ALL ...': the inputs and buttons of the page that are not inside their own pane."""
    return browser.execute_script(OUTSIDE_JS)


def test_an_accepted_long_fork_with_value_leaves_every_control_inside_the_pane(server, page, browser, tmp_path):
    """An accepted fork-with value of ~200 characters without a space, echoed whole in the message row, pushed
    every control of the panel out of view."""
    from selenium.webdriver.common.by import By

    from tests.fixtures import until, wait_for

    m, ctl = started(server, tmp_path, "longfork")
    value = "lr=0." + "0" * 190 + "1"  # a legal lr, 197 characters
    browser.get(f"{server.url}/env/longfork")
    wait_for(browser, ".content-properties input", min_count=4)
    page(m.windows["control"], "longfork", ROWS.index("fork_with"), value)
    until(lambda: "press Fork" in browser.find_element(By.CSS_SELECTOR, ".content-properties").text,
          "the fork-with verdict", 20, every=0.1)
    out = controls_outside(browser)
    assert out.startswith("0/"), out
    assert panel(server, m)["fork_with"]["value"].strip() == value  # the value itself is kept whole
    m.close()
