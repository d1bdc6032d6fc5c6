"""Lock the doors, the run folder's half: one trainer per run folder; no epoch lost and
none doubled whatever instant a trainer dies at; checkpoints that survive damage; a full disk that
ends a run with one line instead of three tracebacks.

Real training on small synthetic images (tests/conftest.py); real subprocesses where a process must
die by SIGKILL or run beside another; a real full file system (a small tmpfs) where one can be
mounted, else a real per-process file size limit (RLIMIT_FSIZE). Run directly, this file is the
child those tests start (see the bottom).
"""
from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.builders import make_config, make_session
from tests.conftest import synthetic_data
from vae_visdom.runs.files import read_jsonl
from vae_visdom.session import TrainingSession
from vae_visdom.train import checkpoint
from vae_visdom.train.events import Callback

REPO = Path(__file__).resolve().parents[1]
STEP_TRACE = "train (every log interval)"
# 96 examples in batches of 32, a point every step: x = k/3, which 7 significant digits round down
SMALL = dict(epochs=2, log_interval=1, batch_size=32, hidden_dim=32, latent_dim=4, views=False)
TIMING = ("seconds", "test_seconds", "images_per_second")
CHILD_ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def small_data():
    return synthetic_data(n_train=96, n_test=32)


def small_session(run_dir: Path, data=None, **kw) -> TrainingSession:
    """A new run of SMALL in run_dir on `data` (default small_data()); kw: config fields, or make_session's
    callbacks= and monitor=."""
    return make_session(run_dir, data=small_data() if data is None else data, **{**SMALL, **kw})


def train(run_dir: Path, data, resume=False, callbacks=(), **kw):
    """A run (or its resume, with kw as the overrides) in this process; returns (session, final status)."""
    if resume:
        session = make_session(run_dir, resume=True, overrides=kw, data=data, callbacks=callbacks)
    else:
        session = small_session(run_dir, data, callbacks=callbacks, **kw)
    return session, session.run()


def rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl(run_dir / "metrics.jsonl")]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = checkpoint.load(a)["model"], checkpoint.load(b)["model"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def leftovers(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir() if ".tmp" in p.name)


def one_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict[int, Path]:
    """Uninterrupted runs of 2 and 3 epochs: what every interrupted run must end up equal to."""
    root = tmp_path_factory.mktemp("straight")
    out = {}
    for epochs in (2, 3):
        train(root / str(epochs), small_data(), epochs=epochs)
        out[epochs] = root / str(epochs)
    return out


# -- 6, 14: one trainer per run folder ------------------------------------------------------------------

def test_a_second_session_on_a_locked_run_folder_is_refused_naming_the_holder(tmp_path):
    """Item 6: the lock is taken before anything in the folder is touched, and given back at the end."""
    from vae_visdom.config import UsageError
    from vae_visdom.runs.lock import holder

    run_dir = tmp_path / "run"
    first = small_session(run_dir)
    assert holder(run_dir).startswith(f"pid {os.getpid()} on {socket.gethostname()}")
    for resume in (False, True):
        if resume:
            checkpoint.save(run_dir, first.trainer.state_dict())  # something to resume from
        with pytest.raises(UsageError) as err:
            # a second trainer on the same folder, new or resuming
            make_session(cfg=make_config(run_dir, **SMALL), resume=resume, data=small_data())
        message = str(err.value)
        assert "\n" not in message and str(run_dir) in message
        assert f"pid {os.getpid()}" in message and socket.gethostname() in message
    first.run()  # the holder is not disturbed, and lets go when it ends
    assert holder(run_dir) is None
    _, status = train(run_dir, small_data(), resume=True, epochs=3)
    assert status.state == "finished"


def _cli(*args: str, log: Path | None = None, **popen) -> subprocess.Popen:
    out = open(log, "ab") if log else subprocess.PIPE
    return subprocess.Popen([sys.executable, "-m", "vae_visdom", "train", "--no-visdom", *args], cwd=REPO,
                            stdout=out, stderr=subprocess.STDOUT if log else subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=CHILD_ENV, **popen)


def _wait_for(until, proc: subprocess.Popen, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{what}: not reached (exit {proc.poll()})")
        time.sleep(0.05)


@pytest.mark.slow
def test_two_trainers_on_one_out_the_second_exits_2_and_a_killed_holder_leaves_no_lock(tmp_path):
    """Item 14 (and 6 through the command line): the second trainer, new run or --resume, exits 2
    with one line naming the holder; after kill -9 of the holder the folder is free again."""
    run_dir, log = tmp_path / "run", tmp_path / "a.log"
    holder = _cli("--epochs", "50", "--out", str(run_dir), log=log)
    try:
        _wait_for(lambda: bool(read_jsonl(run_dir / "steps.jsonl")), holder, "the first trainer training")
        attempts = {"new run": ["--out", str(run_dir), "--epochs", "1"], "--resume": ["--resume", str(run_dir)]}
        started = {what: _cli(*args) for what, args in attempts.items()}  # side by side: 2 starts at once
        for what, second in started.items():
            out, err = second.communicate(timeout=120)
            assert second.returncode == 2, (what, err.decode()[-2000:])
            line = one_line(err.decode())
            assert f"pid {holder.pid}" in line and socket.gethostname() in line and str(run_dir) in line, line
        assert holder.poll() is None  # the holder trains on, undisturbed
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    from vae_visdom.runs.lock import holder as lock_holder

    assert (run_dir / "trainer.lock").exists() and lock_holder(run_dir) is None  # the kernel let go of it
    # no stale lock: the next trainer gets the folder (new run here; its data is not even loaded)
    session = small_session(run_dir)
    session.close()


# -- 11: kill -9 mid-epoch, then resume: one point per step row, not one more -------------------------

def _log_xs(path: Path, trace: str = STEP_TRACE) -> list[float]:
    """The x of `trace` as a replay of a visdom.log draws it (a whole figure restarts it, updates append)."""
    xs: list[float] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            endpoint, msg = json.loads(line)
        except ValueError:
            continue
        if not str(msg.get("win", "")).endswith("-loss"):
            continue
        if endpoint == "events":
            xs = []
        for d in msg.get("data", []):
            if (msg.get("name") or d.get("name")) == trace:
                xs += d.get("x", [])
    return xs


def _dead_port() -> int:
    from vae_visdom.serve.net import find_free_port

    return find_free_port("127.0.0.1")


def _monitor(run_dir: Path, port: int):
    from vae_visdom.monitor import VisdomMonitor

    return VisdomMonitor(port=port, env="safety", run_dir=run_dir)


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_draws_each_step_once(tmp_path):
    """Fault 11: the step curve had one point more than steps.jsonl has rows after a resume."""
    from vae_visdom.monitor.windows import PLOT_DIGITS, num

    run_dir, port = tmp_path / "run", _dead_port()
    child = subprocess.Popen([sys.executable, __file__, "slow-train", str(run_dir), str(port)], cwd=REPO,
                             env=CHILD_ENV, stdin=subprocess.DEVNULL)
    try:
        # the kill lands once the log holds points of epoch 2 that the checkpoint (epoch 1) does not cover
        _wait_for(lambda: (run_dir / "visdom.log").exists() and max(_log_xs(run_dir / "visdom.log"), default=0) > 1.2,
                  child, "epoch 2's points in visdom.log", timeout=60)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert checkpoint.load(run_dir)["epoch"] == 1 and read_jsonl(run_dir / "metrics.jsonl")[-1]["epoch"] == 1
    monitor = _monitor(run_dir, port)
    session = make_session(run_dir, resume=True, data=small_data(), monitor=monitor)
    assert session.run().state == "finished"
    steps = read_jsonl(run_dir / "steps.jsonl")
    assert [r["step"] for r in steps] == list(range(1, 7))  # 3 steps an epoch, each logged once
    expected = [num(r["epoch_progress"], PLOT_DIGITS) for r in steps]
    assert monitor.loss.traces[STEP_TRACE].x == expected  # 6 points, not 7
    assert _log_xs(run_dir / "visdom.log") == expected  # and a replay draws the same
    assert monitor.loss.traces["test"].x == [1, 2] and monitor.hook_errors == []


# -- 12: the checkpoint is the truth; a missing or torn row is reported, never silently dropped ------------

def test_a_row_the_checkpoint_covers_but_the_file_lacks_is_trained_again_from_the_previous_checkpoint(
        tmp_path, straight, capfd):
    """Fault 12: a kill between the checkpoint and the row left metrics.jsonl without that epoch."""
    run_dir = tmp_path / "run"
    train(run_dir, small_data(), epochs=2)
    metrics = run_dir / "metrics.jsonl"
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:1]))  # epoch 2's row is gone
    capfd.readouterr()
    _, status = train(run_dir, small_data(), resume=True, epochs=3)
    assert status.state == "finished"
    assert rows(run_dir) == rows(straight[3])  # [1, 2, 3], epoch 2 trained again: the same numbers
    assert_same_weights(run_dir, straight[3])
    line = one_line(capfd.readouterr().err)
    assert "metrics.jsonl" in line and "epoch 2" in line and "checkpoint.prev.pt" in line, line
    (event,) = [e for e in read_jsonl(run_dir / "events.jsonl") if e.get("source") == "resume"]
    assert "epoch 2" in event["message"]


def test_a_torn_last_row_is_reported_on_resume_and_its_epoch_trained_again(tmp_path, straight, capfd):
    """Fault 12: a torn last metrics line was dropped without a word ([1, 2, 3, 5])."""
    run_dir = tmp_path / "run"
    train(run_dir, small_data(), epochs=2)
    metrics = run_dir / "metrics.jsonl"
    text = metrics.read_text()
    metrics.write_text(text[:len(text) - 40])  # the last row torn half-way
    capfd.readouterr()
    _, status = train(run_dir, small_data(), resume=True, epochs=3)
    assert status.state == "finished"
    assert rows(run_dir) == rows(straight[3])
    err = capfd.readouterr().err
    assert "torn" in err and "metrics.jsonl" in err, err
    assert any("torn" in e["message"] for e in read_jsonl(run_dir / "events.jsonl") if e.get("source") == "resume")


def test_a_row_that_no_checkpoint_can_give_back_is_reported_as_lost(tmp_path, capfd):
    run_dir = tmp_path / "run"
    train(run_dir, small_data(), epochs=2)
    metrics = run_dir / "metrics.jsonl"
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[1:]))  # epoch 1's row is gone
    capfd.readouterr()
    _, status = train(run_dir, small_data(), resume=True, epochs=3)
    assert status.state == "finished" and [r["epoch"] for r in rows(run_dir)] == [2, 3]
    line = one_line(capfd.readouterr().err)
    assert "epoch 1" in line and "metrics.jsonl" in line, line
    assert any("epoch 1" in e["message"] for e in read_jsonl(run_dir / "events.jsonl") if e.get("source") == "resume")


# -- 7: a kill at every write of a run, and at every write of its resume ------------------------------------

@pytest.mark.slow
def test_a_kill_at_any_write_loses_no_epoch_and_doubles_none(tmp_path):  # ~20 s: 65 kills, 130 runs
    """Item 7: a child trains 2 epochs and is SIGKILLed just before its k-th write to the run folder
    (every os.write, fsync, replace, link and unlink of the run, each in its turn); then the run is
    resumed (or, when nothing could be resumed, started again). Then the same with the kill inside
    the recovery of a resume (of a run killed between epoch 2's row and its checkpoint), resumed once
    more. Each must end as the straight run: the same metrics rows, step rows and PNGs, once each,
    plots that show each once, and no .tmp file left."""
    import shutil
    import tempfile

    # on a tmpfs where there is one: fsync costs nothing there, and a kill -9 (unlike a power cut)
    # loses nothing that was written, fsynced or not, so the test shows the same either way
    shm = Path("/dev/shm")
    out = Path(tempfile.mkdtemp(prefix="kill-matrix-", dir=shm if shm.is_dir() and os.access(shm, os.W_OK)
                                else tmp_path))
    try:
        proc = subprocess.run([sys.executable, __file__, "kill-matrix", str(out), str(_dead_port())], cwd=REPO,
                              env=CHILD_ENV, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-5000:]
        report = json.loads((out / "report.json").read_text())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    ref = report["reference"]
    assert ref["metrics_epochs"] == [1, 2] and len(ref["steps"]) == 6
    bad = []
    for case in report["cases"]:
        got = case["result"]
        why = []
        if "error" in got:
            why.append(got["error"][-400:])
        else:
            for key in ("metrics", "steps", "pngs", "plot"):
                if got[key] != ref[key]:
                    why.append(f"{key}: {got[key] if key != 'steps' else [r['step'] for r in got[key]]}")
            if got["leftovers"]:
                why.append(f"left behind: {got['leftovers']}")
            if got["state"] != "finished":
                why.append(f"status {got['state']}")
        if why:
            bad.append(f"{case['phase']} kill before #{case['k']} ({case['label']}): {'; '.join(why)}")
    n = len(report["cases"])
    print(f"{n} kills injected ({report['points']} points in a run, {report['resume_points']} in a resume); "
          f"{len(bad)} ended with an epoch lost, doubled or damaged")
    assert not bad, f"{len(bad)} of {n} kill points went wrong:\n" + "\n".join(bad[:25])
    assert n >= 40 and report["resume_points"] >= 5


# -- 8, 13: checkpoints that survive --------------------------------------------------------------------

def test_the_previous_checkpoint_is_kept_and_a_resume_from_it_truncates_what_came_after(tmp_path, straight,
                                                                                          capfd):
    """Item 8: checkpoint.prev.pt beside checkpoint.pt, both loadable with weights_only; with the current
    one gone, the resume starts from the previous one and forgets the rows after it."""
    run_dir = tmp_path / "run"
    train(run_dir, small_data(), epochs=2)
    assert leftovers(run_dir) == []
    prev = torch.load(run_dir / "checkpoint.prev.pt", weights_only=True)
    assert (prev["epoch"], checkpoint.load(run_dir)["epoch"]) == (1, 2)
    (run_dir / "checkpoint.pt").unlink()
    capfd.readouterr()
    _, status = train(run_dir, small_data(), resume=True, epochs=3)
    assert status.state == "finished"
    assert rows(run_dir) == rows(straight[3])
    assert [r["step"] for r in read_jsonl(run_dir / "steps.jsonl")] == list(range(1, 10))
    assert_same_weights(run_dir, straight[3])
    line = one_line(capfd.readouterr().err)
    assert "checkpoint.pt" in line and "checkpoint.prev.pt" in line and "epoch 1" in line, line


DAMAGE = {
    "truncated": lambda b: b[: len(b) // 2],
    "empty": lambda b: b"",
    "garbage": lambda b: os.urandom(len(b)),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_falls_back_to_the_previous_one_with_one_line(tmp_path, straight, capfd, damage):
    """Fault 13: a truncated, empty or garbage checkpoint.pt was a raw traceback, with nothing to fall back to."""
    run_dir = tmp_path / "run"
    train(run_dir, small_data(), epochs=2)
    path = run_dir / "checkpoint.pt"
    path.write_bytes(DAMAGE[damage](path.read_bytes()))
    capfd.readouterr()
    _, status = train(run_dir, small_data(), resume=True, epochs=3)
    assert status.state == "finished"
    assert rows(run_dir) == rows(straight[3])  # epoch 2 trained again from the previous checkpoint
    assert_same_weights(run_dir, straight[3])
    line = one_line(capfd.readouterr().err)
    assert "checkpoint.pt" in line and "checkpoint.prev.pt" in line and "Traceback" not in line, line


def test_a_damaged_checkpoint_with_nothing_to_fall_back_to_is_one_line_and_exit_2(tmp_path):
    run_dir = tmp_path / "run"
    train(run_dir, small_data(), epochs=1)
    (run_dir / "checkpoint.pt").write_bytes(b"\x00" * 100)
    (run_dir / "checkpoint.prev.pt").unlink(missing_ok=True)
    proc = _cli("--resume", str(run_dir))
    _, err = proc.communicate(timeout=120)
    line = one_line(err.decode())
    assert proc.returncode == 2, err.decode()
    assert "checkpoint.pt" in line and "Traceback" not in line, line


# -- 9, 15: a full disk ends the run with one line ---------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A real 4 MiB file system (tmpfs), or a skip where mounting one is not allowed (then the
    RLIMIT_FSIZE test below still runs a real write error)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip()})")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(disk: Path) -> None:
    """Take every free byte of the file system."""
    with open(disk / "filler", "ab") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


class FillAt(Callback):
    """Fills the disk when epoch `epoch` ends (after the run files wrote its row, before its checkpoint)."""

    def __init__(self, disk: Path, epoch: int):
        self.disk, self.epoch = disk, epoch

    def on_epoch_end(self, record, images):
        if record.epoch == self.epoch:
            _fill(self.disk)


def test_a_full_disk_fails_the_run_with_one_line_and_keeps_the_last_good_checkpoint(small_disk, straight, capfd):
    """Fault 15: three chained tracebacks, status.json left "running", a .tmp file left behind."""
    run_dir = small_disk / "run"
    capfd.readouterr()
    session, status = train(run_dir, small_data(), callbacks=[FillAt(small_disk, 2)], epochs=2)
    assert status.state == "failed"
    err = capfd.readouterr().err
    line = one_line(err)
    assert "No space left on device" in line and "checkpoint.pt" in line and "Traceback" not in err, err
    saved = json.loads((run_dir / "status.json").read_text())
    assert saved["state"] == "failed" and "No space left on device" in saved["message"]
    assert leftovers(run_dir) == []
    assert checkpoint.load(run_dir)["epoch"] == 1  # the last good one, intact
    (small_disk / "filler").unlink()
    _, status = train(run_dir, small_data(), resume=True)
    assert status.state == "finished" and rows(run_dir) == rows(straight[2])


def test_when_status_json_cannot_be_written_either_the_line_says_so(small_disk):
    run_dir = small_disk / "run"

    class Break(Callback):
        def on_epoch_end(self, record, images):
            if record.epoch == 2:
                (run_dir / "status.json").unlink()
                (run_dir / "status.json").mkdir()  # no file can be put there now
                _fill(small_disk)

    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        _, status = train(run_dir, small_data(), callbacks=[Break()], epochs=2)
    assert status.state == "failed"
    line = one_line(err.getvalue())
    assert "No space left on device" in line and "status.json" in line, line
    assert leftovers(run_dir) == []


@pytest.mark.slow
def test_a_file_size_limit_mid_run_is_exit_1_one_line_status_failed_no_tmp(tmp_path):
    """Item 9 with a real OS error that needs no mount: RLIMIT_FSIZE makes a write past 100 kB fail
    with EFBIG, as a full disk fails it with ENOSPC; the checkpoint (~300 kB) is the file that fails."""
    run_dir = tmp_path / "run"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    proc = _cli("--epochs", "2", "--hidden-dim", "16", "--batch-size", "512", "--no-views", "--out",
                str(run_dir), preexec_fn=limit)
    _, err = proc.communicate(timeout=300)
    err = err.decode()
    assert proc.returncode == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    failure = [ln for ln in err.splitlines() if "File too large" in ln]
    assert len(failure) == 1 and "checkpoint.pt" in failure[0], err[-3000:]
    saved = json.loads((run_dir / "status.json").read_text())
    assert saved["state"] == "failed" and "File too large" in saved["message"]
    assert leftovers(run_dir) == []


# -- the child processes ------------------------------------------------------------------------------------

class _SlowSecondEpoch(Callback):
    def on_step(self, log):
        if log.epoch == 2:
            time.sleep(0.7)


def _child_slow_train(run_dir: str, port: str) -> None:
    """Epoch 1 at full speed, epoch 2 slowly, streaming to a port where no server listens (the log is
    written all the same): the parent kills this process in the middle of epoch 2."""
    monitor = _monitor(Path(run_dir), int(port))
    session = small_session(Path(run_dir), monitor=monitor, callbacks=[_SlowSecondEpoch()])
    session.run()


POINT_CALLS = ("write", "fsync", "replace", "rename", "link", "unlink", "remove", "truncate", "ftruncate")


def _arm(kill_at: int, labels: list[str]) -> None:
    """Count the main thread's file-system calls (the run's writes; the monitor's sender thread writes
    visdom.log on its own clock and is not counted); SIGKILL this process just before call `kill_at`."""
    import threading

    main = threading.main_thread()

    def name_of(arg) -> str:
        if isinstance(arg, int):
            try:
                return os.path.basename(os.readlink(f"/proc/self/fd/{arg}"))
            except OSError:
                return f"fd {arg}"
        return os.path.basename(os.fspath(arg))

    def wrap(call: str, fn):
        def counted(*args, **kw):
            if threading.current_thread() is main:
                if len(labels) == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                names = [name_of(a) for a in args[:2 if call in ("replace", "rename", "link") else 1]]
                labels.append(f"{call} {' -> '.join(names)}")
            return fn(*args, **kw)
        return counted

    for call in POINT_CALLS:
        if hasattr(os, call):
            setattr(os, call, wrap(call, getattr(os, call)))


def _in_child(fn) -> int:
    """Run fn() in a forked child; returns its exit status (negative: killed by that signal)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn()
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _outcome(run_dir: Path, monitor) -> dict:
    from vae_visdom.monitor.windows import PLOT_DIGITS, num

    loss = monitor.loss.traces
    steps = read_jsonl(run_dir / "steps.jsonl")
    plot = {"train": loss["train"].x, "test": loss["test"].x, "steps": loss[STEP_TRACE].x,
            "steps_y": loss[STEP_TRACE].y, "log_steps": _log_xs(run_dir / "visdom.log")}
    status = json.loads((run_dir / "status.json").read_text())
    return {"metrics": rows(run_dir), "metrics_epochs": [r["epoch"] for r in rows(run_dir)], "steps": steps,
            "pngs": sorted(p.name for p in run_dir.glob("*.png")), "plot": plot, "state": status["state"],
            "leftovers": leftovers(run_dir), "expected_plot_steps": [num(r["epoch_progress"], PLOT_DIGITS)
                                                                    for r in steps]}


def _child_kill_matrix(root: str, port: str) -> None:
    """The fork server of test_a_kill_at_any_write_loses_no_epoch_and_doubles_none: imports once,
    one thread (so forking is safe), each run in a forked child."""
    import traceback

    from vae_visdom.config import UsageError

    torch.set_num_threads(1)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # imports torch._dynamo (~2 s) once, not per child
    root_p, port_n = Path(root), int(port)
    _monitor(root_p / "warm-up", port_n)  # and what a monitor imports (~0.1 s); it starts no thread until used
    root_p.mkdir(parents=True, exist_ok=True)
    data = small_data()

    def run(run_dir: Path, labels: list[str] | None = None, kill_at: int = -1) -> None:
        """A run, resuming when there is something to resume; the outcome to run_dir/../NAME.json."""
        if labels is not None:
            _arm(kill_at, labels)
        err = open(run_dir.parent / f"{run_dir.name}.stderr", "ab")
        os.dup2(err.fileno(), 2)
        monitor = _monitor(run_dir, port_n)
        try:
            session = make_session(run_dir, resume=True, data=data, monitor=monitor)
        except (FileNotFoundError, UsageError) as why:  # killed before a checkpoint: start again
            print(f"harness: starting again ({why})", file=sys.stderr)
            monitor = _monitor(run_dir, port_n)
            session = small_session(run_dir, data, monitor=monitor)
        finish(run_dir, session, monitor, labels)

    def finish(run_dir: Path, session, monitor, labels: list[str] | None) -> None:
        """Train to the end; write the points seen (a dry run) or the run's outcome beside the folder."""
        session.run()
        if labels is not None:
            (run_dir.parent / f"{run_dir.name}.points.json").write_text(json.dumps(labels))
        else:
            (run_dir.parent / f"{run_dir.name}.json").write_text(json.dumps(_outcome(run_dir, monitor)))

    def fresh(run_dir: Path, labels: list[str] | None = None, kill_at: int = -1) -> None:
        if labels is not None:
            _arm(kill_at, labels)
        monitor = _monitor(run_dir, port_n)
        session = small_session(run_dir, data, monitor=monitor)
        finish(run_dir, session, monitor, labels)

    def result(run_dir: Path) -> dict:
        path = run_dir.parent / f"{run_dir.name}.json"
        if not path.exists():
            err = run_dir.parent / f"{run_dir.name}.stderr"
            return {"error": err.read_text() if err.exists() else "no outcome"}
        return json.loads(path.read_text())

    assert _in_child(lambda: fresh(root_p / "reference")) == 0
    def killed_then_resumed(run_dir: Path, start, phase: str, k: int, label: str) -> dict:
        """`start` killed before its k-th file-system call, then resumed to the end: the case's outcome."""
        code = _in_child(lambda: start(run_dir, [], k))
        if code == -signal.SIGKILL:
            _in_child(lambda: run(run_dir))
            got = result(run_dir)
        else:
            got = {"error": f"the {phase} was to be killed at #{k} but exited {code}"}
        return {"phase": phase, "k": k, "label": label, "result": got}

    reference = result(root_p / "reference")
    count = root_p / "count"
    assert _in_child(lambda: fresh(count, [], -1)) == 0
    points = json.loads((root_p / "count.points.json").read_text())
    cases = []
    for k, label in enumerate(points):
        run_dir = root_p / f"run-{k}"
        cases.append(killed_then_resumed(run_dir, fresh, "run", k, label))

    # the resume of a run killed after epoch 2's row, before its checkpoint: killed at each of its writes
    awkward = next(k for k, label in enumerate(points) if label.startswith("replace")
                   and label.endswith("-> checkpoint.pt") and k > len(points) // 2)
    base = root_p / "awkward"
    assert _in_child(lambda: fresh(base, [], awkward)) == -signal.SIGKILL
    import shutil

    probe = root_p / "awkward-count"
    shutil.copytree(base, probe)
    assert _in_child(lambda: run(probe, [], -1)) == 0
    resume_points = json.loads((root_p / "awkward-count.points.json").read_text())
    # the resume's own recovery (lock, reading, cutting the rows, removing images, config, status):
    # from its first step row on it is a run as any other, and the loop above killed those at every write
    resume_points = resume_points[:next(k for k, label in enumerate(resume_points) if label == "write steps.jsonl")]
    for k, label in enumerate(resume_points):
        run_dir = root_p / f"resume-{k}"
        shutil.copytree(base, run_dir)
        cases.append(killed_then_resumed(run_dir, run, "resume", k, label))
    try:
        (root_p / "report.json").write_text(json.dumps({"reference": reference, "points": len(points),
                                                        "resume_points": len(resume_points), "cases": cases}))
    except Exception:
        traceback.print_exc()
        raise


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    {"slow-train": _child_slow_train, "kill-matrix": _child_kill_matrix}[mode](*rest)
