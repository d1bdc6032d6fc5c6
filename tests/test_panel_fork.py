"""Fork from the panel: the values a fork changes are checked like any panel value, and a Fork pressed in
the real page (headless Chromium) starts a training process of its own from the parent's state at that
step, streaming to its own env, while the parent goes on; the family env shows both (real MNIST)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.fixtures import REPO, screenshot, until, wait_for
from tests.test_e2e_browser import keep_for_docs
from tests.test_monitor import window_data
from vae_visdom.config import ConfigError
from vae_visdom.pages.compare import TITLES as CMP_TITLES
from vae_visdom.runs.files import read_jsonl
from vae_visdom.runs.fork import FORK, FORK_OFFER, parse_fork
from vae_visdom.train.controller import Controller


def test_what_a_fork_changes_is_checked_by_the_rules_of_every_value():
    ctx = {"n_train": 1000}
    assert parse_fork("lr=3e-4, bs=64  epochs=5 beta=2", ctx) == {"lr": 3e-4, "batch_size": 64, "epochs": 5,
                                                                  "beta": 2.0}
    assert parse_fork("", ctx) == {} and parse_fork(None, ctx) == {}
    for bad, said in [("lr=abc", "not a number"), ("lr", "not name=value"), ("seed=3", "cannot be changed"),
                      ("batch_size=5000", "batch_size"), ("beta=-1", "beta"), ("lr=", "not name=value")]:
        with pytest.raises(ConfigError, match=said):
            parse_fork(bad, ctx)
    ctl = Controller(n_train=1000)
    assert "unknown command 'fork'" in ctl.submit("fork", "").message  # nobody here offers to carry it out
    ctl.offer(FORK, FORK_OFFER)  # what runs/fork.py's ForkLauncher does when the session adds it
    cmd = ctl.submit("fork", "lr=nan")
    assert not cmd.accepted and cmd.message.startswith("rejected: lr")
    cmd = ctl.submit("fork", "lr=1e-4")
    assert cmd.accepted and cmd.value == {"lr": 1e-4} and "fork with lr=0.0001" in cmd.message
    ctl.refuse(FORK, "a run of 2 processes forks from the command line")
    assert "2 processes" in ctl.submit("fork", "").message


def _control(browser):
    from selenium.webdriver.common.by import By

    pane = wait_for(browser, ".content-properties")[0]  # the control panel comes first in a run's page
    return pane, pane.find_elements(By.TAG_NAME, "button"), pane.find_elements(By.TAG_NAME, "input")


def _status_row(browser) -> str:
    try:
        return _control(browser)[0].text
    except Exception:  # redrawn under our feet: ask again
        return ""


def test_fork_pressed_in_the_page_starts_a_run_of_its_own_and_the_parent_goes_on(server, browser, tmp_path):
    from selenium.webdriver.common.keys import Keys

    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "vae_visdom", "train", "--runs-dir", str(runs), "--name", "base", "--epochs", "4",
           "--no-views", "--batch-size", "256", "--log-interval", "20", "--port", str(server.port)]
    log = open(tmp_path / "parent.log", "wb")
    parent = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    child = runs / "base-fork1"
    try:
        until(lambda: (runs / "base" / "status.json").exists() and window_data(server, "base"), "the parent's page", 90,
              every=0.2)
        browser.get(f"{server.url}/env/base")
        until(lambda: "epoch 2/4" in _status_row(browser), "the parent's second epoch", 90, every=0.2)
        _control(browser)[1][0].click()  # Pause: the fork then takes the state the page shows
        until(lambda: "status: paused" in _status_row(browser), "the pause", 30, every=0.1)
        fork_with = _control(browser)[2][5]  # lr, batch_size, epochs, log_interval, beta, fork with
        fork_with.click()
        fork_with.send_keys("lr=nope", Keys.ENTER)
        until(lambda: "rejected: lr: 'nope' is not a number" in _status_row(browser), "the refusal", 20, every=0.1)
        _control(browser)[1][2].click()  # Fork with a bad value: refused, nothing starts
        until(lambda: "rejected: lr" in _status_row(browser), "the refused fork", 20, every=0.1)
        fork_with = _control(browser)[2][5]
        fork_with.click()
        fork_with.send_keys(Keys.CONTROL, "a")
        fork_with.send_keys("lr=3e-4", Keys.ENTER)
        until(lambda: "press Fork" in _status_row(browser), "the fork values' verdict", 20, every=0.1)
        assert not child.exists()
        _control(browser)[1][2].click()  # Fork
        until(lambda: "forked as base-fork1" in _status_row(browser), "the fork's verdict", 60, every=0.2)
        keep_for_docs(screenshot(browser, tmp_path / "panel_fork.png"), "panel_fork.png")
        _control(browser)[1][0].click()  # Resume the parent
        assert parent.wait(180) == 0
        until(lambda: json.loads((child / "status.json").read_text()).get("state") == "finished"
              if (child / "status.json").exists() else False, "the fork to finish", 180, every=0.5)
    finally:
        if parent.poll() is None:
            parent.kill()
    cfg = json.loads((child / "config.json").read_text())
    base_rows, fork_rows = read_jsonl(runs / "base" / "metrics.jsonl"), read_jsonl(child / "metrics.jsonl")
    at = cfg["forked_at"]
    k = at["epoch"]  # epochs complete when the pause landed (1, unless this machine was slow to click)
    assert cfg["parent"] == str(runs / "base") and k >= 1 and at["step"] > base_rows[k - 1]["step"]
    assert [r["epoch"] for r in base_rows] == [1, 2, 3, 4] and {r["lr"] for r in base_rows} == {1e-3}  # undisturbed
    # its history, then its own
    assert [r["epoch"] for r in fork_rows] == [1, 2, 3, 4] and fork_rows[:k] == base_rows[:k]
    assert fork_rows[k]["lr"] == 3e-4 and fork_rows[k]["test_loss"] != base_rows[k]["test_loss"]
    assert "Epoch: 4" in (child / "train.log").read_text()  # the child's own output, in its folder
    events = [e for e in read_jsonl(runs / "base" / "events.jsonl") if e["name"] == "fork"]
    assert [e["accepted"] for e in events] == [False, True] and events[1]["value"]["env"] == "base-fork1"
    # the fork streams to its own env, and the family env holds both runs
    assert json.loads(server.client("base-fork1", use_incoming_socket=False).get_window_data(env="base-fork1"))
    family = json.loads(server.client("compare-base", use_incoming_socket=False).get_window_data(env="compare-base"))
    per_epoch = next(p for p in family.values() if p["title"] == CMP_TITLES["epochs"])
    assert len([t for t in per_epoch["content"]["data"] if t["name"].endswith(" test")]) == 2
    (mark,) = [t for t in per_epoch["content"]["data"] if t["name"] == "fork points"]  # where the fork left
    assert mark["x"] == [k] and mark["y"] == [base_rows[k - 1]["test_loss"]] and "base-fork1" in mark["text"][0]


def test_fork_pressed_again_and_again_starts_at_most_the_servers_limit(visdom_server_factory, browser, tmp_path):
    """5 presses of Fork in 1.5 s gave 5 trainers. Now a fork takes a place under the one
    limit for runs a page starts (`serve --max-page-runs 2`), counted from what really runs; the presses past
    it are refused in the panel, and a fork of a fork counts against the same places."""
    from tests.test_home import image_folder, trainer
    from vae_visdom.runs import page_runs

    runs, data = tmp_path / "runs", image_folder(tmp_path / "images")
    runs.mkdir()
    server = visdom_server_factory(args=["--runs-dir", str(runs), "--max-page-runs", "2", "--no-home"])
    parent = trainer(runs, "base", data, server.port, 100000, visdom=True)
    try:
        until(lambda: window_data(server, "base"), "the parent's page", 90, every=0.2)
        browser.get(f"{server.url}/env/base")
        until(lambda: "status: running" in _status_row(browser), "the running parent", 90, every=0.2)
        for _ in range(5):
            for _attempt in range(20):  # the pane is redrawn under the click now and then
                try:
                    _control(browser)[1][2].click()  # Fork
                    break
                except Exception:
                    time.sleep(0.05)
            time.sleep(0.25)
        def forks() -> list[dict]:
            return [e for e in read_jsonl(runs / "base" / "events.jsonl") if e["name"] == "fork"]

        until(lambda: len(forks()) == 5, "the five presses' verdicts", 90, every=0.3)
        assert [e["accepted"] for e in forks()] == [True, True, False, False, False], forks()
        refused = forks()[-1]["message"]
        assert refused.startswith("fork refused: 2 run(s) started from a page are running (base-fork1, base-fork2)")
        assert "--max-page-runs 2" in refused
        until(lambda: "fork refused" in _status_row(browser), "the refusal in the panel", 20, every=0.2)
        assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == ["base", "base-fork1", "base-fork2"]
        assert page_runs.running(runs) == ["base-fork1", "base-fork2"]
        # a fork of a fork takes a place too: none is left
        until(lambda: window_data(server, "base-fork1"), "the fork's own page", 120, every=0.5)
        browser.get(f"{server.url}/env/base-fork1")
        until(lambda: "status: running" in _status_row(browser), "the running fork", 90, every=0.2)
        _control(browser)[1][2].click()
        until(lambda: "fork refused: 2 run(s)" in _status_row(browser), "the fork's own refusal", 60, every=0.2)
        assert not (runs / "base-fork1-fork1").exists()
    finally:
        parent.kill()
        for mark in runs.glob(f"*/{page_runs.MARK}"):
            try:
                os.kill(json.loads(mark.read_text())["pid"], 9)
            except ProcessLookupError:
                pass
