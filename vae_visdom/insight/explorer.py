"""The latent explorer: a point in latent space and its eight neighbours, decoded on demand.

The explorer decodes from a copy of the model of its own, never the model the optimizer is changing: the
trainer refreshes the copy on its own thread between steps (at the run's start and after each epoch's test
pass, as a probe), and the page's requests decode from the copy on the socket thread under the explorer's
lock. So a decode never races an optimizer step, works while the run is paused, and works after the run from
a checkpoint (`replay --browse`).

The point starts at the origin or at the posterior mean of a test image. It moves along two directions: the
principal directions of the posterior means of the first `MEANS` test images (`MEANS_LARGE` of large ones;
largest variance first), or two latent dimensions. A step is `step` standard deviations along the
direction: of the means' spread along a principal direction, of the prior (1) along a latent dimension.
The 3x3 grid shows the point in its centre, the first direction from left to right, the second from bottom
to top.
"""
from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vae_visdom.data.base import to_unit_float
from vae_visdom.models.base import VAE
from vae_visdom.runs.files import read_jsonl
from vae_visdom.train.events import ExplorerFigure, Figure, Probe

MEANS = 500  # test images whose posterior means give the principal directions (and the images to start at)
MEANS_LARGE = 64  # as many for images above 2048 values (conv64's 64x64 RGB): the first click of an epoch < 1 s
BASES = ("principal", "dimension")


@dataclass
class Decoded:
    """A 3x3 neighbourhood: (9, C, H, W) in [0, 1], row-major from the top left, and what it shows."""

    images: torch.Tensor
    caption: str
    seconds: float


class LatentExplorer(Probe):
    """The point, its two directions, its step, and the model copy they are decoded with."""

    def __init__(self, model: VAE, test_x: torch.Tensor):
        self._model = copy.deepcopy(model).to("cpu").eval()
        for p in self._model.parameters():
            p.requires_grad_(False)
        self._test = test_x[:MEANS if test_x[0].numel() <= 2048 else MEANS_LARGE]
        self._live = model
        self.lock = threading.Lock()
        self.epoch = 0  # the epoch whose end the copy was taken at (0: the start)
        self.latent_dim = int(model.latent_dim)
        self.basis = "principal"
        self.axes = [0, min(1, self.latent_dim - 1)]  # indices of the first and second direction
        self.step = 1.0
        self.start: int | None = None  # the test image the point started at; None: the origin
        self.offset = [0.0, 0.0]  # steps taken along the two directions, in units of `step`-scaled spreads
        self.point = torch.zeros(self.latent_dim)
        self._means: torch.Tensor | None = None  # (MEANS, D), of the copy; None: to compute
        self._pcs: torch.Tensor | None = None  # (D, D): principal directions as rows, largest variance first
        self._spread: torch.Tensor | None = None  # (D,): the means' standard deviation along each of them

    # -- trainer's thread (the Probe protocol) -----------------------------------------------------
    def run_start(self) -> dict[str, Figure]:
        self.refresh(self._live, 0)
        with self.lock:  # the copy's first pass (the kernels' set-up) here, not in the page's first click
            self._posterior_means()
        return {"explorer": ExplorerFigure(self)}

    def epoch_end(self, epoch: int) -> tuple[dict, dict[str, Figure]]:
        self.refresh(self._live, epoch)
        return {}, {}

    def refresh(self, model: VAE, epoch: int) -> None:
        """Take the model's weights as they are now (between two steps) into the copy."""
        state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        with self.lock:
            self._model.load_state_dict(state)
            self.epoch = epoch
            self._means = self._pcs = self._spread = None

    # -- the page's thread, under self.lock ----------------------------------------------------------
    def n_images(self) -> int:
        return int(self._test.shape[0])

    def start_at(self, image: int | None) -> None:
        """Put the point at test image `image`'s posterior mean, or at the origin (None)."""
        self.start, self.offset = image, [0.0, 0.0]
        self._place()

    def move(self, which: int, sign: int) -> None:
        """One step along the first (which=0) or second (1) direction, forward (sign=1) or back (-1)."""
        self.offset[which] += sign
        self._place()

    def choose(self, basis: str, first: int, second: int, step: float) -> None:
        """Directions and step; the point keeps its start and its offsets are read in the new directions."""
        if basis not in BASES:
            raise ValueError(f"basis {basis!r}")
        if not (0 <= first < self.latent_dim and 0 <= second < self.latent_dim):
            raise ValueError(f"directions from 1 to {self.latent_dim}")
        self.basis, self.axes, self.step = basis, [first, second], step
        self._place()

    def decode(self) -> Decoded:
        """The point and its 8 neighbours one step away, decoded with the copy."""
        t0 = time.perf_counter()
        self._place()  # the copy may be newer than the point's mean
        d = [self._direction(i) for i in (0, 1)]
        zs = [self.point + c * d[0] + r * d[1] for r in (1, 0, -1) for c in (-1, 0, 1)]
        with torch.no_grad():
            images = torch.sigmoid(self._model.decode(torch.stack(zs))).float()
        return Decoded(images, self.describe(), time.perf_counter() - t0)

    def describe(self) -> str:
        where = "the origin" if self.start is None else f"test image {self.start}"
        kind = "PC" if self.basis == "principal" else "z"
        moved = ", ".join(f"{o:+g} step{'s' * (abs(o) != 1)} of {self.step:g} sd along {kind}{a + 1}"
                          for o, a in zip(self.offset, self.axes) if o)
        model = "the model at the start" if self.epoch == 0 else f"the model after epoch {self.epoch}"
        return f"{where}{' ' + moved if moved else ''} · {model}"

    # -- under self.lock --------------------------------------------------------------------------
    def _place(self) -> None:
        base = torch.zeros(self.latent_dim) if self.start is None else self._posterior_means()[self.start]
        self.point = base + self.offset[0] * self._direction(0) + self.offset[1] * self._direction(1)

    def _direction(self, which: int) -> torch.Tensor:
        """A step along direction `which`: `step` standard deviations of the means (principal) or the prior."""
        axis = self.axes[which]
        if self.basis == "dimension":
            return torch.nn.functional.one_hot(torch.tensor(axis), self.latent_dim).float() * self.step
        self._posterior_means()
        assert self._pcs is not None and self._spread is not None
        return self._pcs[axis] * self._spread[axis] * self.step

    def _posterior_means(self) -> torch.Tensor:
        if self._means is None:
            with torch.no_grad():
                means = self._model.encode(to_unit_float(self._test))[0].float()
            centred = means - means.mean(0)
            _, s, vt = torch.linalg.svd(centred, full_matrices=True)
            spread = torch.zeros(self.latent_dim)
            spread[:s.shape[0]] = s / max(means.shape[0] - 1, 1) ** 0.5
            vt = vt * torch.where(vt.sum(1, keepdim=True) < 0, -1.0, 1.0)  # a sign that does not flip per epoch
            self._means, self._pcs, self._spread = means, vt, spread.clamp_min(1e-3)
        return self._means


def explorer_for_run(run_dir) -> LatentExplorer:
    """An explorer of a finished (or stopped) run: the model of its checkpoint, the test images of its data."""
    from vae_visdom.insight.eval_run import load_trained  # the run folder's reader; late, as only replay needs it

    cfg, model, data = load_trained(run_dir, device="cpu")
    explorer = LatentExplorer(model, data.test)
    rows = read_jsonl(Path(run_dir) / "metrics.jsonl")
    explorer.refresh(model, int(rows[-1].get("epoch", 0)) if rows else 0)
    return explorer
