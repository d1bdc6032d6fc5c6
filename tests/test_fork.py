"""`train --fork`: a new run from a parent's checkpoint and history, the parent untouched (real MNIST)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from vae_visdom.cli import main
from vae_visdom.monitor.windows import TITLES
from vae_visdom.pages.compare import TITLES as CMP_TITLES
from vae_visdom.runs.files import read_jsonl

FAST = ["--no-views", "--log-interval", "100", "--batch-size", "256"]


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "trainer.lock"}


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    """A finished 3-epoch run that kept every epoch's checkpoint."""
    runs = tmp_path_factory.mktemp("runs")
    assert main(["train", "--no-visdom", "--runs-dir", str(runs), "--name", "base", "--epochs", "3",
                 "--keep-checkpoints", *FAST]) == 0
    return runs / "base"


def test_keep_checkpoints_keeps_one_per_epoch(parent):
    kept = sorted(p.name for p in (parent / "checkpoints").iterdir())
    assert kept == ["epoch_1.pt", "epoch_2.pt", "epoch_3.pt"]
    assert (parent / "checkpoints" / "epoch_3.pt").samefile(parent / "checkpoint.pt")  # a link, not a copy


def test_a_fork_at_epoch_2_starts_from_the_parents_history_and_leaves_the_parent_alone(parent, server):
    before = digests(parent)
    assert main(["train", "--fork", str(parent), "--at-epoch", "2", "--lr", "3e-4", "--port", str(server.port),
                 *FAST]) == 0
    fork = parent.parent / "base-fork1"
    cfg = json.loads((fork / "config.json").read_text())
    parent_rows = read_jsonl(parent / "metrics.jsonl")
    assert cfg["parent"] == str(parent) and cfg["forked_at"] == {"epoch": 2, "step": parent_rows[1]["step"]}
    assert (cfg["name"], cfg["lr"], cfg["epochs"]) == ("base-fork1", 3e-4, 3)
    rows = read_jsonl(fork / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[:2] == parent_rows[:2]  # the history up to the fork point, as the parent wrote it
    assert rows[2]["lr"] == 3e-4 and rows[2]["test_loss"] != parent_rows[2]["test_loss"]
    steps = read_jsonl(fork / "steps.jsonl")
    assert steps[:len([s for s in steps if s["step"] <= cfg["forked_at"]["step"]])] == \
        [s for s in read_jsonl(parent / "steps.jsonl") if s["step"] <= cfg["forked_at"]["step"]]
    assert sorted(p.name for p in fork.glob("sample_*.png")) == ["sample_1.png", "sample_2.png", "sample_3.png"]
    assert digests(parent) == before  # the parent's folder was only read
    # the fork's loss plot: the inherited history in light traces of its own, the fork's from the fork point on
    vis = server.client("base-fork1", use_incoming_socket=False)
    panes = json.loads(vis.get_window_data(env="base-fork1"))
    loss = next(p for p in panes.values() if p["title"] == TITLES["loss"])
    traces = {t["name"]: t for t in loss["content"]["data"]}
    assert traces["parent: test"]["x"] == [1, 2] and traces["test"]["x"] == [2, 3]
    assert traces["parent: test"]["y"][1] == traces["test"]["y"][0]  # the two meet at the fork point
    # the family view: parent and fork side by side in compare-base, built from their files
    family = json.loads(server.client("compare-base", use_incoming_socket=False).get_window_data(env="compare-base"))
    per_epoch = next(p for p in family.values() if p["title"] == CMP_TITLES["epochs"])
    tests = {t["name"]: t for t in per_epoch["content"]["data"] if t["name"].endswith(" test")}
    assert len(tests) == 2 and {len(t["x"]) for t in tests.values()} == {3}
    assert sorted(t["y"][2] for t in tests.values()) == sorted([rows[2]["test_loss"], parent_rows[2]["test_loss"]])
    table = next(p for p in family.values() if p["title"] == CMP_TITLES["table"])["content"]
    assert "lr=3e-4" in table and "(base)" in table  # what differs: the fork's lr


def test_a_fork_resumes_and_forks_of_forks_name_themselves(parent):
    runs = parent.parent
    assert main(["train", "--fork", str(parent), "--name", "second", "--no-visdom", "--epochs", "3", *FAST]) == 0
    fork = runs / "second"
    assert json.loads((fork / "config.json").read_text())["forked_at"]["epoch"] == 3  # the newest checkpoint
    assert main(["train", "--resume", str(fork), "--no-visdom", "--epochs", "4", *FAST]) == 0
    assert [r["epoch"] for r in read_jsonl(fork / "metrics.jsonl")] == [1, 2, 3, 4]
    assert main(["train", "--fork", str(fork), "--no-visdom", "--epochs", "4", *FAST]) == 0
    grandchild = json.loads((runs / "second-fork1" / "config.json").read_text())
    assert grandchild["parent"] == str(fork) and grandchild["forked_at"]["epoch"] == 4


def test_fork_mistakes_get_one_line_and_make_nothing(parent, tmp_path, capsys):
    made = set(parent.parent.iterdir())
    assert main(["train", "--fork", str(tmp_path), "--no-visdom"]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["train", "--fork", str(parent), "--at-epoch", "7", "--no-visdom"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint of epoch 7; kept epochs: 1-3" in err and "Traceback" not in err
    assert main(["train", "--at-epoch", "2", "--no-visdom"]) == 2
    assert "--at-epoch goes with --fork" in capsys.readouterr().err
    assert main(["train", "--fork", str(parent), "--nproc-per-node", "2", "--no-visdom"]) == 2  # not once per rank
    assert "fork it first" in capsys.readouterr().err
    assert set(parent.parent.iterdir()) == made
