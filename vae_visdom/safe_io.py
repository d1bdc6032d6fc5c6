"""The run folder's writes: whole files replaced atomically, lines appended whole, one error naming the file.

On the ground floor (beside config.py) because train/ (checkpoints), runs/ (run files, PNGs) and the
session all write through it.

- atomic_write(path, data): PATH.tmp written, fsynced, then os.replace'd over PATH; on any error
  the .tmp is removed. A reader (or a crash) sees the old file or the new one, never half of one.
  shared=True names the temporary file per process and thread (.NAME.PID.TID.tmp), for files that
  several processes may write at once (the data caches, the UI assets, the server's env files);
  data may be a function that writes the temporary file itself (torch.save of a large cache).
- append_line(path, text): one os.write in O_APPEND mode; a write cut short (disk full) is cut
  back off, so no torn line is left behind.
- sync(path): fsync a file already written, before a checkpoint says that it exists.
- RunWriteError: an OSError that reads "cannot write PATH: [Errno 28] No space left on device".

runs/resume.py has the order the trainer writes an epoch in, and why a kill at any point leaves a
run that resumes with every epoch once.
"""
from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path

Data = bytes | str | Callable[[Path], None]


class RunWriteError(OSError):
    """A run-folder write that failed: the file and the OS's reason, in one line."""

    def __init__(self, path: str | Path, err: OSError):
        super().__init__(err.errno, err.strerror or str(err), str(path))
        self.path = Path(path)

    def __str__(self) -> str:
        return f"cannot write {self.path}: [Errno {self.errno}] {self.strerror}"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]  # a short write is followed by one that raises (ENOSPC, EFBIG)


def remove(path: str | Path) -> None:
    """Remove a file if it is there; never raises (used on the way out of a failure)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def temp_path(path: Path, shared: bool = False) -> Path:
    """Where atomic_write puts the new bytes before the rename: PATH.tmp, or a hidden name of this
    process and thread when several writers may race (never ending in the file's own suffix)."""
    if shared:
        return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    return path.with_name(path.name + ".tmp")


def atomic_write(path: str | Path, data: Data, before_replace: Callable[[], None] | None = None,
                 shared: bool = False) -> None:
    """Replace `path` with `data` atomically (tmp + fsync + os.replace). `data` is bytes, text, or a
    function that writes the temporary path it is given. `before_replace` runs between the fsync and
    the replace (the checkpoint keeps its predecessor there). Raises RunWriteError."""
    path = Path(path)
    tmp = temp_path(path, shared)
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        if callable(data):
            data(tmp)
            sync(tmp)
        else:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _write_all(fd, data)
                os.fsync(fd)  # the bytes are on disk before the rename makes them the file
            finally:
                os.close(fd)
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except OSError as err:
        remove(tmp)
        raise RunWriteError(path, err) from None
    except BaseException:
        remove(tmp)
        raise


def overwrite_in_place(path: str | Path, data: bytes | str) -> None:
    """Rewrite an existing small file in its own blocks: the last resort on a full disk, where a new
    file cannot be made (status.json saying "failed"). Not atomic. Raises OSError."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd = os.open(path, os.O_WRONLY)  # no O_CREAT, no O_TRUNC: the blocks it has are reused
    try:
        _write_all(fd, data)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def append_line(path: str | Path, line: str, fsync: bool = False) -> None:
    """Append one line (newline added) in one write; a failed write leaves the file as it was."""
    data = (line + "\n").encode("utf-8")
    try:
        # O_NONBLOCK: a FIFO put in a run file's place fails at once (ENXIO) instead of blocking forever
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                _write_all(fd, data)
            except OSError:
                try:
                    os.ftruncate(fd, size)  # no torn line left for a reader to stumble on
                except OSError:
                    pass
                raise
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        raise RunWriteError(path, err) from None


def sync(path: str | Path) -> None:
    """fsync a file written earlier (appends), if it exists. Raises RunWriteError."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    except OSError as err:
        raise RunWriteError(path, err) from None
    try:
        os.fsync(fd)
    except OSError as err:
        raise RunWriteError(path, err) from None
    finally:
        os.close(fd)


def sync_dir(path: str | Path) -> None:
    """fsync a folder, so the renames in it survive a power cut (a kill -9 does not need this)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EBADF):  # some file systems cannot fsync a folder
            raise RunWriteError(path, err) from None
    finally:
        os.close(fd)
