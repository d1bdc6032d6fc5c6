"""Draw a run's learning curve (test ELBO per epoch, IW estimates from --iw-every, eval.json) as a PNG.

    python benchmarks/learning_curve.py runs/iwae-bench docs/img/iwae_learning_curve.png

Reads RUN_DIR/metrics.jsonl (test_loss every epoch; test_iw_ll where --iw-every wrote it) and, when
present, RUN_DIR/eval.json (the final estimate, e.g. K=5000). Drawn with PIL alone (no plotting library
is a dependency); the y axis is nats per test image (higher is better, clipped to
[y_lo, y_hi]: epochs whose ELBO lies below y_lo are left out), the x axis epochs on a log scale,
where the lr stages of --lr-schedule burda grow evenly.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from PIL import Image, ImageDraw

W, H, L, R, T, B = 900, 520, 70, 20, 40, 50  # canvas and margins (left, right, top, bottom)
COLOURS = {"elbo": (31, 119, 180), "iw": (214, 39, 40), "final": (44, 160, 44), "lr": (200, 200, 200)}


def load(run: Path) -> tuple[list[dict], dict | None]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    ev = run / "eval.json"
    return rows, json.loads(ev.read_text()) if ev.is_file() else None


def draw(rows: list[dict], final: dict | None, out: Path, y_lo: float = -115.0, y_hi: float = -85.0) -> None:
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    n = max(r["epoch"] for r in rows)
    sx = lambda e: L + (W - L - R) * math.log(e) / math.log(max(n, 2))  # noqa: E731  (log epochs, as the stages)
    sy = lambda v: T + (H - T - B) * (y_hi - min(max(v, y_lo), y_hi)) / (y_hi - y_lo)  # noqa: E731
    changes = [r1["epoch"] for r0, r1 in zip(rows, rows[1:]) if r1["lr"] != r0["lr"]]
    if len(changes) <= 20:  # lr stages (burda, steps), as faint vertical lines where the lr changes
        for e in changes:
            d.line([(sx(e), T), (sx(e), H - B)], fill=COLOURS["lr"])
        lr_note = "grey lines: lr stage changes" if changes else "constant lr"
    else:  # a smooth schedule (cosine): the lr itself, a grey curve from the plot's top (highest) to bottom
        lo, hi = (math.log10(f(r["lr"] for r in rows)) for f in (min, max))
        sl = lambda lr: T + (H - T - B) * (hi - math.log10(lr)) / max(hi - lo, 1e-12)  # noqa: E731
        d.line([(sx(r["epoch"]), sl(r["lr"])) for r in rows], fill=COLOURS["lr"], width=2)
        lr_note = f"grey curve: the lr, log scale, {10 ** hi:.0e} at the top to {10 ** lo:.0e} at the bottom"
    for v in range(int(y_lo), int(y_hi) + 1, 5):
        d.line([(L - 4, sy(v)), (W - R, sy(v))], fill=(235, 235, 235) if v > y_lo else "black")
        d.text((8, sy(v) - 6), f"{v}", fill="black")
    for e in sorted({e for e in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 3280) if sx(e) < sx(n) - 30} | {n}):
        d.text((sx(e) - 8, H - B + 6), str(e), fill="black")
    d.line([(L, T), (L, H - B)], fill="black")
    d.text((W // 2 - 20, H - 22), "epoch (log scale)", fill="black")
    # the first epochs lie below the plotted range
    elbo = [(sx(r["epoch"]), sy(-r["test_loss"])) for r in rows if -r["test_loss"] >= y_lo]
    if len(elbo) > 1:
        d.line(elbo, fill=COLOURS["elbo"], width=2)
    iw = [(sx(r["epoch"]), sy(r["test_iw_ll"])) for r in rows if r.get("test_iw_ll") is not None]
    if iw:
        d.line(iw, fill=COLOURS["iw"], width=2)
        for x, y in iw:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=COLOURS["iw"])
    k_iw = next((r.get("iw_samples") for r in rows if r.get("iw_samples")), "?")
    legend = [("elbo", "test ELBO (1 sample), every epoch")]
    if iw:
        legend.append(("iw", f"test log p(x), IW K={k_iw}, every --iw-every"))
    if final:
        x, y = sx(n), sy(final["log_likelihood"])
        d.rectangle([x - 5, y - 5, x + 5, y + 5], fill=COLOURS["final"])
        legend.append(("final", f"final: IW K={final['k']}, {final['n']} images: {final['log_likelihood']:.2f} "
                                f"± {final['stderr']:.2f}"))
    for i, (key, text) in enumerate(legend):
        y = T + 8 + 16 * i
        d.line([(W - 400, y + 6), (W - 380, y + 6)], fill=COLOURS[key], width=3)
        d.text((W - 374, y), text, fill="black")
    d.text((L, 12), f"nats per test image (higher is better); {lr_note}", fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: learning_curve.py RUN_DIR OUT.png", file=sys.stderr)
        return 2
    rows, final = load(Path(argv[0]))
    draw(rows, final, Path(argv[1]))
    print(f"wrote {argv[1]} ({len(rows)} epochs{', final K=' + str(final['k']) if final else ''})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
