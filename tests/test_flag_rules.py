"""Flags are checked like values: a port outside 1..65535, a server that is no http(s)
address, `--nproc-per-node 0` are refused with exit 2 and one line by real CLI processes, before anything
starts; and a run refused at start-up (a model that does not fit the data, a batch larger than the data, a
missing data folder) leaves nothing behind in the folder it made."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.fixtures import REPO
from vae_visdom.config import ConfigError, parse_value


def vae(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "vae_visdom", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def one_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stdout, proc.stderr)
    return lines[0]


def test_ports_and_server_addresses_follow_the_rule_table():
    assert [parse_value("port", p) for p in ("1", "8097", "65535", 443)] == [1, 8097, 65535, 443]
    for bad in ("0", "-1", "65536", "73987", "70000", "8097.0", "http", ""):
        with pytest.raises(ConfigError, match="port"):
            parse_value("port", bad)
    for good in ("http://127.0.0.1", "https://example.org", "http://[::1]", "http://localhost/"):
        assert parse_value("server", good) == good.rstrip("/")
    for bad in ("not a url", "ftp://host", "http://", "127.0.0.1", "http://host:8097", "http://h/x?y",
                "http://user@host", "javascript:alert(1)"):
        with pytest.raises(ConfigError, match="server"):
            parse_value("server", bad)
    assert parse_value("nproc_per_node", "1") == 1
    with pytest.raises(ConfigError, match="nproc_per_node"):
        parse_value("nproc_per_node", "0")


@pytest.mark.parametrize("args", [
    ["serve", "--port", "73987"], ["serve", "--port", "0"], ["home", "--port", "70000"],
    ["replay", "x", "--port", "-5"], ["compare", "x", "--port", "65536"],
])
def test_every_command_refuses_a_port_outside_1_to_65535(args):
    line = one_line(vae(*args))
    assert "port" in line and "1 to 65535" in line, line


@pytest.mark.parametrize("flags", [
    ["--port", "70000"], ["--port", "0"], ["--server", "not a url"], ["--server", "ftp://127.0.0.1"],
    ["--nproc-per-node", "0"],
])
def test_train_refuses_a_flag_outside_its_rule_before_anything_starts(tmp_path, flags):
    line = one_line(vae("train", "--runs-dir", str(tmp_path / "runs"), "--epochs", "1", *flags))
    assert f"argument {flags[0]}" in line, line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flags,said", [
    (["--model", "conv64"], "model conv64 is built for 64x64 images"),
    (["--batch-size", "60001"], "larger than the training set"),
    (["--dataset", "folder", "--data-dir", "/nonexistent/faces"], "does not exist"),
])
def test_a_run_refused_at_start_up_leaves_nothing_in_the_folder_it_made(tmp_path, flags, said):
    runs = tmp_path / "runs"
    runs.mkdir()
    line = one_line(vae("train", "--runs-dir", str(runs), "--name", "refused", "--epochs", "1", "--no-visdom", *flags))
    assert said in line, line
    assert list(runs.iterdir()) == []  # no folder with a trainer.lock (it used to stay)
    # a folder that was there before keeps what it held
    keep = runs / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    one_line(vae("train", "--out", str(keep), "--epochs", "1", "--no-visdom", *flags))
    assert sorted(p.name for p in keep.iterdir()) == ["notes.txt"]


def test_what_the_form_knows_of_the_fixed_datasets_is_what_their_loaders_give():
    """The runs home checks a new run before any data is loaded (it imports no torch); its table of shapes
    and training sizes must be the loaders' own (real MNIST, Fashion-MNIST where installed, ORL)."""
    from vae_visdom.config import FIXED_DATASETS
    from vae_visdom.data import DataError, load_dataset

    checked = 0
    for name, (shape, n_train) in FIXED_DATASETS.items():
        try:
            data = load_dataset(name)
        except DataError:  # not on this machine (fashion-mnist needs a Debian package)
            continue
        assert (tuple(data.image_shape), len(data.train)) == (shape, n_train), name
        checked += 1
    assert checked >= 2
