"""Time of the importance-weighted evaluation (`vae-visdom eval`) at the paper's K=5000 and at K=200.

Scores the first N MNIST test images (dynamically binarized) with a run's trained model, or with an
untrained mlp-iwae (784-200-200-50; the time does not depend on the weights), at each K, in the
default memory budget, and prints seconds, images/s, decoded samples/s and the time the full
10,000-image test set would take. K=200 is the baseline measured in the same run: the last line is
the K=5000 / K=200 time per image, which is 25 when cost grows exactly with K.

    OMP_NUM_THREADS=1 python benchmarks/iw_eval.py --images 100
    python benchmarks/iw_eval.py --run runs/iwae-bench --images 200 --k 5000 200
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

import torch  # noqa: E402

from vae_visdom.data import load_dataset  # noqa: E402
from vae_visdom.insight.eval_run import load_trained  # noqa: E402
from vae_visdom.insight.iwae import DEFAULT_MAX_FLOATS, iw_log_likelihood  # noqa: E402
from vae_visdom.models import build_model  # noqa: E402

FULL_TEST = 10000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default=None, help="a run directory to score (default: an untrained mlp-iwae)")
    p.add_argument("--images", type=int, default=100, help="test images scored at each K (default 100)")
    p.add_argument("--k", type=int, nargs="+", default=[5000, 200], help="importance samples (default 5000 200)")
    p.add_argument("--max-floats", type=float, default=DEFAULT_MAX_FLOATS)
    args = p.parse_args(argv)
    if args.run:
        _, model, data = load_trained(args.run)
    else:
        torch.manual_seed(0)
        data = load_dataset("mnist")
        model = build_model("mlp-iwae", data.image_shape, 50, 200, "bernoulli")
    x = data.test[:args.images]
    print(f"device cpu, {torch.get_num_threads()} thread(s), {len(x)} test images, model "
          f"{sum(p.numel() for p in model.parameters())} parameters, max_floats {args.max_floats:.3g}")
    per_image = {}
    for k in args.k:
        r = iw_log_likelihood(model, x, k, binarize=True, generator=torch.Generator().manual_seed(1),
                              max_floats=int(args.max_floats))
        per_image[k] = r.seconds / r.n
        print(f"K={k:5d}: {r.seconds:7.2f} s, {r.n / r.seconds:8.2f} images/s, {r.n * k / r.seconds:10.0f} samples/s, "
              f"full test set ~{per_image[k] * FULL_TEST / 60:.1f} min  (log p(x) {r.log_likelihood:.2f} "
              f"± {r.stderr:.2f}; {r.examples_per_batch} images x {r.samples_per_chunk} samples a chunk)")
    if len(args.k) >= 2:
        a, b = args.k[0], args.k[-1]
        print(f"ratio: K={a} / K={b} seconds per image = {per_image[a] / per_image[b]:.2f} (K ratio {a / b:g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
