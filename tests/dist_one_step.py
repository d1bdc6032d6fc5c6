"""One optimizer step with fixed noise, in one process or on every rank torchrun starts (tests/test_distributed.py).

python tests/dist_one_step.py OUT.pt KIND BATCH: KIND eager | fast (the hand-derived CPU step). Rank 0
saves the gradients and parameters after the step.
"""
import contextlib
import sys

import torch

from vae_visdom.data import load_dataset
from vae_visdom.data.base import to_unit_float
from vae_visdom.models import build_model
from vae_visdom.train import distributed
from vae_visdom.train.mlp_cpu_step import MLPStep
from vae_visdom.train.step import eager_step, make_optimizer


def main(out: str, kind: str, batch: int) -> None:
    group, device = distributed.join(torch.device("cpu"))
    data = load_dataset("mnist")
    torch.manual_seed(1)
    model = build_model("mlp", data.image_shape, 20, 400, "bernoulli")
    opt = make_optimizer("adam", model.parameters(), 1e-3)
    eps = torch.randn(batch, 20, generator=torch.Generator().manual_seed(7))  # the global batch's noise
    rows = group.shard(torch.arange(batch))
    torch.randn_like = lambda t, **kw: eps[rows].clone()  # both steps draw their noise with randn_like
    if group is not distributed.SOLO:
        params = list(model.parameters())
        opt.register_step_pre_hook(lambda o, a, k: distributed.sum_gradients(params))
    step = MLPStep(model, opt) if kind == "fast" else eager_step(model, opt, contextlib.nullcontext)
    x = to_unit_float(data.train[rows])
    sums = group.reduce(step(x))
    if group.is_face:
        torch.save({"sums": sums, "grads": [p.grad.clone() for p in model.parameters()],
                    "params": [p.detach().clone() for p in model.parameters()], "rows": len(rows)}, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    from vae_visdom.launch import exit_rank

    exit_rank(0)  # as `python -m vae_visdom` ends a rank: out of the group, no interpreter teardown (gloo's abort)
