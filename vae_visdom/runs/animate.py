"""`vae-visdom animate RUN_DIR`: the run's fixed prior samples, epoch by epoch, as one animated GIF.

The trainer decodes the same 64 prior draws z ~ N(0, I) after every epoch (sample_N.png), so the frames
show one decoder learning. One frame per epoch, in epoch order, with the epoch number on a strip above
the grid; written next to the PNGs as RUN_DIR/samples.gif (the page shows it at the end of a run).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from vae_visdom import safe_io

GIF_NAME = "samples.gif"
STRIP = 14  # pixels of the caption strip above each frame
# 16 grey levels: an MNIST sample grid's frame is 12 kB instead of 42 kB (GIF's LZW thrives on few
# levels), so the page can take a 200-epoch animation once; the PNGs keep every level
LEVEL = 17


def sample_files(run_dir: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every sample_N.png in the run folder, in epoch order."""
    found = ((re.fullmatch(r"sample_(\d+)\.png", p.name), p) for p in Path(run_dir).glob("sample_*.png"))
    return sorted((int(m.group(1)), p) for m, p in found if m)


def frame(path: Path, epoch: int, last: int):
    """One frame: the sample grid under a strip saying 'epoch N / LAST'."""
    from PIL import Image, ImageDraw

    with Image.open(path) as img:
        grid = img.convert("L").point(lambda v: round(v / LEVEL) * LEVEL)
    out = Image.new("L", (grid.width, grid.height + STRIP), 0)
    out.paste(grid, (0, STRIP))
    ImageDraw.Draw(out).text((3, 1), f"epoch {epoch} / {last}", fill=255)
    return out


def gif_bytes(run_dir: str | Path, ms_per_frame: int = 400, max_frames: int | None = None) -> bytes:
    """The animation as GIF bytes: every epoch, or at most `max_frames` evenly spaced ones (the first and
    the last always among them); ValueError without samples."""
    import io

    files = sample_files(Path(run_dir))
    if not files:
        raise ValueError(f"{run_dir}: no sample_N.png (has the run finished an epoch?)")
    if max_frames is not None and len(files) > max_frames > 1:
        files = [files[i] for i in sorted({round(k * (len(files) - 1) / (max_frames - 1)) for k in range(max_frames)})]
    last = files[-1][0]
    frames = [frame(p, e, last) for e, p in files]
    buf = io.BytesIO()
    durations = [ms_per_frame] * (len(frames) - 1) + [ms_per_frame * 4]  # a pause on the last epoch
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0,
                   optimize=False)
    return buf.getvalue()


def animate(run_dir: str | Path, out: str | Path | None = None, ms_per_frame: int = 400) -> Path:
    """Write the animation of every epoch (default RUN_DIR/samples.gif) and return its path."""
    path = Path(out) if out is not None else Path(run_dir) / GIF_NAME
    safe_io.atomic_write(path, gif_bytes(run_dir, ms_per_frame))
    return path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Write RUN_DIR/samples.gif: the run's fixed prior samples after "
                     "every epoch, one frame per epoch with its number.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", default=None, help="where to write it (default RUN_DIR/samples.gif)")
    p.add_argument("--ms", type=int, default=400, help="milliseconds per frame (default 400)")


def run(args: argparse.Namespace) -> int:
    if args.ms < 20 or args.ms > 60000:
        print(f"vae-visdom animate: error: --ms {args.ms}: allowed: 20 to 60000", file=sys.stderr)
        return 2
    try:
        path = animate(args.run_dir, args.out, args.ms)
    except (ValueError, OSError) as err:
        print(f"vae-visdom animate: error: {err}", file=sys.stderr)
        return 2
    print(f"{path}: {len(sample_files(Path(args.run_dir)))} frames, one per epoch")
    return 0
