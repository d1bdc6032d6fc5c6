"""Checkpoints: everything needed to continue a run exactly where it stopped.

RUN_DIR/checkpoint.pt is the newest; RUN_DIR/checkpoint.prev.pt the one before it, kept so a
damaged newest one (a truncated copy, a bad disk block) costs one epoch, not the run. A save
writes checkpoint.pt.tmp and fsyncs it, hard-links the current checkpoint.pt to
checkpoint.prev.pt.tmp and renames that over checkpoint.prev.pt, then renames the new file over
checkpoint.pt: at every instant both names hold a whole checkpoint (the old or the new one).
The trainer writes one at the end of every epoch, after the epoch's rows and images (resume.py
says why), and when a run is stopped mid-epoch.

Every checkpoint carries a checksum inside itself: torch.save writes a zip archive, and the
archive's comment (the last bytes of the file, which torch.load and every zip reader skip) holds
"vae_visdom sha256 HEX", the sha256 of the archive as torch wrote it (comment length 0). Inside
the file, not beside it: a hard link (checkpoint.prev.pt, checkpoints/epoch_E.pt) or a copy carries
it along, and no second file can be out of step with the first. read() checks it: a flipped bit
anywhere is a CheckpointError (one line), never weights trained on. A checkpoint written before
checksums (no such comment) loads unchecked, as it always did. A save makes the current file the
previous one only when its checksum holds, so a damaged file never pushes out the last good one.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vae_visdom import safe_io
from vae_visdom.train.kept import kept_epochs, kept_path

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
REQUIRED = ("model", "optimizer", "epoch", "step", "rng")
SEAL = b"vae_visdom sha256 "  # + 64 hex digits: the zip comment that ends every checkpoint (see above)
_EOCD = b"PK\x05\x06"  # the zip's end-of-central-directory record: 22 bytes, its last 2 the comment length
_TAIL = len(SEAL) + 64


@dataclass
class EpochState:
    """Where an epoch stands: enough to continue it exactly after a mid-epoch stop."""

    perm: torch.Tensor  # (N,) int64, the epoch's order
    pos: int = 0  # examples consumed
    steps: int = 0  # optimizer steps taken this epoch
    sums: torch.Tensor = field(default_factory=lambda: torch.zeros(3))  # (3,) loss, recon, kl over the epoch
    seconds: float = 0.0  # training time so far, paused time excluded
    interval_sums: torch.Tensor | None = None  # (3,) sums since the last log point (None: no step yet)
    interval_count: int = 0  # examples since the last log point
    # sum of beta * KL over the epoch and the interval, once the run weights its KL term (kl_weight.py)
    wkl: torch.Tensor | None = None
    interval_wkl: torch.Tensor | None = None

    def add(self, stepsums: torch.Tensor, n: int, beta: float | None = None) -> None:
        """One step's (3,) sums over `n` examples; `beta`: its KL weight, once the run weights KL."""
        if beta is not None:
            if self.wkl is None:  # the first weighted step: every step before it weighted KL by 1
                self.wkl = self.sums[2].clone()
                self.interval_wkl = None if self.interval_sums is None else self.interval_sums[2].clone()
            w = stepsums[2] * beta
            self.wkl += w
            self.interval_wkl = w if self.interval_wkl is None else self.interval_wkl + w
        self.sums += stepsums
        self.steps += 1
        self.interval_sums = stepsums if self.interval_sums is None else self.interval_sums + stepsums
        self.interval_count += n

    def take_interval(self, reduce=lambda t: t) -> tuple[float, float, float, float | None]:
        """(loss, recon, kl, objective or None) per example since the last log point; starts the next.
        `reduce` makes the sums global (under torchrun: a sum over the ranks)."""
        assert self.interval_sums is not None, "a log point comes after at least one step"
        isum = self.interval_sums
        both = reduce(isum if self.interval_wkl is None else torch.cat([isum, self.interval_wkl.reshape(1)]))
        values = (both / self.interval_count).tolist()  # the one host sync of a log interval
        self.interval_sums, self.interval_count, self.interval_wkl = None, 0, None
        return values[0], values[1], values[2], (values[1] + values[3] if len(values) == 4 else None)

    def sums_to(self, change) -> None:
        """Every carried sum passed through `change` (a reduce over the ranks, a zeroing): the epoch's, the
        interval's, and the beta-weighted KL's."""
        self.sums = change(self.sums)
        for name in ("interval_sums", "wkl", "interval_wkl"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, change(value))

    def to_dict(self) -> dict:
        """The checkpoint's form: tensors on the CPU."""
        d = {"perm": self.perm.cpu(), "pos": self.pos, "steps": self.steps, "sums": self.sums.cpu(),
             "seconds": self.seconds, "interval_sums": None if self.interval_sums is None else self.interval_sums.cpu(),
             "interval_count": self.interval_count}
        d.update({k: getattr(self, k).cpu() for k in ("wkl", "interval_wkl") if getattr(self, k) is not None})
        return d

    @classmethod
    def from_dict(cls, d: dict, device: torch.device | str = "cpu") -> EpochState:
        """The inverse of `to_dict`, on `device`; also reads the layout of earlier versions, whose
        interval was a list [sums, examples]."""
        isum, icount = d["interval"] if "interval" in d else (d["interval_sums"], d["interval_count"])
        def on(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return cls(d["perm"].to(device), d["pos"], d["steps"], d["sums"].to(device), d["seconds"], on(isum), icount,
                   on(d.get("wkl")), on(d.get("interval_wkl")))


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; str() is one line: what is wrong with it."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path.name} is unreadable ({reason})")
        self.path, self.reason = path, reason


def prune_kept(run_dir: str | Path, budget_bytes: int) -> list[int]:
    """Let the oldest kept checkpoints go until the rest fit in `budget_bytes`; the newest always stays (it
    is checkpoint.pt's own bytes, a hard link). Returns the epochs let go."""
    epochs = kept_epochs(run_dir)
    sizes = {e: _size(kept_path(run_dir, e)) for e in epochs}
    gone: list[int] = []
    while len(epochs) > 1 and sum(sizes[e] for e in epochs) > budget_bytes:
        oldest = epochs.pop(0)
        safe_io.remove(kept_path(run_dir, oldest))
        gone.append(oldest)
    return gone


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def save(run_dir: str | Path, state: dict[str, Any], rotate: bool = True, keep: bool = False) -> Path:
    """Write `state` as RUN_DIR/checkpoint.pt; with `rotate`, the one it replaces becomes
    checkpoint.prev.pt; with `keep`, it is also kept as checkpoints/epoch_E.pt (a hard link: it costs
    disk only once checkpoint.pt has moved on, one checkpoint's size per epoch, ~7.8 MB for the
    default MLP with Adam). Raises safe_io.RunWriteError (no .tmp left behind)."""
    run_dir = Path(run_dir)
    path, prev = run_dir / CHECKPOINT, run_dir / PREVIOUS
    buf = io.BytesIO()
    torch.save(state, buf)  # in memory first: a failed write is then a plain OSError, not torch's
    data = seal(buf.getvalue())

    def keep_previous() -> None:
        if not (rotate and path.exists()) or (prev.exists() and os.path.samefile(path, prev)):
            return  # (the same file already: a kill came between the two renames of a save)
        try:
            unseal(path.read_bytes(), path)
        except (OSError, CheckpointError) as err:  # damaged on disk since it was written: not kept
            print(f"warning: {err}; not kept as {PREVIOUS} (the one there stays)", file=sys.stderr, flush=True)
            return
        link = prev.with_name(prev.name + ".tmp")
        safe_io.remove(link)
        try:
            try:
                os.link(path, link)  # no copy: the same bytes under a second name
            except OSError:  # a file system without hard links
                shutil.copyfile(path, link)
            os.replace(link, prev)
        finally:
            safe_io.remove(link)  # gone after the rename, unless it failed

    safe_io.atomic_write(path, data, before_replace=keep_previous)
    if keep:
        kept = kept_path(run_dir, state["epoch"])
        kept.parent.mkdir(exist_ok=True)
        _link(path, kept)
    safe_io.sync_dir(run_dir)
    return path


def _link(src: Path, dst: Path) -> None:
    """dst becomes the same bytes as src (a hard link, or a copy where links are not had), atomically."""
    tmp = dst.with_name(dst.name + ".tmp")
    safe_io.remove(tmp)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as err:
        raise safe_io.RunWriteError(dst, err) from None
    finally:
        safe_io.remove(tmp)


def read(path: str | Path, map_location: str | torch.device = "cpu", required=REQUIRED) -> dict[str, Any]:
    """Load one checkpoint file; raises CheckpointError (one line) when it is missing, empty,
    truncated, not a checkpoint, or lacks one of `required` (what a resume needs)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise CheckpointError(path, err.strerror or str(err)) from None
    if size == 0:
        raise CheckpointError(path, "empty file")
    try:
        data = unseal(path.read_bytes(), path)
    except OSError as err:
        raise CheckpointError(path, err.strerror or str(err)) from None
    try:
        # our own files hold RNG states (ByteTensors) and plain containers: weights_only loading handles them
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError... for a bad file
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(path, f"{size:,} bytes, not a whole checkpoint: {first[:120]}") from None
    missing = [k for k in required if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(path, f"no {', '.join(missing)} in it")
    return state


def seal(data: bytes) -> bytes:
    """torch.save's bytes with their sha256 as the zip comment (see the module's text). Bytes that do
    not end like a zip archive without a comment (not torch's format) are returned as they are."""
    if len(data) < 22 or data[-22:-18] != _EOCD or data[-2:] != b"\0\0":
        return data
    tail = SEAL + hashlib.sha256(data).hexdigest().encode("ascii")
    return data[:-2] + len(tail).to_bytes(2, "little") + tail


def unseal(data: bytes, path: Path) -> bytes:
    """The bytes torch wrote, their checksum checked. Raises CheckpointError when it does not hold. A
    file without a checksum (written before checksums existed) is returned unchecked."""
    if len(data) < 22 + _TAIL + 2 or data[-_TAIL:-64] != SEAL:
        return data
    head = data[:-_TAIL - 2]
    if head[-20:-16] != _EOCD or data[-_TAIL - 2:-_TAIL] != _TAIL.to_bytes(2, "little"):
        return data  # "vae_visdom sha256" at the end, but not as a zip comment: not one of ours
    original = head + b"\0\0"
    if hashlib.sha256(original).hexdigest().encode("ascii") != data[-64:]:
        raise CheckpointError(path, f"{len(data):,} bytes, checksum mismatch: changed after it was written "
                                    "(a bad disk block, a bad copy, an edit)")
    return original


def load(run_dir: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """RUN_DIR/checkpoint.pt, whatever it holds (`vae-visdom eval` reads bare model weights too).
    Raises FileNotFoundError when there is none, CheckpointError when it cannot be read."""
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint in {run_dir} (expected {path})")
    return read(path, map_location, required=())


def exists(run_dir: str | Path) -> bool:
    """Is there a checkpoint to resume from (the newest or the one before it)?"""
    return any((Path(run_dir) / name).exists() for name in (CHECKPOINT, PREVIOUS))
