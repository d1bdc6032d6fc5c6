"""A sweep's runs live in its own folder, RUNS_DIR/<sweep>/<run> (runs/layout.py): every listing sees them,
the sweep's name is shown with them, Tune's own state is never taken for a run, and a fork of a trial lands
beside it. No Ray here: the folders are made as a sweep makes them (the real sweeps are in test_sweep.py)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from vae_visdom.cli import main
from vae_visdom.runs.records import find_runs, resolve_runs

FAST = ["--no-views", "--log-interval", "100", "--batch-size", "256"]


def make_run(folder: Path, name: str, state: str = "finished") -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"name": name, "epochs": 2, "port": 1, "lr": 1e-3}))
    (folder / "status.json").write_text(json.dumps({"state": state, "epoch": 2}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "step": e, "test_loss": 200.0 - e,
                                                              "train_loss": 201.0 - e}) + "\n" for e in (1, 2)))
    return folder


@pytest.fixture
def runs(tmp_path) -> Path:
    """runs/solo, and the sweep runs/sw with two runs, Tune's .tune (holding a decoy config.json) and its
    sweep.json; runs/junk/x/config.json is in no sweep's folder and is no run."""
    root = tmp_path / "runs"
    make_run(root / "solo", "solo")
    make_run(root / "sw" / "sw-0", "sw-0")
    make_run(root / "sw" / "sw-1", "sw-1", "running")
    (root / "sw" / "sweep.json").write_text(json.dumps({"sweep": "sw"}))
    make_run(root / "sw" / ".tune" / "train_trial_0_00000", "not-a-run")
    make_run(root / "junk" / "x", "not-a-run-either")
    return root


def test_the_runs_listing_sees_a_sweeps_runs_in_its_folder_and_names_the_sweep(runs, capsys):
    assert sorted(r.name for r in find_runs(runs)) == ["solo", "sw-0", "sw-1"]
    assert main(["runs", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln.split() for ln in out.splitlines()[1:]}
    assert set(lines) == {"solo", "sw-0", "sw-1"}, out
    assert "SWEEP" in out.splitlines()[0] and lines["sw-0"][1] == "sw" and lines["solo"][1] == "-", out
    assert main(["runs", "--runs-dir", str(runs), "--json"]) == 0
    rows = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert {r["name"]: r["sweep"] for r in rows} == {"solo": None, "sw-0": "sw", "sw-1": "sw"}


def test_compare_finds_a_sweeps_runs_by_the_sweeps_name_folder_or_run_name(runs):
    both = [runs / "sw" / "sw-0", runs / "sw" / "sw-1"]
    assert resolve_runs(["sw"], runs) == both
    assert resolve_runs([str(runs / "sw")], runs) == both
    assert resolve_runs(["sw-1"], runs) == [runs / "sw" / "sw-1"]
    with pytest.raises(LookupError):
        resolve_runs(["not-a-run"], runs)


def test_the_runs_home_lists_a_sweeps_runs_with_the_sweep_and_leaves_tunes_folders_out(runs):
    from vae_visdom.pages.home import RunsHome
    from vae_visdom.pages.home_table import COLUMNS, table_html

    home = RunsHome(runs, port=1)
    home.scan()
    assert sorted(home.order) == ["solo", "sw/sw-0", "sw/sw-1"]
    assert home.records["sw/sw-1"].state == "running" and home.records["sw/sw-0"].name == "sw-0"
    html = table_html([home.records[n] for n in sorted(home.records)], str(runs))
    assert COLUMNS[1] == "sweep" and "not-a-run" not in html
    cells = [row.split("</td>") for row in html.split("<tr>")[2:]]
    assert [c[1].rsplit(">", 1)[-1] for c in cells] == ["-", "sw", "sw"]  # the sweep column, per run


def test_a_page_started_run_in_a_sweeps_folder_counts_under_the_pages_limit(runs):
    from vae_visdom.runs import page_runs
    from vae_visdom.runs.layout import runs_root

    fork = make_run(runs / "sw" / "sw-0-fork1", "sw-0-fork1")
    (fork / page_runs.MARK).write_text(json.dumps({"by": "fork", "pid": os.getpid(), "started": time.time()}))
    assert page_runs.running(runs) == ["sw-0-fork1"]
    assert runs_root(runs / "sw" / "sw-0") == runs and runs_root(runs / "solo") == runs


def test_a_fork_of_a_sweeps_run_lands_beside_it_in_the_sweeps_folder(tmp_path, capsys):
    runs = tmp_path / "runs"
    (runs / "sw").mkdir(parents=True)
    (runs / "sw" / "sweep.json").write_text(json.dumps({"sweep": "sw"}))
    assert main(["train", "--no-visdom", "--runs-dir", str(runs / "sw"), "--name", "sw-0", "--epochs", "1",
                 *FAST]) == 0
    assert main(["train", "--fork", str(runs / "sw" / "sw-0"), "--no-visdom", "--epochs", "2", *FAST]) == 0
    fork = runs / "sw" / "sw-0-fork1"
    assert json.loads((fork / "config.json").read_text())["parent"] == str(runs / "sw" / "sw-0")
    assert {(r.name, r.run_dir) for r in find_runs(runs)} == {("sw-0", runs / "sw" / "sw-0"), ("sw-0-fork1", fork)}
    capsys.readouterr()
    assert main(["runs", "--runs-dir", str(runs)]) == 0
    assert [ln.split()[:2] for ln in capsys.readouterr().out.splitlines()[1:]] == [["sw-0", "sw"],
                                                                                  ["sw-0-fork1", "sw"]]
