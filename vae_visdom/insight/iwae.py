"""Importance-weighted estimate of the test log-likelihood (Burda et al.), used by the probe and `eval`.

Burda, Grosse & Salakhutdinov (2015; ICLR 2016), "Importance Weighted Autoencoders", eq. (8)-(9):
    log p(x) >= L_K(x) = E[ log (1/K) sum_k w_k ],   w_k = p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x),
and L_1 <= L_K <= L_{K+1} -> log p(x) as K grows (their Theorem 1). The paper's MNIST numbers
use K = 5000 on dynamically binarized test images.

The noise for example i is drawn from a CPU generator seeded with (key + i), where the key comes
from the caller's generator: the estimate for a fixed generator is then the same whatever the
chunking, batch size or device, and chunking is only a memory decision.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from vae_visdom.data.base import to_unit_float
from vae_visdom.models.base import VAE
from vae_visdom.train.objectives import recon_nll

DEFAULT_MAX_FLOATS = 20_000_000  # ~80 MB of float32 live at once


@dataclass
class IWResult:
    """Per-dataset means in nats (higher is better); `per_example*` are (N,) float64 on the CPU."""

    log_likelihood: float  # mean of L_K(x)
    stderr: float  # std of the per-example L_K(x) / sqrt(N)
    elbo: float  # mean of L_1 from the same draws: the average log weight
    k: int
    n: int
    binarized: bool
    seconds: float
    examples_per_batch: int
    samples_per_chunk: int
    per_example: torch.Tensor = field(repr=False)
    per_example_elbo: torch.Tensor = field(repr=False)
    n_requested: int = 0  # images asked for; more than n when the evaluation was interrupted

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if not k.startswith("per_example")}
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """model.eval() for the block, then the mode it had (the trainer may call us mid-run)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def log_px_given_z(model: VAE, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log p(x|z) per row, (M, C, H, W) x (M, D) -> (M,).

    A model may define its own `log_px_given_z(x, z)` (a decoder whose likelihood is not
    `recon_nll`'s, e.g. the linear-Gaussian model of the tests); otherwise -recon_nll.
    """
    own = getattr(model, "log_px_given_z", None)
    if callable(own):
        return own(x, z)
    return -recon_nll(model.decode(z), x, model.likelihood, getattr(model, "log_sigma", None))


def floats_per_pair(model: VAE, device: torch.device) -> int:
    """A generous count of the floats one (example, sample) pair keeps live while it is scored.

    Decoder activations are counted by forward hooks on one decode (times 2, for activations
    applied functionally, which no hook sees); 4 images' worth covers the repeated input, the
    logits and the likelihood's temporaries.
    """
    sizes: list[int] = []

    def hook(_module, _inputs, output):
        if torch.is_tensor(output):
            sizes.append(output[:1].numel())

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    try:
        with eval_mode(model):
            model.decode(torch.zeros(1, model.latent_dim, device=device))
    finally:
        for h in handles:
            h.remove()
    return 2 * sum(sizes) + 4 * math.prod(model.image_shape) + 2 * model.latent_dim


def chunk_plan(n: int, k: int, latent_dim: int, per_pair: int, max_floats: int,
               batch_size: int | None = None) -> tuple[int, int]:
    """(examples per batch B, samples per chunk S) with B*(k*D) + B*S*per_pair <= max_floats.

    The k*D noise of a batch is drawn at once (that is what makes it chunking-independent);
    the decoder sees B*S pairs at a time. An explicit batch_size is honoured and S shrinks to fit.
    """
    noise = k * latent_dim
    if noise + per_pair > max_floats:
        raise ValueError(f"k={k} samples x latent_dim={latent_dim} do not fit a budget of {max_floats:.3g} "
                         f"floats; raise max_floats")
    if batch_size is None:
        s = min(k, max(1, (max_floats - noise) // per_pair))
        b = max(1, min(n, max_floats // (noise + s * per_pair)))
    else:
        b = max(1, min(n, batch_size))
        s = min(k, max(1, (max_floats // b - noise) // per_pair))
    return b, s


def _draw(xb: torch.Tensor, k: int, latent_dim: int, key: int, first: int, binarize: bool
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise (B, k, D) and the (optionally binarized) inputs, example i drawn from seed key+first+i."""
    g = torch.Generator()
    eps = torch.empty(xb.shape[0], k, latent_dim)
    u = torch.empty_like(xb) if binarize else None
    for i in range(xb.shape[0]):
        g.manual_seed((key + first + i) % 2**32)  # CPU generators keep 32 bits of a seed
        eps[i] = torch.randn(k, latent_dim, generator=g)
        if u is not None:  # after the noise: binarizing leaves the z draws unchanged
            u[i] = torch.rand(xb.shape[1:], generator=g)
    if u is not None:
        # Dynamic binarization, as in the IWAE MNIST experiments: pixel ~ Bernoulli(grey level)
        xb = (u < xb).to(xb.dtype)
    return eps, xb


@torch.no_grad()
def iw_log_likelihood(model: VAE, x: torch.Tensor, k: int, batch_size: int | None = None,
                      binarize: bool = False, generator: torch.Generator | None = None,
                      device: str | torch.device | None = None,
                      max_floats: int = DEFAULT_MAX_FLOATS, progress: bool = False,
                      partial_on_interrupt: bool = False) -> IWResult:
    """L_K(x) for every image in x (N, C, H, W) (uint8, or float in [0, 1]); see the module docstring.

    At most about `max_floats` floats are live at once, whatever k (k=5000 included). `device` is
    where the batches are scored (default: the model's); the model must already be there.
    `progress` shows a tqdm bar of the images scored (on stderr). With `partial_on_interrupt`, Ctrl-C
    after the first batch returns the estimate over the images scored so far (`n < n_requested`).
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    t0 = time.perf_counter()
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    n, d = x.shape[0], model.latent_dim
    b_max, s_max = chunk_plan(n, k, d, floats_per_pair(model, device), int(max_floats), batch_size)
    gen_device = generator.device if generator is not None else "cpu"
    key = int(torch.randint(0, 2**32, (1,), generator=generator, device=gen_device))
    ll = torch.empty(n, dtype=torch.float64)
    elbo = torch.empty(n, dtype=torch.float64)
    bar = tqdm(total=n, unit="img", desc=f"IW K={k}", disable=not progress, dynamic_ncols=True)
    done = 0
    with eval_mode(model), bar:
        try:
            for start in range(0, n, b_max):
                eps, xb = _draw(to_unit_float(x[start:start + b_max].cpu()), k, d, key, start, binarize)
                lse, total = _score_batch(model, xb.to(device), eps.to(device), s_max)
                ll[start:start + len(xb)] = (lse - math.log(k)).cpu()
                elbo[start:start + len(xb)] = (total / k).cpu()
                done = start + len(xb)
                bar.update(len(xb))
        except KeyboardInterrupt:
            if not partial_on_interrupt or done == 0:
                raise
            ll, elbo = ll[:done], elbo[:done]  # the first `done` images: what --limit done would give
    stderr = float(ll.std() / math.sqrt(done)) if done > 1 else math.nan
    return IWResult(log_likelihood=float(ll.mean()), stderr=stderr, elbo=float(elbo.mean()), k=k, n=done,
                    binarized=binarize, seconds=time.perf_counter() - t0, examples_per_batch=b_max,
                    samples_per_chunk=s_max, per_example=ll, per_example_elbo=elbo, n_requested=n)


def _score_batch(model: VAE, xb: torch.Tensor, eps: torch.Tensor, s_max: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(logsumexp of the K log weights, their sum) per image of xb (B, C, H, W), noise eps (B, K, D)."""
    b, d = xb.shape[0], eps.shape[-1]
    mu, logvar = model.encode(xb)  # (B, D) each
    std = torch.exp(0.5 * logvar)
    lse = torch.full((b,), -math.inf, dtype=torch.float64, device=xb.device)
    total = torch.zeros(b, dtype=torch.float64, device=xb.device)
    for s0 in range(0, eps.shape[1], s_max):
        e = eps[:, s0:s0 + s_max].transpose(0, 1)  # (S, B, D)
        s = e.shape[0]
        z = mu + std * e  # (S, B, D)
        # log p(z) - log q(z|x) for N(0, I) and N(mu, sigma^2); the log(2 pi) terms cancel
        log_prior_ratio = (0.5 * (e.pow(2) - z.pow(2)) + 0.5 * logvar).sum(-1)  # (S, B)
        x_rep = xb.unsqueeze(0).expand(s, *xb.shape).reshape(s * b, *xb.shape[1:])  # (S*B, C, H, W)
        log_px = log_px_given_z(model, x_rep, z.reshape(s * b, d)).view(s, b)
        log_w = (log_px + log_prior_ratio).double()  # (S, B)
        lse = torch.logaddexp(lse, torch.logsumexp(log_w, dim=0))
        total += log_w.sum(dim=0)
    return lse, total


def format_result(result: IWResult) -> str:
    cut = (f" (interrupted: the first {result.n} of {result.n_requested} images)"
           if result.n < result.n_requested else "")
    return (f"test log-likelihood (IW, K={result.k}): {result.log_likelihood:.2f} ± {result.stderr:.2f} nats; "
            f"ELBO: {result.elbo:.2f} nats{cut}")
