"""Reading one file of a run folder safely: the one way run files are read (records, tables, the home,
resume, compare, `train --resume`).

A run folder is data written by whoever can write there: a file may be a FIFO or a device (opening a
FIFO for reading blocks until a writer comes: forever), huge, not UTF-8, not JSON, or JSON of the
wrong shape. Every read here
- stats the path first and opens only a regular file, with O_NONBLOCK (a FIFO swapped in between the
  stat and the open cannot block either) and checks the open file again with fstat;
- reads at most a size limit;
- raises RunFileError, whose str() is one line naming the file and what is wrong with it.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

MAX_JSON = 1 << 20  # config.json, status.json: a few kB; a MiB is far more than any run writes
MAX_LINES = 1 << 30  # metrics.jsonl, steps.jsonl, events.jsonl: long runs, but not unbounded


class RunFileError(ValueError):
    """A run file that cannot be used; str() is one line: the file's name and what is wrong with it."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{self.path.name}: {reason}")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"


def read_bytes(path: str | Path, limit: int = MAX_LINES) -> bytes:
    """The bytes of a regular file. Raises FileNotFoundError when there is none (callers decide what
    that means), RunFileError for anything else that is wrong."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise RunFileError(path, f"cannot be read ({err.strerror or err})") from None
    if not stat.S_ISREG(st.st_mode):
        raise RunFileError(path, f"not a regular file ({_kind(st.st_mode)}); not read")
    if st.st_size > limit:
        raise RunFileError(path, f"{st.st_size:,} bytes, more than any run writes ({limit:,}); not read")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as err:
        raise RunFileError(path, f"cannot be read ({err.strerror or err})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped between the stat and the open
            raise RunFileError(path, "not a regular file; not read")
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as err:
        raise RunFileError(path, f"cannot be read ({err.strerror or err})") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise RunFileError(path, f"more than {limit:,} bytes; not read")
    return data


def read_text(path: str | Path, limit: int = MAX_LINES) -> str:
    """A regular file's text (bytes that are not UTF-8 become U+FFFD). Raises as read_bytes."""
    return read_bytes(path, limit).decode("utf-8", errors="replace")


def _shape(value) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "true/false",
            type(None): "null"}.get(type(value), type(value).__name__)


def read_object(path: str | Path) -> dict:
    """A JSON object file (config.json, status.json). Raises FileNotFoundError, or RunFileError: not a
    regular file, too large, not JSON, or JSON that is not an object ([1, 2])."""
    text = read_text(path, MAX_JSON)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise RunFileError(path, f"not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    except RecursionError:
        raise RunFileError(path, "not valid JSON (nested too deeply)") from None
    if not isinstance(value, dict):
        raise RunFileError(path, f"not a JSON object ({_shape(value)})")
    return value


def read_lines(path: str | Path) -> tuple[list[dict], list[int], list[int]]:
    """A JSON-lines file: (rows that are JSON objects, numbers of torn lines (not JSON), numbers of lines
    that are JSON but not an object (`5`)). No file: three empty lists. Raises RunFileError."""
    rows: list[dict] = []
    torn: list[int] = []
    odd: list[int] = []
    try:
        text = read_text(path)
    except FileNotFoundError:
        return rows, torn, odd
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            torn.append(n)
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            odd.append(n)
    return rows, torn, odd


def load_config(path: str | Path):
    """config.json as a TrainConfig (the keys it knows; the values are checked by TrainConfig.validate).
    Raises FileNotFoundError, or RunFileError naming the file."""
    from vae_visdom.config import TrainConfig  # (no torch: config.py is the ground floor)

    return TrainConfig.from_dict(read_object(path))
