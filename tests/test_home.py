"""The runs home (env `runs`, started by `vae-visdom serve`): real trainer processes, a real server, real
Chromium. A finished, a running and a kill -9'ed run show their true status; two ticked runs make a
comparison env with both; Stop selected stops the running run, which ends `stopped` with a checkpoint."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import REPO, home_statuses, screenshot, until, wait_for
from tests.test_e2e_browser import keep_for_docs
from tests.test_monitor import window_data
from vae_visdom.runs.jsonl import read_jsonl
from vae_visdom.runs.lock import RunLock, is_held
from vae_visdom.runs.records import find_runs, load_run


def image_folder(root: Path, n: int = 48) -> Path:
    """n small generated grey PNGs: a data set that trains in a blink."""
    import numpy as np
    from PIL import Image

    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8), "L").save(root / f"{i:03d}.png")
    return root


def trainer(runs: Path, name: str, data: Path, port: int, epochs: int, visdom: bool) -> subprocess.Popen:
    """A `vae-visdom train` process, niced: the browser and the server come first on 2 cores."""
    cmd = ["nice", "-n", "15", sys.executable, "-m", "vae_visdom", "train", "--dataset", "folder", "--data-dir",
           str(data), "--model", "mlp", "--batch-size", "16", "--log-interval", "1", "--no-views", "--epochs",
           str(epochs), "--out", str(runs / name), "--port", str(port), *([] if visdom else ["--no-visdom"])]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "VAE_VISDOM_CACHE": str(runs.parent / "cache")}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(runs.parent / f"{name}.log", "wb"))


def state(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "status.json").read_text())["state"]
    except (OSError, ValueError, KeyError):
        return None


def test_a_live_status_without_a_lock_holder_is_crashed_and_without_evidence_stays(tmp_path, monkeypatch):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"name": "r", "epochs": 3}))
    (run / "status.json").write_text(json.dumps({"state": "running"}))
    lock = RunLock(run).acquire()
    assert is_held(run) is True and load_run(run).state == "running"
    lock.release()  # the lock file still names this (live) process: no evidence yet that the run is gone
    assert is_held(run) is None and load_run(run).state == "running"
    info = json.loads((run / "trainer.lock").read_text())
    (run / "trainer.lock").write_text(json.dumps({**info, "pid": 2**22 + 7}))  # above pid_max: gone
    assert is_held(run) is False and load_run(run).state == "crashed"
    (run / "trainer.lock").write_text(json.dumps({**info, "pid": 2**22 + 7, "host": "elsewhere"}))
    assert load_run(run).state == "running"  # another machine's lock says nothing here
    (run / "status.json").write_text(json.dumps({"state": "finished"}))
    assert load_run(run).state == "finished"


def test_everything_a_run_folder_says_is_escaped(tmp_path):
    from vae_visdom.pages.home_table import table_html

    run = tmp_path / "r"
    run.mkdir()
    evil = '<img src=x onerror="alert(1)">'
    (run / "config.json").write_text(json.dumps({"name": evil, "env": evil, "model": evil, "dataset": evil,
                                                 "parent": f"/x/{evil}", "lr": evil, "epochs": 1}))
    (run / "status.json").write_text(json.dumps({"state": evil, "values": {"batch_size": evil}}))
    html = table_html([load_run(run)], evil, envs={evil})
    assert "<img" not in html and "&lt;img" in html


def test_a_tick_names_the_row_the_page_showed_not_one_that_moved_under_it(tmp_path):
    """Rows are append-only; and where visdom sends the pane as the page showed it (0.3's pane_data), the
    name shown there decides. A command without a connection is said, not pretended."""
    from vae_visdom.pages.home import ACTION_ROWS, ACTIONS_WIN, HOME_ENV, RunsHome

    runs = tmp_path / "runs"
    for name in ("x", "y"):
        (runs / name).mkdir(parents=True)
        (runs / name / "config.json").write_text(json.dumps({"name": name, "epochs": 2, "port": 1}))
        (runs / name / "status.json").write_text(json.dumps({"state": "running"}))
    home = RunsHome(runs, port=1)
    home.scan()
    first = home.order[0]

    def tick(i: int, value=True, shown: list | None = None) -> None:
        event = {"target": ACTIONS_WIN, "eid": HOME_ENV, "event_type": "PropertyUpdate", "propertyId": i,
                 "value": value}
        if shown is not None:
            event["pane_data"] = {"content": shown}
        home.handle(event)

    tick(len(ACTION_ROWS))
    assert home.selected == {first}
    (runs / "a-new").mkdir()
    (runs / "a-new" / "config.json").write_text(json.dumps({"name": "a-new"}))
    home.scan()
    assert home.order[0] == first and home.order[2] == "a-new"  # new runs get new rows at the end
    tick(len(ACTION_ROWS), False)  # the same row index: still the same run
    assert home.selected == set()
    page = home._rows()
    page[len(ACTION_ROWS)], page[len(ACTION_ROWS) + 1] = page[len(ACTION_ROWS) + 1], page[len(ACTION_ROWS)]
    tick(len(ACTION_ROWS), True, page)  # a page that showed another order: its name wins
    assert home.selected == {home.order[1]}
    tick(ACTION_ROWS.index("stop"))
    assert "not sent (no connection to the server)" in home.message
    tick(ACTION_ROWS.index("compare"))
    assert home.message == "tick at least two runs to compare"


def test_a_home_that_fails_is_one_server_log_line_and_the_server_stays(caplog):
    import logging

    from vae_visdom.serve.home_process import HomeProcess

    home = HomeProcess(Path("."), "http://127.0.0.1", 1)
    home.cmd = [sys.executable, "-c", "import sys; print('warming up', file=sys.stderr); sys.exit('boom: a bug')"]
    with caplog.at_level(logging.INFO, logger="vae_visdom.serve.server"):
        home.start()
        home._watch.join(20)
    (line,) = [r.getMessage() for r in caplog.records if "exited" in r.getMessage()]
    assert "exited with code 1" in line and "boom: a bug" in line and "goes on without it" in line


def test_a_server_with_login_keeps_its_home_too(visdom_server_factory, tmp_path):
    """The home logs in with the credentials the server was given (it failed silently before)."""
    server = visdom_server_factory(args=["--login", "--runs-dir", str(tmp_path)],
                                   env={"VISDOM_USERNAME": "ada", "VISDOM_PASSWORD": "s3cret"})
    client = server.client("runs", use_incoming_socket=False, username="ada", password="s3cret")

    def panes() -> set[str]:
        raw = client.get_window_data(env="runs")
        return set(json.loads(raw)) if raw.startswith("{") else set()

    until(lambda: panes() == {"runs-home-table", "runs-home-actions"}, "the home's panes behind a login", 20)


def test_the_runs_home_shows_true_status_compares_and_stops(visdom_server_factory, browser, tmp_path):
    from selenium.webdriver.common.by import By

    runs, data = tmp_path / "runs", image_folder(tmp_path / "images")
    runs.mkdir()
    server = visdom_server_factory(args=["--runs-dir", str(runs)])
    procs = {"a-finished": trainer(runs, "a-finished", data, server.port, 2, visdom=False),
             "b-running": trainer(runs, "b-running", data, server.port, 100000, visdom=True),
             "c-killed": trainer(runs, "c-killed", data, server.port, 100000, visdom=False)}
    try:
        killed = runs / "c-killed"
        until(lambda: read_jsonl(killed / "steps.jsonl") and state(killed) == "running", "c to train", 90)
        procs["c-killed"].send_signal(signal.SIGKILL)
        procs["c-killed"].wait(10)
        assert procs["a-finished"].wait(90) == 0, (tmp_path / "a-finished.log").read_text()[-2000:]
        until(lambda: read_jsonl(runs / "b-running" / "metrics.jsonl"), "b to finish an epoch", 90)
        assert {r.name: r.state for r in find_runs(runs)} == {"a-finished": "finished", "b-running": "running",
                                                              "c-killed": "crashed"}

        browser.get(f"{server.url}/env/runs")

        def table() -> dict[str, str]:
            return home_statuses(browser)

        expected = {"a-finished": "finished", "b-running": "running", "c-killed": "crashed"}
        until(lambda: table() == expected, f"the table to show {expected} (shows {table()})", 30, every=0.3)
        keep_for_docs(screenshot(browser, tmp_path / "runs_home.png"), "runs_home.png")

        def tick(name: str) -> None:
            for tr in browser.find_elements(By.CSS_SELECTOR, ".content-properties tr"):
                if tr.text.strip() == name:
                    tr.find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
                    return
            pytest.fail(f"no checkbox row {name}")

        def press(label: str) -> None:
            until(lambda: [b for b in browser.find_elements(By.CSS_SELECTOR, ".content-properties button")
                           if b.text.strip() == label], label)[0].click()

        def ticked() -> set[str]:
            return set(browser.execute_script(
                "return [...document.querySelectorAll('.content-properties tr')]"
                ".filter(tr => tr.querySelector('input[type=checkbox]:checked')).map(tr => tr.innerText.trim())"))

        tick("a-finished")
        until(lambda: ticked() == {"a-finished"}, "a ticked")
        tick("b-running")
        until(lambda: ticked() == {"a-finished", "b-running"}, "a and b ticked")
        press("Compare selected")
        env = "compare-a-finished-b-running"

        def compared() -> set[str]:
            try:
                panes = window_data(server, env)
            except Exception:  # not there yet
                return set()
            return {t["name"] for p in panes.values() if p.get("type") == "plot" for t in p["content"]["data"]}

        def both(names: set[str]) -> bool:  # legends: the run's name and what differs, "a-finished (epochs=2) test"
            return all(any(n.startswith(run) and n.endswith(split) for n in names)
                       for run in ("a-finished", "b-running") for split in ("train", "test"))

        until(lambda: both(compared()), "a comparison with both runs' curves", 30)
        until(lambda: f'href="/env/{env}"' in browser.page_source, "a link to the comparison on the home page")

        press("Pause selected")
        until(lambda: table().get("b-running") == "paused", f"b paused in the table (shows {table()})", 30, every=0.3)
        press("Resume selected")
        until(lambda: table().get("b-running") == "running", f"b running again (shows {table()})", 30, every=0.3)
        press("Stop selected")
        assert procs["b-running"].wait(60) == 0, (tmp_path / "b-running.log").read_text()[-2000:]
        assert state(runs / "b-running") == "stopped" and (runs / "b-running" / "checkpoint.pt").exists()
        stopped = {**expected, "b-running": "stopped"}
        until(lambda: table() == stopped, f"the table to show {stopped} (shows {table()})", 30, every=0.3)
        message = browser.find_element(By.CSS_SELECTOR, ".content-properties").text
        assert "stop sent to b-running" in message and "a-finished is finished" in message, message
        (event,) = [e for e in read_jsonl(runs / "b-running" / "events.jsonl") if e["name"] == "stop"]
        assert event["source"] == "home" and event["accepted"]
        assert [e["name"] for e in read_jsonl(runs / "b-running" / "events.jsonl")] == ["pause", "resume", "stop"]

        home_pid = int(re.search(r"runs home: env runs for .* \(pid (\d+)\)", server.log_path.read_text()).group(1))
        assert server.stop() == 0
        assert not Path(f"/proc/{home_pid}").exists(), "the runs home outlived its server"
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def test_the_new_run_form_checks_every_field_and_starts_a_run_of_its_own(server, tmp_path):
    """The home's form: each field by the CLI's rule (a bad one is refused and the last good one stays), only
    datasets that need no folder, and Start runs `vae-visdom train` with them in a process of its own whose
    output is in its folder (real MNIST, one epoch)."""
    from vae_visdom.pages.home import ACTION_ROWS, ACTIONS_WIN, HOME_ENV, RunsHome

    runs = tmp_path / "runs"
    home = RunsHome(runs, port=server.port)

    def press(row: str, value="") -> str:
        home.handle({"target": ACTIONS_WIN, "eid": HOME_ENV, "event_type": "PropertyUpdate",
                     "propertyId": ACTION_ROWS.index(row), "value": value})
        return home.message

    assert press("new_lr", "abc").startswith("rejected: lr: 'abc' is not a number")
    assert "needs a data folder" in press("new_dataset", "folder")
    assert press("new_dataset", "cifar").startswith("rejected: dataset")
    assert press("new_batch_size", "0").startswith("rejected: batch_size")
    assert home.form.values == {"dataset": "mnist", "model": "mlp", "lr": "", "batch_size": "", "epochs": "10"}
    assert press("new_epochs", "1") == "new run: epochs = 1; press Start"
    press("new_batch_size", "256")
    said = press("start")
    assert said.startswith("starting mnist-mlp-lr0.001-bs256-"), said
    run = runs / said.split()[1]
    until(lambda: home.message.startswith(f"started {run.name}"), "'started' once past its start-up checks", 120)
    until(lambda: state(run) == "finished", f"the new run to finish ({run / 'train.log'})", 120, every=0.5)
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["dataset"], cfg["model"], cfg["lr"], cfg["batch_size"], cfg["epochs"]) == ("mnist", "mlp", 1e-3, 256, 1)
    assert "Epoch: 1" in (run / "train.log").read_text() and len(read_jsonl(run / "metrics.jsonl")) == 1
    home.close()


def test_the_home_ends_with_a_server_killed_hard(visdom_server_factory):
    """kill -9 of the server gives it no chance to end its child: the home notices its parent is gone and exits
    (it used to go on forever, one per killed server)."""
    srv = visdom_server_factory()
    home_pid = int(until(lambda: re.search(r"runs home: env runs for .* \(pid (\d+)\)", srv.log_path.read_text()),
                         "the home's start in the server log", 20).group(1))
    assert Path(f"/proc/{home_pid}").exists()
    srv.kill()
    until(lambda: not Path(f"/proc/{home_pid}").exists() or "zombie" in _proc_state(home_pid),
          "the home to end after its server was killed", 15, every=0.2)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "gone"


def _home_event(home, row: str, value="") -> str:
    from vae_visdom.pages.home import ACTION_ROWS, ACTIONS_WIN, HOME_ENV

    home.handle({"target": ACTIONS_WIN, "eid": HOME_ENV, "event_type": "PropertyUpdate",
                 "propertyId": ACTION_ROWS.index(row), "value": value})
    return home.message


def test_the_form_checks_the_run_as_train_does_and_says_started_only_when_it_is(tmp_path):
    """conv64 with mnist and a batch larger than the data used to be "started" for a run that exited 2 at once:
    now refused by train's own rules before anything starts; a run that is refused at
    start-up anyway is said with its own line, and its folder goes (real trainer processes)."""
    from vae_visdom.pages.home import RunsHome

    runs = tmp_path / "runs"
    home = RunsHome(runs, port=1)
    assert _home_event(home, "new_model", "conv64").startswith("new run: model = conv64")
    said = _home_event(home, "start")
    assert said == ("rejected: model: model conv64 is built for 64x64 images, the data is 28x28 (1 channel): "
                    "use --model conv"), said
    _home_event(home, "new_dataset", "orl")
    _home_event(home, "new_batch_size", "361")
    assert "rejected: batch_size: 361 larger than the training set (360 examples)" in _home_event(home, "start")
    _home_event(home, "new_dataset", "mnist")
    _home_event(home, "new_model", "mlp")
    _home_event(home, "new_batch_size", "60001")
    assert "larger than the training set (60000 examples)" in _home_event(home, "start")
    assert not runs.exists() or [p.name for p in runs.iterdir() if not p.name.startswith(".")] == []
    # what train refuses at start-up anyway (here: the port it is handed) is said, not "started"
    _home_event(home, "new_batch_size", "128")
    home.port = home.form.port = 0
    said = _home_event(home, "start")
    assert said.startswith("starting mnist-mlp-"), said
    name = said.split()[1]
    until(lambda: home.message.startswith("not started"), "the refusal", 60)
    assert home.message.startswith(f"not started: {name} refused at once: vae-visdom train: error: argument --port"), \
        home.message
    assert not (runs / name).exists()
    home.close()


def test_the_form_refuses_past_the_limit_also_after_the_server_and_its_home_restart(visdom_server_factory, tmp_path):
    """The form's "at most 2" lived in the home's memory: a restart reset it (3 form-started trainers ran at
    once). Now one limit, `serve --max-page-runs`, counted from the runs that really run.
    The exact websocket messages the page sends; a real server, its home, a real MNIST trainer."""
    import websocket

    from vae_visdom.pages.home import ACTION_ROWS, ACTIONS_WIN
    from vae_visdom.runs import page_runs

    runs = tmp_path / "runs"
    server = visdom_server_factory(args=["--runs-dir", str(runs), "--max-page-runs", "1"])

    def message() -> str:
        try:
            rows = window_data(server, "runs")[ACTIONS_WIN]["content"]
        except (KeyError, TypeError, ValueError):
            return ""
        return rows[ACTION_ROWS.index("message")]["name"]

    def press(row: str, value="") -> None:
        ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/socket", timeout=5)
        ws.send(json.dumps({"cmd": "forward_to_vis", "data": {
            "target": ACTIONS_WIN, "eid": "runs", "event_type": "PropertyUpdate",
            "propertyId": ACTION_ROWS.index(row), "value": value}}))
        ws.close()

    until(lambda: message(), "the home's actions pane", 30)
    pids = []
    try:
        press("new_epochs", "1000")
        until(lambda: "epochs = 1000" in message(), "the epochs edit", 20, every=0.2)
        press("start")
        until(lambda: message().startswith("message: started mnist-mlp-"), "the first run's start", 120, every=0.3)
        (live,) = page_runs.running(runs)
        pids.append(json.loads((runs / live / page_runs.MARK).read_text())["pid"])
        press("start")
        until(lambda: "not started" in message(), "the refusal", 20, every=0.2)
        assert "1 run(s) started from a page are running (" + live + ")" in message(), message()
        assert "--max-page-runs 1" in message()
        server.stop()
        server.start()
        until(lambda: message(), "the restarted home's actions pane", 30)
        press("start")
        until(lambda: "not started" in message(), "the refusal after a restart", 20, every=0.2)
        assert "--max-page-runs 1" in message() and live in message(), message()
        assert [p.name for p in runs.iterdir() if (p / "config.json").exists()] == [live]  # no second run
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    until(lambda: page_runs.running(runs) == [], "the killed run to stop counting", 20)


def test_a_long_run_name_leaves_every_control_of_the_home_inside_its_pane(visdom_server_factory, browser, tmp_path):
    """A legal 68-character run name without hyphens pushed all 14 controls of the home out of view; a
    100-character one must not either."""
    from selenium.webdriver.common.by import By

    from tests.test_panel import controls_outside

    runs = tmp_path / "runs"
    names = ["r" * 68, "A" + "b" * 99]
    for name in names:
        (runs / name).mkdir(parents=True)
        (runs / name / "config.json").write_text(json.dumps({"name": name, "epochs": 2, "dataset": "mnist"}))
    server = visdom_server_factory(args=["--runs-dir", str(runs)])
    until(lambda: len(window_data(server, "runs")) == 2, "the home's panes", 60, every=0.3)
    browser.get(f"{server.url}/env/runs")
    wait_for(browser, ".content-properties", timeout=30)
    until(lambda: all(n in browser.find_element(By.CSS_SELECTOR, ".content-properties").text for n in names),
          "the home's rows of both runs", 60, every=0.3)
    out = controls_outside(browser)
    assert out.startswith("0/") and int(out.split("/")[1].split()[0]) >= 14, out


def test_a_deleted_runs_row_goes_and_a_click_on_a_list_that_moved_is_refused(tmp_path, monkeypatch):
    """Checkbox rows were append-only, so a deleted run's row stayed until the home restarted. Now it goes;
    the rows after it move up, so a click by index on the list the page showed before the
    move names no run (it is refused, never redirected to the run now at that index), until that list is old."""
    import shutil

    from vae_visdom.pages import home as home_module
    from vae_visdom.pages.home import ACTION_ROWS, ACTIONS_WIN, HOME_ENV, RunsHome

    runs = tmp_path / "runs"
    for name in ("x", "y", "z"):
        (runs / name).mkdir(parents=True)
        (runs / name / "config.json").write_text(json.dumps({"name": name, "epochs": 2, "port": 1}))
    home = RunsHome(runs, port=1)
    home.scan()
    shown = [r["name"] for r in home.actions.full(HOME_ENV)[1]["data"][0]["content"]][len(ACTION_ROWS):]
    assert shown == home.order and len(shown) == 3

    def tick(i: int) -> None:
        home.handle({"target": ACTIONS_WIN, "eid": HOME_ENV, "event_type": "PropertyUpdate",
                     "propertyId": len(ACTION_ROWS) + i, "value": True})

    gone = shown[1]
    shutil.rmtree(runs / gone)
    home.scan()
    after = [r["name"] for r in home.actions.full(HOME_ENV)[1]["data"][0]["content"]][len(ACTION_ROWS):]
    assert after == [n for n in shown if n != gone]  # the deleted run's row is gone
    tick(1)  # row 1 of the list the page may still show was the deleted run: not the run there now
    assert home.selected == set() and "changed" in home.message, home.message
    tick(0)  # a row both lists agree on
    assert home.selected == {shown[0]}
    now = home_module.time.monotonic()
    monkeypatch.setattr(home_module.time, "monotonic", lambda: now + home_module.RECENT_S + 1)
    tick(1)  # the old list is long gone from every page: the index is the current list's
    assert home.selected == {shown[0], after[1]}


def test_an_empty_lr_or_batch_size_in_the_form_is_the_models_own_default(tmp_path):
    """The form used to pass --lr 1e-3 --batch-size 128 always, overriding conv64's batch 16: an empty field
    is now the model's default (models/specs.py), and only the fields typed reach the command line."""
    from vae_visdom.models import MODEL_SPECS
    from vae_visdom.pages.home import RunsHome

    home = RunsHome(tmp_path / "runs", port=1)
    assert (home.form.values["lr"], home.form.values["batch_size"]) == ("", "")
    _home_event(home, "new_dataset", "orl")
    _home_event(home, "new_model", "conv64")
    cfg = home.form.checked()
    orl = MODEL_SPECS["conv64"].defaults_for("orl")
    assert (cfg.lr, cfg.batch_size, cfg.likelihood) == (orl["lr"], orl["batch_size"], "gaussian") \
        == (1e-3, 16, "gaussian")
    assert home.form.flags() == ["--dataset", "orl", "--model", "conv64", "--epochs", "10"]
    assert _home_event(home, "new_batch_size", "32") == "new run: batch_size = 32; press Start"
    assert home.form.checked().batch_size == 32 and "--batch-size" in home.form.flags()
    assert _home_event(home, "new_batch_size", "") == "new run: batch_size = the model's default (16); press Start"
    assert home.form.checked().batch_size == 16
    home.close()
