"""The training loop: polls a Controller between steps, hands events to callbacks, calls probes.

It knows no consumer: visdom, the run files and the probes reach it only through the Callback and Probe
protocols of events.py. The dataset lives on the device as one uint8 tensor; each epoch slices batches
from a permutation by indexing (no DataLoader); loss sums stay on the device until a log point.

Divergence: a loss that turns NaN or infinite ends the run as "diverged" (exit status 3 from
`vae-visdom train`). It is checked where the numbers reach the host anyway, so it costs no extra
sync per step: every log point (the interval's loss), the epoch's train and test losses, and the
weights themselves before every checkpoint (one sync per checkpoint). A NaN step is therefore seen
within one log interval, and always before a checkpoint could hold it: the last checkpoint on disk
is the last finite one. The numbers checked are the global ones under torchrun (all-reduced, the
weights kept equal by the summed gradients), so every rank comes to the same decision at the same
point without a collective of its own.

With someone to steer it (a panel: `Controller.can_steer`) and fit() driving it, a diverged run does not
end: the trainer keeps a copy of its whole state at every finite log point (`_finite`, the weights checked
there too), goes back to it when the loss turns non-finite, and pauses there saying where it diverged and
with what lr; a changed value and Resume train on from that state with the values in force, a Stop ends
the run as diverged, as without a panel. That copy is the state at the last row of steps.jsonl, so no
logged row is undone; only when it diverges again at once (finite weights too large for any lr) does the
run go back further, to its start or last epoch end (`_anchor`), past rows already logged.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from operator import methodcaller

import torch

from vae_visdom.config import TrainConfig
from vae_visdom.data import ImageData
from vae_visdom.data.base import to_unit_float
from vae_visdom.models.base import VAE
from vae_visdom.safe_io import RunWriteError
from vae_visdom.train import checkpoint, distributed, schedule
from vae_visdom.train.checkpoint import EpochState
from vae_visdom.train.choose_step import choose_step
from vae_visdom.train.controller import SETTINGS, Command, Controller, Reply
from vae_visdom.train.events import (
    Callback,
    CommandEvent,
    EpochImages,
    EpochRecord,
    Figure,
    Probe,
    Reason,
    Snapshot,
    Status,
    StepLog,
)
from vae_visdom.train.kl_weight import KLWeight
from vae_visdom.train.objectives import elbo_terms
from vae_visdom.train.steering import PLANNED, Change, format_value
from vae_visdom.train.step import StepFn, autocast_for, backward_and_step, iwae_backward_and_step, iwae_terms

TEST_BATCH = 2000  # the test pass has no gradients: large batches, few launches
N_RECON, N_SAMPLES = 8, 64


def copy_into(dst, src):
    """A deep copy of `src` (a state_dict's nesting of dicts, lists and tensors) that reuses the tensors of `dst`,
    an earlier copy, where they match: a snapshot at every log point then allocates nothing."""
    if isinstance(src, torch.Tensor):
        if isinstance(dst, torch.Tensor) and (dst.shape, dst.dtype, dst.device) == (src.shape, src.dtype, src.device):
            return dst.copy_(src)
        return src.detach().clone()
    if isinstance(src, dict):
        old = dst if isinstance(dst, dict) else {}
        return {k: copy_into(old.get(k), v) for k, v in src.items()}
    if isinstance(src, (list, tuple)):
        olds = dst if isinstance(dst, type(src)) and len(dst) == len(src) else [None] * len(src)
        return type(src)(copy_into(d, v) for d, v in zip(olds, src))
    return copy.deepcopy(src)


class Diverged(Exception):
    """The loss (or the weights) turned non-finite; str() says what and where."""


class Trainer:
    """The one owner of a run's training state: every field below is written by the trainer's own methods
    (the constructor, the commands it applies, `load_state_dict`), and `state_dict()` is the whole of it.

    `group` is the process group under torchrun (distributed.py); the trainer asks it for the controller
    every rank polls, the weights' common start and the gradients' sum, once, here.
    """

    def __init__(self, model: VAE, optimizer: torch.optim.Optimizer, data: ImageData, cfg: TrainConfig,
                 device: torch.device, controller: Controller | None = None, run_dir: str | None = None,
                 run_name: str = "run", probes: Sequence[Probe] = (), group: distributed.Solo = distributed.SOLO):
        self.model, self.optimizer, self.device = model, optimizer, device
        self.dist = group  # under torchrun: each step's share of the batch, global sums
        self.cfg = group.training_config(cfg, device)  # (no captured CUDA graph under torchrun)
        self.controller = group.commands(controller or Controller())  # every rank applies rank 0's commands
        group.wire(model, optimizer)  # one starting point; gradients summed over the ranks
        self.callbacks: list[Callback] = []
        self.probes = list(probes)  # built by the session; called at run start and after each test pass
        self.run_dir, self.run_name = run_dir, run_name
        self.train_x = data.train.to(device)  # (N, C, H, W) uint8, resident
        self.test_x = data.test.to(device)  # (M, C, H, W) uint8
        self.n_train = len(data.train)
        # live settings: the controller may change these between steps
        assert cfg.batch_size is not None, "the session fills the model's defaults (config.with_model_defaults)"
        self.epochs, self.batch_size, self.log_interval = cfg.epochs, cfg.batch_size, cfg.log_interval
        self.epoch, self.step = 0, 0
        self.kl = KLWeight(cfg.beta, cfg.kl_warmup)  # the KL term's weight, read by every step
        self.state = "starting"
        self.data_gen = torch.Generator().manual_seed(cfg.seed)  # epoch permutations
        # fixed prior draws, from their own generator so they neither use nor disturb the global RNG
        z_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.z_fixed = torch.randn(N_SAMPLES, model.latent_dim, generator=z_gen).to(device)  # (64, D)
        self.epoch_state: EpochState | None = None
        self.checkpoint_at: tuple[int, int] | None = None  # (epoch, step) of RUN_DIR/checkpoint.pt, if any
        self._stop = False
        self._finite: dict | None = None  # the state at the last finite log point, while someone can steer
        self._anchor: dict | None = None  # the state at the run's start or its last epoch end, likewise
        self._back_at_finite = False  # resumed from _finite, no finite log point since
        self._holds = False  # fit() drives the run: it can hold a divergence (a caller driving epochs cannot)
        self._plan: list[Change] = []  # changes to apply where they were planned (follow), in order
        self._diverged_at: tuple[str, int, int, float] | None = None  # (what, epoch, step, lr) of a held divergence
        self.autocast = autocast_for(cfg.precision, device)
        self.step_fn: StepFn | None = None  # chosen once the run's state is known, again when the batch changes
        self._step_wrappers: list[Callable[[StepFn], StepFn]] = []  # wrap_step: around every step chosen
        schedule.configure_optimizer(cfg.lr_schedule, optimizer)  # a resumed run's own settings load over these
        group.seed_noise(cfg.seed, self.step)  # a rank > 0 draws noise of its own

    # -- events ---------------------------------------------------------------------------------
    def add_callback(self, cb: Callback) -> None:
        self.callbacks.append(cb)

    def tell(self, hook: Callable[[Callback], object]) -> None:
        """Call one hook of every observer, in order, on this thread."""
        for cb in self.callbacks:
            hook(cb)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def status(self, message: str = "", reason: Reason = Reason.OTHER) -> Status:
        return Status(self.state, self.epoch, self.step, self.epochs, message,
                      dict(lr=self.lr, batch_size=self.batch_size, epochs=self.epochs,
                           log_interval=self.log_interval, beta=self.kl.beta), reason)

    def _set_state(self, state: str, message: str, reason: Reason) -> None:
        self.state = state
        status = self.status(message, reason)
        self.tell(lambda cb: cb.on_status(status))

    # -- commands -------------------------------------------------------------------------------
    def apply_setting(self, name: str, value) -> None:
        """Change one live setting (lr, batch_size, epochs, log_interval, beta): the one path for the
        control panel's commands and for the flags given with --resume."""
        if name == "lr":
            for group in self.optimizer.param_groups:
                group["lr"] = value
        elif name == "batch_size":
            self.batch_size = value
            if self.step_fn is not None and self.device.type == "cuda":  # a captured graph is shape-specialised
                self.choose_step()
        elif name in ("epochs", "log_interval"):
            setattr(self, name, value)
        elif name == "beta":
            self.kl.set_beta(value, self.step)
        else:
            raise KeyError(f"{name} is not a live setting")

    def _apply(self, cmd: Command) -> None:
        if cmd.accepted:
            if cmd.name == "stop":
                self._stop = True
            elif cmd.name in SETTINGS:
                self.apply_setting(cmd.name, cmd.value)
            elif self.controller.offered(cmd.name):
                snap = Snapshot(cmd.name, self.state_dict(), cmd.value)  # the state at this step, as a stop saves it
                self.tell(lambda cb: cb.on_snapshot(snap))
                reply = self.controller.take_reply(cmd.name) or Reply(
                    False, f"nobody carried out {cmd.name} (no run folder, or no observer for it)",
                    {"changes": cmd.value, "run": None, "env": None})
                cmd = dataclasses.replace(cmd, accepted=reply.accepted, message=reply.message, value=reply.value)
        latency = (time.monotonic() - cmd.submitted) * 1000.0
        event = CommandEvent(cmd.wall_time, self.epoch, self.step, cmd.name, cmd.value, cmd.accepted, cmd.message,
                             cmd.source, round(latency, 3))
        self.tell(lambda cb: cb.on_command(event))
        if cmd.accepted and cmd.name in SETTINGS:
            status = self.status(cmd.message, Reason.SETTING)
            self.tell(lambda cb: cb.on_status(status))

    def follow(self, changes: list[Change]) -> None:
        """Apply `changes` (steering.py) where they are planned: each goes through the controller with the
        source "planned" when the run reaches its epoch and step, so it is applied exactly where a live
        command submitted then would be."""
        self._plan = sorted(changes, key=Change.key)

    @property
    def unplanned(self) -> list[Change]:
        """The planned changes the run has not reached (yet, or at its end: never)."""
        return list(self._plan)

    def _release_planned(self) -> None:
        while self._plan and self._plan[0].step <= self.step and (self._plan[0].epoch or 0) <= self.epoch:
            for name, value in self._plan.pop(0).values.items():
                self.controller.submit(name, format_value(value), source=PLANNED)

    def poll(self, message: str = "paused between steps", reason: Reason = Reason.PAUSED) -> float:
        """Apply pending commands; block while paused. Returns the seconds spent paused."""
        paused_for = 0.0
        for cmd in self.controller.drain():
            self._apply(cmd)
        if self.controller.paused and not self._stop:
            self._set_state("paused", message, reason)
            t0 = time.perf_counter()
            while self.controller.wait_while_paused(0.5) and not self._stop:
                for cmd in self.controller.drain():
                    self._apply(cmd)
            for cmd in self.controller.drain():  # the resume (or stop) itself
                self._apply(cmd)
            paused_for = time.perf_counter() - t0
            if not self._stop:
                self._set_state("running", "resumed", Reason.RESUMED)
        return paused_for

    # -- one step -------------------------------------------------------------------------------
    def choose_step(self) -> None:
        """Choose the step (choose_step.py): once the run's state is loaded (optimizer flags come from the
        checkpoint), and again when the batch size changes on a GPU (a graph is shape-specialised)."""
        step = choose_step(self.model, self.optimizer, self.cfg, self.device, self.batch_size,
                           self._eager_step, self.kl, self.n_train * max(self.epochs - self.epoch, 1))
        for wrapper in self._step_wrappers:
            step = wrapper(step)
        self.step_fn = step

    def _batch(self, idx: torch.Tensor) -> torch.Tensor:
        x = to_unit_float(self.train_x.index_select(0, idx))  # (B, C, H, W) in [0, 1]
        if self.cfg.binarize:
            x = torch.bernoulli(x)  # dynamic binarization (Burda et al. 2015; Salakhutdinov & Murray 2008)
        return x

    def _eager_step(self, x: torch.Tensor) -> torch.Tensor:
        """One optimizer step on a batch; returns (3,) loss, recon, kl summed over the batch (on device)."""
        self.optimizer.zero_grad(set_to_none=True)
        beta = self.kl.current  # exactly 1: the ELBO's own arithmetic, as before beta existed
        weight = None if beta == 1.0 else beta
        if self.cfg.objective == "iwae":
            return iwae_backward_and_step(self.model, self.optimizer, x, self.autocast, self.cfg.iwae_k, weight)
        return backward_and_step(self.model, self.optimizer, x, self.autocast, weight)

    # -- epochs ---------------------------------------------------------------------------------
    def train_epoch(self) -> tuple[torch.Tensor, float, torch.Tensor | None] | None:
        """Train one epoch (or the rest of one): (sums (3,), seconds, sum of beta * KL or None), or None
        when stopped."""
        self.model.train()
        if self.step_fn is None:
            self.choose_step()
        es = self.epoch_state
        if es is None:
            perm = torch.randperm(self.n_train, generator=self.data_gen).to(self.device)
            es = self.epoch_state = EpochState(perm, sums=torch.zeros(3, device=self.device))
        t0, paused = time.perf_counter(), 0.0
        while es.pos < self.n_train:
            if self._plan and self._plan[0].step <= self.step:
                self._release_planned()
            if self.controller.has_pending() or self.controller.paused:
                paused += self.poll()
            if self._stop:
                es.seconds += time.perf_counter() - t0 - paused
                return None
            idx = es.perm[es.pos:es.pos + self.batch_size]
            es.pos += len(idx)
            beta = self.kl.advance(self.step)
            step_fn = self.step_fn  # read at every step: a batch-size change on a GPU chooses another
            assert step_fn is not None  # chosen above, and again by every change that unsets it
            es.add(step_fn(self._batch(self.dist.shard(idx))), len(idx), beta if self.kl.weighted else None)
            self.step += 1
            if es.steps % self.log_interval == 0 or es.pos >= self.n_train:
                self._log_step(es)
        es.seconds += time.perf_counter() - t0 - paused
        self.epoch_state = None
        return es.sums, es.seconds, es.wkl

    def _log_step(self, es: EpochState) -> None:
        loss, recon, kl, objective = es.take_interval(self.dist.reduce)
        self._check_finite(f"the training loss is {loss}", loss, recon, kl)
        self._keep_finite()
        log = StepLog(self.epoch, self.step, self.epoch - 1 + es.pos / self.n_train, loss, recon, kl, self.lr,
                      self.batch_size, self.kl.current, objective)
        self.tell(lambda cb: cb.on_step(log))

    @torch.no_grad()
    def test_pass(self) -> tuple[torch.Tensor, EpochImages]:
        """Test-set ELBO terms (summed) with one posterior sample each, as the seed's test pass; with
        `--objective iwae` the loss is -L_K with the run's K (recon + kl stay the ELBO's terms)."""
        self.model.eval()
        sums, first = torch.zeros(3, device=self.device), None
        k = self.cfg.iwae_k if self.cfg.objective == "iwae" else 0
        for x in self.dist.shard(self.test_x).split(TEST_BATCH // max(1, k)):  # this rank's share; rank 0's first
            x = torch.bernoulli(to_unit_float(x)) if self.cfg.binarize else to_unit_float(x)  # (B, C, H, W)
            logits, mu, logvar = self.model(x)
            recon, kl = elbo_terms(logits, x, mu, logvar, self.model.likelihood, self.model.log_sigma)
            loss = iwae_terms(self.model, x, k, self.autocast)[0] if k else recon + kl
            sums += torch.stack([loss.sum(), recon.sum(), kl.sum()])
            if first is None:
                first = (x[:N_RECON].cpu(), torch.sigmoid(logits[:N_RECON]).cpu())
        samples = self.model.sample_images(self.z_fixed).float().cpu()
        assert first is not None, "a test set has at least one image (data/ checks it)"
        return self.dist.reduce(sums), EpochImages(first[0], first[1], samples)

    def fit(self) -> Status:
        """Train from self.epoch + 1 until self.epochs (which may change on the way), or a stop. A failed
        run-folder write (disk full) ends the run as "failed" with the file and reason, not an exception."""
        self._holds = True
        try:
            self.begin()
            self._keep_finite(anchor=True)
            while True:
                try:
                    if not self.run_epoch():
                        break
                except Diverged as err:
                    if not self._steer_diverged(err):
                        raise
            return self.end()
        except Diverged as err:
            what = str(err)
            if self._diverged_at is not None:  # held, then stopped: the run ends where it diverged
                what, self.epoch, self.step, lr = self._diverged_at
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
            kept = ("no checkpoint was written (none would have been finite)" if self.checkpoint_at is None else
                    "the last finite checkpoint (epoch {}, step {}) is kept".format(*self.checkpoint_at))
            final = self.status(f"{what} at epoch {self.epoch}, step {self.step} (lr {self.lr:g}); training stopped; "
                                f"{kept}",
                                Reason.DIVERGED)
            final.state = self.state = "diverged"
            self.epoch_state = None  # non-finite: nothing of it may be saved (a snapshot, a later stop)
            self.tell(lambda cb: cb.on_status(final))  # the panel's message row and the run pane
            self.tell(lambda cb: cb.on_run_end(final))
            return final
        except RunWriteError as err:
            kept = ("no checkpoint.pt was written by this run yet" if self.checkpoint_at is None else
                    "the last good checkpoint (epoch {}, step {}) is intact".format(*self.checkpoint_at))
            final = self.status(f"{err}; {kept}", Reason.FAILED)
            final.state = self.state = "failed"
            self.tell(lambda cb: cb.on_run_end(final))
            return final
        except BaseException as err:
            self.fail(err)
            raise

    def fail(self, err: BaseException) -> Status:
        """End the run as failed by `err`, told to every observer (fit does it; so does a caller driving the
        epochs itself, e.g. a sweep's trial)."""
        final = self.status(f"failed: {type(err).__name__}: {err}", Reason.FAILED)
        final.state = self.state = "failed"
        self.tell(lambda cb: cb.on_run_end(final))
        return final

    def stopped_outside(self, message: str, source: str) -> Status:
        """End the run where it stands, stopped by `source` outside the trainer (a sweep's scheduler ends the
        worker right after a report: the checkpoint of that epoch is current, no second save): the status first
        (status.json is what the listings read), then the stop as a command, then the run's end."""
        final = self.status(message, Reason.STOPPED)
        final.state = self.state = "stopped"
        self.tell(lambda cb: cb.on_status(final))
        event = CommandEvent(time.time(), self.epoch, self.step, "stop", None, True, message, source, None)
        self.tell(lambda cb: cb.on_command(event))
        self.tell(lambda cb: cb.on_run_end(final))
        return final

    def begin(self) -> None:
        self._set_state("running", "training", Reason.STARTED)
        for probe in self.probes:
            for name, figure in probe.run_start().items():
                self.tell(methodcaller("on_figure", name, figure))

    def run_epoch(self) -> bool:
        """One epoch (or the rest of one): train, test, checkpoint, report. False when the run is over."""
        if self._stop or not (self.epoch < self.epochs or self.epoch_state is not None):
            return False
        if self.epoch_state is None:
            self.epoch += 1
            schedule.enter_epoch(self.cfg.lr_schedule, self.optimizer, self.epoch)  # scales the lr in force
        result = self.train_epoch()
        if result is None:
            return False
        train_sums, seconds, wkl = result
        train_sums, wkl = self.dist.reduce(train_sums), None if wkl is None else self.dist.reduce(wkl)  # global
        t0 = time.perf_counter()
        test_sums, images = self.test_pass()
        test_seconds = time.perf_counter() - t0
        extra: dict = {} if wkl is None else {"train_objective": float((train_sums[1] + wkl) / self.n_train)}
        figures: dict[str, Figure] = {}
        for probe in self.probes:  # timed apart from the test pass
            metrics, figs = probe.epoch_end(self.epoch)
            extra.update(metrics)
            figures.update(figs)
        probe_seconds = time.perf_counter() - t0 - test_seconds if self.probes else 0.0
        tr = (train_sums / self.n_train).tolist()
        te = (test_sums / len(self.test_x)).tolist()
        self._check_finite(f"the epoch's training loss is {tr[0]}", *tr)
        self._check_finite(f"the test loss is {te[0]}", *te)
        self._check_weights()
        record = EpochRecord(self.epoch, self.step, tr[0], tr[1], tr[2], te[0], te[1], te[2], self.lr,
                             self.batch_size, round(seconds, 4), round(test_seconds, 4),
                             round(self.n_train / max(seconds, 1e-9), 1), round(probe_seconds, 4), extra,
                             self.kl.current)
        for name, figure in figures.items():
            self.tell(methodcaller("on_figure", name, figure))
        self.tell(lambda cb: cb.on_epoch_end(record, images))  # the run files write the epoch's images and row
        self.save_checkpoint()  # then the checkpoint: it never covers an epoch whose row is not on disk
        self._keep_finite(anchor=True)
        if self._plan:
            self._release_planned()  # (at the epoch's end: the epoch tells it from the next epoch's first step)
        if self.controller.has_pending():
            self.poll()
        return not self._stop

    def end(self) -> Status:
        """The final status (finished, or stopped with a checkpoint), told to every observer."""
        if self._stop:
            self._set_state("stopping", "stop requested: finishing the step and writing a checkpoint", Reason.STOPPING)
            self.dist.settle(self.epoch_state)  # the unfinished epoch's sums, global
            if self.epoch_state is not None:  # the steps since the last log point, before they are saved
                self._check_finite("the training loss is not finite", *self.epoch_state.sums.tolist())
            self._check_weights()
            self.save_checkpoint()
            final = self.status("stopped by request; checkpoint written", Reason.STOPPED)
            final.state = "stopped"
        else:
            final = self.status(f"finished {self.epoch} epochs", Reason.FINISHED)
            final.state = "finished"
        self.state = final.state
        self.tell(lambda cb: cb.on_status(final))
        self.tell(lambda cb: cb.on_run_end(final))
        return final

    # -- divergence (see the module's text) ----------------------------------------------------------
    def _check_finite(self, what: str, *values: float) -> None:
        if not all(math.isfinite(v) for v in values):
            raise Diverged(what)

    def _keep_finite(self, anchor: bool = False) -> None:
        """While someone can steer the run (and fit() drives it), copy its whole state at this finite log point
        (the weights checked first: the last update may have broken them while the loss before it was finite);
        `anchor`: also as the state to go back to when that one proves broken (the run's start, each epoch's
        end)."""
        if not (self._holds and self.controller.can_steer()):
            self._finite = self._anchor = None
            return
        self._check_weights()
        self._finite = copy_into(self._finite, self.state_dict())  # (~8 MB for the default MLP: docs/performance.md)
        self._back_at_finite = False
        if anchor:
            self._anchor = copy_into(self._anchor, self._finite)

    def _steer_diverged(self, err: Diverged) -> bool:
        """Go back to the last finite state and pause there for the user (True: resumed from it); False when
        no one can steer the run or there is no such state. A state that diverges again at once (finite
        weights too large for any lr) is left for the run's start or its last epoch end."""
        if self._finite is None or not self.controller.can_steer():
            return False
        self._diverged_at = (str(err), self.epoch, self.step, self.lr)
        lr, again = self.lr, self._back_at_finite and self._anchor is not None
        where = f"diverged{' again' if again else ''} at epoch {self.epoch} step {self.step} ({err})"
        state = self._anchor if again else self._finite
        assert state is not None  # (again: the anchor is there)
        live = self.status().values  # the values in force now (the user's, once they changed one) stay so
        self.load_state_dict(copy.deepcopy(state))  # a copy: the optimizer may keep the tensors it loads
        for name in SETTINGS:
            self.apply_setting(name, live[name])
        self._finite, self._back_at_finite = copy_into(self._finite, state), not again
        back = ("the run's start" if self.step == 0 else "the last epoch's end") if again else "the last finite state"
        self.controller.submit("pause", source="divergence")
        self.poll(f"{where}: lr {lr:g} too high? lower it and Resume, or Stop (back at epoch {self.epoch}, "
                  f"step {self.step}, {back})", Reason.DIVERGED)
        if self._stop:
            raise err
        self._diverged_at = None
        return True

    def _check_weights(self) -> None:
        """One host sync: are all weights finite? (The last step's update may have broken them while its
        loss, computed before the update, was still finite.)"""
        with torch.no_grad():
            ok = torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all()
        if not bool(ok):
            raise Diverged("the weights are no longer finite")

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The whole training state, as a checkpoint holds it: model, optimizer, counters, the live values in
        force, the RNGs, and the unfinished epoch (if any). checkpoint.py writes and reads it."""
        es = self.epoch_state
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch if es is None else self.epoch - 1,  # epochs completed
            "step": self.step,
            "live": dict(epochs=self.epochs, batch_size=self.batch_size, log_interval=self.log_interval,
                         beta=self.kl.beta),
            "rng": {"torch": torch.get_rng_state(), "data": self.data_gen.get_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None},
            "epoch_state": None if es is None else {"epoch": self.epoch, **es.to_dict()},
        }

    def load_state_dict(self, state: dict, saved_at: tuple[int, int] | None = None) -> None:
        """Continue from `state` (the inverse of `state_dict`; every rank loads rank 0's). `saved_at`: the
        (epoch, step) of the checkpoint file it came from, which the next save keeps as the previous one."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step = state["epoch"], state["step"]
        live = state.get("live", {})
        self.epochs = live.get("epochs", self.epochs)
        self.batch_size = live.get("batch_size", self.batch_size)
        self.log_interval = live.get("log_interval", self.log_interval)
        self.kl.set_beta(live.get("beta", self.kl.beta), self.step)
        torch.set_rng_state(state["rng"]["torch"])
        self.data_gen.set_state(state["rng"]["data"])
        if state["rng"].get("cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.dist.seed_noise(self.cfg.seed, self.step)  # rank 0's RNG state, then a rank > 0's own noise
        es = state.get("epoch_state")
        self.epoch_state = None  # (a trainer going back to an epoch's end drops the epoch it was in)
        if es is not None:
            self.epoch = es["epoch"]
            self.epoch_state = EpochState.from_dict(es, self.device)
            self.dist.own_share(self.epoch_state)  # the carried sums are global: rank 0 alone carries them
        if saved_at is not None:
            self.checkpoint_at = saved_at
        self.step_fn = None  # re-chosen with the loaded optimizer's flags before the next step

    def wrap_step(self, wrapper: Callable[[StepFn], StepFn]) -> None:
        """Put `wrapper` around every step the trainer chooses (now and after a re-choice): what a test or a
        benchmark that watches or times the steps uses, instead of replacing the step."""
        self._step_wrappers.append(wrapper)
        if self.step_fn is not None:
            self.step_fn = wrapper(self.step_fn)

    def save_checkpoint(self) -> None:
        """Write RUN_DIR/checkpoint.pt, the one it replaces kept as checkpoint.prev.pt (unless both are
        of the same step: a stop right after an epoch's end). Observers sync their files first."""
        if self.run_dir is None:
            return
        state = self.state_dict()
        self.tell(lambda cb: cb.on_save_checkpoint(state["epoch"], self.step))
        keep = (self.cfg.keep_checkpoints or self.cfg.checkpoint_budget > 0) and state["epoch_state"] is None
        checkpoint.save(self.run_dir, state, rotate=self.checkpoint_at is None or self.checkpoint_at[1] != self.step,
                        keep=keep)
        if keep and not self.cfg.keep_checkpoints:  # the oldest epochs go first; the newest always stays
            checkpoint.prune_kept(self.run_dir, self.cfg.checkpoint_budget * 1_000_000)
        self.checkpoint_at = (state["epoch"], self.step)
