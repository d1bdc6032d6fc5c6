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


def test_the_panel_steers_both_ranks_at_the_same_step(server, page, tmp_path):  # noqa: F811  (the fixture)
    """Through the browser's websocket message: lr, batch size, a bad lr, a pause longer than the
    collectives' timeout (6 s), resume and stop, on a 2-rank run; each rank records the step it applied them."""
    rec, out, name = tmp_path / "rec", tmp_path / "run", "dist-panel"
    cmd = [*TORCHRUN, "-m", "vae_visdom", "train", "--epochs", "50", "--no-views", "--port", str(server.port),
           "--out", str(out), "--env", name]
    log = open(tmp_path / "job.log", "w")
    # tests/rank_record/sitecustomize.py gives each rank's trainer an observer recording its commands
    recorded = env(VAE_VISDOM_COMMAND_RECORD=str(rec), VAE_VISDOM_DIST_TIMEOUT="6",
                   PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests" / "rank_record")]))
    proc = subprocess.Popen(cmd, cwd=REPO, env=recorded,
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


def image_folder(root: Path, n: int = 1200) -> Path:
    """n small generated grey PNGs (the loader resizes them to 64x64): a fast data set for fault tests."""
    import numpy as np
    from PIL import Image

    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, 32 * 32).reshape(32, 32)
    for i in range(n):
        arr = (base * rng.uniform(0.3, 1.0) + rng.normal(0, 20, (32, 32))).clip(0, 255).astype(np.uint8)
        Image.fromarray(arr, "L").save(root / f"{i:05d}.png")
    return root


def rank_pid(tag: str, rank: int) -> int | None:
    """The pid of the worker of this test (its environment carries TAG) with RANK=rank."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"I14_TAG={tag}".encode() in environ and f"RANK={rank}".encode() in environ:
            return int(pid)
    return None


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_killed_rank_restarts_the_group_which_resumes_and_a_resume_on_one_rank_goes_on(tmp_path):
    """kill -9 of rank 1 mid-epoch 2 -> torchrun --max-restarts 1 restarts both ranks -> they resume from the
    epoch-1 checkpoint: every epoch exactly once in metrics.jsonl; then --resume on 1 rank adds an epoch."""
    folder, out, tag = image_folder(tmp_path / "images"), tmp_path / "run", str(tmp_path)
    extra = dict(I14_TAG=tag, VAE_VISDOM_CACHE=str(tmp_path / "cache"))
    train = ["-m", "vae_visdom", "train", "--dataset", "folder", "--data-dir", str(folder), "--model", "mlp",
             "--batch-size", "8", "--log-interval", "5", "--no-visdom", "--no-views", "--out", str(out)]
    log = open(tmp_path / "job.log", "w")
    proc = subprocess.Popen([*TORCHRUN, "--max-restarts=1", *train, "--epochs", "3"], cwd=REPO, env=env(**extra),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: any(r["epoch"] == 2 for r in jsonl(out / "steps.jsonl")), 180, proc)
        os.kill(rank_pid(tag, 1), signal.SIGKILL)
        killed_at = jsonl(out / "steps.jsonl")[-1]
        assert proc.wait(300) == 0, (tmp_path / "job.log").read_text()[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    text = (tmp_path / "job.log").read_text()
    print(f"killed rank 1 at epoch {killed_at['epoch']}, step {killed_at['step']}")
    assert "resuming" in text and "from its checkpoint" in text
    assert [r["epoch"] for r in jsonl(out / "metrics.jsonl")] == [1, 2, 3]
    steps = [r["step"] for r in jsonl(out / "steps.jsonl")]
    assert steps == sorted(set(steps))  # no step logged twice
    run([sys.executable, *train, "--resume", str(out), "--epochs", "4"], **extra)  # one rank now
    rows = jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[3]["step"] == 4 * rows[0]["step"]  # the same global batch: the same steps per epoch


def test_an_exception_on_one_rank_ends_the_job_with_its_message(tmp_path):
    folder, out = image_folder(tmp_path / "images", 300), tmp_path / "run"
    cmd = [*TORCHRUN, str(REPO / "tests" / "dist_fail.py"), "train", "--dataset", "folder", "--data-dir", str(folder),
           "--model", "mlp", "--batch-size", "8", "--epochs", "50", "--no-visdom", "--no-views", "--out", str(out)]
    t0 = time.monotonic()
    done = subprocess.run(cmd, cwd=REPO, env=env(VAE_VISDOM_CACHE=str(tmp_path / "cache")), capture_output=True,
                          text=True, timeout=180)
    text = done.stdout + done.stderr
    print(f"the job ended {time.monotonic() - t0:.1f} s after it started, exit code {done.returncode}")
    assert done.returncode != 0
    assert "[rank1]: RuntimeError: rank 1 cannot go on: the disk is on fire" in text
    assert json.loads((out / "status.json").read_text())["state"] == "failed"  # rank 0 says so in the run folder


def test_the_front_hands_everything_but_its_own_flags_to_torchrun():
    from vae_visdom.launch import torchrun_command

    argv = ["train", "--epochs", "3", "--nproc-per-node", "4", "--max-restarts=2", "--lr", "1e-3"]
    cmd = torchrun_command(argv, 4, 2)
    assert cmd[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4", "--max-restarts=2",
                       "-m", "vae_visdom", "train", "--epochs", "3", "--lr", "1e-3"]
    done = subprocess.run([sys.executable, "-m", "vae_visdom", "train", "--nproc-per-node", "2", "--max-restarts", "1"],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.strip().endswith("--max-restarts needs --out or --name, so a "
                                                                 "restarted group finds its run folder")


def test_a_run_stopped_mid_epoch_on_one_rank_resumes_on_two(tmp_path):
    """Checkpoints do not depend on the world size: the unfinished epoch's sums are carried by rank 0 alone."""
    folder, out = image_folder(tmp_path / "images", 800), tmp_path / "run"
    extra = dict(VAE_VISDOM_CACHE=str(tmp_path / "cache"))
    train = ["-m", "vae_visdom", "train", "--dataset", "folder", "--data-dir", str(folder), "--model", "mlp",
             "--batch-size", "8", "--log-interval", "5", "--no-visdom", "--no-views", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, *train, "--epochs", "3"], cwd=REPO, env=env(**extra),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: any(r["step"] >= 140 for r in jsonl(out / "steps.jsonl")), 180, proc)  # 90 steps an epoch
        proc.send_signal(signal.SIGINT)  # stop: finish the step, checkpoint mid-epoch
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    stopped = torch.load(out / "checkpoint.pt", weights_only=False)
    assert stopped["epoch_state"] is not None and 400 <= stopped["epoch_state"]["pos"] < 720  # most of epoch 2
    run([*TORCHRUN, *train, "--resume", str(out)], **extra)
    rows = jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[2]["step"] == 3 * rows[0]["step"]
    losses = [r["train_loss"] for r in rows]
    print(f"train losses {losses}, stopped at example {stopped['epoch_state']['pos']} of epoch 2")
    assert abs(losses[1] - (losses[0] + losses[2]) / 2) < 0.25 * losses[1]  # epoch 2 counted once, not carried twice


def test_a_two_rank_run_learns_as_a_one_rank_run_of_the_same_global_batch(tmp_path):
    """The loss curves of 1 and 2 ranks (same seed, same global batch; other noise draws) agree within noise."""
    folder = image_folder(tmp_path / "images", 800)
    extra = dict(VAE_VISDOM_CACHE=str(tmp_path / "cache"))
    train = ["-m", "vae_visdom", "train", "--dataset", "folder", "--data-dir", str(folder), "--model", "mlp",
             "--batch-size", "16", "--epochs", "3", "--no-visdom", "--no-views"]
    run([sys.executable, *train, "--out", str(tmp_path / "one")], **extra)
    run([*TORCHRUN, *train, "--out", str(tmp_path / "two")], **extra)
    one, two = jsonl(tmp_path / "one" / "metrics.jsonl"), jsonl(tmp_path / "two" / "metrics.jsonl")
    for key in ("train_loss", "test_loss"):
        a, b = [r[key] for r in one], [r[key] for r in two]
        print(f"{key}: 1 rank {[round(x, 1) for x in a]}, 2 ranks {[round(x, 1) for x in b]}")
        assert all(abs(x - y) < 0.02 * x for x, y in zip(a, b))
    assert [r["step"] for r in one] == [r["step"] for r in two]
    assert one[-1]["test_loss"] < one[0]["test_loss"] and two[-1]["test_loss"] < two[0]["test_loss"]


def test_ctrl_c_under_torchrun_stops_both_ranks_with_a_checkpoint_and_exits_as_one_process_does(tmp_path):
    """24.8b: SIGINT to `train --nproc-per-node 2` (a terminal's Ctrl-C: the whole foreground process group)
    stopped both ranks with a checkpoint, then torch.distributed.run printed ~30 lines and exited 1."""
    folder, out = image_folder(tmp_path / "images", 800), tmp_path / "run"
    cmd = [sys.executable, "-m", "vae_visdom", "train", "--nproc-per-node", "2", "--dataset", "folder",
           "--data-dir", str(folder), "--model", "mlp", "--batch-size", "8", "--log-interval", "5", "--no-visdom",
           "--no-views", "--epochs", "20", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(VAE_VISDOM_CACHE=str(tmp_path / "cache")), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_until(lambda: any(r["epoch"] >= 2 for r in jsonl(out / "steps.jsonl")), 180, proc)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: every process of the terminal's foreground group
        _, err = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    after = err[err.index("SIGINT"):] if "SIGINT" in err else err
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "ChildFailedError" not in err and "SignalException" not in err, err[-3000:]
    assert [ln for ln in after.splitlines() if ln.startswith("run stopped")] != [], err[-3000:]
    assert len([ln for ln in after.splitlines() if ln.strip()]) <= 3, after  # SIGINT: ..., run stopped: ...
    assert json.loads((out / "status.json").read_text())["state"] == "stopped"
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch_state"] is not None  # mid-epoch
    # 24.7 on two ranks: both judge the same global loss, end at the same step; exit 3 and one line, not
    # torch.distributed.run's failure report (the ranks' agreed ending reaches the front through a file)
    nan = tmp_path / "nan"
    cmd = [*cmd[:cmd.index("--out")], "--out", str(nan), "--lr", "10"]
    done = subprocess.run(cmd, cwd=REPO, env=env(VAE_VISDOM_CACHE=str(tmp_path / "cache")), capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 3, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "ChildFailedError" not in done.stderr, done.stderr[-3000:]
    assert len([ln for ln in done.stderr.splitlines() if "diverged" in ln]) == 1, done.stderr[-3000:]
    assert json.loads((nan / "status.json").read_text())["state"] == "diverged"
