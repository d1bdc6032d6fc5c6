"""One training run put together: config -> data -> model -> trainer -> observers.

Used by `vae-visdom train`, by `vae-visdom sweep` and by the tests, so all of them
run the same code. The session holds the run folder's lock (runs/lock.py) from before it touches
the folder until it is closed; a resume is planned and the folder put right by runs/resume.py.
"""
from __future__ import annotations

import dataclasses
import signal
import sys
import time
from operator import methodcaller
from pathlib import Path

import torch

from vae_visdom import safe_io
from vae_visdom.config import ConfigError, TrainConfig, UsageError, default_run_name, with_model_defaults, writable_dir
from vae_visdom.data import ImageData, load_dataset
from vae_visdom.insight.explorer import LatentExplorer
from vae_visdom.insight.probe import InsightProbe
from vae_visdom.models import build_model
from vae_visdom.runs import resume as resuming
from vae_visdom.runs.files import RunFiles
from vae_visdom.runs.fork import FORK, ForkLauncher
from vae_visdom.runs.lock import LOCK_NAME, RunFolderBusy, RunLock
from vae_visdom.runs.progress import ProgressPrinter
from vae_visdom.runs.run_file import RunFileError
from vae_visdom.train import distributed
from vae_visdom.train.choose_step import describe_step
from vae_visdom.train.controller import SETTINGS, Controller
from vae_visdom.train.events import Callback, CommandEvent, Probe, RunInfo, Status
from vae_visdom.train.steering import RESUME, Change, format_steering
from vae_visdom.train.step import make_optimizer, resolve_device
from vae_visdom.train.trainer import Trainer


class TrainingSession:
    def __init__(self, cfg: TrainConfig, resume: bool = False, overrides: dict | None = None,
                 controller: Controller | None = None,
                 callbacks: list[Callback] | None = None, data: ImageData | None = None,
                 progress: bool = True, monitor: Callback | None = None):
        self.cfg = with_model_defaults(cfg.validate())
        self.resume = resume
        self.resumed_with: list[CommandEvent] = []  # the flags given with --resume, as the commands they amount to
        self.group, self.device = distributed.join(resolve_device(cfg.device))  # SOLO unless under torchrun
        face = self.group.is_face  # only rank 0 writes the run folder, streams and owns the panel
        cfg.name = cfg.name or (Path(cfg.out).name if cfg.out else default_run_name(cfg))
        self.run_dir = Path(cfg.out) if cfg.out else Path(cfg.runs_dir) / cfg.name
        made = [] if self.run_dir.exists() else [self.run_dir]  # a refused run removes what it made (below)
        made += [] if (self.run_dir / LOCK_NAME).exists() else [self.run_dir / LOCK_NAME]
        self.run_dir = writable_dir(self.run_dir) if face else self.run_dir
        cfg.out = str(self.run_dir)
        cfg.env = cfg.env or cfg.name
        self.lock = RunLock(self.run_dir)
        try:
            if face:
                self.lock.acquire()  # before anything in the folder is read or changed
        except RunFolderBusy as err:
            raise UsageError(str(err)) from None
        except OSError as err:  # a file system without flock (some network mounts)
            print(f"warning: cannot lock {self.lock.path} ({err.strerror or err}); nothing stops a second "
                  "trainer on this folder", file=sys.stderr)
        try:
            self._build(cfg, resume, overrides, controller, data)
            self.monitor = monitor
            if self.monitor is None and cfg.visdom and face:
                self.monitor = self._make_monitor()
            self.files = RunFiles(self.run_dir) if face else None
        except safe_io.RunWriteError as err:
            self._refused(made if face else [])
            raise UsageError(f"{err} (choose another --out, or make room)") from None
        except BaseException:
            self._refused(made if face else [])  # (a session never run nor closed lets go when garbage collected)
            raise
        family = self._family_view() if self.monitor is not None and cfg.parent else None
        launcher = ForkLauncher(self.run_dir, self.controller) if face and self.group.world == 1 else None
        if launcher is None:
            self.controller.refuse(FORK, f"a run of {self.group.world} processes forks from the command line "
                                         "(train --fork RUN_DIR)")
        for cb in [self.files, launcher, *(callbacks or []), self.monitor, family,
                   ProgressPrinter() if progress and face else None]:
            if cb is not None:
                self.trainer.add_callback(cb)

    def _refused(self, made: list[Path]) -> None:
        """The run was refused before it trained: let go of the folder, and take away the lock file and the
        folder when this session made them (a refused run leaves no empty folder holding a trainer.lock).
        The lock file goes while still held, so no other trainer can be holding the unlinked inode."""
        for path in reversed(made):
            try:
                path.unlink() if path.name == LOCK_NAME else path.rmdir()  # rmdir: only an empty folder
            except OSError:
                pass
            if path.name == LOCK_NAME:
                self.lock.release()
        self.lock.release()

    def _build(self, cfg: TrainConfig, resume: bool, overrides: dict | None, controller: Controller | None,
               data: ImageData | None) -> None:
        point, face = None, self.group.is_face
        if resume and face:
            try:  # read (and judged) before the data is loaded: a bad folder is said at once
                point = resuming.choose(self.run_dir, map_location=self.device)
            except resuming.NothingToResume as err:
                raise UsageError(str(err)) from None
            except RunFileError as err:  # a history file that is a FIFO, a folder...: never opened
                raise UsageError(f"--resume {self.run_dir}: {err}") from None
        elif face:
            note = resuming.start_afresh(self.run_dir)
            if note:
                print(f"note: {note}", file=sys.stderr)
        self.data = data or self.group.first(lambda: load_dataset(  # rank 0 fills the cache, the others read it
            cfg.dataset, cfg.data_dir, seed=cfg.seed, test_fraction=cfg.test_fraction, subset=cfg.subset))
        # with_model_defaults filled these (models/specs.py gives every model all of them)
        assert cfg.batch_size is not None and cfg.latent_dim is not None and cfg.hidden_dim is not None
        assert cfg.likelihood is not None and cfg.optimizer is not None and cfg.lr is not None
        if cfg.batch_size > len(self.data.train):
            raise ConfigError(f"batch_size: {cfg.batch_size} larger than the training set "
                              f"({len(self.data.train)} examples)")
        torch.manual_seed(cfg.seed)
        try:
            model = build_model(cfg.model, self.data.image_shape, cfg.latent_dim, cfg.hidden_dim, cfg.likelihood)
        except ValueError as err:
            raise ConfigError(f"model: {err}") from None
        model.to(self.device)
        optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
        self.controller = controller or Controller(n_train=len(self.data.train))
        self.controller.context.setdefault("n_train", len(self.data.train))  # a caller's own controller too
        probes: list[Probe] = [InsightProbe(model, self.data, self.device, views=cfg.views, iw_every=cfg.iw_every,
                               iw_samples=cfg.iw_samples, binarize=cfg.binarize, seed=cfg.seed)
                  ] if (cfg.views or cfg.iw_every) and face else []
        if cfg.visdom and face:  # the page's latent explorer, decoding from a copy of the model of its own
            probes.append(LatentExplorer(model, self.data.test))
        self.trainer = Trainer(model, optimizer, self.data, cfg, self.device, self.controller,
                               run_dir=str(self.run_dir) if face else None, run_name=cfg.name or "run", probes=probes,
                               group=self.group)
        state = self.group.share(point and point.state) if resume else None  # rank 0's read of the checkpoint
        if state is not None:
            try:  # the live values in force when it stopped, too; the next save keeps its file as the previous
                self.trainer.load_state_dict(state, point.checkpoint_at if face and point else None)
            except (KeyError, RuntimeError, ValueError, TypeError) as err:
                first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
                raise UsageError(f"--resume {self.run_dir}: {point.name if point else 'its checkpoint'} does not fit "
                                 f"this run's model ({first})") from None
            if face:
                assert point is not None  # rank 0 read it above
                try:
                    notes = point.notes + resuming.reconcile(self.run_dir, point.state)
                except RunFileError as err:  # steps.jsonl a FIFO...: never opened
                    raise UsageError(f"--resume {self.run_dir}: {err}") from None
                resuming.report(self.run_dir, point.state, notes)
            self._apply_overrides(overrides or {})
        elif cfg.started_with is None:  # a new run: the values it starts with, for a replay of its steering
            cfg.started_with = {name: getattr(cfg, name) for name in SETTINGS}
        self.trainer.choose_step()  # once, with the run's state and live values in place
        if face:
            safe_io.atomic_write(self.run_dir / "config.json", cfg.to_json())

    def _apply_overrides(self, overrides: dict) -> None:
        """Flags given with --resume win over the values the checkpoint had in force."""
        t = self.trainer
        for name, value in overrides.items():
            t.apply_setting(name, value)  # the panel's path too
            # told to the observers once the run is announced: events.jsonl keeps it, --steer-like replays it
            self.resumed_with.append(CommandEvent(time.time(), t.epoch, t.step, name, value, True,
                                                  f"{name} = {value}: given with --resume", RESUME))
        # config.json records the values the run continues with
        self.cfg.lr, self.cfg.epochs = t.lr, t.epochs
        self.cfg.batch_size, self.cfg.log_interval, self.cfg.beta = t.batch_size, t.log_interval, t.kl.beta

    def follow(self, plan: list[Change], about: str) -> None:
        """Apply the changes of a steering schedule at their steps (Trainer.follow); RUN_DIR/steering.txt keeps
        the schedule this run followed."""
        self.trainer.follow(plan)
        if self.group.is_face:
            safe_io.atomic_write(self.run_dir / "steering.txt", format_steering(plan, about))

    def _make_monitor(self) -> Callback | None:
        try:
            from vae_visdom.monitor import VisdomMonitor  # late: only the monitor imports visdom
        except (ImportError, RuntimeError) as err:  # visdom 0.3 raises RuntimeError below Python 3.12
            print(f"visdom monitor unavailable ({err}); training without it", file=sys.stderr)
            return None
        return VisdomMonitor(server=self.cfg.server, port=self.cfg.port, env=self.cfg.env, run_dir=self.run_dir,
                             controller=self.controller)

    def _family_view(self) -> Callback:
        """A fork keeps compare-<root> (itself, its parent, their forks) up to date as it trains."""
        from vae_visdom.pages.family import FamilyView  # late: only the monitor imports visdom

        return FamilyView(self.run_dir, self.cfg.server, self.cfg.port)

    @property
    def url(self) -> str | None:
        if self.monitor is None:
            return None
        return f"{self.cfg.server}:{self.cfg.port}/env/{self.cfg.env}"

    def run(self, install_signal_handlers: bool = False) -> Status:
        """Train to the end (or a stop); observers are closed and the folder let go whatever happens.

        A run that failed on a write to its folder (disk full) says so in one line on stderr: the
        file, the reason, the last good checkpoint, and whether status.json could record it."""
        previous = {}
        if install_signal_handlers:
            previous = self._install_signal_handlers()
        try:
            self.announce()
            status = self.trainer.fit()
        finally:
            self.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        for change in self.trainer.unplanned:
            where = f"step {change.step}" if change.epoch is None else f"epoch {change.epoch} step {change.step}"
            print(f"warning: the run ended before {where}: its planned change was not applied", file=sys.stderr)
        unsaid = self.files.status_error if self.files else None
        if status.state == "failed":
            also = "" if unsaid is None else f"; status.json could not be written either ({unsaid})"
            print(f"run failed: {status.message}{also}", file=sys.stderr, flush=True)
        elif unsaid is not None:
            print(f"warning: the run {status.state}, but status.json could not say so ({unsaid})", file=sys.stderr,
                  flush=True)
        return status

    def announce(self) -> None:
        """Tell every observer the run starts (`run` does this; so does a caller driving epochs itself)."""
        t = self.trainer
        c, h, w = t.train_x.shape[1:]
        info = RunInfo(
            name=t.run_name, run_dir=str(t.run_dir), env=self.cfg.env if self.monitor else None,
            config=dataclasses.asdict(self.cfg), dataset=self.cfg.dataset,
            device=f"{self.group.describe(t.device)}; step: {describe_step(t.step_fn)}",  # what --fast-step picked
            n_train=t.n_train, n_test=len(t.test_x), image_shape=(c, h, w),
            n_params=sum(p.numel() for p in t.model.parameters()), data_source=self.data.source,
            start_epoch=t.epoch + 1 if t.epoch_state is None else t.epoch, resumed=self.resume, url=self.url)
        t.tell(lambda cb: cb.on_run_start(info))
        for event in self.resumed_with:
            t.tell(methodcaller("on_command", event))
        self.resumed_with = []

    def close(self) -> None:
        """Close the observers and let go of the run folder (its lock)."""
        for cb in self.trainer.callbacks:
            try:
                cb.close()
            except Exception as err:  # a broken observer must not hide the run's own outcome
                print(f"warning: closing {type(cb).__name__} failed: {err}", file=sys.stderr)
        self.lock.release()

    def _install_signal_handlers(self) -> dict:
        """SIGINT/SIGTERM: finish the step, checkpoint, flush, exit 0. A second SIGINT aborts."""
        previous = {}

        def handler(signum, frame):
            if self.controller.stop_requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            print(f"\n{signal.Signals(signum).name}: stopping after this step (again to abort)", file=sys.stderr)
            self.controller.stop(source="signal")

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        return previous
