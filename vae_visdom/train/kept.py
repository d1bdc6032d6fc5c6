"""Where a run keeps its epochs' checkpoints, RUN_DIR/checkpoints/epoch_E.pt, and which it has: torch-free, so
the page's view pane can say which epochs a new run can start from without the checkpoint reader."""
from __future__ import annotations

import re
from pathlib import Path

KEPT = "checkpoints"  # RUN_DIR/checkpoints/epoch_E.pt within --checkpoint-budget: where a new run may start


def kept_path(run_dir: str | Path, epoch: int) -> Path:
    return Path(run_dir) / KEPT / f"epoch_{epoch}.pt"


def kept_epochs(run_dir: str | Path) -> list[int]:
    """The epochs whose checkpoint RUN_DIR/checkpoints holds, in order."""
    found = (re.fullmatch(r"epoch_(\d+)\.pt", p.name) for p in (Path(run_dir) / KEPT).glob("epoch_*.pt"))
    return sorted(int(m.group(1)) for m in found if m)


def spans(epochs: list[int]) -> str:
    """1, 2, 3, 5, 7, 8 -> "1-3, 5, 7-8"."""
    out: list[str] = []
    for e in epochs:
        if out and out[-1].split("-")[-1] == str(e - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{e}"
        else:
            out.append(str(e))
    return ", ".join(out)
