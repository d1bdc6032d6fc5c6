"""What the trainer tells its observers. The trainer knows nothing else of them.

Every hook is called on the training thread, in order, so an observer needs no
lock for its own state; one that does slow work (network, disk) must hand it
to a thread of its own and return at once.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # tensors are only carried here: the pages (the family view) use these types without torch
    import torch


@dataclass
class RunInfo:
    name: str
    run_dir: str
    env: str | None
    config: dict  # TrainConfig as a dict, model defaults filled in
    device: str
    dataset: str
    n_train: int
    n_test: int
    image_shape: tuple[int, int, int]
    n_params: int
    data_source: str
    start_epoch: int  # 1 for a new run; the next epoch for a resumed one
    resumed: bool = False
    url: str | None = None  # where to watch it, when a monitor is attached


@dataclass
class StepLog:
    """Training metrics averaged over the steps since the last log point, per example, nats."""

    epoch: int
    step: int  # global optimizer step, from 1
    epoch_progress: float  # fractional epoch: epoch - 1 + examples seen / n_train
    loss: float
    recon: float
    kl: float
    lr: float
    batch_size: int
    beta: float = 1.0  # the KL weight of the interval's last step
    objective: float | None = None  # recon + beta * KL as trained, when the run weights KL (None: the loss)


@dataclass
class EpochRecord:
    """One line of metrics.jsonl."""

    epoch: int
    step: int
    train_loss: float
    train_recon: float
    train_kl: float
    test_loss: float
    test_recon: float
    test_kl: float
    lr: float
    batch_size: int
    seconds: float  # training time of the epoch, paused time excluded
    test_seconds: float  # the test pass alone
    images_per_second: float
    probe_seconds: float = 0.0  # the probes' work at the epoch's end (latent views, IW estimate), apart from the test
    extra: dict = field(default_factory=dict)  # e.g. {"test_iw_ll": ..., "test_iw_se": ...}
    beta: float = 1.0  # the KL weight in force at the epoch's end (train_objective in extra when it is not 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(d.pop("extra"))
        return d


@dataclass
class EpochImages:
    """Images for the epoch, on the CPU, float in [0, 1], (B, C, H, W)."""

    originals: torch.Tensor  # 8 test images
    reconstructions: torch.Tensor  # their reconstructions
    samples: torch.Tensor  # 64 decodings of the run's fixed prior draws


class Reason(str, Enum):
    """Why a Status was sent: observers decide on this, never on the message's words."""

    STARTED = "started"  # training begins (or continues after a resume)
    PAUSED = "paused"
    RESUMED = "resumed"  # running again after a pause
    SETTING = "setting"  # a live setting changed; the message says which
    STOPPING = "stopping"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"
    DIVERGED = "diverged"  # the loss turned NaN or infinite: the run ends, or pauses for a panel (trainer.py)
    OTHER = ""


@dataclass
class Status:
    state: str  # starting | running | paused | stopping | stopped | finished | failed | diverged
    epoch: int
    step: int
    epochs: int
    message: str = ""
    values: dict = field(default_factory=dict)  # the live settings in force: lr, batch_size, epochs, log_interval, beta
    reason: Reason = Reason.OTHER


@dataclass
class CommandEvent:
    """A command from a control source, accepted or rejected. One line of events.jsonl."""

    time: float
    epoch: int
    step: int
    name: str
    value: Any
    accepted: bool
    message: str
    source: str = "panel"
    latency_ms: float | None = None  # from submission to the trainer applying it

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ImageFigure:
    """A grid of images: (B, C, H, W) floats in [0, 1] on the CPU, `nrow` to a row; `about`: named numbers
    that describe what they show (the PCA baseline's k), for the observer's title."""
    images: torch.Tensor
    nrow: int
    about: dict = field(default_factory=dict)


@dataclass
class ScatterFigure:
    """Points in 2-D, (N, 2), with an integer class per point, (N,) or None; `projected` says the
    points are a 2-D projection (principal components) of higher-dimensional ones."""
    points: torch.Tensor
    labels: torch.Tensor | None = None
    projected: bool = False


@dataclass
class NumbersFigure:
    """Named numbers (a baseline's errors, its size), in the order a reader should see them."""
    values: dict[str, float]


@dataclass
class ExplorerFigure:
    """A view the page steers itself: the latent explorer (insight/explorer.py), which decodes on demand from
    a copy of the model of its own. Handed over once; the observer that draws it talks to it directly."""
    explorer: Any


Figure = ImageFigure | ScatterFigure | NumbersFigure | ExplorerFigure


@dataclass(frozen=True)
class Snapshot:
    """The trainer's whole state at a step (a checkpoint's content), taken for command `name`, which an
    observer carries out (`Controller.offer`; e.g. runs/fork.py's launcher of new runs), with the command's
    checked `value`. The observer answers through the trainer's own door, `Controller.reply`, never by
    writing into this record."""
    name: str
    state: dict
    value: Any


class Callback:
    """Base observer: override the hooks you need."""

    def on_run_start(self, run: RunInfo) -> None: ...

    def on_step(self, log: StepLog) -> None: ...

    def on_epoch_end(self, record: EpochRecord, images: EpochImages) -> None: ...

    def on_save_checkpoint(self, epoch: int, step: int) -> None:
        """A checkpoint after `epoch` completed epochs and `step` steps is about to be written: make
        what you wrote up to here durable (fsync), since a resume will take the checkpoint's word
        that it exists. Called after on_epoch_end of the epoch it covers."""

    def on_status(self, status: Status) -> None: ...

    def on_snapshot(self, snapshot: Snapshot) -> None:
        """A command an observer carries out was accepted (e.g. a new run from this one): the trainer's state at this
        step, for the observer that offered it, which says how it went with `Controller.reply`. Called before
        the command's on_command, which carries that reply."""

    def on_command(self, event: CommandEvent) -> None: ...

    def on_figure(self, name: str, figure: Figure) -> None:
        """Extra views (latent grid, interpolations, PCA...): typed data under a name; how it is
        titled and drawn is the observer's business."""

    def on_run_end(self, status: Status) -> None: ...

    def close(self) -> None:
        """Flush and release; called once, after on_run_end, also when the run failed."""


class Probe:
    """Work that reads the model during training but is not training (the PCA baseline, latent views,
    the importance-weighted estimate). The session builds probes and hands them to the trainer, which
    calls them on the training thread; their figures go to the observers' `on_figure`."""

    def run_start(self) -> dict[str, Figure]:
        """Figures (name -> Figure) once, before the first step."""
        return {}

    def epoch_end(self, epoch: int) -> tuple[dict, dict[str, Figure]]:
        """(metrics for EpochRecord.extra, figures) after the epoch's test pass."""
        return {}, {}
