"""Bytes a run sends to visdom: this tree against a baseline tree (e.g. a checkout of the commit before).

Each tree runs in its own process (PYTHONPATH=TREE, both at once) against its own visdom server on a free loopback
port: the same small VAE on the same random images for EPOCHS epochs, paced to PACE s an epoch (a
real MNIST epoch is ~1.3 s; the monitor's rates depend on the pace), streaming to visdom. Counted:
the bytes of every HTTP body the monitor's client posts (the window messages; the event socket is
idle). Prints each tree's bytes, bytes per epoch, and the ratio to the baseline.

    .venv/bin/python benchmarks/stream_bytes.py --baseline /path/to/old/checkout [--epochs 200] [--pace 0.25]
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


def measure(epochs: int, pace: float) -> dict:
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
        def on_epoch_end(self, record, images):
            time.sleep(pace)

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
        TrainingSession(cfg, data=data, callbacks=[Pace()], progress=False).run()
        return {**posted, "seconds": round(time.perf_counter() - t0, 1), "epochs": epochs, "by_window": kinds}
    finally:
        server.terminate()
        server.wait(30)


def run_trees(trees: dict[str, Path], epochs: int, pace: float) -> dict[str, dict]:
    """Each tree in its own process, all at once (the same load on each)."""
    procs = {name: subprocess.Popen([sys.executable, __file__, "--inner", "--epochs", str(epochs), "--pace",
                                     str(pace)], env=dict(os.environ, PYTHONPATH=str(tree)), cwd=tree,
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
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inner:
        print(json.dumps(measure(args.epochs, args.pace)))
        return 0
    trees = dict(([("baseline", args.baseline)] if args.baseline else []) + [("this tree", REPO)])
    results = run_trees(trees, args.epochs, args.pace)
    for name, r in results.items():
        print(f"{name:>10}: {r['bytes']:,} bytes in {r['posts']:,} posts over {r['epochs']} epochs "
              f"({r['bytes'] / r['epochs'] / 1024:.1f} KiB an epoch; {r['seconds']} s)")
        print("            by window: " + ", ".join(f"{k} {v / 1024:,.0f} KiB" for k, v in
                                             sorted(r["by_window"].items(), key=lambda kv: -kv[1])))
    if args.baseline:
        print(f"ratio this tree / baseline: {results['this tree']['bytes'] / results['baseline']['bytes']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
