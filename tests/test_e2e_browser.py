"""End to end, as a person sees it: the real trainer on real MNIST streams to a real visdom server,
and a real headless Chromium looks at the page and clicks the control panel.

Set VAE_VISDOM_UPDATE_DOCS=1 to copy the screenshots these tests take into docs/img/.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.builders import make_session
from tests.fixtures import screenshot, until, wait_for
from vae_visdom.runs.files import read_jsonl
from vae_visdom.session import TrainingSession

DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"
pytestmark = pytest.mark.browser


def keep_for_docs(shot: Path, name: str) -> None:
    if os.environ.get("VAE_VISDOM_UPDATE_DOCS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, DOCS_IMG / name)


def session_for(server, tmp_path, env: str, mnist, **cfg) -> TrainingSession:
    return make_session(tmp_path / env, server=server, data=mnist, env=env, **cfg)


def window(server, env: str, title: str) -> dict:
    vis = server.client(env, use_incoming_socket=False)
    for data in json.loads(vis.get_window_data(env=env)).values():
        if data.get("title") == title:
            return data
    raise AssertionError(f"no window titled {title!r} in env {env}")


@pytest.mark.slow
def test_a_short_run_shows_curves_reconstructions_and_samples_in_the_page(visdom_server, browser, tmp_path,
                                                                           mnist):
    env = "e2e-live"
    session = session_for(visdom_server, tmp_path, env, mnist, epochs=2, batch_size=256, log_interval=20)
    status = session.run()
    assert status.state == "finished"

    # every window exists with the run's data
    steps = read_jsonl(tmp_path / env / "steps.jsonl")
    rows = read_jsonl(tmp_path / env / "metrics.jsonl")
    loss = {t["name"]: t for t in window(visdom_server, env, "loss")["content"]["data"]}
    assert loss["test"]["y"] == pytest.approx([r["test_loss"] for r in rows])
    assert loss["train"]["x"] == [1, 2]
    assert len(loss["train (every log interval)"]["x"]) == len(steps) > 10
    terms = {t["name"] for t in window(visdom_server, env, "loss terms (recon, KL)")["content"]["data"]}
    assert {"train recon", "test recon", "train KL", "test KL"} <= terms
    for title in ("reconstructions (top: test images, bottom: reconstructions)", "samples from the prior"):
        pane = window(visdom_server, env, title)  # an HTML pane: the PNG grid with its epoch caption
        assert 'src="data:image/png;base64,' in pane["content"] and "epoch 2" in pane["content"]

    # the page and its assets answer, and Chromium draws the plots and the images
    url = f"{visdom_server.url}/env/{env}"
    assert urllib.request.urlopen(url, timeout=10).status == 200
    browser.get(url)
    wait_for(browser, ".js-plotly-plot", min_count=2, timeout=30)
    traces = wait_for(browser, ".js-plotly-plot .scatterlayer .trace", min_count=6, timeout=30)
    assert len(traces) >= 6
    images = until(lambda: [i for i in browser.find_elements("css selector", ".content-image img, img")
                            if browser.execute_script("return arguments[0].naturalWidth", i) > 0],
                   "decoded images in the page")
    assert len(images) >= 2
    browser.set_window_size(1600, 1500)  # room for every pane in the picture
    time.sleep(1.5)
    keep_for_docs(screenshot(browser, tmp_path / "run_live.png"), "run_live.png")


@pytest.mark.slow
def test_pause_bad_lr_good_lr_resume_and_stop_from_the_page(visdom_server, browser, tmp_path, mnist):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    env = "e2e-control"
    session = session_for(visdom_server, tmp_path, env, mnist, epochs=200, batch_size=64, log_interval=5)
    run_dir = tmp_path / env
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("status", session.run()), daemon=True)
    thread.start()
    try:
        n_steps = lambda: len(read_jsonl(run_dir / "steps.jsonl"))  # noqa: E731
        until(lambda: n_steps() >= 3, "training to start")
        browser.get(f"{visdom_server.url}/env/{env}")

        def pane_text() -> str:
            return browser.find_element(By.CSS_SELECTOR, ".content-properties").text

        def button(label: str):
            for b in browser.find_elements(By.CSS_SELECTOR, ".content-properties button"):
                if b.text.strip() == label:
                    return b
            return None

        def lr_input():
            return browser.find_elements(By.CSS_SELECTOR, ".content-properties input")[0]

        def type_into(element, text: str) -> None:
            element.click()
            element.send_keys(Keys.CONTROL, "a")
            element.send_keys(text)
            element.send_keys(Keys.ENTER)

        until(lambda: button("Pause"), "the Pause button", timeout=30).click()
        until(lambda: json.loads((run_dir / "status.json").read_text())["state"] == "paused", "the run to pause")
        until(lambda: "paused" in pane_text(), "the pane to say paused")
        halted_at = n_steps()
        time.sleep(1.5)
        assert n_steps() == halted_at, "steps were logged while paused"

        type_into(lr_input(), "abc")
        until(lambda: "rejected: lr: 'abc' is not a number" in pane_text(), "the refusal in the pane")
        until(lambda: lr_input().get_attribute("value").strip() == "0.001", "the lr in force shown again")
        until(lambda: any(e["name"] == "lr" and not e["accepted"] for e in read_jsonl(run_dir / "events.jsonl")),
              "the refusal in events.jsonl")
        assert session.trainer.lr == 1e-3

        type_into(lr_input(), "3e-4")
        until(lambda: session.trainer.lr == 3e-4, "the trainer to apply lr 3e-4")
        until(lambda: lr_input().get_attribute("value").strip() == "0.0003", "the pane to show lr 0.0003")
        keep_for_docs(screenshot(browser, tmp_path / "control_panel.png"), "control_panel.png")
        assert n_steps() == halted_at  # a change while paused does not resume the run

        button("Resume").click()
        until(lambda: n_steps() > halted_at + 2, "training to go on after Resume")
        until(lambda: read_jsonl(run_dir / "steps.jsonl")[-1]["lr"] == 3e-4, "steps logged with the new lr")

        until(lambda: button("Stop"), "the Stop button").click()
        thread.join(60)
        assert not thread.is_alive()
        assert outcome["status"].state == "stopped"
        assert (run_dir / "checkpoint.pt").exists()
        assert json.loads((run_dir / "status.json").read_text())["state"] == "stopped"
        names = [(e["name"], e["accepted"]) for e in read_jsonl(run_dir / "events.jsonl")]
        assert names == [("pause", True), ("lr", False), ("lr", True), ("resume", True), ("stop", True)], names
        until(lambda: "stopped" in pane_text(), "the pane to say stopped")
    finally:
        session.controller.stop(source="test teardown")
        thread.join(60)
