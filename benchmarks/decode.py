"""Decoding an image folder into the cache: 1 worker against all, and what a rank then holds.

Generates a folder of --images 178x218 JPEGs (CelebA's size; default 20,000) once, then in a fresh
process each: decodes it with VAE_VISDOM_DECODE_WORKERS=1 and with every CPU, printing images/s and the
peak RSS (the process and its worker processes), then loads it as a rank does, from the cache
(memory-mapped), printing the RSS beside the uint8 data's size and a float copy's. The last lines are
the ratios, measured in this one run.

    python benchmarks/decode.py --images 20000
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

MB = 1024 * 1024


def make_folder(root: Path, n: int) -> None:
    import numpy as np
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    have = len(list(root.glob("*.jpg")))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:218, 0:178]
    for i in range(have, n):  # smooth colour fields with noise: JPEG sizes near real faces'
        a, b, c = rng.uniform(0.01, 0.05, 3)
        img = np.stack([np.sin(a * xx + i), np.cos(b * yy), np.sin(c * (xx + yy))], -1) * 100 + 128
        img += rng.normal(0, 12, img.shape)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / f"{i:06d}.jpg", quality=90)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(mode: str, folder: str, cache: str) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    from vae_visdom.data import load_dataset

    before = rss_mb()  # the interpreter with torch imported
    t0 = time.perf_counter()
    data = load_dataset("folder", folder, cache_dir=Path(cache))
    seconds = time.perf_counter() - t0
    n = len(data.train) + len(data.test)
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    uint8 = (data.train.numel() + data.test.numel()) / MB
    print(json.dumps(dict(mode=mode, images=n, seconds=seconds, per_s=n / seconds, peak_mb=self_peak,
                          worker_peak_mb=kids_peak, rss_mb=rss_mb(), added_mb=rss_mb() - before, uint8_mb=uint8,
                          float_mb=4 * uint8)))


def measure(mode: str, workers: int, folder: Path, cache: Path) -> dict:
    env = {**os.environ, "VAE_VISDOM_DECODE_WORKERS": str(workers), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, __file__, "--child", mode, str(folder), str(cache)], env=env,
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr[-2000:])
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        return child(*sys.argv[2:5])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--folder", default=None, help="where to generate the JPEGs (default: a temporary folder)")
    args = p.parse_args()
    folder = Path(args.folder or tempfile.mkdtemp(prefix="decode-bench-")) / f"jpegs-{args.images}"
    t0 = time.perf_counter()
    make_folder(folder, args.images)
    print(f"{args.images} JPEGs 178x218 in {folder} ({time.perf_counter() - t0:.0f} s to make), {os.cpu_count()} CPUs")
    caches = [Path(tempfile.mkdtemp(prefix="decode-cache-")) for _ in range(2)]
    rows = [measure("1 worker", 1, folder, caches[0]),
            measure(f"{os.cpu_count()} workers", os.cpu_count() or 1, folder, caches[1]),
            measure("a rank, from the cache", 1, folder, caches[1])]  # memory-mapped
    for r in rows:
        print(f"{r['mode']:>24}: {r['images']} images, {r['seconds']:.1f} s, {r['per_s']:.0f} images/s, "
              f"peak RSS {r['peak_mb']:.0f} MB (workers {r['worker_peak_mb']:.0f} MB), RSS after {r['rss_mb']:.0f} MB "
              f"(+{r['added_mb']:.0f} MB by the load); "
              f"uint8 data {r['uint8_mb']:.0f} MB, as float32 {r['float_mb']:.0f} MB")
    print(f"all workers / 1 worker: x{rows[1]['per_s'] / rows[0]['per_s']:.2f} images/s")
    print("a rank's RSS added by loading from the cache / the uint8 data: "
          f"x{rows[2]['added_mb'] / rows[2]['uint8_mb']:.2f} "
          f"(a float32 copy would add x4)")


if __name__ == "__main__":
    main()
