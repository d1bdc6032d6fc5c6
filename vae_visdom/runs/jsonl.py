"""Reading a run's JSON-lines files (metrics, steps, events) without torch: `vae-visdom runs` stays quick."""
from __future__ import annotations

from pathlib import Path

from vae_visdom.runs.run_file import read_lines


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSON-lines file's rows (JSON objects), ignoring a torn line or one that is not an object
    (a resume and `vae-visdom runs` report those: see resume.py, records.py). No file: no rows.
    Raises run_file.RunFileError for a file that is not a regular file (a FIFO is never opened)."""
    return read_lines(path)[0]
