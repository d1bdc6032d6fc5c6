"""The page of a default run at epoch 2 and at epoch 30 (docs/results.md, "Curves you can read").

A fresh `vae-visdom serve` on PORT and `vae-visdom train --epochs 30` streaming to it; headless Chromium
(Debian's chromium and chromium-driver) saves the page once epoch 2's row is on disk and again after the
run (reloaded). Writes OUT/curves_epoch2.png and OUT/curves_epoch30.png.

    .venv/bin/python scripts/page_shots.py [--port 8151] [--out docs/img]
"""
import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from page_tools import REPO, VV, chromium, serve


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8151)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="page-shots-"))
    srv = serve(args.port, tmp)
    tr = subprocess.Popen([VV, "train", "--epochs", "30", "--port", str(args.port), "--runs-dir", str(tmp / "runs"),
                           "--name", "default30"], stdout=open(tmp / "train.log", "w"), stderr=subprocess.STDOUT)
    d = chromium(tmp, "1600,1300")
    metrics = tmp / "runs" / "default30" / "metrics.jsonl"

    def rows() -> int:
        return len(metrics.read_text().splitlines()) if metrics.exists() else 0

    try:
        while rows() < 1:
            time.sleep(0.5)
        d.get(f"http://127.0.0.1:{args.port}/env/default30")
        while rows() < 2:
            time.sleep(0.2)
        time.sleep(2.5)
        args.out.mkdir(parents=True, exist_ok=True)
        d.save_screenshot(str(args.out / "curves_epoch2.png"))
        tr.wait()
        time.sleep(4)
        d.refresh()
        time.sleep(8)
        d.save_screenshot(str(args.out / "curves_epoch30.png"))
        print(f"wrote {args.out / 'curves_epoch2.png'} and {args.out / 'curves_epoch30.png'}")
    finally:
        d.quit()
        tr.kill()
        srv.terminate()
        srv.wait(30)


if __name__ == "__main__":
    main()
