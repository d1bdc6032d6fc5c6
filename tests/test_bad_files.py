"""Bad files, damaged checkpoints, divergence and failures that are one line.

Real files (a real FIFO made with os.mkfifo), real trainer processes, a real visdom server where
a page is involved. Each test failed before its fix (see docs/security.md, rows 24.5-24.8).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.builders import make_session
from tests.conftest import synthetic_data

REPO = Path(__file__).resolve().parents[1]
CHILD_ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SMALL = dict(epochs=1, log_interval=1, batch_size=32, hidden_dim=32, latent_dim=4, views=False)


def _good_run(root: Path, name: str) -> Path:
    """A real run: one epoch of a tiny MLP on synthetic data, its folder written by the trainer."""
    make_session(root / name, data=synthetic_data(n_train=96, n_test=32), **SMALL).run()
    return root / name


def _bad_runs(root: Path, good: Path) -> dict[str, str]:
    """Copies of the good run, each with one file damaged; name -> the file the row must name."""
    import shutil
    bad = {}
    for name, damage in (("cfg-list", lambda d: (d / "config.json").write_text("[1, 2]")),
                         ("status-many", lambda d: (d / "status.json").write_text('{"epochs": "many"}')),
                         ("metrics-five", lambda d: (d / "metrics.jsonl").open("a").write("5\n")),
                         ("cfg-fifo", lambda d: ((d / "config.json").unlink(), os.mkfifo(d / "config.json")))):
        d = root / name
        shutil.copytree(good, d, ignore=shutil.ignore_patterns("*.pt", "trainer.lock"))
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**cfg, "name": name, "env": name, "out": str(d)}))
        damage(d)
        bad[name] = {"cfg-list": "config.json", "status-many": "status.json", "metrics-five": "metrics.jsonl",
                     "cfg-fifo": "config.json"}[name]
    return bad


@pytest.fixture(scope="module")
def mixed_runs(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("mixed") / "runs"
    good = _good_run(root, "good-a")
    _good_run(root, "good-b")
    return root, _bad_runs(root, good)


def test_runs_lists_every_good_run_and_says_what_is_wrong_with_each_bad_one(mixed_runs):
    """24.5: config.json [1, 2] / status.json {"epochs": "many"} / a metrics line 5 were tracebacks, a FIFO
    as config.json hung `vae-visdom runs` for good."""
    root, bad = mixed_runs
    proc = subprocess.run([sys.executable, "-m", "vae_visdom", "runs", "--runs-dir", str(root)], env=CHILD_ENV,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stdout.splitlines()
    for good in ("good-a", "good-b"):
        row = [ln for ln in lines if ln.startswith(good + " ")]
        assert len(row) == 1 and "finished" in row[0] and "1/1" in row[0], proc.stdout
    for name, file in bad.items():
        row = [ln for ln in lines if ln.startswith(name + " ")]
        assert len(row) == 1, (name, proc.stdout)
        assert file in row[0], (name, row[0])
    fifo = [ln for ln in lines if ln.startswith("cfg-fifo ")][0]
    assert "not a regular file" in fifo, fifo
    proc = subprocess.run([sys.executable, "-m", "vae_visdom", "runs", "--json", "--runs-dir", str(root)],
                          env=CHILD_ENV, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    records = {r["name"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert set(records) == {"good-a", "good-b", *bad}, records.keys()
    assert all(bad[n] in " ".join(records[n]["problems"]) for n in bad), records


def test_the_home_table_lists_every_run_and_names_the_damaged_file(mixed_runs):
    """24.5: the home read every run with load_run; one bad folder left its table empty for all runs,
    and a FIFO hung the home's thread for good. Run in a child with a timeout, so a hang fails."""
    root, bad = mixed_runs
    code = ("import sys, html; from vae_visdom.runs.records import find_runs; "
            "from vae_visdom.pages.home_table import table_html; "
            f"print(table_html(find_runs({str(root)!r}), {str(root)!r}))")
    proc = subprocess.run([sys.executable, "-c", code], env=CHILD_ENV, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr[-2000:]
    page = proc.stdout
    rows = page.split("<tr>")[2:]
    assert len(rows) == 2 + len(bad), page
    for name, file in bad.items():
        row = [r for r in rows if f">{name}<" in r]
        assert len(row) == 1 and file in row[0], (name, page)
    for good in ("good-a", "good-b"):
        row = [r for r in rows if f">{good}<" in r]
        assert len(row) == 1 and "finished" in row[0] and "1/1" in row[0], page


@pytest.mark.slow
def test_resume_of_a_run_with_a_damaged_config_is_one_line_naming_the_file(tmp_path):
    """24.5: --resume of a run whose config.json is [1, 2] was a 23-line traceback."""
    run = _good_run(tmp_path, "run")
    good = (run / "config.json").read_text()
    for text in ("[1, 2]", "{not json", None):
        cfg = run / "config.json"
        cfg.unlink()
        if text is None:
            os.mkfifo(cfg)
        else:
            cfg.write_text(text)
        proc = subprocess.run([sys.executable, "-m", "vae_visdom", "train", "--resume", str(run), "--no-visdom"],
                              env=CHILD_ENV, capture_output=True, text=True, timeout=120)
        err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 2, proc.stderr
        assert len(err) == 1 and "config.json" in err[0] and "Traceback" not in proc.stderr, proc.stderr
        if text == "[1, 2]":  # `train --fork` and `eval` read it through the same reader
            for cmd in (["train", "--fork", str(run), "--no-visdom"], ["eval", str(run)]):
                proc = subprocess.run([sys.executable, "-m", "vae_visdom", *cmd], env=CHILD_ENV, capture_output=True,
                                      text=True, timeout=120)
                err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
                assert proc.returncode != 0 and len(err) == 1 and "config.json" in err[0], (cmd, proc.stderr)
    (run / "config.json").unlink()
    (run / "config.json").write_text(good)
    for name in ("metrics.jsonl", "steps.jsonl"):  # a history file that is a FIFO: never opened either
        rows = (run / name).read_text()
        (run / name).unlink()
        os.mkfifo(run / name)
        proc = subprocess.run([sys.executable, "-m", "vae_visdom", "train", "--resume", str(run), "--no-visdom"],
                              env=CHILD_ENV, capture_output=True, text=True, timeout=120)
        err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 2 and len(err) == 1 and name in err[0], proc.stderr
        (run / name).unlink()
        (run / name).write_text(rows)


# -- 24.6: a damaged checkpoint is detected, never trained on ----------------------------------------------

def _train_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vae_visdom", "train", "--no-visdom", *args], env=CHILD_ENV,
                          capture_output=True, text=True, timeout=timeout)


MNIST_SMALL = ("--subset", "512", "--batch-size", "64", "--hidden-dim", "32", "--latent-dim", "4", "--no-views",
               "--log-interval", "2")


@pytest.mark.slow
def test_sixteen_flipped_bytes_in_a_checkpoint_are_refused_and_the_previous_one_is_used(tmp_path):
    """24.6: 16 bytes flipped inside checkpoint.pt's tensor data loaded without complaint; the resumed run
    went NaN, ended "finished", and the good checkpoint.prev.pt was rotated away."""
    import torch
    run = tmp_path / "run"
    done = _train_cli("--epochs", "2", "--out", str(run), *MNIST_SMALL)
    assert done.returncode == 0, done.stderr[-3000:]
    cur, prev = run / "checkpoint.pt", run / "checkpoint.prev.pt"
    good_prev = prev.read_bytes()  # epoch 1
    data = bytearray(cur.read_bytes())
    mid = len(data) // 2  # inside the tensor data (the weights are most of the file)
    data[mid:mid + 16] = bytes(b ^ 0xFF for b in data[mid:mid + 16])
    cur.write_bytes(bytes(data))
    resumed = _train_cli("--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    lines = [ln for ln in resumed.stderr.splitlines() if "checkpoint" in ln]
    assert len(lines) == 1 and "checkpoint.pt" in lines[0] and "checkpoint.prev.pt" in lines[0], resumed.stderr
    assert "checksum" in lines[0], lines[0]
    assert "Traceback" not in resumed.stderr
    assert (run / "checkpoint.pt.broken").read_bytes() == bytes(data)  # kept for a look
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["epoch"] == 2, status
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all(r["train_loss"] == r["train_loss"] for r in rows)
    state = torch.load(cur, weights_only=True)  # epoch 2 trained again from prev (epoch 1)
    assert state["epoch"] == 2 and all(torch.isfinite(t).all() for t in state["model"].values())
    assert prev.read_bytes() == good_prev  # the last good checkpoint was not rotated away


def test_a_checkpoint_not_verified_is_never_made_the_previous_one(tmp_path):
    """24.6: the rotation made whatever checkpoint.pt held the previous one, pushing out the last good one."""
    import torch

    from vae_visdom.train import checkpoint
    run = tmp_path / "run"
    run.mkdir()
    checkpoint.save(run, {"epoch": 1, "w": torch.ones(1000)})
    checkpoint.save(run, {"epoch": 2, "w": torch.ones(1000) * 2})
    good_prev = (run / "checkpoint.prev.pt").read_bytes()
    data = bytearray((run / "checkpoint.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (run / "checkpoint.pt").write_bytes(bytes(data))
    checkpoint.save(run, {"epoch": 3, "w": torch.ones(1000) * 3})
    assert (run / "checkpoint.prev.pt").read_bytes() == good_prev
    assert checkpoint.read(run / "checkpoint.pt", required=("epoch",))["epoch"] == 3
    with pytest.raises(checkpoint.CheckpointError, match="checksum"):
        (run / "bad.pt").write_bytes(bytes(data))
        checkpoint.read(run / "bad.pt", required=())


def test_a_checkpoint_written_before_checksums_still_loads(tmp_path):
    """24.6: checkpoints of earlier versions carry no checksum: they load unchecked, as before."""
    import torch

    from vae_visdom.train import checkpoint
    torch.save({"epoch": 4, "model": {}, "optimizer": {}, "step": 9, "rng": {}}, tmp_path / "old.pt")
    assert checkpoint.read(tmp_path / "old.pt")["epoch"] == 4


# -- 24.7: non-finite losses are never "finished" -----------------------------------------------------------

@pytest.mark.slow
def test_a_run_whose_loss_turns_nan_ends_diverged_exit_3_keeping_the_last_finite_checkpoint(tmp_path, server):
    """24.7: `train --lr 10` was NaN from epoch 1, ended "finished", exit 0, and checkpointed NaN weights.
    One good epoch, then a resume with --lr 10 streaming to a real visdom server."""
    import torch
    run = tmp_path / "runs" / "nan-run"
    first = subprocess.run([sys.executable, "-m", "vae_visdom", "train", "--epochs", "1", "--out", str(run),
                            "--port", str(server.port), *MNIST_SMALL], env=CHILD_ENV, capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    good = (run / "checkpoint.pt").read_bytes()
    cmd = [sys.executable, "-m", "vae_visdom", "train", "--resume", str(run), "--epochs", "3", "--lr", "10",
           "--port", str(server.port)]
    # with a panel the diverged run pauses for it (test_steering.py); its Stop ends the run as it ends without one
    live = subprocess.Popen(cmd, env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _stop_when_held(server, run, "nan-run", live)
    out, err = live.communicate(timeout=300)
    proc = subprocess.CompletedProcess(cmd, live.returncode, out, err)
    assert proc.returncode == 3, proc.stderr[-3000:]
    said = [ln for ln in proc.stderr.splitlines() if "diverged" in ln]
    assert len(said) == 1 and "nan" in said[0].lower(), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "RuntimeWarning" not in proc.stderr, proc.stderr[-3000:]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "diverged" and status["epoch"] == 2 and status["step"] > 8, status
    assert f"step {status['step']}" in status["message"] and "epoch 2" in status["message"], status
    assert (run / "checkpoint.pt").read_bytes() == good  # never replaced by a non-finite state
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and all(torch.isfinite(t).all() for t in state["model"].values())
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]
    listing = subprocess.run([sys.executable, "-m", "vae_visdom", "runs", "--runs-dir", str(run.parent)],
                             env=CHILD_ENV, capture_output=True, text=True, timeout=30).stdout
    assert "nan-run" in listing and "diverged" in listing, listing
    from vae_visdom.pages.home_table import table_html
    from vae_visdom.runs.records import find_runs
    assert ">diverged<" in table_html(find_runs(run.parent), str(run.parent))
    env = json.loads(server.client("nan-run", use_incoming_socket=False).get_window_data(env="nan-run"))
    text = json.dumps(env)
    assert "diverged" in text, sorted(p.get("title") for p in env.values())
    props = [p for p in env.values() if p.get("type") == "properties"]
    assert any("diverged" in json.dumps(p["content"]) for p in props), props  # the panel's message row


def _stop_when_held(server, run: Path, env: str, proc: subprocess.Popen) -> None:
    """Press the panel's Stop (the page's websocket message) once the run says it paused as diverged."""
    import time

    import websocket

    from vae_visdom.monitor.panel import ROWS
    from vae_visdom.monitor.windows import window_prefix
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            held = json.loads((run / "status.json").read_text()).get("reason") == "diverged"
        except (OSError, ValueError):
            held = False
        if held:
            ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/socket", timeout=5)
            ws.send(json.dumps({"cmd": "forward_to_vis", "data": {
                "target": f"{window_prefix(env, run)}-control", "eid": env, "event_type": "PropertyUpdate",
                "propertyId": ROWS.index("stop"), "value": "Stop"}}))
            ws.close()
            return
        time.sleep(0.2)


def test_a_fresh_run_at_lr_10_ends_diverged_without_a_checkpoint(tmp_path):
    """24.7: the issue's own command, without a monitor: it must end (not hang), exit 3, say diverged."""
    run = tmp_path / "lr10"
    proc = _train_cli("--epochs", "2", "--lr", "10", "--out", str(run), *MNIST_SMALL)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert json.loads((run / "status.json").read_text())["state"] == "diverged"
    assert not (run / "checkpoint.pt").exists()
    assert len([ln for ln in proc.stderr.splitlines() if "diverged" in ln]) == 1, proc.stderr


# -- 24.8a: a disk that fills while streaming is one line --------------------------------------------------

def _dead_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


@pytest.mark.slow
def test_a_file_size_limit_while_streaming_is_one_line_not_the_sender_threads_traceback(tmp_path):
    """24.8a: a full disk while streaming printed 18 lines (the sender thread's traceback when visdom.log was
    closed). A real write error with RLIMIT_FSIZE (as tests/test_run_safety.py does); a monitor that streams
    to a port where nothing listens still writes visdom.log, which passes the limit first."""
    import resource
    import signal

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "vae_visdom", "train", "--epochs", "4", "--hidden-dim", "8",
                           "--latent-dim", "2", "--batch-size", "512", "--no-views", "--port", str(_dead_port()),
                           "--out", str(run)], env=CHILD_ENV, capture_output=True, text=True, timeout=300,
                          preexec_fn=limit)
    err = proc.stderr
    assert "Traceback" not in err and "Exception in thread" not in err, err[-4000:]
    about_log = [ln for ln in err.splitlines() if "visdom.log" in ln]
    assert len(about_log) == 1 and "File too large" in about_log[0], err[-4000:]


def test_the_runs_home_of_a_real_server_lists_every_run_beside_a_fifo(mixed_runs, visdom_server_factory, browser):
    """24.5 end to end: `serve --runs-dir` with the good and the damaged runs (a FIFO among them): the
    home's table, as Chromium shows it, has every run, each damaged one naming its file."""
    from tests.fixtures import home_statuses, until
    root, bad = mixed_runs
    server = visdom_server_factory(args=["--runs-dir", str(root)])
    client = server.client("runs", use_incoming_socket=False)
    until(lambda: f">{'cfg-fifo'}<" in client.get_window_data(env="runs"), "the home's table", 40)
    browser.get(f"{server.url}/env/runs")

    def table() -> dict[str, str]:
        return home_statuses(browser)

    until(lambda: len(table()) == 2 + len(bad), "every run in the table", 30, every=0.3)
    shown = table()
    assert shown["good-a"] == shown["good-b"] == "finished", shown
    assert all(file in shown[name] for name, file in bad.items()), shown
