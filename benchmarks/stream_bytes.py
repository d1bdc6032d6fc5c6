"""Bytes a run sends to visdom: this tree against a baseline tree (e.g. a checkout of the commit before).

Each tree runs in its own process (PYTHONPATH=TREE, both at once) against its own visdom server on a free loopback
port: the same small VAE on the same random images for EPOCHS epochs, paced to PACE s an epoch (a
real MNIST epoch is ~1.3 s; the monitor's rates depend on the pace), streaming to visdom. Counted:
the bytes of every HTTP body the monitor's client posts (the window messages; the event socket is
idle). Prints each tree's bytes, bytes per epoch, and the ratio to the baseline.

    .venv/bin/python benchmarks/stream_bytes.py --baseline /path/to/old/checkout [--epochs 200] [--pace 0.25]
        [--browser]     (and a headless Chromium watching each page: its CPU seconds, and their ratio)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class Watcher:
    """Headless Chromium showing the run's page; the CPU seconds of all its processes while it watches
    (utime + stime from /proc, the processes found by their profile folder in the command line)."""

    def __init__(self, url: str, profile: Path):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", f"--user-data-dir={profile}"):
            opts.add_argument(flag)
        self.profile = str(profile)
        self.driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=opts)
        self.driver.get(url)
        time.sleep(3)  # the page loaded and drawn: what follows is watching
        self.t0, self.cpu0 = time.perf_counter(), self.cpu()

    def cpu(self) -> float:
        total = 0.0
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and self.profile in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                    total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except OSError:  # gone meanwhile
                pass
        return total

    def stop(self) -> dict:
        out = {"browser_cpu_s": round(self.cpu() - self.cpu0, 1), "watched_s": round(time.perf_counter() - self.t0, 1)}
        self.driver.quit()
        return out


def measure(epochs: int, pace: float, browser: bool = False) -> dict:
    """In this process (PYTHONPATH: the tree measured): one run, its bytes posted."""
    import torch

    from vae_visdom.config import TrainConfig
    from vae_visdom.data import ImageData
    from vae_visdom.monitor import board
    from vae_visdom.serve.net import find_free_port, server_answers
    from vae_visdom.session import TrainingSession
    from vae_visdom.train.events import Callback

    posted = {"bytes": 0, "posts": 0}
    original = board._Client._handle_post

    kinds: dict[str, int] = {}

    def counting(self, url, data=None):
        n = len(data.encode() if isinstance(data, str) else (data or b""))
        posted["bytes"] += n
        posted["posts"] += 1
        try:
            kind = str(json.loads(data).get("win", "")).rsplit("-", 1)[-1] or url.rsplit("/", 1)[-1]
        except (TypeError, ValueError, AttributeError):
            kind = url.rsplit("/", 1)[-1]
        kinds[kind] = kinds.get(kind, 0) + n
        return original(self, url, data)

    board._Client._handle_post = counting

    class Pace(Callback):
        """Holds each epoch to `pace` s; with --browser, opens the run's page after epoch 1 (the env exists)."""
        watcher = None

        def on_epoch_end(self, record, images):
            time.sleep(pace)
            if browser and record.epoch == 1:
                self.watcher = Watcher(f"http://127.0.0.1:{port}/env/bytes", tmp / "chromium")


    tmp = Path(tempfile.mkdtemp(prefix="bytes-"))
    port = find_free_port()
    server = subprocess.Popen([sys.executable, "-m", "vae_visdom.serve.server", "--port", str(port), "--env-path",
                               str(tmp / "envs")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not server_answers("127.0.0.1", port):
            if time.monotonic() > deadline:
                raise SystemExit("the visdom server did not start")
            time.sleep(0.2)
        g = torch.Generator().manual_seed(0)
        data = ImageData("synthetic", (torch.rand(512, 1, 28, 28, generator=g) * 255).to(torch.uint8),
                         (torch.rand(64, 1, 28, 28, generator=g) * 255).to(torch.uint8), source="random images")
        cfg = TrainConfig(epochs=epochs, batch_size=128, hidden_dim=64, latent_dim=8, log_interval=1, views=False,
                          port=port, env="bytes", out=str(tmp / "run"), device="cpu")
        t0 = time.perf_counter()
        pacer = Pace()
        TrainingSession(cfg, data=data, callbacks=[pacer], progress=False).run()
        watched = pacer.watcher.stop() if pacer.watcher else {}
        return {**posted, "seconds": round(time.perf_counter() - t0, 1), "epochs": epochs, "by_window": kinds,
                **watched}
    finally:
        server.terminate()
        server.wait(30)


def run_trees(trees: dict[str, Path], epochs: int, pace: float, browser: bool = False) -> dict[str, dict]:
    """Each tree in its own process, all at once (the same load on each)."""
    procs = {name: subprocess.Popen([sys.executable, __file__, "--inner", "--epochs", str(epochs), "--pace",
                                     str(pace), *(["--browser"] if browser else [])],
                                    env=dict(os.environ, PYTHONPATH=str(tree)), cwd=tree,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, tree in trees.items()}
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"{trees[name]}: exit {proc.returncode}\n{err[-2000:]}")
        results[name] = json.loads(out.strip().splitlines()[-1])
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", type=Path, help="the tree to compare with (a checkout of an earlier commit)")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--pace", type=float, default=0.25, help="seconds each epoch is held (default 0.25)")
    p.add_argument("--browser", action="store_true", help="also a headless Chromium watching each run's page: "
                   "its CPU seconds while it watches")
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inner:
        print(json.dumps(measure(args.epochs, args.pace, args.browser)))
        return 0
    trees = dict(([("baseline", args.baseline)] if args.baseline else []) + [("this tree", REPO)])
    results = run_trees(trees, args.epochs, args.pace, args.browser)
    for name, r in results.items():
        print(f"{name:>10}: {r['bytes']:,} bytes in {r['posts']:,} posts over {r['epochs']} epochs "
              f"({r['bytes'] / r['epochs'] / 1024:.1f} KiB an epoch; {r['seconds']} s)")
        print("            by window: " + ", ".join(f"{k} {v / 1024:,.0f} KiB" for k, v in
                                             sorted(r["by_window"].items(), key=lambda kv: -kv[1])))
        if "browser_cpu_s" in r:
            print(f"            browser: {r['browser_cpu_s']} CPU s over {r['watched_s']} s watched "
                  f"({r['browser_cpu_s'] / max(r['watched_s'], 1e-9):.1%} of a core)")
    if args.baseline:
        print(f"ratio this tree / baseline: {results['this tree']['bytes'] / results['baseline']['bytes']:.3f}")
        if "browser_cpu_s" in results["baseline"]:
            print(f"browser CPU ratio this tree / baseline: "
                  f"{results['this tree']['browser_cpu_s'] / max(results['baseline']['browser_cpu_s'], 1e-9):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
