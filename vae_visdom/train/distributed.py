"""Data-parallel training under torchrun: the process group, the batch split, the reductions, the commands.

A single process (no torchrun, or one rank) gets `SOLO`, whose every method is the identity: its
numbers are bit for bit those of a run before this module existed. Under torchrun (`WORLD_SIZE` > 1)
`join` starts the process group (gloo on the CPU, nccl with one device per rank, `LOCAL_RANK`) and
the trainer asks it (when built: `training_config`, `commands`, `wire`; when loading a state:
`seed_noise`, `own_share`) for what a rank needs:

- the batch: `--batch-size` is the global batch; every rank draws the same permutation (same seed)
  and takes a contiguous share of each step's rows, `torch.tensor_split(idx, world)[rank]`, so when
  B is not a multiple of N the first B mod N ranks take one row more (a rank may take none, in the
  last step of an epoch, and still joins the step with zero gradients);
- the gradients: the loss is a sum over the batch (the seed's), so they are SUMMED over the ranks,
  one flat all-reduce in an optimizer step pre-hook, not averaged as DDP does: an N-rank step is then
  the one-process step on the same global batch, for the eager step and the hand-derived CPU step
  alike (the captured CUDA graph is switched off: a collective inside a replayed graph is not ours
  to prove here);
- the numbers logged (train sums, test pass) are all-reduced sums: global;
- the commands: `Commands` (below), one small broadcast from rank 0 every step.
"""
from __future__ import annotations

import atexit
import dataclasses
import os
import socket
from collections.abc import Sequence
from datetime import timedelta

import torch
import torch.distributed as dist

from vae_visdom.config import TrainConfig
from vae_visdom.train.checkpoint import EpochState
from vae_visdom.train.controller import Command, Controller

ENV_TIMEOUT = "VAE_VISDOM_DIST_TIMEOUT"  # seconds: the collectives' timeout (default torch's 30 min)
RNG_STRIDE = 1_000_003  # rank r > 0 draws its noise from seed + r * RNG_STRIDE + step


class Solo:
    """One process: every method is the identity."""

    rank: int = 0
    world: int = 1
    backend: str | None = None
    is_face: bool = True

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        return rows

    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def settle(self, es: EpochState | None) -> None:
        pass

    def share(self, obj):
        return obj

    def first(self, load):
        return load()

    def describe(self, device: torch.device) -> str:
        return str(device)

    # what a trainer asks of its group when it is built and when it loads a state (trainer.py)
    def training_config(self, cfg: TrainConfig, device: torch.device) -> TrainConfig:
        return cfg

    def commands(self, controller: Controller) -> Controller:
        return controller

    def wire(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        pass

    def seed_noise(self, seed: int, step: int) -> None:
        pass

    def own_share(self, es: EpochState) -> None:
        pass


SOLO = Solo()


class Group(Solo):
    """This process's place in a torchrun job: rank, world size, backend."""

    def __init__(self, rank: int, world: int, backend: str):
        self.rank, self.world, self.backend = rank, world, backend
        self.is_face = rank == 0  # rank 0 alone streams, owns the panel and writes the run folder

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global batch (or of the test set)."""
        return torch.tensor_split(rows, self.world)[self.rank]

    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        """The sum over the ranks, in a new tensor."""
        out = t.detach().clone()
        dist.all_reduce(out)
        return out

    def settle(self, es: EpochState | None) -> None:
        """Before a mid-epoch checkpoint: the unfinished epoch's sums made global (rank 0 saves them)."""
        if es is not None:
            es.sums_to(self.reduce)

    def training_config(self, cfg: TrainConfig, device: torch.device) -> TrainConfig:
        """The config a rank trains with: no captured CUDA graph (the gradient all-reduce would run inside the
        replayed graph, which is not ours to prove)."""
        if device.type == "cuda" and cfg.fast_step != "eager":
            print(f"rank {self.rank}: fast step: no captured CUDA graph under torchrun (the gradient all-reduce "
                  "would run inside the replayed graph); training eagerly", flush=True)
            return dataclasses.replace(cfg, fast_step="eager")
        return cfg

    def commands(self, controller: Controller) -> Controller:
        """What every rank polls: rank 0's commands, at the same step on every rank (Commands, below)."""
        return Commands(controller, self)  # type: ignore[return-value]  # Controller's interface, duck-typed

    def wire(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """One starting point for the weights (rank 0's), and every step's gradients summed over the ranks."""
        params = list(model.parameters())
        for t in [*params, *model.buffers()]:
            dist.broadcast(t.data, src=0)  # whatever each rank's init did
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: sum_gradients(params))

    def seed_noise(self, seed: int, step: int) -> None:
        """A rank > 0 draws noise of its own (rank 0 keeps the run's, or the checkpoint's, RNG state)."""
        if self.rank > 0:
            torch.manual_seed(seed + self.rank * RNG_STRIDE + step)

    def own_share(self, es: EpochState) -> None:
        """A resumed epoch's carried sums are global: rank 0 alone carries them, the others start from 0."""
        if self.rank > 0:
            es.sums_to(lambda t: t * 0)

    def share(self, obj):
        """Rank 0's `obj`, on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def first(self, load):
        """`load()` on rank 0, then on the others: a folder is decoded into the cache once, and read from it."""
        if self.is_face:
            out = load()
            self.share(None)
            return out
        self.share(None)
        return load()

    def describe(self, device: torch.device) -> str:
        """"2 ranks (gloo): cpu@host, cpu@host" for the run pane: every rank calls it."""
        where: list[str] = [""] * self.world
        dist.all_gather_object(where, f"{device}@{socket.gethostname()}")
        return f"{self.world} ranks ({self.backend}): " + ", ".join(where)


def join(device: torch.device) -> tuple[Solo, torch.device]:
    """The process group torchrun's environment describes (SOLO without one), and this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SOLO, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # one device per rank
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        timeout = timedelta(seconds=float(os.environ.get(ENV_TIMEOUT, "1800")))
        store, rank, world = next(dist.rendezvous("env://", timeout=timeout))
        # torchrun keeps its store across restarts: a restarted group's keys get a prefix of their own,
        # or a rank may read the address a dead rank published in the round before and fail to connect
        store = dist.PrefixStore(f"vae_visdom/restart{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
        atexit.register(_leave)  # a group left to the interpreter's exit can abort in gloo's threads (SIGABRT)
    return Group(dist.get_rank(), dist.get_world_size(), backend), device


def _leave() -> None:
    try:
        dist.destroy_process_group()
    except Exception:  # already gone (a failed peer): nothing left to release
        pass


def sum_gradients(params: Sequence[torch.Tensor]) -> None:
    """Every parameter's gradient summed over the ranks, in one flat all-reduce."""
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


class Commands:
    """The trainer's controller on every rank: rank 0's commands, applied by every rank at the same step.

    The cadence: `has_pending()`, which the trainer calls once before every step (and once after each
    epoch), is on every rank one broadcast from rank 0 of a (3,) int64 tensor: [accepted commands
    waiting, paused, stop asked]. Only when the first is > 0 does a second broadcast carry those
    commands (rank 0 validated them: a rejected one never leaves rank 0, which alone reports it).
    While paused, rank 0 sends the same small broadcast every 0.5 s (`wait_while_paused`), the other
    ranks wait in it, blocked, not spinning; so a pause may outlast the collectives' timeout.
    """

    def __init__(self, inner: Controller, group: Group):
        self.inner, self.group = inner, group  # inner: the panel's (rank 0); a silent one elsewhere
        self.context = inner.context
        self._ready: list[Command] = []  # drained on rank 0 / received elsewhere, for the next drain()
        self._paused = False
        self._flags = torch.zeros(3, dtype=torch.int64)

    def sync(self) -> bool:
        """The one collective of the cadence; True when there is something to apply or a pause."""
        flags = self._flags
        if self.group.is_face:
            if self.inner.has_pending():
                self._ready += self.inner.drain()
            flags[0] = sum(c.accepted for c in self._ready)
            flags[1], flags[2] = int(self.inner.paused), int(self.inner.stop_requested)
        dist.broadcast(flags, src=0)
        if flags[0] > 0:
            sent = self.group.share([c for c in self._ready if c.accepted] if self.group.is_face else None)
            if not self.group.is_face:
                self._ready += sent
        self._paused = bool(flags[1]) and not bool(flags[2])
        return bool(self._ready) or self._paused

    def has_pending(self) -> bool:
        return self.sync()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def stop_requested(self) -> bool:
        return self.inner.stop_requested

    def drain(self) -> list[Command]:
        ready, self._ready = self._ready, []
        return ready

    def wait_while_paused(self, timeout: float = 0.5) -> bool:
        if self.group.is_face:
            self.inner.wait_while_paused(timeout)
        self.sync()
        return self._paused

    def submit(self, name: str, raw=None, source: str = "panel") -> Command:
        return self.inner.submit(name, raw, source)  # rank 0's panel or signal; other ranks' stay local

    def stop(self, source: str = "api") -> Command:
        return self.inner.stop(source)

    def can_steer(self) -> bool:
        return False  # a diverged run of several processes ends: its ranks would have to roll back together

    def reply(self, name: str, accepted: bool, message: str, value=None) -> None:
        self.inner.reply(name, accepted, message, value)

    def take_reply(self, name: str):
        return self.inner.take_reply(name)

    def offered(self, name: str) -> bool:
        return self.inner.offered(name)  # a run of several processes refuses what observers offer (the session)
