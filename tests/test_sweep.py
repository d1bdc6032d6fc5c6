"""`vae-visdom sweep` on Ray Tune: the space and its validation, and real sweeps (real Ray, real trainers).

The Ray tests start Ray in the sweep's own process (2 CPUs, no dashboard), train on the first images of
MNIST (the hidden --test-subset) for a few short epochs, and end their Ray with the sweep's process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vae_visdom.cli import build_parser, main
from vae_visdom.monitor import TITLES
from vae_visdom.pages.compare import TITLES as CMP_TITLES
from vae_visdom.pages.population import TITLE as POP_TITLE
from vae_visdom.runs.files import read_jsonl
from vae_visdom.runs.records import find_runs
from vae_visdom.sweep import plan
from vae_visdom.sweep_space import Range, parse_space

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--test-subset", "600", "--batch-size", "100", "--no-views", "--dataset", "mnist"]


def sweep(tmp_path: Path, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
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
    (["--scheduler", "hyperband"], "--scheduler 'hyperband': unknown; choose from fifo, asha, pbt"),
    (["--lr", "1e-2:1e-4"], "lr: the range '1e-2:1e-4' is empty"),
    (["--lr", "3e-4:3e-4"], "lr: the range '3e-4:3e-4' is empty"),
    (["--lr", "log:abc:1e-2"], "lr: 'abc' is not a number"),
    (["--lr", "1e-4:1e-2:3"], "lr: '1e-4:1e-2:3' is not a range"),
    (["--beta", "0.5:2000"], "beta: '2000' out of range"),
    (["--batch-size", "log:0:64"], "batch_size: '0' out of range"),
    (["--optimizer", "adam:sgd"], "optimizer: a range ('adam:sgd') applies only to"),
    (["--scheduler", "pbt", "--batch-size", "64"], "--scheduler pbt needs something to mutate"),
    (["--perturb-every", "2", "--lr", "1e-3,3e-4"], "--perturb-every goes with --scheduler pbt"),
    (["--lr", "1e-3", "--address", "127.0.0.1:1"], "--address 127.0.0.1:1: no Ray cluster answers there"),
    (["--lr", "1e-3", "--address", "nohost"], "--address 'nohost': give HOST:PORT"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_starts(tmp_path, capsys, args, problem):
    assert main(["sweep", "--runs-dir", str(tmp_path / "runs"), *args]) == 2
    err = capsys.readouterr().err
    assert problem in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()


@pytest.mark.parametrize("args, problem", [
    (["--scheduler", "pbt", "--lr", "log:1e-4:1e-2", "--perturb-every", "0"], "--perturb-every: '0' is not a whole"),
    (["--samples", "0"], "--samples: '0' is not a whole number >= 1"),
])
def test_bad_counts_are_refused_by_the_parser(tmp_path, capsys, args, problem):
    with pytest.raises(SystemExit) as done:
        main(["sweep", "--runs-dir", str(tmp_path / "runs"), *args])
    err = capsys.readouterr().err
    assert done.value.code == 2 and problem in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


def test_ranges_are_checked_by_trains_rules_and_lists_make_the_grid():
    space = parse_space({"lr": "log:1e-4:1e-2", "batch_size": "32:256", "beta": "0.5,1,2", "epochs": None})
    assert space.axes["lr"] == Range("lr", 1e-4, 1e-2, log=True, integer=False)
    assert space.axes["batch_size"] == Range("batch_size", 32, 256, log=False, integer=True)
    assert space.axes["batch_size"].clip(300.4) == 256 and space.axes["lr"].clip(1e-6) == 1e-4  # PBT stays inside
    assert space.grid() == [{"beta": 0.5}, {"beta": 1.0}, {"beta": 2.0}]
    assert set(space.mutable()) == {"lr", "batch_size", "beta"} and space.varying == ["lr", "batch_size", "beta"]


def test_pbt_perturbs_the_values_in_force_and_stays_in_the_rules():
    """A value typed into a trial's panel is what its clone's perturbation starts from (the trial reports its
    values in force with every result), and x0.8 / x1.2 never leaves the range."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers.pbt import _PBTTrialState

    from vae_visdom.sweep_ray import make_scheduler

    pbt = make_scheduler("pbt", parse_space({"lr": "log:1e-4:1e-2", "batch_size": "32,64,128"}), 6, 1)
    strong, weak = (Trial("t", config={"lr": 1e-3, "batch_size": 64}, stub=True) for _ in range(2))
    for t in (strong, weak):
        pbt._trial_state[t] = _PBTTrialState(t)
    pbt._trial_state[strong].last_result = {"in_force_lr": 5e-3, "in_force_batch_size": 128}  # set from its panel
    lrs = []
    for _ in range(40):
        config, _ = pbt._get_new_config(weak, strong)
        lrs.append(config["lr"])
        assert config["batch_size"] in (32, 64, 128) and 1e-4 <= config["lr"] <= 1e-2
    from_in_force = [lr for lr in lrs if lr in (pytest.approx(4e-3), pytest.approx(6e-3))]
    from_started = [lr for lr in lrs if lr in (pytest.approx(8e-4), pytest.approx(1.2e-3))]
    assert len(from_in_force) >= 15 and not from_started  # a quarter are resampled in the range instead
    pbt._trial_state[strong].last_result = {"in_force_lr": 1e-2, "in_force_batch_size": 128}
    assert all(pbt._get_new_config(weak, strong)[0]["lr"] <= 1e-2 for _ in range(20))


def test_the_plan_names_every_run_and_passes_the_train_flags(tmp_path):
    args = build_parser(["sweep"]).parse_args(["sweep", "--lr", "1e-3,3e-4,0.001", "--batch-size", "64,128",
                                               "--epochs", "2",
                                      "--dataset", "mnist", "--binarize", "--no-visdom", "--port", "9999",
                                      "--runs-dir", str(tmp_path), "--name", "sw", "--parallel", "2"])
    p = plan(args)
    assert (p.sweep, p.parallel, p.scheduler, p.epochs) == ("sw", 2, "fifo", 2)
    assert p.names == ["sw-lr1e-3-bs64", "sw-lr1e-3-bs128", "sw-lr3e-4-bs64", "sw-lr3e-4-bs128"]
    assert {k: p.trial.base[k] for k in ("dataset", "binarize", "visdom", "port")} == \
        {"dataset": "mnist", "binarize": True, "visdom": False, "port": 9999}
    assert "lr" not in p.trial.base and p.trial.runs_dir == str(tmp_path.resolve() / "sw")  # the sweep's folder
    sampled = plan(build_parser(["sweep"]).parse_args(["sweep", "--lr", "log:1e-4:1e-2", "--samples", "3", "--runs-dir",
                                              str(tmp_path), "--name", "rs"]))
    assert sampled.names == ["rs-0", "rs-1", "rs-2"]  # sampled values do not name a run: the trial number does
    (tmp_path / "sw").mkdir()
    with pytest.raises(Exception, match="already exists"):
        plan(args)


@pytest.mark.slow
def test_a_grid_sweep_runs_ray_trials_and_a_failing_run_harms_no_other(tmp_path):
    """Real Ray (local), real trainers: a 2-point grid, one of whose runs cannot start (batch > its data)."""
    t0 = time.monotonic()
    done = sweep(tmp_path, "--lr", "1e-3", "--batch-size", "100,65536", "--epochs", "2", "--no-visdom",
                 "--parallel", "2", "--test-subset", "600", "--no-views", "--dataset", "mnist")
    seconds = time.monotonic() - t0
    assert done.returncode == 1, done.stdout + done.stderr
    good, bad = tmp_path / "runs" / "sw" / "sw-bs100", tmp_path / "runs" / "sw" / "sw-bs65536"
    assert [r["epoch"] for r in read_jsonl(good / "metrics.jsonl")] == [1, 2]
    assert json.loads((good / "status.json").read_text())["state"] == "finished"
    assert "[1/2] started sw-bs100" in done.stdout and "finished sw-bs100: epoch 2" in done.stdout
    assert "1 of 2 runs failed" in done.stdout and "sw-bs65536" in done.stdout
    assert "larger than the training set (600 examples)" in (bad / "train.log").read_text()
    assert (tmp_path / "runs" / "sw" / ".tune").is_dir()  # Tune's own state, in the sweep's folder with its runs
    assert [r.name for r in find_runs(tmp_path / "runs")] == ["sw-bs100"]  # no Tune folder (the other failed first)
    # stderr: neither Ray's notices nor warnings nor a traceback (a failed run is said on stdout, in one line)
    noise = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert not [ln for ln in noise if "WARNING" in ln or "Tip:" in ln or "Traceback" in ln], done.stderr
    print(f"grid sweep on Ray: {seconds:.1f} s")


@pytest.mark.slow
def test_asha_stops_a_weak_run_early_and_the_run_says_so(tmp_path):
    """One trial at a time, the strong one first: at the first rung the weak one is below the cutoff."""
    done = sweep(tmp_path, "--scheduler", "asha", "--lr", "1e-2,1e-6", "--epochs", "3", "--no-visdom",
                 "--parallel", "1", *SMALL)
    assert done.returncode == 0, done.stdout + done.stderr
    strong, weak = tmp_path / "runs" / "sw" / "sw-lr0.01", tmp_path / "runs" / "sw" / "sw-lr1e-6"
    assert [r["epoch"] for r in read_jsonl(strong / "metrics.jsonl")] == [1, 2, 3]
    assert [r["epoch"] for r in read_jsonl(weak / "metrics.jsonl")] == [1]
    status = json.loads((weak / "status.json").read_text())
    assert status["state"] == "stopped" and "stopped by the sweep after epoch 1" in status["message"]
    assert [e["source"] for e in read_jsonl(weak / "events.jsonl")] == ["sweep"]
    assert (weak / "checkpoint.pt").is_file()  # `train --resume` can take it further


@pytest.mark.slow
def test_pbt_forks_trials_live_in_their_own_envs_and_the_population_env(tmp_path, visdom_server):
    """Real Ray, real trainers, a real visdom server: a population of 2, perturbed every epoch, one trial at a
    time (so PBT pauses each after every epoch and they take turns: the exploit is certain by epoch 2, and
    every pause is a restore of the trial's own checkpoint)."""
    t0 = time.monotonic()
    done = sweep(tmp_path, "--scheduler", "pbt", "--samples", "2", "--lr", "log:1e-5:1e-2", "--perturb-every", "1",
                 "--epochs", "3", "--parallel", "1", "--port", str(visdom_server.port), *SMALL)
    seconds = time.monotonic() - t0
    assert done.returncode == 0, done.stdout + done.stderr
    assert "started again" in done.stdout
    runs = {n: tmp_path / "runs" / "sw" / n for n in ("sw-0", "sw-1")}
    for run in runs.values():  # every epoch once: a restore neither loses nor doubles one
        assert [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3]
        assert json.loads((run / "status.json").read_text())["state"] == "finished"
    configs = {n: json.loads((r / "config.json").read_text()) for n, r in runs.items()}
    forks = {n: c for n, c in configs.items() if c.get("parent")}
    assert forks, done.stdout  # a weaker one copied a stronger one's state
    for child, cfg in forks.items():
        parent = ({"sw-0", "sw-1"} - {child}).pop()
        assert Path(cfg["parent"]) == runs[parent] and cfg["forked_at"]["epoch"] >= 1
        pbt = [e for e in read_jsonl(runs[child] / "events.jsonl") if e["source"] == "pbt"]
        assert pbt[-1]["message"].startswith(f"PBT: from {parent} at epoch {cfg['forked_at']['epoch']}, lr ")
        assert " -> " in pbt[-1]["message"] and pbt[-1]["value"]["changes"]["lr"][1] == cfg["lr"]
        assert read_jsonl(runs[child] / "pbt.jsonl")[-1]["forked_at"] == cfg["forked_at"]
    scheduler_stops = [e for r in runs.values() for e in read_jsonl(r / "events.jsonl") if e["source"] == "sweep"]
    assert scheduler_stops  # PBT's pauses are in the runs' events too

    client = visdom_server.client("compare-sw", use_incoming_socket=False)
    own = {n: {p["title"]: p for p in json.loads(client.get_window_data(env=n)).values()} for n in runs}
    for n in runs:  # each trial streamed to its own env
        assert TITLES["loss"] in own[n]
    child = next(iter(forks))
    parent_of = {c: Path(cfg["parent"]).name for c, cfg in forks.items()}
    configs_now = {n: json.loads((r / "config.json").read_text()) for n, r in runs.items()}
    assert any("PBT: from" in json.dumps(p.get("content")) for p in own[child].values())  # its events pane
    cmp = {p["title"]: p for p in json.loads(client.get_window_data(env="compare-sw")).values()}
    assert set(cmp) == set(CMP_TITLES.values()) | {POP_TITLE}
    traces = [t["name"] for t in cmp[CMP_TITLES["epochs"]]["content"]["data"]]
    assert "fork points" in traces  # where PBT's exploit happened
    table = cmp[POP_TITLE]["content"]  # the population now: the fork's row names its parent and its lr in force
    row = next(r for r in table.split("<tr>") if f">{child}<" in r)
    assert f">{parent_of[child]}<" in row and f">{configs_now[child]['lr']:.3g}<" in row and ">finished<" in row
    print(f"PBT sweep on Ray: {seconds:.1f} s")


@pytest.mark.slow
def test_a_sweep_on_a_two_node_ray_cluster_places_runs_on_both_nodes(tmp_path, visdom_server):
    """A real two-node cluster on this machine (Ray's cluster utilities: a head and a second node, one CPU
    each, loopback only); the sweep joins it with --address; both runs stream to the one visdom server."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, shutdown_at_exit=True,
                      head_node_args={"num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1"})
    try:
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        nodes = {n.node_id for n in cluster.list_all_nodes()}
        assert len(nodes) == 2
        t0 = time.monotonic()
        done = sweep(tmp_path, "--lr", "1e-3,3e-3", "--epochs", "2", "--parallel", "2", "--address", cluster.address,
                     "--port", str(visdom_server.port), *SMALL, timeout=180)
        seconds = time.monotonic() - t0
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"on the Ray cluster at {cluster.address}" in done.stdout
        placed = {}
        for n in ("sw-lr1e-3", "sw-lr3e-3"):
            run = tmp_path / "runs" / "sw" / n
            assert [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2]
            line = next(ln for ln in (run / "train.log").read_text().splitlines() if "on Ray node" in ln)
            placed[n] = line.rsplit(" ", 1)[-1]
        assert set(placed.values()) == nodes  # one CPU a node, two runs at once: one on each
        client = visdom_server.client("compare-sw", use_incoming_socket=False)
        for n in placed:
            assert TITLES["loss"] in {p["title"] for p in json.loads(client.get_window_data(env=n)).values()}
        print(f"sweep on a two-node cluster: {seconds:.1f} s")
    finally:
        cluster.shutdown()


@pytest.mark.slow
def test_a_killed_sweep_continues_with_resume_and_no_epoch_is_lost_or_doubled(tmp_path):
    """kill -9 of the sweep's driver while both runs train (its local Ray goes with it), then
    `sweep --resume RUNS_DIR/sw` (the sweep's folder): each run goes on from its last checkpoint to the end."""
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "vae_visdom", "sweep", "--runs-dir", str(tmp_path / "runs"),
                             "--name", "sw", "--lr", "1e-3,3e-3", "--epochs", "8", "--parallel", "2", "--no-visdom",
                             *SMALL], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    runs = [tmp_path / "runs" / "sw" / n for n in ("sw-lr1e-3", "sw-lr3e-3")]
    deadline = time.monotonic() + 180
    while not all(len(read_jsonl(r / "metrics.jsonl")) >= 2 for r in runs):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {r.name: len(read_jsonl(r / "metrics.jsonl")) for r in runs}
    done = subprocess.run([sys.executable, "-m", "vae_visdom", "sweep", "--resume",
                           str(tmp_path / "runs" / "sw")], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    for r in runs:
        assert [row["epoch"] for row in read_jsonl(r / "metrics.jsonl")] == list(range(1, 9)), before
        assert json.loads((r / "status.json").read_text())["state"] == "finished"
    assert "sweep sw: 2 runs" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
def test_a_sweep_stopped_with_ctrl_c_ends_its_runs_with_their_true_status(tmp_path, how):
    """Ctrl-C (SIGINT to the terminal's whole process group: the driver and Ray's workers), or a `kill` of the
    driver alone (SIGTERM): Tune's graceful stop. A trial caught at its report writes "stopped" itself; one
    caught mid-epoch is ended by Ray before it can, and the sweep says it for it once no trainer holds its
    folder: "stopped", interrupted in that epoch, with the checkpoint of its last epoch (not "crashed"). No
    process of the sweep is left."""
    import signal

    from vae_visdom.runs.records import load_run

    proc = subprocess.Popen([sys.executable, "-m", "vae_visdom", "sweep", "--runs-dir", str(tmp_path / "runs"),
                             "--name", "sw", "--lr", "1e-3,3e-3", "--epochs", "50", "--parallel", "2", "--no-visdom",
                             # all of MNIST: an epoch longer than Tune waits for its trials to stop (5 to 10 s),
                             # so the stop ends them mid-epoch (seen "crashed" before the sweep said it for them)
                             "--batch-size", "100", "--no-views", "--dataset", "mnist"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    runs = [tmp_path / "runs" / "sw" / n for n in ("sw-lr1e-3", "sw-lr3e-3")]
    deadline = time.monotonic() + 300
    while not all(read_jsonl(r / "metrics.jsonl") for r in runs):  # both are training
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    time.sleep(2)  # into the next epoch
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal sends on Ctrl-C
    else:
        proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out
    assert f"interrupted: the runs at work were ended and keep their last checkpoints; continue the sweep with " \
           f"`vae-visdom sweep --resume {tmp_path / 'runs' / 'sw'}`" in out and "FAILED" not in out
    for r in runs:
        rec = load_run(r)
        print(f"{r.name}: {rec.state}: {rec.status.get('message')}")
        assert rec.state == "stopped" and rec.epochs_done < 50, rec.status
        assert (r / "checkpoint.pt").is_file()
        if "interrupted" in rec.status["message"]:  # caught mid-epoch: the sweep said it
            assert f"its checkpoint is of epoch {rec.epochs_done}" in rec.status["message"], rec.status
    assert [p for p in Path("/proc").iterdir() if p.name.isdigit() and _mentions(p, str(tmp_path))] == []


def _mentions(proc: Path, text: str) -> bool:
    try:
        return text in (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def test_a_value_typed_into_a_trials_panel_steers_that_trial_alone_and_pbt_starts_from_it(tmp_path, server):
    """What a person does during a PBT sweep: open one trial's page, lower its lr in the control panel. The
    browser's own websocket message reaches that trial alone (the other keeps its lr), the change is applied at
    a step and recorded as the page's (source "panel"), every result the trial reports to PBT afterwards carries
    it as the lr in force (until PBT copies another trial into it), and an exploit that copies this trial says
    it starts from the typed value. (The trial's own rows are no witness: an exploit into it replaces its
    history up to the copied checkpoint with the parent's, as a fork does.)"""
    import websocket

    from tests.test_distributed import control_window
    from vae_visdom.monitor.panel import ROWS

    cmd = [sys.executable, "-m", "vae_visdom", "sweep", "--runs-dir", str(tmp_path / "runs"), "--name", "sw",
           "--scheduler", "pbt", "--samples", "2", "--lr", "log:5e-4:2e-3", "--perturb-every", "2", "--epochs", "8",
           "--parallel", "2", "--port", str(server.port), "--test-subset", "6000", "--batch-size", "100",
           "--no-views", "--dataset", "mnist", "--seed", "3"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 240
        win = None
        while win is None and proc.poll() is None and time.monotonic() < deadline:
            win = control_window(server, "sw-0")
            time.sleep(0.2)
        assert win is not None, "sw-0's control panel never appeared"
        ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/socket", timeout=5)  # the page's socket
        try:  # what the page sends when 0.00025 is typed into the lr row and Enter pressed
            ws.send(json.dumps({"cmd": "forward_to_vis", "data": {"target": win, "eid": "sw-0", "event_type":
                                "PropertyUpdate", "propertyId": ROWS.index("lr"), "value": "0.00025"}}))
        finally:
            ws.close()
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    runs = {n: tmp_path / "runs" / "sw" / n for n in ("sw-0", "sw-1")}
    typed = [e for e in read_jsonl(runs["sw-0"] / "events.jsonl") if e["name"] == "lr" and e["source"] == "panel"]
    assert typed and typed[0]["accepted"] and typed[0]["value"] == 0.00025, out
    assert not [e for e in read_jsonl(runs["sw-1"] / "events.jsonl") if e["source"] == "panel"]  # that trial alone
    assert [r["epoch"] for r in read_jsonl(runs["sw-0"] / "metrics.jsonl")] == list(range(1, 9))
    # what PBT saw: sw-0's reports (Tune's result.json), from the change to the first copy into sw-0
    reports = next(rows for f in (tmp_path / "runs" / "sw").glob(".tune/*/result.json")
                   if (rows := read_jsonl(f)) and rows[0].get("run") == "sw-0")
    copies = [e["epoch"] for e in read_jsonl(runs["sw-0"] / "events.jsonl") if e["source"] == "pbt"]
    until = min((c for c in copies if c >= typed[0]["epoch"]), default=8)
    seen = [r["in_force_lr"] for r in reports if typed[0]["epoch"] <= r["epoch"] <= until]
    assert seen and all(lr == 0.00025 for lr in seen), reports
    # an exploit that copied sw-0 after the change perturbed the typed value, not the one PBT last set
    for e in read_jsonl(runs["sw-1"] / "events.jsonl"):
        if e["source"] == "pbt" and "from sw-0" in e["message"] and e["step"] > typed[0]["step"]:
            assert "lr 0.00025 ->" in e["message"], e["message"]


def test_a_run_ended_mid_epoch_by_the_sweeps_stop_is_stopped_with_its_checkpoint_not_crashed(tmp_path):
    """What the sweep does after Tune's graceful stop, on folders as Ray leaves them: a trial ended mid-epoch 3
    keeps status "running" and a lock whose trainer is gone; a finished one and one whose lock cannot be told
    are left as they are."""
    from vae_visdom.runs.lock import RunLock
    from vae_visdom.runs.records import load_run
    from vae_visdom.sweep import say_interrupted

    def run(name: str, state: str) -> Path:
        d = tmp_path / "sw" / name
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"name": name, "epochs": 9}))
        (d / "status.json").write_text(json.dumps({"state": state, "epoch": 2, "step": 12, "epochs": 9}))
        (d / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "test_loss": 9.0}) + "\n" for e in (1, 2)))
        (d / "checkpoint.pt").write_bytes(b"x")
        lock = RunLock(d).acquire()
        lock.release()
        return d

    cut, done, unknown = run("sw-0", "running"), run("sw-1", "finished"), run("sw-2", "running")
    info = json.loads((cut / "trainer.lock").read_text())
    (cut / "trainer.lock").write_text(json.dumps({**info, "pid": 2**22 + 7}))  # its worker is gone
    assert load_run(cut).state == "crashed"
    assert say_interrupted([cut, done, unknown, tmp_path / "sw" / "never"], tmp_path / "sw", wait_s=0) == [cut]
    rec = load_run(cut)
    assert rec.state == "stopped" and rec.status["epoch"] == 2, rec.status
    assert rec.status["message"] == ("interrupted by the sweep's stop during epoch 3 (Ray ended it before it could "
                                     f"say so); its checkpoint is of epoch 2; `vae-visdom sweep --resume "
                                     f"{tmp_path / 'sw'}` continues it")
    assert load_run(done).state == "finished" and load_run(unknown).state == "running"


def test_resume_takes_the_sweeps_folder_and_still_a_sweep_folder_of_before(tmp_path):
    """`sweep --resume RUNS_DIR/<sweep>` (Tune's state in .tune/, the runs beside it); a RUNS_DIR/<sweep>.sweep
    made before (Tune's state in tune/, its runs flat in RUNS_DIR) resumes too; no Tune state: one line."""
    from vae_visdom.config import UsageError
    from vae_visdom.sweep import save_plan

    args = build_parser(["sweep"]).parse_args(["sweep", "--lr", "1e-3,3e-4", "--runs-dir", str(tmp_path / "runs"),
                                               "--name", "sw", "--no-visdom"])
    p = plan(args)
    assert p.storage == (tmp_path / "runs" / "sw").resolve() and p.run_dirs[0].parent == p.storage
    p.storage.mkdir(parents=True)
    save_plan(p, {"visdom": False, "server": "http://localhost", "port": 8097, "env": None})
    again = build_parser(["sweep"]).parse_args(["sweep", "--resume", str(p.storage)])
    with pytest.raises(UsageError, match="no Tune state there"):
        plan(again)
    (p.storage / ".tune").mkdir()
    resumed = plan(again)
    assert (resumed.resume, resumed.tune_dir, resumed.names, resumed.run_dirs) == (True, ".tune", p.names, p.run_dirs)
    old = tmp_path / "runs" / "old.sweep"  # the layout of before: its plan names RUNS_DIR as the runs' folder
    (old / "tune").mkdir(parents=True)
    saved = json.loads((p.storage / "sweep.json").read_text())
    saved["trial"]["runs_dir"] = str(tmp_path / "runs")
    (old / "sweep.json").write_text(json.dumps(saved))
    before = plan(build_parser(["sweep"]).parse_args(["sweep", "--resume", str(old)]))
    assert before.tune_dir == "tune" and before.run_dirs[0] == tmp_path / "runs" / "sw-lr1e-3"
