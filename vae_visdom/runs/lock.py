"""One trainer per run folder: an flock on RUN_DIR/trainer.lock.

The kernel holds the lock for the open file and drops it when the holder exits in any way
(kill -9 included), so a lock is never stale and nobody has to delete it. The file says who
holds it (pid, host, start time), for the message the next trainer gives. It is written in
place, never replaced: a new inode would be a new, free lock. Linux and macOS; flock on NFS
depends on the mount.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from types import ModuleType
from typing import TextIO

from vae_visdom.runs.run_file import RunFileError, read_text

fcntl: ModuleType | None  # the module, or None where the platform has none
try:
    import fcntl
except ImportError:  # not a POSIX system: runs go unlocked (the session warns)
    fcntl = None

LOCK_NAME = "trainer.lock"


class RunFolderBusy(Exception):
    """Another trainer holds the folder; str() names it."""


class RunLock:
    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._file: TextIO | None = None  # open while held; the lock goes with it (also when garbage collected)

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> RunLock:
        """Take the lock or raise RunFolderBusy naming the holder. Never waits. OSError where the
        file system (or the platform) has no flock."""
        if fcntl is None:
            raise OSError("no flock on this platform")
        f = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = describe(f.read())
            f.close()
            raise RunFolderBusy(f"run folder {self.path.parent} is in use by another trainer ({holder}); "
                                f"wait for it to end or stop it, or choose another --out") from None
        except OSError:
            f.close()
            raise
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}) + "\n")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file drops the flock; the file itself stays
            self._file = None


def holder(run_dir: str | Path) -> str | None:
    """Who holds the folder ("pid 123 on host, since ..."), or None when nobody does or it cannot
    be told. For listings and messages."""
    if not is_held(run_dir):
        return None
    try:
        return describe(read_text(Path(run_dir) / LOCK_NAME, 4096))
    except (OSError, RunFileError):
        return "a trainer"


def is_held(run_dir: str | Path) -> bool | None:
    """True while a trainer holds the folder, False when there is evidence that none does, None when it
    cannot be told (no /proc/locks, no lock file, a lock taken on another host, a trainer that could not
    lock). What `vae-visdom runs` and the runs home use to tell a crashed run from a running one.

    Reads /proc/locks (Linux) rather than trying the lock, which could make a trainer starting at
    that instant find the folder busy. /proc/locks lists the locks of this machine (and, in a
    container, of its namespace): a lock file that names another host says nothing here."""
    path = Path(run_dir) / LOCK_NAME
    try:
        st = path.stat()
        table = Path("/proc/locks").read_text()
        text = read_text(path, 4096)  # (a FIFO in its place is never opened)
    except (OSError, RunFileError):
        return None
    me = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in table.splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == me:
            return True
    try:  # an empty file: a trainer that got no flock (e.g. NFS) runs unlocked, or one is starting right now
        info = json.loads(text)
        pid, started, mine = int(info["pid"]), float(info["started"]), info.get("host") == socket.gethostname()
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    # no lock seen: the holder's process must be gone too, since on some file systems (overlay) the device
    # /proc/locks names is not the one stat() gives, and a missed entry must not read as a crash
    return False if mine and _gone(pid, started) else None


def alive(pid: int, started: float) -> bool:
    """The process that was started at `started` (time.time()) with this pid may still run: it is there and
    no zombie, or it cannot be told. For a process whose folder lock is not taken yet (runs/page_runs.py)."""
    return not _gone(pid, started)


def _gone(pid: int, started: float) -> bool:
    """The process that wrote the lock file at `started` has ended: no such pid, a zombie, or the pid now
    belongs to a process started later (pids are reused)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except FileNotFoundError:  # (/proc itself is there: is_held read /proc/locks)
        return True
    except (OSError, StopIteration, ValueError, IndexError):
        return False
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state is field 3, starttime field 22
    born = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return fields[0] in ("Z", "X") or born > started + 2.0  # btime is whole seconds: a margin


def describe(text: str) -> str:
    """The holder as the lock file tells it: "pid 123 on host, since 2024-05-01 12:00:00"."""
    try:
        info = json.loads(text)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["started"])))
        return f"pid {int(info['pid'])} on {info['host']}, since {since}"
    except (ValueError, KeyError, TypeError):
        return "a trainer that has not written its name yet" if not text.strip() else text.strip()[:200]
