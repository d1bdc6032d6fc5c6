"""Figures and numbers for docs/faces.md, from finished run directories (no matplotlib: Pillow).

usage: python docs/img/faces/make_figures.py OUT_DIR RUNS_DIR   (RUNS_DIR holds orl, orl-epoch50, fashion)
Prints the numbers quoted in docs/faces.md as JSON.
"""
import json
import math
import shutil
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from vae_visdom.insight.eval_run import load_trained as load_run
from vae_visdom.train.objectives import gaussian_kl, recon_nll

OUT = Path(sys.argv[1])  # docs/img/faces
RUNS = Path(sys.argv[2])  # the runs directory
OUT.mkdir(parents=True, exist_ok=True)
FONT = ImageFont.load_default(size=14)


def plot(path, series, title, xlabel, ylabel, mark=None, w=640, h=360):
    """series: [(label, colour, [(x, y), ...])]; mark: (x, text) drawn as a dashed vertical line."""
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    left, right, top, bottom = 78, w - 16, 52, h - 46
    xs = [x for _, _, pts in series for x, _ in pts]
    ys = [y for _, _, pts in series for _, y in pts]
    x0, x1 = min(xs), max(xs)
    step = 10 ** math.floor(math.log10((max(ys) - min(ys)) / 4))
    step *= 5 if (max(ys) - min(ys)) / step > 20 else 2 if (max(ys) - min(ys)) / step > 8 else 1
    y0, y1 = math.floor(min(ys) / step) * step, math.ceil(max(ys) / step) * step
    px = lambda x: left + (x - x0) / (x1 - x0 or 1) * (right - left)
    py = lambda y: bottom - (y - y0) / (y1 - y0) * (bottom - top)
    y = y0
    while y <= y1 + 1e-9:
        d.line([(left, py(y)), (right, py(y))], fill=(230, 230, 230))
        d.text((left - 6, py(y)), f"{y:g}", fill="black", font=FONT, anchor="rm")
        y += step
    xstep = max(1, round((x1 - x0) / 10 / 5) * 5) if x1 - x0 > 10 else 1
    for x in range(int(x0) if x0 % xstep == 0 else 0, int(x1) + 1, xstep):
        if x >= x0:
            d.line([(px(x), bottom), (px(x), bottom + 4)], fill="black")
            d.text((px(x), bottom + 6), str(x), fill="black", font=FONT, anchor="mt")
    d.rectangle([left, top, right, bottom], outline="black")
    if mark:
        for yy in range(top, bottom, 8):
            d.line([(px(mark[0]), yy), (px(mark[0]), min(yy + 4, bottom))], fill=(120, 120, 120))
        d.text((px(mark[0]) + 4, bottom - 6), mark[1], fill=(90, 90, 90), font=FONT, anchor="lb")
    for i, (label, colour, pts) in enumerate(series):
        d.line([(px(x), py(y)) for x, y in pts], fill=colour, width=2)
        d.line([(right - 150, top + 14 + 18 * i), (right - 126, top + 14 + 18 * i)], fill=colour, width=3)
        d.text((right - 120, top + 14 + 18 * i), label, fill="black", font=FONT, anchor="lm")
    d.text((w / 2, 8), title, fill="black", font=FONT, anchor="mt")
    d.text((w / 2, h - 8), xlabel, fill="black", font=FONT, anchor="mb")
    d.text((6, top - 22), ylabel, fill="black", font=FONT)
    img.save(path)


def grid(x, path, nrow, pad=2, scale=1):
    x = x.detach().float().clamp(0, 1).cpu()
    n, c, h, w = x.shape
    rows = (n + nrow - 1) // nrow
    canvas = torch.ones(3, pad + rows * (h + pad), pad + nrow * (w + pad))
    for i in range(n):
        r, k = divmod(i, nrow)
        canvas[:, pad + r * (h + pad):pad + r * (h + pad) + h, pad + k * (w + pad):pad + k * (w + pad) + w] = x[i]
    arr = (canvas.permute(1, 2, 0) * 255 + 0.5).to(torch.uint8).numpy()
    img = Image.fromarray(arr[..., 0] if c == 1 else arr)  # grey PNGs are a third the size
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    img.save(path)


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@torch.no_grad()
def pixel_report(run):
    """RMSE of x vs sigmoid(decode(mu)) on train and test; PCA and mean-image baselines; active units."""
    cfg, model, data = load_run(run)
    model.eval()
    tr, te = data.train.float() / 255, data.test.float() / 255  # (N, C, H, W)

    def recon(x):
        mu, logvar = model.encode(x)
        return torch.sigmoid(model.decode(mu)), mu, logvar

    rmse = lambda a, b: ((a - b) ** 2).mean().sqrt().item()
    rtr, mu_tr, _ = recon(tr)
    rte, mu_te, lv_te = recon(te)
    k = cfg.latent_dim
    flat = tr.flatten(1)
    mean = flat.mean(0)
    _, _, v = torch.linalg.svd(flat - mean, full_matrices=False)
    basis = v[:k]  # (k, D): the best rank-k linear reconstruction of the training set
    pca = lambda x: ((x.flatten(1) - mean) @ basis.T @ basis + mean).view_as(x)
    kl_per_dim = (-0.5 * (1 + lv_te - mu_te ** 2 - lv_te.exp())).mean(0)  # (k,)
    out = {
        "vae_rmse_train": rmse(rtr, tr), "vae_rmse_test": rmse(rte, te),
        f"pca{k}_rmse_train": rmse(pca(tr), tr), f"pca{k}_rmse_test": rmse(pca(te), te),
        "mean_image_rmse_test": rmse(mean.view(1, *tr.shape[1:]).expand_as(te), te),
        "active_units": int((kl_per_dim > 0.01).sum()), "latent_dim": k,
    }
    if model.log_sigma is not None:
        # Split the test loss: the learned sigma, against sigma set to the test error itself (a diagnostic
        # that peeks at the test set: how much of the loss is an overconfident noise scale).
        out["sigma"] = math.exp(model.log_sigma.item())
        torch.manual_seed(0)
        logits, mu, logvar = model(te)
        kl = gaussian_kl(mu, logvar).mean().item()
        out["test_loss_learned_sigma"] = recon_nll(logits, te, "gaussian", model.log_sigma).mean().item() + kl
        rms = (torch.sigmoid(logits) - te).pow(2).mean().sqrt()
        out["test_rms_sampled_z"] = rms.item()
        out["test_loss_sigma_at_test_rms"] = recon_nll(logits, te, "gaussian", rms.log()).mean().item() + kl
    return out, model, data, pca


@torch.no_grad()
def nearest_train(model, data, n=16, seed=0):
    """Prior samples next to their nearest training image (L2), and how near they are vs test images."""
    tr, te = data.train.float() / 255, data.test.float() / 255
    z = torch.randn(n, model.latent_dim, generator=torch.Generator().manual_seed(seed))
    s = model.sample_images(z)
    d_s = torch.cdist(s.flatten(1), tr.flatten(1))  # (n, N)
    d_t = torch.cdist(te.flatten(1), tr.flatten(1))  # (M, N)
    near = tr[d_s.argmin(1)]
    rms = lambda d: (d / math.sqrt(tr[0].numel())).median().item()  # distance as a per-pixel RMS
    return s, near, {"sample_to_nearest_train_rms": rms(d_s.min(1).values),
                     "test_to_nearest_train_rms": rms(d_t.min(1).values)}


report = {}
orl, orl50, fashion = RUNS / "orl", RUNS / "orl-epoch50", RUNS / "fashion"
m = metrics(orl)
best = min(m, key=lambda r: r["test_loss"])
plot(OUT / "orl_loss.png",
     [("train (epoch mean)", (31, 119, 180), [(r["epoch"], r["train_loss"]) for r in m]),
      ("test", (255, 127, 14), [(r["epoch"], r["test_loss"]) for r in m])],
     "ORL faces, conv64, 360 train / 40 test: negative ELBO", "epoch", "nats per image (lower is better)",
     mark=(best["epoch"], f"best test: epoch {best['epoch']}"))
report["orl_best"] = {k: best[k] for k in ("epoch", "train_loss", "test_loss")}
report["orl_rows"] = {r["epoch"]: (round(r["train_loss"], 1), round(r["test_loss"], 1), round(r["test_kl"], 1))
                      for r in m if r["epoch"] in (1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100)}
for tag, run in (("epoch50", orl50), ("epoch100", orl)):
    rep, model, data, pca = pixel_report(run)
    report[f"orl_{tag}"] = rep
    s, near, dist = nearest_train(model, data)
    report[f"orl_{tag}"].update(dist)
    te = data.test[:16].float() / 255  # (16, 1, 64, 64): test faces over VAE and PCA reconstructions
    with torch.no_grad():
        rec = torch.sigmoid(model.decode(model.encode(te)[0]))
        z = torch.randn(32, model.latent_dim, generator=torch.Generator().manual_seed(1))
        grid(model.sample_images(z), OUT / f"orl_{tag}_samples.png", nrow=16)
    grid(torch.cat([te, rec, pca(te)]), OUT / f"orl_{tag}_test_reconstructions.png", nrow=16)
    if tag == "epoch100":
        grid(torch.cat([s, near]), OUT / f"orl_{tag}_samples_vs_nearest.png", nrow=16)
        tr = data.train[:16].float() / 255
        with torch.no_grad():
            rec = torch.sigmoid(model.decode(model.encode(tr)[0]))
        grid(torch.cat([tr, rec]), OUT / f"orl_{tag}_train_reconstructions.png", nrow=16)

if fashion.exists():
    f = metrics(fashion)
    plot(OUT / "fashion_loss.png",
         [("train (epoch mean)", (31, 119, 180), [(r["epoch"], r["train_loss"]) for r in f]),
          ("test", (255, 127, 14), [(r["epoch"], r["test_loss"]) for r in f])],
         "Fashion-MNIST, conv, 60000 train / 10000 test: negative ELBO", "epoch", "nats per image (lower is better)")
    report["fashion_rows"] = {r["epoch"]: (round(r["train_loss"], 2), round(r["test_loss"], 2), round(r["test_kl"], 2),
                                           r["seconds"]) for r in f}
    rep, model, data, pca = pixel_report(fashion)
    report["fashion"] = rep
    last = f[-1]["epoch"]
    for name in (f"reconstruction_{last}.png", f"sample_{last}.png"):
        shutil.copy(fashion / name, OUT / f"fashion_{name}")
print(json.dumps(report, indent=1))
