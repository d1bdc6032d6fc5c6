"""Issue 24, items 5-8: bad files, damaged checkpoints, divergence and failures that are one line.

Real files (a real FIFO made with os.mkfifo), real trainer processes, a real visdom server where
a page is involved. Each test failed before its fix (see docs/security.md, rows 24.5-24.8).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import synthetic_data
from vae_visdom.config import TrainConfig
from vae_visdom.session import TrainingSession

REPO = Path(__file__).resolve().parents[1]
CHILD_ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SMALL = dict(epochs=1, log_interval=1, batch_size=32, hidden_dim=32, latent_dim=4, views=False)


def _good_run(root: Path, name: str) -> Path:
    """A real run: one epoch of a tiny MLP on synthetic data, its folder written by the trainer."""
    cfg = TrainConfig(visdom=False, out=str(root / name), **SMALL)
    TrainingSession(cfg, data=synthetic_data(n_train=96, n_test=32), progress=False).run()
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
            "from vae_visdom.monitor.home_table import table_html; "
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


def test_resume_of_a_run_with_a_damaged_config_is_one_line_naming_the_file(tmp_path):
    """24.5: --resume of a run whose config.json is [1, 2] was a 23-line traceback."""
    run = _good_run(tmp_path, "run")
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
