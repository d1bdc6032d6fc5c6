"""Runs side by side: the `runs` listing, comparison envs, visdom's own compare view, and a run
killed with SIGKILL mid-epoch that resumes from its checkpoint without duplicated points."""
from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.builders import make_session
from tests.conftest import synthetic_data
from vae_visdom.cli import main
from vae_visdom.monitor import TITLES
from vae_visdom.pages.compare import TITLES as CMP_TITLES
from vae_visdom.pages.compare import build_comparison
from vae_visdom.runs.files import read_jsonl
from vae_visdom.runs.records import load_run

REPO = Path(__file__).resolve().parents[1]
# two runs that differ in lr and batch size; names share the prefix "cmp-", so legends say "a (...)", "b (...)"
RUNS = {"cmp-a": dict(lr=1e-3, batch_size=64), "cmp-b": dict(lr=3e-4, batch_size=128)}
LABELS = {"cmp-a": "a (lr=1e-3 bs=64)", "cmp-b": "b (lr=3e-4 bs=128)"}


@pytest.fixture(scope="module")
def runs_dir(server, tmp_path_factory) -> Path:
    """Two short runs (2 epochs of small synthetic images), streamed to their own envs on `server`."""
    root = tmp_path_factory.mktemp("runs")
    for seed, (name, hp) in enumerate(RUNS.items()):
        session = make_session(server=server, data=synthetic_data(seed=seed), name=name, runs_dir=str(root),
                               epochs=2, log_interval=2, **hp)
        assert session.run().state == "finished"
    return root


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def panes(server, env: str) -> dict:
    return json.loads(server.client(env, use_incoming_socket=False).get_window_data(env=env))


def by_title(p: dict) -> dict:
    return {pane["title"]: pane for pane in p.values()}


def traces(pane: dict) -> dict[str, dict]:
    return {t["name"]: t for t in pane["content"]["data"]}


def test_runs_lists_every_run_with_its_status_epochs_and_losses(runs_dir, capsys):
    assert main(["runs", "--runs-dir", str(runs_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["NAME", "STATUS", "EPOCHS", "BEST"]
    for name, hp in RUNS.items():
        rows = metrics(runs_dir / name)
        best = min(rows, key=lambda r: r["test_loss"])
        line = next(ln for ln in lines if ln.startswith(name + " "))
        fields = line.split()
        assert fields[1:3] == ["finished", "2/2"]
        assert f"{best['test_loss']:.2f} (ep {best['epoch']})" in line
        assert fields[6] == f"{rows[-1]['test_loss']:.2f}"  # after "BEST (ep N)"
        assert fields[7:13] == ["mlp", "mnist", {1e-3: "1e-3", 3e-4: "3e-4"}[hp["lr"]], str(hp["batch_size"]),
                                "adam", "20"]

    assert main(["runs", "--runs-dir", str(runs_dir), "--json"]) == 0
    listed = {d["name"]: d for d in map(json.loads, capsys.readouterr().out.splitlines())}
    assert set(listed) == set(RUNS)
    for name, d in listed.items():
        rows = metrics(runs_dir / name)
        assert (d["epochs_done"], d["epochs_total"], d["state"]) == (2, 2, "finished")
        assert d["best"]["test_loss"] == min(r["test_loss"] for r in rows)
        assert d["last"] == rows[-1]
        assert d["hyperparameters"]["lr"] == RUNS[name]["lr"]


def test_a_run_whose_process_vanished_shows_its_status_and_last_update(runs_dir, tmp_path, capsys):
    import shutil

    dead = tmp_path / "runs" / "dead"
    shutil.copytree(runs_dir / "cmp-a", dead)
    status = json.loads((dead / "status.json").read_text())
    (dead / "status.json").write_text(json.dumps({**status, "state": "running"}))
    two_hours_ago = time.time() - 7200
    for p in dead.iterdir():
        os.utime(p, (two_hours_ago, two_hours_ago))
    assert main(["runs", "--runs-dir", str(tmp_path / "runs")]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("cmp-a "))
    assert " running " in line and line.endswith("2 h ago")
    assert load_run(dead).updated == pytest.approx(two_hours_ago, abs=1)


def test_comparison_env_overlays_the_runs_with_labelled_legends(runs_dir, server):
    records = [load_run(runs_dir / name) for name in RUNS]
    done = build_comparison(records, server.client("cmp-api", use_incoming_socket=False), env="cmp-api")
    got = panes(server, "cmp-api")
    assert set(got) == set(done.windows.values())
    titled = by_title(got)
    assert set(titled) == set(CMP_TITLES.values())

    per_epoch = traces(titled[CMP_TITLES["epochs"]])
    assert set(per_epoch) == {f"{LABELS[n]} {split}" for n in RUNS for split in ("train", "test")}
    for name in RUNS:
        rows = metrics(runs_dir / name)
        for split in ("train", "test"):
            t = per_epoch[f"{LABELS[name]} {split}"]
            assert t["x"] == [1, 2] and t["y"] == pytest.approx([r[f"{split}_loss"] for r in rows])
    per_step = traces(titled[CMP_TITLES["steps"]])
    assert {n: len(per_step[LABELS[n]]["x"]) for n in RUNS} == {
        n: len(read_jsonl(runs_dir / n / "steps.jsonl")) for n in RUNS}

    best = min(RUNS, key=lambda n: min(r["test_loss"] for r in metrics(runs_dir / n)))
    assert done.best == best
    table = titled[CMP_TITLES["table"]]["content"]
    best_row = next(row for row in table.split("<tr")[1:] if f">{best}</a>" in row)
    assert "best" in best_row and all(f">{n}</a>" in table for n in RUNS)

    from PIL import Image

    src = titled[CMP_TITLES["samples"]]["content"]["src"]
    w, h = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).size
    assert w >= 2 * 242 and h >= 242  # two 8x8 grids of 28 px images side by side


def test_compare_command_builds_the_env_from_a_name_prefix(runs_dir, server, capsys):
    assert main(["compare", "cmp-", "--runs-dir", str(runs_dir), "--port", str(server.port)]) == 0
    out = capsys.readouterr().out
    assert "/env/compare-a_b" in out
    got = by_title(panes(server, "compare-a_b"))
    assert len(traces(got[CMP_TITLES["epochs"]])) == 2 * len(RUNS)
    assert main(["compare", "no-such-run", "--runs-dir", str(runs_dir), "--port", str(server.port)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no-such-run" in err and "\n" not in err


def _run_envs() -> list[str]:
    return sorted(RUNS)  # each run's env is its name; visdom 0.2.4 merges right only in sorted order


def test_visdom_compare_view_merges_the_runs_envs_by_title(runs_dir, server):
    """What the /compare/A+B page receives: the server merges plots with equal titles across envs."""
    import websocket

    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/socket", timeout=10)
    try:
        sid = None
        while sid is None:
            msg = json.loads(ws.recv())
            sid = msg["data"] if msg.get("command") == "register" else None
        req = urllib.request.Request(f"{server.url}/compare/{'+'.join(_run_envs())}", method="POST",
                                     data=json.dumps({"sid": sid}).encode())
        urllib.request.urlopen(req, timeout=10).read()
        windows = []
        while True:
            msg = json.loads(ws.recv())
            if msg.get("command") == "layout":
                break
            if msg.get("command") == "window":
                windows.append(msg)
    finally:
        ws.close()
    merged = {w["title"]: w for w in windows if w.get("type") == "plot"}
    assert {TITLES["loss"], TITLES["terms"]} <= set(merged)  # and any other plot both runs have
    loss = traces(merged[TITLES["loss"]])
    for i, name in enumerate(_run_envs()):
        rows = metrics(runs_dir / name)
        assert loss[f"{i}_test"]["y"] == pytest.approx([r["test_loss"] for r in rows])
        assert loss[f"{i}_train"]["x"] == [1, 2]
        assert len(loss[f"{i}_train (every log interval)"]["x"]) == len(read_jsonl(runs_dir / name / "steps.jsonl"))


@pytest.mark.browser
def test_visdom_compare_page_shows_the_merged_curves(runs_dir, server, browser):
    from tests.fixtures import wait_for

    url = f"{server.url}/compare/{'+'.join(reversed(_run_envs()))}"  # any order: the server sorts them
    assert urllib.request.urlopen(url, timeout=10).status == 200
    browser.get(url)
    wait_for(browser, ".js-plotly-plot", min_count=2)
    deadline = time.monotonic() + 20
    names: set[str] = set()
    while time.monotonic() < deadline and not {"0_test", "1_test"} <= names:
        names = {e.text for e in browser.find_elements("css selector", ".legendtext")}
        time.sleep(0.2)
    assert {"0_train", "0_test", "1_train", "1_test"} <= names


def _train(*args: str, log: Path) -> subprocess.Popen:
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", "vae_visdom", "train", *args], cwd=REPO, stdout=f,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})


def _wait(proc: subprocess.Popen, until, what: str, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{what}: not reached (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
        time.sleep(0.02)


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_without_duplicated_points(visdom_server, tmp_path):
    run_dir, log = tmp_path / "crash", tmp_path / "train.log"
    common = ["--port", str(visdom_server.port)]
    proc = _train("--dataset", "mnist", "--epochs", "3", "--batch-size", "512", "--out", str(run_dir), *common,
                  log=log)
    _wait(proc, lambda: any(r["epoch"] == 2 for r in read_jsonl(run_dir / "steps.jsonl")), "mid-epoch 2", log)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1]
    assert load_run(run_dir).status["state"] == "running"  # it could not say otherwise,
    assert load_run(run_dir).state == "crashed"  # but its trainer.lock is free and its pid gone

    proc = _train("--resume", str(run_dir), log=log)
    assert proc.wait(300) == 0, log.read_text()[-3000:]

    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    steps = [r["step"] for r in read_jsonl(run_dir / "steps.jsonl")]
    per_epoch, interval = rows[0]["step"], 10  # steps per epoch; the default log interval
    expected = sorted({(e - 1) * per_epoch + k for e in (1, 2, 3)
                       for k in [*range(interval, per_epoch + 1, interval), per_epoch]})
    assert steps == expected  # strictly increasing: nothing twice, nothing missing
    assert [r["step"] for r in rows] == [per_epoch, 2 * per_epoch, 3 * per_epoch]
    assert load_run(run_dir).state == "finished"

    loss = traces(by_title(panes(visdom_server, "crash"))[TITLES["loss"]])
    assert loss["train"]["x"] == [1, 2, 3] and loss["test"]["x"] == [1, 2, 3]
    assert loss["test"]["y"] == pytest.approx([r["test_loss"] for r in rows])
    step_rows = read_jsonl(run_dir / "steps.jsonl")
    assert loss["train (every log interval)"]["x"] == pytest.approx([r["epoch_progress"] for r in step_rows])
    assert loss["train (every log interval)"]["y"] == pytest.approx([r["loss"] for r in step_rows])
