"""The README's run command: server in the background (unless one answers), training streaming to it, a URL."""
import os
import re
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from vae_visdom.data import default_cache_dir
from vae_visdom.serve.net import find_free_port, server_answers

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_run_script_starts_a_server_trains_and_prints_the_url(tmp_path):
    port = find_free_port()
    env = {**os.environ, "HOME": str(tmp_path), "VAE_VISDOM_CACHE": str(default_cache_dir()),
           "VAE_VISDOM_PORT": str(port), "OMP_NUM_THREADS": "1"}
    out_dir = tmp_path / "run"
    cmd = ["scripts/run.sh", "--epochs", "1", "--out", str(out_dir), "--name", "main-job"]
    pid = None
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        text = proc.stdout + proc.stderr
        m = re.search(r"\(pid (\d+)", text)
        pid = int(m.group(1)) if m else None
        assert proc.returncode == 0, text[-3000:]
        assert f"http://127.0.0.1:{port}/env/main-job" in text
        assert server_answers("127.0.0.1", port)  # the server outlives the run, for the user to look at
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/env/main-job", timeout=10).status == 200
        assert (tmp_path / ".visdom" / "main-job.json").exists()  # the env was saved after the epoch
        assert (out_dir / "metrics.jsonl").read_text().count("\n") == 1

        # run again: the server already answers, so it is reused, not started twice
        again = subprocess.run(cmd[:1] + ["--epochs", "1", "--out", str(tmp_path / "run2"), "--no-visdom"],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert again.returncode == 0, again.stderr[-2000:]
        assert "already answers" in again.stdout + again.stderr
    finally:
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
