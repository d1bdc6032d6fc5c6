"""Installable as users install it: the wheel, installed in a throwaway virtual environment, gives a working
`vae-visdom` (help, assets, serve, train) with its package data. Offline: the pinned packages are reused
from the environment running the tests (a .pth line), only vae_visdom comes from the wheel."""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from vae_visdom.serve.net import find_free_port, server_answers

REPO = Path(__file__).resolve().parents[1]


def build_wheel(out: Path) -> Path:
    """`python -m build --wheel` where the build frontend is installed (setup.sh's test extras), else pip's."""
    if importlib.util.find_spec("build") is not None:
        cmd = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(REPO)]
    else:
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
               str(REPO)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = out.glob("vae_visdom-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv, env for its commands): the wheel installed in a fresh venv that sees the pinned packages."""
    root = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(root)
    names = zipfile.ZipFile(wheel).namelist()
    assert "vae_visdom/serve/assets-0.2.4.json" in names and "vae_visdom/serve/assets-0.3.0.json" in names
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], capture_output=True, text=True, check=True).stdout.strip())
    # the pinned packages of the running environment, offline; its own .pth files (an editable vae_visdom) not run
    (site / "pinned_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    # pip of the running environment installs into the new one; --ignore-installed: never touch another's files
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                           "--no-deps", "--no-index", "--ignore-installed", str(wheel)],
                          capture_output=True, text=True, timeout=300, env=env)
    if proc.returncode != 0 and "--python" in proc.stderr:  # pip < 22.3 has no --python
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                               "--ignore-installed", "--prefix", str(venv), str(wheel)],
                              capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return venv, env


def vae(installed, *args, timeout=600, cwd=None):
    venv, env = installed
    return subprocess.run([str(venv / "bin" / "vae-visdom"), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd or venv)


def test_the_wheels_command_runs_from_the_wheel(installed):
    venv, env = installed
    where = subprocess.run([venv / "bin" / "python", "-c", "import vae_visdom; print(vae_visdom.__file__)"],
                           capture_output=True, text=True, env=env, cwd=venv, check=True).stdout.strip()
    assert where.startswith(str(venv)), where
    proc = vae(installed, "--help")
    assert proc.returncode == 0 and "train" in proc.stdout and "serve" in proc.stdout


def test_assets_install_serve_and_train_from_the_wheel(installed, tmp_path):
    static = tmp_path / "static"
    proc = vae(installed, "assets", "install", "--static-dir", str(static))
    assert proc.returncode == 0, proc.stderr
    assert vae(installed, "assets", "check", "--static-dir", str(static)).returncode == 0
    assert (static / "js" / "plotly-plotly.min.js").stat().st_size > 100_000

    venv, env = installed
    port = find_free_port("127.0.0.1")
    server = subprocess.Popen([str(venv / "bin" / "vae-visdom"), "serve", "--port", str(port), "--env-path",
                               str(tmp_path / "envs"), "--runs-dir", str(tmp_path / "runs")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not server_answers("127.0.0.1", port, timeout=0.5):
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read().decode()[-3000:]
            time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=20) as resp:
            assert resp.status == 200 and b"<html" in resp.read().lower()
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0

    proc = vae(installed, "train", "--no-visdom", "--epochs", "1", "--no-views", "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoint.pt").exists() and "====> Epoch: 1" in proc.stderr
