"""`vae-visdom sweep`: the grid, its validation, the scheduler, and real sweeps on MNIST."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vae_visdom.runs.files import read_jsonl
from vae_visdom.cli import build_parser, main
from vae_visdom.monitor import TITLES
from vae_visdom.pages.compare import TITLES as CMP_TITLES
from vae_visdom.sweep import Job, plan, run_jobs

REPO = Path(__file__).resolve().parents[1]


def sweep(tmp_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vae_visdom", "sweep", "--runs-dir", str(tmp_path / "runs"),
                           "--name", "sw", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("args, problem", [
    (["--lr", "1e-3,abc"], "lr: 'abc' is not a number"),
    (["--lr", "1e-3,"], "lr: empty value"),
    (["--batch-size", "64,0"], "batch_size: '0' out of range"),
    (["--epochs", "2,1.5"], "epochs: '1.5' is not a whole number"),
    (["--optimizer", "adam,rmsprop"], "optimizer: unknown value 'rmsprop'"),
    (["--model", "mlp,resnet"], "model: unknown value 'resnet'"),
    (["--lr", "1e-3", "--out", "x"], "--out does not apply to a sweep"),
])
def test_a_bad_grid_value_is_refused_before_anything_starts(tmp_path, capsys, args, problem):
    assert main(["sweep", "--runs-dir", str(tmp_path / "runs"), *args]) == 2
    err = capsys.readouterr().err
    assert problem in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_the_grid_is_every_combination_and_each_run_gets_the_train_flags(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    args = build_parser().parse_args(["sweep", "--lr", "1e-3,3e-4,0.001", "--batch-size", "64,128", "--epochs", "2",
                                      "--dataset", "mnist", "--binarize", "--no-visdom", "--port", "9999",
                                      "--runs-dir", str(tmp_path), "--name", "sw", "--parallel", "2"])
    name, jobs, parallel = plan(args)
    assert (name, parallel) == ("sw", 2)
    assert [j.name for j in jobs] == ["sw-lr1e-3-bs64", "sw-lr1e-3-bs128", "sw-lr3e-4-bs64", "sw-lr3e-4-bs128"]
    seen = set()
    for job in jobs:
        assert job.argv[:4] == [sys.executable, "-m", "vae_visdom", "train"]
        train = build_parser().parse_args(job.argv[3:])  # what the child process will see
        seen.add((train.lr, train.batch_size))
        assert (train.epochs, train.dataset, train.binarize, train.visdom, train.port) == (2, "mnist", True, False,
                                                                                          9999)
        assert (train.name, Path(train.runs_dir)) == (job.name, tmp_path)
        assert job.run_dir == tmp_path / job.name
        cores = len(os.sched_getaffinity(0))
        assert job.env["OMP_NUM_THREADS"] == str(max(1, cores // 2))  # two runs share the cores
    assert seen == {(lr, bs) for lr in (1e-3, 3e-4) for bs in (64, 128)}


def test_at_most_n_runs_at_once_and_a_failure_stops_no_other(tmp_path):
    """Real processes: each writes its start and end time; one of them fails."""
    code = ("import sys, time; t0 = time.time(); time.sleep(0.6); "
            "print(t0, time.time()); sys.exit(int(sys.argv[1]))")
    jobs = [Job(f"j{i}", [sys.executable, "-c", code, "3" if i == 1 else "0"], tmp_path / f"j{i}")
            for i in range(5)]
    results = run_jobs(jobs, parallel=2, poll=0.02)
    assert [r.returncode for r in results] == [0, 3, 0, 0, 0]
    spans = [tuple(map(float, (j.log_path).read_text().split())) for j in jobs]
    events = sorted([(t0, 1) for t0, _ in spans] + [(t1, -1) for _, t1 in spans])
    running, most = 0, 0
    for _, delta in events:
        running += delta
        most = max(most, running)
    assert most == 2


@pytest.mark.slow
def test_a_small_sweep_trains_each_run_in_its_own_env_and_builds_the_comparison(tmp_path, visdom_server):
    done = sweep(tmp_path, "--lr", "1e-3,3e-4", "--epochs", "1", "--batch-size", "1024", "--dataset", "mnist",
                 "--port", str(visdom_server.port), "--parallel", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    names = ["sw-lr1e-3", "sw-lr3e-4"]
    rows = {n: read_jsonl(tmp_path / "runs" / n / "metrics.jsonl") for n in names}
    assert {n: [r["epoch"] for r in rows[n]] for n in names} == {n: [1] for n in names}
    assert all((tmp_path / "runs" / n / "train.log").stat().st_size > 0 for n in names)
    best = min(names, key=lambda n: rows[n][0]["test_loss"])
    lr = {"sw-lr1e-3": "1e-3", "sw-lr3e-4": "3e-4"}[best]
    assert f"best: lr={lr} ({best}): test loss {rows[best][0]['test_loss']:.2f} nats at epoch 1" in done.stdout

    client = visdom_server.client("compare-sw", use_incoming_socket=False)
    for n in names:  # each run streamed to its own env
        own = json.loads(client.get_window_data(env=n))
        assert TITLES["loss"] in {p["title"] for p in own.values()}
    cmp = {p["title"]: p for p in json.loads(client.get_window_data(env="compare-sw")).values()}
    assert set(cmp) == set(CMP_TITLES.values())
    legend = [t["name"] for t in cmp[CMP_TITLES["epochs"]]["content"]["data"]]
    assert sorted(legend) == ["lr=1e-3 test", "lr=1e-3 train", "lr=3e-4 test", "lr=3e-4 train"]


@pytest.mark.slow
def test_a_failing_run_is_reported_and_the_others_finish(tmp_path):
    # 65536 passes the sweep's own check (at most 65536) but is larger than MNIST's 60000 training images
    done = sweep(tmp_path, "--batch-size", "1024,65536", "--epochs", "1", "--dataset", "mnist", "--no-visdom",
                 "--parallel", "2")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED sw-bs65536 (exit 2" in done.stdout
    assert "1 of 2 runs failed" in done.stdout and "larger than the training set" in done.stdout
    good = tmp_path / "runs" / "sw-bs1024"
    assert [r["epoch"] for r in read_jsonl(good / "metrics.jsonl")] == [1]
    assert json.loads((good / "status.json").read_text())["state"] == "finished"
    assert "larger than the training set" in (tmp_path / "runs" / "sw-bs65536" / "train.log").read_text()


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and text in (p / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(p.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_a_terminated_sweep_stops_its_runs_and_starts_no_more(tmp_path):
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "vae_visdom", "sweep", "--runs-dir", str(tmp_path / "runs"),
                             "--name", "sw", "--lr", "1e-3,2e-3,3e-3", "--epochs", "50", "--batch-size", "1024",
                             "--no-visdom", "--parallel", "2"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    logs = [tmp_path / "runs" / n / "train.log" for n in ("sw-lr1e-3", "sw-lr2e-3")]
    deadline = time.monotonic() + 120
    while not all(p.exists() and "epoch 1" in p.read_text() for p in logs):  # both are training
        assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read() if proc.poll() else ""
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out
    assert "interrupted" in out and "FAILED" not in out
    assert not (tmp_path / "runs" / "sw-lr3e-3").exists()
    for n in ("sw-lr1e-3", "sw-lr2e-3"):
        assert json.loads((tmp_path / "runs" / n / "status.json").read_text())["state"] == "stopped"
    assert _processes_mentioning(str(tmp_path / "runs")) == []
