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


def _panel_hears(page, server, env: str, win: str) -> bool:
    """Whether the run's monitor has its event socket up: a click on the message row's Clear empties the row
    only when the trainer's side heard it (a command sent before that would be lost)."""
    page(win, env, "message", "Clear")
    time.sleep(0.3)
    return _rows(server, env, win).get("message", {}).get("name", "").strip() == "message:"


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

        _wait("the panel's socket", lambda: _panel_hears(page, server, env, win), proc, 30)
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


LOSSES = ("epoch", "step", "train_loss", "train_recon", "train_kl", "test_loss", "test_recon", "test_kl", "lr",
          "batch_size", "beta")


def test_a_run_steered_live_replays_bit_for_bit_with_steer_like(tmp_path, server, page):
    """Pause, lr and beta while paused, a batch size mid-epoch, then epochs and log_interval in epoch 2, all
    from the page; `train --steer-like` re-applies them at the same epoch and step: the same rows exactly."""
    orig, env = tmp_path / "orig", "orig-steer"
    flags = ("--epochs", "3", "--seed", "3", *MNIST_SMALL)
    proc = subprocess.Popen([sys.executable, "-m", "vae_visdom", "train", "--out", str(orig), "--env", env,
                             "--port", str(server.port), *flags],
                            env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    win = f"{window_prefix(env, orig)}-control"

    def last_step() -> int:
        rows = _jsonl(orig / "steps.jsonl") if (orig / "steps.jsonl").exists() else []
        return rows[-1]["step"] if rows else 0

    try:
        _wait("the panel's socket", lambda: _panel_hears(page, server, env, win), proc)
        page(win, env, "status", "Pause")
        _wait("the pause", lambda: "paused" in _rows(server, env, win).get("status", {}).get("name", ""), proc, 30)
        page(win, env, "lr", "3e-4")
        page(win, env, "beta", "0.5")
        _wait("beta shown", lambda: _rows(server, env, win).get("beta", {}).get("value", "").strip() == "0.5",
              proc, 30)
        changed_at = next(e["step"] for e in _jsonl(orig / "events.jsonl") if e["name"] == "lr")
        page(win, env, "status", "Resume")
        # past the step lr and beta were set at (a loaded machine pauses late): the batch size is a later change
        _wait("steps after the resume", lambda: last_step() >= changed_at + 10, proc)
        page(win, env, "batch_size", "256")
        _wait("epoch 1's row", lambda: (orig / "metrics.jsonl").exists(), proc)
        page(win, env, "epochs", "4")
        page(win, env, "log_interval", "3")
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    live = [e for e in _jsonl(orig / "events.jsonl") if e["name"] not in ("pause", "resume")]
    assert [(e["name"], e["accepted"], e["source"]) for e in live] == [
        ("lr", True, "panel"), ("beta", True, "panel"), ("batch_size", True, "panel"), ("epochs", True, "panel"),
        ("log_interval", True, "panel")], live
    assert [r["epoch"] for r in _jsonl(orig / "metrics.jsonl")] == [1, 2, 3, 4]

    shown = subprocess.run([sys.executable, "-m", "vae_visdom", "runs", "--steering", str(orig)], env=CHILD_ENV,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    lines = [ln for ln in shown.stdout.splitlines() if ln and not ln.startswith("#")]
    # one line per (epoch, step) the changes landed at, in order: which changes share a step depends on when the
    # page's clicks arrived (a loaded machine paused at epoch 1's last step once), the lines' form does not
    typed = {"lr": "0.0003", "beta": "0.5", "batch_size": "256", "epochs": "4", "log_interval": "3"}
    at: dict[tuple[int, int], list[str]] = {}
    for ev in live:
        at.setdefault((ev["epoch"], ev["step"]), []).append(f"{ev['name']}={typed[ev['name']]}")
    assert lines == [f"epoch {ep} step {st}: {' '.join(names)}" for (ep, st), names in at.items()], shown.stdout
    assert lines[0].endswith(": lr=0.0003 beta=0.5"), shown.stdout  # set together while paused

    replay = tmp_path / "replay"
    done = subprocess.run([sys.executable, "-m", "vae_visdom", "train", "--steer-like", str(orig), "--out",
                           str(replay), "--env", "replay-steer", "--port", str(server.port)], env=CHILD_ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "warning" not in done.stderr, done.stderr[-3000:]
    a, b = _jsonl(orig / "metrics.jsonl"), _jsonl(replay / "metrics.jsonl")
    assert [{k: r[k] for k in LOSSES} for r in b] == [{k: r[k] for k in LOSSES} for r in a]
    assert _jsonl(replay / "steps.jsonl") == _jsonl(orig / "steps.jsonl")  # every field, bit for bit
    planned = [e for e in _jsonl(replay / "events.jsonl")]
    assert [(p["epoch"], p["step"], p["name"], p["value"], p["accepted"], p["source"]) for p in planned] == [
        (ev["epoch"], ev["step"], ev["name"], ev["value"], True, "planned") for ev in live]
    assert (replay / "steering.txt").read_text().splitlines()[1:] == shown.stdout.splitlines()[1:]
    cfg_a, cfg_b = (json.loads((d / "config.json").read_text()) for d in (orig, replay))
    assert {k: v for k, v in cfg_b.items() if k not in ("name", "out", "env")} == \
        {k: v for k, v in cfg_a.items() if k not in ("name", "out", "env")}
    loss = window_data(server, "replay-steer")[f"{window_prefix('replay-steer', replay)}-loss"]["content"]["data"]
    marks = next(t for t in loss if t["name"] == "changes")["text"]  # on the loss plot: planned, not live
    assert marks[:2] == ["planned: lr 0.001 -> 0.0003", "planned: beta 1 -> 0.5"], marks
    assert len(marks) == 5 and all(m.startswith("planned: ") for m in marks), marks


def test_a_steering_file_reads_back_what_it_says_and_a_bad_line_is_one_line(tmp_path):
    from vae_visdom.config import ConfigError
    from vae_visdom.train.steering import Change, format_steering, parse_steering
    text = "# lowered by hand\nstep 3120: lr=3e-4\nepoch 2 step 118: bs=64, beta=2  # after the warm-up\n"
    changes = parse_steering(text)
    assert changes == [Change(118, {"batch_size": 64, "beta": 2.0}, 2), Change(3120, {"lr": 3e-4})]
    assert parse_steering(format_steering(changes, "again")) == changes
    with pytest.raises(ConfigError, match="line 2"):
        parse_steering("step 1: lr=1e-3\nstep 2: momentum=0.9")
    bad = tmp_path / "bad.txt"
    bad.write_text("step 10: lr=-1\n")
    proc = subprocess.run([sys.executable, "-m", "vae_visdom", "train", "--steering", str(bad), "--no-visdom",
                           "--out", str(tmp_path / "never")], env=CHILD_ENV, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0 and "line 1" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_run_steered_then_resumed_with_flags_replays_bit_for_bit(tmp_path):
    """The steering a run had is more than its panel: a change made during the run (here from a schedule, the
    controller's door as the panel's) and the values given with `--resume` both go into the replay, and the
    replay starts from the values the run started with, not those config.json says it continued with."""
    orig, replay = tmp_path / "orig", tmp_path / "replay"
    plan = tmp_path / "plan.txt"
    plan.write_text("epoch 1 step 600: lr=5e-4\n")

    def train(*args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "vae_visdom", "train", "--no-visdom", "--no-views", *args],
                              env=CHILD_ENV, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    train("--out", str(orig), "--epochs", "2", "--batch-size", "100", "--log-interval", "50", "--steering", str(plan))
    train("--resume", str(orig), "--epochs", "3", "--lr", "2e-4", "--batch-size", "150")
    cfg = json.loads((orig / "config.json").read_text())
    assert (cfg["lr"], cfg["batch_size"], cfg["epochs"]) == (2e-4, 150, 3)  # what it continued with
    train("--steer-like", str(orig), "--out", str(replay))
    a, b = _jsonl(orig / "metrics.jsonl"), _jsonl(replay / "metrics.jsonl")
    assert [r["epoch"] for r in b] == [1, 2, 3] and [r["batch_size"] for r in b] == [100, 100, 150]
    assert [{k: r[k] for k in LOSSES} for r in b] == [{k: r[k] for k in LOSSES} for r in a]
    assert _jsonl(replay / "steps.jsonl") == _jsonl(orig / "steps.jsonl")
    sources = [(e["name"], e["source"]) for e in _jsonl(orig / "events.jsonl") if e["accepted"]]
    assert sources[0] == ("lr", "planned")
    assert sorted(sources[1:]) == [("batch_size", "resume flags"), ("epochs", "resume flags"), ("lr", "resume flags")]
