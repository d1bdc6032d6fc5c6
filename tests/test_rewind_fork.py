"""Rewind and fork from the page: epoch checkpoints are kept by default within a disk budget, and the view
pane, stepped back to epoch E, forks a new run from E's checkpoint (real MNIST, real server, real Chromium,
the fork a training process of its own)."""
from __future__ import annotations

import json
import threading

import pytest
import torch

from tests.builders import make_session
from tests.fixtures import click_in_pane, screenshot, until
from tests.fixtures import pane_text as view_text
from tests.test_e2e_browser import keep_for_docs
from tests.test_epoch_view import PauseAfter
from vae_visdom.config import ConfigError, TrainConfig, parse_value
from vae_visdom.runs.files import read_jsonl
from vae_visdom.runs.fork import parse_fork
from vae_visdom.train import checkpoint
from vae_visdom.train.kept import kept_epochs, kept_path


def test_kept_checkpoints_stay_within_the_budget_newest_first(tmp_path):
    state = {"epoch": 0, "step": 0, "blob": torch.zeros(50_000)}  # ~200 kB a checkpoint
    size = None
    for epoch in range(1, 8):
        checkpoint.save(tmp_path, {**state, "epoch": epoch}, keep=True)
        size = size or kept_path(tmp_path, 1).stat().st_size
        checkpoint.prune_kept(tmp_path, budget_bytes=3 * size + size // 2)
    assert kept_epochs(tmp_path) == [5, 6, 7]  # the newest three fit the budget
    checkpoint.prune_kept(tmp_path, budget_bytes=1)
    assert kept_epochs(tmp_path) == [7]  # the newest is always kept: it is checkpoint.pt itself


def test_the_budget_is_a_setting_with_a_rule():
    assert TrainConfig().checkpoint_budget == 100
    assert parse_value("checkpoint_budget", "0") == 0
    for bad in ("-1", "abc", "1e12"):
        with pytest.raises(ConfigError, match="checkpoint_budget"):
            parse_value("checkpoint_budget", bad)


def test_a_fork_from_an_epoch_is_checked_like_its_values():
    ctx = {"n_train": 1000}
    assert parse_fork("at_epoch=2 lr=1e-4", ctx) == {"at_epoch": 2, "lr": 1e-4}
    for bad in ("at_epoch=0", "at_epoch=x", "at_epoch=1.5"):
        with pytest.raises(ConfigError, match="at_epoch"):
            parse_fork(bad, ctx)


VIEW = "images of epoch"


def click(browser, label: str) -> None:
    click_in_pane(browser, VIEW, label)


def pane_text(browser) -> str:
    return view_text(browser, VIEW)


@pytest.mark.browser
def test_step_back_to_epoch_2_and_fork_from_it_in_the_page(visdom_server, browser, tmp_path):
    runs = tmp_path / "runs"
    session = make_session(runs / "base", server=visdom_server, data=None, env="rewind", epochs=4, subset=6000,
                           batch_size=200, log_interval=10, views=False)
    session.trainer.add_callback(PauseAfter(session.controller, 3))
    thread = threading.Thread(target=session.run, daemon=True)
    thread.start()
    child = runs / "base-fork1"
    try:
        until(lambda: session.trainer.state == "paused", "three epochs and the pause", timeout=180)
        assert kept_epochs(runs / "base") == [1, 2, 3]  # kept by default: a small model
        kept_path(runs / "base", 1).unlink()  # as if the budget had let it go
        browser.get(f"{visdom_server.url}/env/rewind")
        until(lambda: "fork from epoch 3: a new run" in pane_text(browser), "the fork row, following the newest")
        click(browser, "<")
        click(browser, "<")
        until(lambda: "epoch 1 cannot be forked" in pane_text(browser), "why epoch 1 cannot be forked")
        assert "kept: epochs 2-3" in pane_text(browser)
        click(browser, ">")
        until(lambda: "2 of 3" in pane_text(browser), "epoch 2 in the image panes")
        click(browser, "fork from epoch 2")
        until(lambda: "forked as base-fork1 at epoch 2" in pane_text(browser), "the fork's verdict in the pane", 60)
        loss = session.monitor.loss.traces
        marks = list(zip(loss["changes"].x, loss["changes"].y, loss["changes"].text))
        test_at_2 = loss["test"].y[loss["test"].x.index(2)]
        assert marks == [(2, test_at_2, "fork from epoch 2: base-fork1")], marks  # on the parent's plot, at epoch 2
        keep_for_docs(screenshot(browser, tmp_path / "rewind_fork.png"), "rewind_fork.png")
        session.controller.submit("resume", source="test")
        thread.join(timeout=300)
        until(lambda: json.loads((child / "status.json").read_text()).get("state") == "finished"
              if (child / "status.json").exists() else False, "the fork to finish", 300, every=0.5)
    finally:
        if thread.is_alive():
            session.controller.stop(source="test")
            thread.join(timeout=60)
    base_rows, fork_rows = read_jsonl(runs / "base" / "metrics.jsonl"), read_jsonl(child / "metrics.jsonl")
    forked = json.loads((child / "config.json").read_text())
    assert forked["forked_at"] == {"epoch": 2, "step": base_rows[1]["step"]} and forked["parent"] == str(runs / "base")
    assert [r["epoch"] for r in fork_rows] == [1, 2, 3, 4]
    assert fork_rows[:2] == base_rows[:2]  # the parent's history up to epoch 2
    # nothing changed at the fork: epochs 3 and 4 trained again from epoch 2's checkpoint give the parent's numbers
    for key in ("train_loss", "test_loss", "test_recon", "test_kl", "step"):
        assert [r[key] for r in fork_rows[2:]] == [r[key] for r in base_rows[2:]], key
