"""Data-parallel training under torchrun (CPU, gloo, 2 real ranks): one step equals one process's step on
the same global batch; rank 0 alone is the face; the panel's commands reach every rank at the same step."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.test_monitor import window_data
from tests.test_panel import page  # noqa: F401  (the browser's websocket, a fixture)
from vae_visdom.monitor.panel import ROWS

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]


def env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}


def run(cmd: list[str], timeout: float = 180, **extra) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=REPO, env=env(**extra), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.parametrize("kind,batch", [("eager", 128), ("fast", 127)])
def test_one_step_on_two_ranks_equals_one_process_on_the_global_batch(tmp_path, kind, batch):
    """2 ranks x 64 (or 64 + 63: the first B mod N ranks take one row more) == 1 process x 128 (127)."""
    script = str(REPO / "tests" / "dist_one_step.py")
    run([sys.executable, script, str(tmp_path / "one.pt"), kind, str(batch)])
    run([*TORCHRUN, script, str(tmp_path / "two.pt"), kind, str(batch)])
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert (one["rows"], two["rows"]) == (batch, (batch + 1) // 2)
    torch.testing.assert_close(two["sums"], one["sums"], rtol=1e-5, atol=1e-2)
    for g1, g2 in zip(one["grads"], two["grads"]):
        torch.testing.assert_close(g2, g1, rtol=1e-4, atol=1e-4)
    for p1, p2 in zip(one["params"], two["params"]):
        torch.testing.assert_close(p2, p1, rtol=1e-5, atol=1e-6)
    moved = max((p - q).abs().max().item() for p, q in zip(one["params"], two["params"]))
    print(f"{kind}, batch {batch}: largest parameter difference 1 vs 2 ranks {moved:.2e}")


def records(folder: Path, rank: int) -> list[dict]:
    path = folder / f"rank{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_until(what, timeout: float = 60.0, proc=None):
    deadline = time.monotonic() + timeout
    while not (got := what()):
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the job ended early: {proc.returncode}")
        if time.monotonic() > deadline:
            pytest.fail("timed out")
        time.sleep(0.1)
    return got


def control_window(server, env_name: str) -> str | None:
    try:
        panes = window_data(server, env_name)
    except Exception:  # the env does not exist yet
        return None
    return next((win for win, pane in panes.items() if pane.get("type") == "properties"), None)


def test_the_panel_steers_both_ranks_at_the_same_step(server, page, tmp_path):
    """Through the browser's websocket message: lr, batch size, a bad lr, a pause longer than the
    collectives' timeout (6 s), resume and stop, on a 2-rank run; each rank records the step it applied them."""
    rec, out, name = tmp_path / "rec", tmp_path / "run", "dist-panel"
    cmd = [*TORCHRUN, "-m", "vae_visdom", "train", "--epochs", "50", "--no-views", "--port", str(server.port),
           "--out", str(out), "--env", name]
    log = open(tmp_path / "job.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(VAE_VISDOM_COMMAND_RECORD=str(rec), VAE_VISDOM_DIST_TIMEOUT="6"),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        win = wait_until(lambda: control_window(server, name), 120, proc)
        wait_until(lambda: (out / "steps.jsonl").exists(), 60, proc)

        def send(row: str, value, n: int, n1: int) -> None:  # n: records on rank 0 after it, n1: on rank 1
            page(win, name, ROWS.index(row), value)
            wait_until(lambda: len(records(rec, 0)) >= n and len(records(rec, 1)) >= n1, 60, proc)

        send("lr", "3e-4", 1, 1)
        send("batch_size", "64", 2, 2)
        send("lr", "abc", 3, 2)  # rejected on rank 0: rank 1 hears nothing
        send("status", "pause", 4, 3)  # the Pause button's row
        time.sleep(float(os.environ.get('T_PAUSE', 9)))  # longer than the collectives' 6 s timeout
        send("status", "resume", 5, 4)
        send("stop", "stop", 6, 5)
        assert proc.wait(60) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers, if still there
        proc.wait()
        log.close()
    r0, r1 = records(rec, 0), records(rec, 1)
    print("\n".join(f"rank {r['rank']}: step {r['step']} {r['name']}={r['value']} accepted={r['accepted']}"
                    for r in r0 + r1))
    assert [(r["name"], r["accepted"]) for r in r0] == [("lr", True), ("batch_size", True), ("lr", False),
                                                        ("pause", True), ("resume", True), ("stop", True)]
    accepted0 = [(r["name"], r["value"], r["step"]) for r in r0 if r["accepted"]]
    assert accepted0 == [(r["name"], r["value"], r["step"]) for r in r1]  # same commands, same steps
    pause, resume = r1[2], r1[3]
    held = resume["time"] - pause["time"]
    assert held > 8 and (resume["cpu"] - pause["cpu"]) < 0.2 * held  # blocked, not spinning
    assert not any(r["visdom_imported"] for r in r1) and all(r["visdom_imported"] for r in r0)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == r0[-1]["step"] and ckpt["live"]["batch_size"] == 64
    assert json.loads((out / "status.json").read_text())["state"] == "stopped"
