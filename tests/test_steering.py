"""Steering as a first-class thing: a diverged run with a panel pauses at its last finite state and is steered
on from there; a steered run's changes replay exactly (`train --steer-like`, `--steering FILE`).

Real parts: real `vae-visdom train` processes on real MNIST (a small subset), a real visdom server, and the
page's own door for commands (the websocket message visdom's properties pane sends).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_monitor import window_data
from vae_visdom.monitor.panel import ROWS
from vae_visdom.monitor.windows import window_prefix

REPO = Path(__file__).resolve().parents[1]
CHILD_ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
# all of MNIST, in large batches of a tiny model: 118 steps an epoch, a few seconds each on this CPU
MNIST_SMALL = ("--batch-size", "512", "--hidden-dim", "32", "--latent-dim", "4", "--no-views", "--log-interval", "5")


@pytest.fixture
def page(server):
    """A browser page's websocket: send(win, env, row, value) as visdom's PropertiesPane does."""
    import websocket

    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/socket", timeout=5)

    def send(win: str, env: str, row: str, value) -> None:
        ws.send(json.dumps({"cmd": "forward_to_vis", "data": {
            "target": win, "eid": env, "event_type": "PropertyUpdate", "propertyId": ROWS.index(row),
            "value": value}}))

    yield send
    ws.close()


def _rows(server, env: str, win: str) -> dict[str, dict]:
    try:
        return dict(zip(ROWS, window_data(server, env)[win]["content"]))
    except (KeyError, ValueError):
        return {}


def _wait(what: str, until, proc: subprocess.Popen, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = until()
        if got:
            return got
        if proc.poll() is not None:
            pytest.fail(f"the run ended ({proc.returncode}) before {what}: {proc.stderr.read()[-3000:]}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no {what} within {timeout} s")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_lr_10_with_a_panel_pauses_as_diverged_and_a_lower_lr_with_resume_finishes_finite(tmp_path, server, page):
    run = tmp_path / "lr10"
    env = "lr10-steer"
    proc = subprocess.Popen([sys.executable, "-m", "vae_visdom", "train", "--epochs", "1", "--lr", "10",
                             "--out", str(run), "--env", env, "--port", str(server.port), *MNIST_SMALL,
                             "--batch-size", "64", "--log-interval", "1"],  # lr 10 diverges at batch 64 in steps
                            env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        win = f"{window_prefix(env, run)}-control"

        def diverged_and_paused() -> dict | None:
            rows = _rows(server, env, win)
            status, message = rows.get("status", {}), rows.get("message", {})
            if "paused" in status.get("name", "") and "diverged at epoch" in message.get("name", ""):
                return rows
            return None

        rows = _wait("the panel saying the run paused as diverged", diverged_and_paused, proc)
        said = rows["message"]["name"]
        assert "lr 10 too high?" in said and "Resume" in said and "Stop" in said, said
        assert rows["status"]["value"] == "Resume", rows["status"]
        state = json.loads((run / "status.json").read_text())
        assert state["state"] == "paused" and state["reason"] == "diverged", state
        assert "diverged at epoch" in state["message"]
        _wait("the run pane saying so too", lambda: "diverged at epoch" in json.dumps(
            window_data(server, env).get(f"{window_prefix(env, run)}-run", {}).get("content")), proc, 30)
        # every step logged so far is finite: the run went back to the last of them
        steps = _jsonl(run / "steps.jsonl") if (run / "steps.jsonl").exists() else []
        assert all(math.isfinite(s["loss"]) for s in steps), steps

        page(win, env, "lr", "1e-3")  # the same door the page uses: the lr row, then the Resume button
        _wait("the lr shown as 0.001", lambda: _rows(server, env, win).get("lr", {}).get("value", "").strip()
              == "0.001", proc, 30)
        page(win, env, "status", "Resume")
        # the state after 3 steps at lr 10 has finite weights too large for any lr: it diverges again at once,
        # and the run goes back to its start, saying so; Resume again (lr 0.001 still in force)
        rows = _wait("the second hold", lambda: proc.poll() is not None or (
            "diverged again" in _rows(server, env, win).get("message", {}).get("name", "")
            and _rows(server, env, win)), proc, 60)
        if rows is not True:
            said = rows["message"]["name"]
            assert "back at epoch 0, step 0, the run's start" in said and "lr 0.001 too high?" in said, said
            page(win, env, "status", "Resume")
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    rows = _jsonl(run / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1]
    assert all(math.isfinite(r[k]) for r in rows for k in ("train_loss", "test_loss")), rows
    steps = _jsonl(run / "steps.jsonl")
    assert all(math.isfinite(s["loss"]) for s in steps) and steps[-1]["step"] == rows[-1]["step"] == 938, steps[-3:]
    assert rows[0]["lr"] == 1e-3 and rows[0]["train_loss"] < 300, rows  # trained from a sane state at lr 0.001
    events = _jsonl(run / "events.jsonl")
    assert [e["source"] for e in events if e["name"] == "pause"] in (["divergence"], ["divergence"] * 2), events
    lr = [e for e in events if e["name"] == "lr"]
    assert len(lr) == 1 and lr[0]["accepted"] and lr[0]["value"] == 1e-3, lr
