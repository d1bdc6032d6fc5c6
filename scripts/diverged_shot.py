"""The page of a run that diverged with a panel: paused at its last finite state, the panel saying so
(README, "Divergence pauses for the panel").

A fresh `vae-visdom serve` on PORT and `vae-visdom train --lr 10 --batch-size 64` streaming to it; headless
Chromium (Debian's chromium and chromium-driver) saves the page once status.json says the run paused as
diverged, then the run is stopped. Writes OUT/diverged_paused.png.

    .venv/bin/python scripts/diverged_shot.py [--port 8152] [--out docs/img]
"""
import argparse
import json
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from page_tools import REPO, VV, chromium, serve


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8152)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="diverged-shot-"))
    srv = serve(args.port, tmp)
    run = tmp / "runs" / "lr10"
    tr = subprocess.Popen([VV, "train", "--epochs", "1", "--lr", "10", "--batch-size", "64", "--hidden-dim", "32",
                           "--latent-dim", "4", "--no-views", "--log-interval", "1", "--port", str(args.port),
                           "--out", str(run)], stdout=open(tmp / "train.log", "w"), stderr=subprocess.STDOUT)
    d = chromium(tmp, "1600,1100")
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if json.loads((run / "status.json").read_text()).get("reason") == "diverged":
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        d.get(f"http://127.0.0.1:{args.port}/env/lr10")
        time.sleep(6)
        args.out.mkdir(parents=True, exist_ok=True)
        d.save_screenshot(str(args.out / "diverged_paused.png"))
        print(args.out / "diverged_paused.png")
    finally:
        d.quit()
        tr.send_signal(signal.SIGINT)
        tr.wait(60)
        srv.terminate()
        srv.wait(30)


if __name__ == "__main__":
    main()
