"""The env folder of `vae-visdom serve`: env files named only by checked ids, one server per folder, catch-up from
run logs."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from vae_visdom.config import ConfigError, check_name
from vae_visdom.runs.layout import run_folders
from vae_visdom.runs.run_file import read_object
from vae_visdom.safe_io import atomic_write

log = logging.getLogger("vae_visdom.serve.server")

LOCK_NAME = "vae_visdom_server.lock"  # no ".json" in it: visdom loads every *.json* file of the folder as an env
RUN_LOG = "visdom.log"  # the monitor's replay log in a run folder (vae_visdom.monitor.board.LOG_NAME)


# ---- env files --------------------------------------------------------------------------------------

def env_file(env_path: str | os.PathLike, eid) -> Path:
    """ENV_PATH/EID.json for an id under config's name rule that resolves inside the folder; ConfigError otherwise."""
    check_name(eid, "env id")
    folder = Path(env_path).resolve()
    path = (folder / f"{eid}.json").resolve()  # a symlinked env file that leads elsewhere is refused too
    if path.parent != folder:
        raise ConfigError(f"env id: {eid!r} names a file outside the env folder {folder}")
    return path


def unusable_env(env_path: str | os.PathLike, eid) -> str | None:
    """Why ENV_PATH/EID.json may not be served (a name outside the rule, a link out of the folder, not a regular
    file), or None. Such a file can only come from another tool; it is skipped, the others are served."""
    try:
        path = env_file(env_path, eid)
    except ConfigError as err:
        return str(err)
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return f"{path} is not a regular file"
    except OSError as err:
        return f"{path}: {err.strerror or err}"
    return None


_SAID: set[tuple[str, str]] = set()  # (env folder, env id) already said to be skipped: one line per file


def _skipped(env_path: str | os.PathLike, eid: str, why: str) -> None:
    if (str(env_path), eid) not in _SAID:
        _SAID.add((str(env_path), eid))
        log.warning("env file skipped: %r: %s", f"{eid}.json", why)


def checked_state(state: dict, env_path: str | os.PathLike | None) -> dict:
    """visdom's state as loaded from the env folder, less the env files unusable_env refuses (one line each)."""
    if env_path is None:
        return state
    for eid in list(state):
        why = unusable_env(env_path, eid)
        if why is not None:
            _skipped(env_path, eid, why)
            state.pop(eid)
    return state


def checked_loader(load: Callable[[str], dict], env_path: str | os.PathLike) -> Callable[[str], dict]:
    """visdom 0.3's `store.load_env(eid)`, which reads an env file on demand (a page asks for an env that is not in
    memory), refusing what unusable_env refuses, as `checked_state` does for the envs read at start: a link out of
    the folder is never followed. A file that is not there is visdom's own business (it answers with no env)."""
    def load_env(eid: str) -> dict:
        try:
            there = os.path.lexists(Path(env_path) / f"{check_name(eid, 'env id')}.json")
        except ConfigError:
            there = True  # a name outside the rule: refused below, never read
        why = unusable_env(env_path, eid) if there else None
        if why is not None:
            _skipped(env_path, eid, why)
            return {}
        return load(eid)
    return load_env


def write_env(env_path: str | os.PathLike, eid, env: dict) -> Path:
    """Write one env atomically (a kill mid-save leaves the old file, not half a new one)."""
    path = env_file(env_path, eid)
    atomic_write(path, json.dumps(env), shared=True)  # the temporary name ends in ".tmp": see LOCK_NAME
    return path


def remove_env(env_path: str | os.PathLike, eid) -> bool:
    """Delete ENV_PATH/EID.json (checked like write_env); False when there was none."""
    path = env_file(env_path, eid)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _raw(env):
    """The dict to write for one env of visdom's state; None for a lazily loaded env never read (its file is
    current)."""
    from visdom.utils.server_utils import LazyEnvData

    return env._raw_dict if isinstance(env, LazyEnvData) else env


def save_envs(app) -> list[str]:
    """Write every env the server holds in memory to app.env_path; returns the env ids written.

    An id outside config's name rule (only a file left by another tool can bring one) is skipped and logged."""
    saved = []
    for eid, env in list(app.state.items()):
        env = _raw(env)
        if env is None:
            continue
        try:
            write_env(app.env_path, eid, env)
        except ConfigError as err:
            log.error("env not saved: %s", err)
            continue
        except (OSError, TypeError, ValueError) as err:  # one bad env must not cost the others
            log.error("could not save env %r to %s: %s", eid, app.env_path, err)
            continue
        saved.append(eid)
    return saved


def serialize_env(state: dict, eids, env_path=None) -> list[str]:
    """visdom's server_utils.serialize_env (its /save, fork and websocket save) with ids checked and writes atomic."""
    written = []
    for eid in eids:
        if not isinstance(eid, str) or eid not in state:
            continue
        env = _raw(state[eid])
        try:
            if env is not None and env_path is not None:
                write_env(env_path, eid, env)
        except ConfigError as err:
            log.warning("refused to save env: %s", err)
            continue
        written.append(eid)
    return written


# ---- one server per env folder ------------------------------------------------------------------------

class EnvFolderBusy(Exception):
    """Another live server holds the env folder's lock; .holder is what it wrote there."""

    def __init__(self, holder: dict):
        super().__init__(holder)
        self.holder = holder


def lock_env_folder(folder: Path, **about) -> int:
    """Take ENV_PATH/vae_visdom_server.lock for this process and write `about` (and the pid) into it.

    Returns the descriptor to keep open while serving. flock: the OS lets go when the holder dies, so a
    killed server leaves no stale lock. Raises EnvFolderBusy when a live server holds it."""
    import fcntl  # POSIX; here, not at import time

    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise EnvFolderBusy(holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), **about}).encode(), 0)
    return fd


def lock_holder(env_path: Path) -> dict | None:
    """What the live server holding the env folder's lock wrote ({} if unreadable); None when nobody holds it."""
    import fcntl

    try:
        fd = os.open(env_path / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_holder(fd: int) -> dict:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


# ---- catch-up: runs that went on while the server was away --------------------------------------------

def stale_runs(runs_dir: Path, env_path: Path) -> tuple[int, list[tuple[Path, str]]]:
    """(runs with a visdom.log, [(run dir, env)] of those whose saved env is missing or older than that log)."""
    logs = [folder / RUN_LOG for folder in run_folders(runs_dir, RUN_LOG)]  # a sweep's runs too
    stale = []
    for run_log in logs:
        run_dir = run_log.parent
        try:
            env = check_name(read_object(run_dir / "config.json").get("env"), "env id")  # (a FIFO is never opened)
            saved = env_file(env_path, env)
        except (OSError, ValueError, AttributeError) as err:  # ConfigError is a ValueError
            log.warning("catch-up: skipping %s: %s", run_dir, err)
            continue
        try:
            if saved.stat().st_mtime_ns >= run_log.stat().st_mtime_ns:
                continue
        except FileNotFoundError:
            pass
        stale.append((run_dir, env))
    return len(logs), stale


def catch_up(runs_dir: Path, env_path: Path, server: str, port: int, stopping: threading.Event) -> None:
    """Replay each stale run's visdom.log into its env (`vae-visdom replay`, one low-priority process at a time)."""
    total, stale = stale_runs(runs_dir, env_path) if runs_dir.is_dir() else (0, [])
    log.info("catch-up: %d run(s) with a %s in %s, %d whose env is missing or older", total, RUN_LOG, runs_dir,
             len(stale))
    for run_dir, env in stale:
        if stopping.is_set():
            return
        log.info("catch-up: replaying %s into env %s", run_dir, env)
        cmd = [sys.executable, "-m", "vae_visdom", "replay", str(run_dir), "--server", server, "--port", str(port),
               "--env", env]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:  # behind the server and any training on the same cores
            os.setpriority(os.PRIO_PROCESS, proc.pid, 10)
        except OSError:
            pass
        while True:
            try:
                out, _ = proc.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if stopping.is_set():
                    proc.terminate()
                    proc.wait()
                    return
        said = out.decode("utf-8", "replace").strip().splitlines()
        if proc.returncode == 0:
            log.info("catch-up: %s", said[-1] if said else f"env {env} done")
        else:
            log.warning("catch-up: replaying %s failed (exit %d): %s", run_dir, proc.returncode,
                        " | ".join(said[-3:]))
