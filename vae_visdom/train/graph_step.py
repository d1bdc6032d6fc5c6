"""The captured training step for CUDA: forward, ELBO, backward and Adam in one CUDA graph.

Why: on a GPU the seed's VAE is launch-bound. An eager step is ~150 small kernels, each
costing more to launch from Python than to run; replaying them as one graph leaves only
the GPU time (ENVIRONMENT.md, "Measured anchors": ~1.2 s -> ~0.18 s per MNIST epoch on
an H100). On CPU there is nothing to capture: `make_step` returns None there (the trainer then
takes the hand-derived step of mlp_cpu_step.py where it applies, else the eager one).

How (PyTorch, "CUDA Graphs", whole-network capture): a static input buffer, warm-up steps
on a side stream, `optimizer.zero_grad(set_to_none=True)` before capture so backward
allocates the gradients from the graph's private pool, then forward + backward +
`optimizer.step()` captured once and replayed each step. Adam must be `capturable=True`
(its step counters live on the GPU and no scalar is read back to the host).

What a graph cannot do, and how this step copes:
- Shapes are frozen: a batch of any other shape (the epoch's short last batch, a batch
  size changed from the control panel before the trainer rebuilds) goes to `fallback`.
- Python floats are frozen into the kernels: the learning rate is captured as a device
  tensor, and a changed `group["lr"]` float is copied into it before the next replay.
- Optimizer state is captured by address: a `load_state_dict` (resume) makes new state
  tensors, which is detected and answered with a fresh capture.
- Random numbers: the reparameterization's `randn_like` uses the default CUDA generator,
  which is graph-safe (philox seed/offset read from device memory at replay; each replay
  advances the generator's offset by the graph's total, as the eager kernels would).
  The warm-up's draws are undone, so the captured run draws what an eager run would.
- The KL weight (kl_weight.py) is a device tensor too, filled before each replay; a run whose weight
  has never left 1 captures the plain ELBO (the same kernels as before beta existed).
- Warm-up steps would train on the warm-up batch: parameters, optimizer state and the
  CUDA RNG state are restored afterwards, so capturing costs no training step.
"""
from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

from vae_visdom.models.base import VAE
from vae_visdom.train.step import StepFn, autocast_for, backward_and_step, eager_step, prepare_optimizer

WARMUP_STEPS = 3  # cuBLAS handles, autograd buffers and Adam's lazy state exist before capture


def capture_unsupported(model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device) -> str | None:
    """Why this step cannot be captured here, or None when it can."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"device {device.type}: nothing to capture (kernel launches only cost on a GPU)"
    if not torch.cuda.is_available():
        return "CUDA is not available"
    if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW):
        return f"{type(optimizer).__name__} has no capturable implementation used here (Adam and AdamW do)"
    if any(g.get("amsgrad") or g.get("differentiable") for g in optimizer.param_groups):
        return "amsgrad/differentiable Adam is not captured"
    index = device.index if device.index is not None else torch.cuda.current_device()  # "cuda" is "cuda:N"
    if any(p.device.type != "cuda" or p.device.index != index for p in model.parameters()):
        return "the model's parameters are not all on the training device"
    return None


class CapturedStep:
    """Callable `x -> (3,) sums` replaying one CUDA graph for batches of `batch_size`; anything else goes eager."""

    def __init__(self, model: VAE, optimizer: torch.optim.Optimizer, likelihood: str, batch_size: int,
                 device: torch.device, fallback: StepFn | None = None, amp: bool = False, kl=None):
        self.model, self.optimizer, self.likelihood = model, optimizer, likelihood
        self.kl = kl  # a KLWeight, or None: the ELBO
        self._beta: torch.Tensor | None = None  # the captured KL weight, when the graph has one
        self.batch_size, self.device = batch_size, torch.device(device)
        self.amp = amp
        self._autocast = autocast_for("bf16" if amp else "fp32", self.device, captured=True)
        self.fallback = fallback or eager_step(model, optimizer, self._autocast)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_x: torch.Tensor | None = None
        self.static_sums: torch.Tensor | None = None
        self._lr_tensors: list[torch.Tensor] = []
        self._lr_values: list[float] = []
        self._state_ids: list[int] = []
        self.replays = self.fallbacks = self.captures = 0
        self.broken: str | None = None  # why capture failed, if it did

    def _forward_backward(self, x: torch.Tensor) -> torch.Tensor:
        return backward_and_step(self.model, self.optimizer, x, self._autocast, self._beta)  # step.py's contract

    # -- capture ----------------------------------------------------------------------------------
    def _state_signature(self) -> list[int]:
        return [id(t) for p in (q for g in self.optimizer.param_groups for q in g["params"])
                for t in self.optimizer.state.get(p, {}).values() if torch.is_tensor(t)]

    def _capture(self, x: torch.Tensor) -> None:
        self.graph = None  # frees the old graph's pool before the new capture
        prepare_optimizer(self.optimizer, capturable=True)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        saved_params = [p.detach().clone() for p in params]
        had_state = {p: {k: v.clone() for k, v in self.optimizer.state[p].items() if torch.is_tensor(v)}
                     for p in params if self.optimizer.state.get(p)}
        rng = torch.cuda.get_rng_state(self.device)
        weighted = self.kl is not None and self.kl.weighted
        self._beta = torch.tensor(self.kl.current, device=self.device) if weighted else None
        # lr as device tensors, read by the kernels at replay time (a float would be frozen in);
        # set before the warm-up so that it runs the very code path that is captured
        self._lr_values = [float(g["lr"]) for g in self.optimizer.param_groups]
        self._lr_tensors = [torch.tensor(v, dtype=torch.float32, device=self.device) for v in self._lr_values]
        for g, t in zip(self.optimizer.param_groups, self._lr_tensors):
            g["lr"] = t
        try:
            self.static_x = torch.empty_like(x)
            self.static_x.copy_(x)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side), warnings.catch_warnings():
                # Adam warns once when a capturable instance steps uncaptured: here that is the point
                warnings.filterwarnings("ignore", message=".*capturable=True.*")
                for _ in range(WARMUP_STEPS):
                    self.optimizer.zero_grad(set_to_none=True)
                    self._forward_backward(self.static_x)
            torch.cuda.current_stream(self.device).wait_stream(side)
            self._undo_warmup(params, saved_params, had_state)
            self.optimizer.zero_grad(set_to_none=True)  # backward allocates .grad from the graph's pool
            graph = torch.cuda.CUDAGraph()
            # thread_local: another thread's CUDA call (an observer) must not break this capture
            with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
                self.static_sums = self._forward_backward(self.static_x)
        except BaseException:
            with contextlib.suppress(RuntimeError):  # a broken capture may leave an error to report here
                torch.cuda.synchronize(self.device)
            self._undo_warmup(params, saved_params, had_state)  # a failed capture must not have trained
            raise
        finally:
            for g, v in zip(self.optimizer.param_groups, self._lr_values):
                g["lr"] = v  # the rest of the program (status, checkpoints) keeps seeing floats
            torch.cuda.set_rng_state(rng, self.device)  # the first replay draws what the first eager step would
        self.graph = graph
        self._state_ids = self._state_signature()
        self.captures += 1

    def _undo_warmup(self, params: list[torch.Tensor], saved_params: list[torch.Tensor], had_state: dict) -> None:
        """Put parameters and optimizer state back, in place: the graph captures these addresses."""
        with torch.no_grad():
            for p, saved in zip(params, saved_params):
                p.copy_(saved)
            for p in params:
                for k, v in self.optimizer.state.get(p, {}).items():
                    if torch.is_tensor(v):
                        if p in had_state:
                            v.copy_(had_state[p][k].to(v.device, v.dtype))
                        else:
                            v.zero_()  # Adam's fresh state: zero moments, step 0

    # -- one step ---------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self.batch_size or (self.static_x is not None and x.shape != self.static_x.shape):
            self.fallbacks += 1
            return self.fallback(x)
        if self.broken is not None:
            self.fallbacks += 1
            return self.fallback(x)
        if self.graph is None or self._state_ids != self._state_signature() or (
                self._beta is None and self.kl is not None and self.kl.weighted):
            try:
                self._capture(x)  # first call, or the optimizer state was replaced (resume)
            except RuntimeError as err:  # a model doing something uncapturable: train on, eagerly
                self.broken = f"{type(err).__name__}: {err}"
                warnings.warn(f"CUDA graph capture failed, training with the eager step: {self.broken}",
                              RuntimeWarning, stacklevel=2)
                self.graph = None
                self.fallbacks += 1
                return self.fallback(x)
        else:
            assert self.static_x is not None  # made by the capture that made self.graph
            self.static_x.copy_(x)
        for i, g in enumerate(self.optimizer.param_groups):
            if g["lr"] != self._lr_values[i]:  # changed live (control panel): no sync, a fill kernel
                self._lr_values[i] = float(g["lr"])
                self._lr_tensors[i].fill_(self._lr_values[i])
        if self._beta is not None:
            self._beta.fill_(self.kl.current)  # no sync: a fill kernel
        assert self.graph is not None and self.static_sums is not None  # captured above, or at an earlier call
        self.graph.replay()
        self.replays += 1
        # a copy: the caller may keep it (the trainer sums intervals) while the next replay overwrites
        return self.static_sums.clone()


def make_step(model: VAE, optimizer: torch.optim.Optimizer, likelihood: str, batch_size: int,
              device: torch.device, *, fallback: StepFn | None = None, amp: bool = False,
              kl=None) -> CapturedStep | None:
    """A captured training step for CUDA, or None where it does not apply (CPU, non-Adam optimizers).

    `fallback` takes batches of any other shape (pass the trainer's `_eager_step`); without one,
    an equivalent eager step is used. `amp`: bf16 autocast for the forward pass (the ELBO stays
    float32). The graph is captured
    lazily at the first full batch, so a checkpoint loaded before that is what gets captured.
    """
    if capture_unsupported(model, optimizer, device) is not None:
        return None
    return CapturedStep(model, optimizer, likelihood, batch_size, device, fallback, amp, kl)
