"""Epoch time: the seed's training loop against ours, on the same data, in one run, on one device.

The seed is pytorch/examples vae/main.py: torchvision's MNIST dataset (a PIL image per
sample through transforms.ToTensor), a DataLoader (batch 128, shuffled; num_workers=1 and
pin_memory only with CUDA, as the seed's kwargs), its 784-400-20 VAE with a sigmoid output,
F.binary_cross_entropy summed + KLD, Adam 1e-3, `loss.item()` every step. Ours is the real
vae_visdom Trainer built by TrainingSession (visdom off, progress off): the data resident as
uint8 on the device, batches gathered from a permutation, fused Adam.

Epochs alternate (ours, then the seed's) so that a load change on a shared machine hits both.
The seed runs in a Python process of its own (SeedProcess), with the defaults a user's
`python main.py` has: nothing our trainer sets for its process can speed the seed up.
Times are training epochs only; test losses are printed to show both loops learn the same.

    python benchmarks/epoch_time.py --device cpu --epochs 3
    python benchmarks/epoch_time.py --model conv64        # images/s: ours vs a DataLoader pipeline
    python benchmarks/epoch_time.py --model conv64 --faces 20000   # a generated 64x64 RGB folder
    python benchmarks/epoch_time.py --streaming           # + visdom streaming overhead, server up

The last line is `speedup: X.XX` (the seed's median epoch seconds / ours).
"""
from __future__ import annotations

import argparse
import json
import math
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from vae_visdom.config import FAST_STEPS, TrainConfig, with_model_defaults  # noqa: E402
from vae_visdom.data import DataError, ImageData, load_dataset  # noqa: E402
from vae_visdom.models import build_model  # noqa: E402
from vae_visdom.session import TrainingSession  # noqa: E402
from vae_visdom.train.choose_step import describe_step  # noqa: E402
from vae_visdom.train.events import Callback  # noqa: E402
from vae_visdom.train.objectives import elbo_terms, seed_loss_function  # noqa: E402

SEED_LOG_INTERVAL = 10  # the seed formats a progress line every 10 batches


class SeedVAE(nn.Module):
    """pytorch/examples vae/main.py `VAE`, verbatim."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


class PILDataset(torch.utils.data.Dataset):
    """torchvision's datasets.MNIST.__getitem__ over our uint8 images: a PIL image per sample, then ToTensor."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None):
        from vae_visdom.data.mnist_sources import import_torchvision

        tv = import_torchvision()
        self.images = images[:, 0] if images.shape[1] == 1 else images.permute(0, 2, 3, 1)  # (N, H, W[, 3])
        self.targets = labels if labels is not None else torch.zeros(len(images), dtype=torch.long)
        self.mode = "L" if images.shape[1] == 1 else "RGB"
        self.fromarray = tv.utils._Image_fromarray  # what datasets.MNIST calls (Pillow's `mode` deprecation)
        self.transform = tv.transforms.ToTensor()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        img, target = self.images[index], int(self.targets[index])
        img = self.fromarray(img.numpy(), mode=self.mode)
        return self.transform(img), target


class SeedLoop:
    """The seed's train()/test() functions, timed per training epoch."""

    def __init__(self, data: ImageData, model_name: str, batch_size: int, lr: float, device: torch.device,
                 seed: int, build_ours: Callable[[], nn.Module]):
        self.device = device
        kwargs = {"num_workers": 1, "pin_memory": True} if device.type == "cuda" else {}
        self.train_loader = torch.utils.data.DataLoader(PILDataset(data.train, data.train_labels),
                                                        batch_size=batch_size, shuffle=True, **kwargs)
        self.test_loader = torch.utils.data.DataLoader(PILDataset(data.test, data.test_labels),
                                                       batch_size=batch_size, shuffle=False, **kwargs)
        torch.manual_seed(seed)
        if model_name == "mlp":
            self.model = SeedVAE().to(device)
            self.loss_function = seed_loss_function
        else:  # no seed for conv models: the same model as ours behind the seed's data path and loop
            model = self.model = build_ours().to(device)

            def loss_function(logits, x, mu, logvar):
                recon, kl = elbo_terms(logits, x, mu, logvar, model.likelihood, model.log_sigma)
                return (recon + kl).sum()

            self.loss_function = loss_function
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        self.model.train()
        train_loss = 0.0
        t0 = time.perf_counter()
        for batch_idx, (data, _) in enumerate(self.train_loader):
            data = data.to(self.device)
            self.optimizer.zero_grad()
            recon_batch, mu, logvar = self.model(data)
            loss = self.loss_function(recon_batch, data, mu, logvar)
            loss.backward()
            train_loss += loss.item()
            self.optimizer.step()
            if batch_idx % SEED_LOG_INTERVAL == 0:  # formatted, not printed: the numbers, not the terminal
                (f"Train Epoch: {epoch} [{batch_idx * len(data)}/{len(self.train_loader.dataset)}]"
                 f"\tLoss: {loss.item() / len(data):.6f}")
        seconds = time.perf_counter() - t0
        return train_loss / len(self.train_loader.dataset), seconds

    def test(self) -> float:
        self.model.eval()
        test_loss = 0.0
        with torch.no_grad():
            for data, _ in self.test_loader:
                data = data.to(self.device)
                recon_batch, mu, logvar = self.model(data)
                test_loss += self.loss_function(recon_batch, data, mu, logvar).item()
        return test_loss / len(self.test_loader.dataset)


class SeedProcess:
    """The seed's loop in a Python process of its own, an epoch (train, then test) when asked.

    Its own process, as `python main.py` runs: torch's and the C library's defaults, whatever
    ours sets in this process (threads, matmul precision, the allocator's state).
    Started and set up before ours trains; it waits on its stdin, idle, while ours runs.
    """

    def __init__(self, args, batch_size: int, device: torch.device):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--seed-worker", "--device", device.type,
               "--model", args.model, "--batch-size", str(batch_size), "--seed", str(args.seed)]
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        if args.faces:
            cmd += ["--faces", str(args.faces)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._read()  # "ready": data loaded, model built

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the seed's process ended (exit {self.proc.wait()}); its error is above")
        return json.loads(line)

    def epoch(self, epoch: int) -> tuple[float, float, float]:
        """(train loss, training seconds, test loss) of the seed's next epoch."""
        self.proc.stdin.write(f"{epoch}\n")
        self.proc.stdin.flush()
        return tuple(self._read())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def seed_worker(args) -> int:
    """`--seed-worker`: the other end of SeedProcess. Only its answers go to stdout."""
    answers, sys.stdout = sys.stdout, sys.stderr
    data, dataset = load_data(args.model, args.limit, args.faces)
    cfg = with_model_defaults(TrainConfig(dataset=dataset, model=args.model, data_dir=data_dir_of(dataset)).validate())
    loop = SeedLoop(data, args.model, args.batch_size, 1e-3, torch.device(args.device), args.seed,
                    lambda: build_model(args.model, data.image_shape, cfg.latent_dim, cfg.hidden_dim, cfg.likelihood))
    print(json.dumps("ready"), file=answers, flush=True)
    for line in sys.stdin:
        epoch = int(line)
        train_loss, seconds = loop.train_epoch(epoch)
        print(json.dumps([train_loss, seconds, loop.test()]), file=answers, flush=True)
    return 0


class Interleave(Callback):
    """After each of our epochs, one of the seed's; records both."""

    def __init__(self, seed: SeedProcess | None, label: str, n_train: int):
        self.seed, self.label, self.n_train = seed, label, n_train
        self.rows: list[tuple] = []  # (epoch, loop, seconds, train_loss, test_loss)

    def on_epoch_end(self, record, images) -> None:
        self._row(record.epoch, "ours", record.seconds, record.train_loss, record.test_loss)
        if self.seed is not None:
            train_loss, seconds, test_loss = self.seed.epoch(record.epoch)
            self._row(record.epoch, self.label, seconds, train_loss, test_loss)

    def _row(self, epoch, loop, seconds, train_loss, test_loss) -> None:
        self.rows.append((epoch, loop, seconds, train_loss, test_loss))
        print(f"{epoch:>5}  {loop:<10} {seconds:8.3f} {self.n_train / seconds:9.0f} {train_loss:11.2f} "
              f"{test_loss:10.2f}", flush=True)


def generated_faces(n_train: int = 2048, n_test: int = 256, side: int = 64, seed: int = 0, channels: int = 1
                    ) -> ImageData:
    """Smooth 64x64 images (a few Gaussian blobs each, per channel): a stand-in with a face-sized tensor shape."""
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    yy, xx = torch.meshgrid(torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32),
                            indexing="ij")
    planes = []
    for _ in range(channels):
        centres = torch.rand(n, 5, 2, generator=g) * side
        widths = 4 + torch.rand(n, 5, 1, 1, generator=g) * 10
        d2 = (yy - centres[..., 0, None, None]) ** 2 + (xx - centres[..., 1, None, None]) ** 2  # (n, 5, H, W)
        planes.append(torch.exp(-d2 / (2 * widths ** 2)).sum(1).clamp(max=1.0))  # (n, H, W)
    img = (torch.stack(planes, 1) * 255).round().to(torch.uint8)  # (n, C, H, W)
    colour = "RGB" if channels == 3 else "grey"
    return ImageData("generated64", img[:n_train].clone(), img[n_train:].clone(),
                     source=f"generated {colour} 64x64 blobs, {n_train} train / {n_test} test")


def load_data(model: str, limit: int | None, faces: int | None = None) -> tuple[ImageData, str]:
    if faces:  # a generated RGB folder of this many training images (CelebA's shape at 64x64)
        return generated_faces(faces, max(faces // 8, 1), channels=3), "folder"
    if model == "conv64":
        try:
            data, dataset = load_dataset("orl"), "orl"
        except (DataError, ImportError, OSError) as err:
            print(f"ORL unavailable ({err}); using generated 64x64 images", flush=True)
            data, dataset = generated_faces(), "folder"
    else:
        data, dataset = load_dataset("mnist"), "mnist"
    if limit:
        n_test = min(len(data.test), max(limit // 6, 1))  # MNIST's own 6:1 train/test ratio
        sl = lambda t, n: None if t is None else t[:n]  # noqa: E731
        data = ImageData(data.name, data.train[:limit], data.test[:n_test], sl(data.train_labels, limit),
                         sl(data.test_labels, n_test), data.source + f" (first {limit} training images)")
    return data, dataset


def data_dir_of(dataset: str) -> str | None:
    """A folder dataset's config names its folder; generated images have none (the data is passed in)."""
    return "generated" if dataset == "folder" else None


def our_session(args, data: ImageData, dataset: str, out: str, callbacks: list, visdom_port: int | None = None
                ) -> TrainingSession:
    cfg = TrainConfig(dataset=dataset, model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                      lr=1e-3, optimizer="adam", device=args.device, seed=args.seed, out=out,
                      visdom=visdom_port is not None, port=visdom_port or 8097, env=f"bench-{int(time.time())}",
                      fast_step=args.fast_step, precision=args.precision, data_dir=data_dir_of(dataset))
    return TrainingSession(cfg, data=data, progress=False, callbacks=callbacks)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EpochClock(Callback):
    """Times its run's epochs: training seconds, and train + test + observers (after a flush, if streaming)."""

    def __init__(self, label: str, n_train: int):
        self.label, self.n_train = label, n_train
        self.monitor = None
        self.active = True
        self.seconds: list[float] = []
        self.walls: list[float] = []
        self.start = 0.0

    def on_epoch_end(self, record, images) -> None:
        if not self.active:
            return
        if self.monitor is not None:
            self.monitor.flush(30)  # its sends belong to its own epoch, not to the other run's
        self.walls.append(time.perf_counter() - self.start)
        self.seconds.append(record.seconds)
        print(f"{record.epoch:>5}  {self.label:<10}{record.seconds:8.3f} {self.n_train / record.seconds:9.0f} "
              f"{record.train_loss:11.2f} {record.test_loss:10.2f}", flush=True)


def streaming_overhead(args, data: ImageData, dataset: str, tmp: Path) -> list[str]:
    """Ours with visdom off and on (a real server on a free loopback port), epochs alternating."""
    from vae_visdom.serve.net import server_answers

    port = free_port()
    log = open(tmp / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "vae_visdom.serve.server", "--port", str(port),
                               "--env-path", str(tmp / "envs")], stdout=log, stderr=subprocess.STDOUT,
                              cwd=Path(__file__).resolve().parents[1])
    try:
        deadline = time.monotonic() + 90
        while not server_answers("127.0.0.1", port):
            if server.poll() is not None or time.monotonic() > deadline:
                return [f"streaming: skipped, the server did not come up (see {tmp / 'server.log'})"]
            time.sleep(0.3)
        print("-- ours with visdom off and on, epochs alternating", flush=True)
        clocks = {mode: EpochClock(f"visdom {mode}", len(data.train)) for mode in ("off", "on")}
        sessions = {}
        for mode, vport in (("off", None), ("on", port)):
            sessions[mode] = our_session(args, data, dataset, str(tmp / f"stream-{mode}"), [], vport)
            sessions[mode].trainer.add_callback(clocks[mode])  # after the monitor: its flush sees everything
        if sessions["on"].monitor is None:
            return ["streaming: skipped, the visdom monitor is unavailable (vae_visdom.monitor)"]
        clocks["on"].monitor = sessions["on"].monitor
        for s in sessions.values():
            s.announce()
            s.trainer.begin()
        # one thread drives both runs, an epoch each in turn: a drift in machine speed hits both alike
        going = dict.fromkeys(sessions, True)
        while any(going.values()):
            for mode, s in sessions.items():
                if going[mode]:
                    clocks[mode].start = time.perf_counter()
                    going[mode] = s.trainer.run_epoch()
        # then blocks of `block` epochs, off and on in turn, timed whole (sends overlap the next
        # epoch, as in a real run; one flush at the end of each streaming block)
        print(f"-- whole runs: {args.streaming_rounds} rounds of {args.streaming_block} epochs off, then on",
              flush=True)
        blocks = {"off": 0.0, "on": 0.0}
        for s in sessions.values():
            s.trainer.apply_setting("epochs", s.trainer.epochs + args.streaming_rounds * args.streaming_block)
        for _ in range(args.streaming_rounds):
            for mode, s in sessions.items():
                clocks[mode].active = False
                t0 = time.perf_counter()
                for _ in range(args.streaming_block):
                    s.trainer.run_epoch()
                if mode == "on":
                    s.monitor.flush(30)
                blocks[mode] += time.perf_counter() - t0
        for s in sessions.values():
            s.trainer.end()
            s.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    off, on = clocks["off"], clocks["on"]
    pct = lambda a, b: 100.0 * (statistics.median(a) / statistics.median(b) - 1)  # noqa: E731
    return [f"streaming overhead, training seconds: {pct(on.seconds, off.seconds):+.1f}% "
            f"(median {statistics.median(off.seconds):.3f} s off, {statistics.median(on.seconds):.3f} s on)",
            f"streaming overhead, whole epoch with a synchronous flush: {pct(on.walls, off.walls):+.1f}% "
            f"(median {statistics.median(off.walls):.3f} s off, {statistics.median(on.walls):.3f} s on)",
            f"streaming overhead, whole run ({args.streaming_rounds} rounds of {args.streaming_block}-epoch blocks, "
            f"sends overlapping training): {100.0 * (blocks['on'] / blocks['off'] - 1):+.1f}% "
            f"({blocks['off']:.2f} s off, {blocks['on']:.2f} s on)"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=None, help="default: the model's (mlp, conv: 128)")
    p.add_argument("--model", choices=("mlp", "conv", "conv64"), default="mlp")
    p.add_argument("--limit", type=int, default=None, help="use only the first N training images (tests)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="ours: bf16 autocast for the forward pass (the seed stays fp32)")
    p.add_argument("--fast-step", choices=FAST_STEPS, default="auto",
                   help="ours: the step --fast-step picks (train --help), or eager autograd")
    p.add_argument("--faces", type=int, default=None,
                   help="conv64 on a generated 64x64 RGB folder of this many training images instead of ORL")
    p.add_argument("--streaming", action="store_true", help="also measure visdom streaming overhead")
    p.add_argument("--streaming-block", type=int, default=8, help="epochs per block in the whole-run measurement")
    p.add_argument("--streaming-rounds", type=int, default=2, help="off/on block pairs in the whole-run measurement")
    p.add_argument("--seed-worker", action="store_true", help=argparse.SUPPRESS)  # SeedProcess's other end
    args = p.parse_args(argv)

    if args.seed_worker:
        return seed_worker(args)
    data, dataset = load_data(args.model, args.limit, args.faces)
    label = "seed" if args.model == "mlp" else "dataloader"
    with tempfile.TemporaryDirectory(prefix="vae-bench-") as tmp_name:
        tmp = Path(tmp_name)
        interleave = Interleave(None, label, len(data.train))
        session = our_session(args, data, dataset, str(tmp / "ours"), [interleave])
        trainer = session.trainer
        shape = data.image_shape
        interleave.seed = SeedProcess(args, trainer.batch_size, trainer.device)
        step_kind = describe_step(trainer.step_fn)
        print(f"device {trainer.device} ({torch.get_num_threads()} threads), torch {torch.__version__}; "
              f"data: {data.source}; {len(data.train)} train / {len(data.test)} test images {shape}; "
              f"model {args.model}, batch {trainer.batch_size}, Adam 1e-3; ours' step: {step_kind}", flush=True)
        print(f"{'epoch':>5}  {'loop':<10} {'train_s':>8} {'img/s':>9} {'train_loss':>11} {'test_loss':>10}")
        try:
            session.run()
        finally:
            interleave.seed.close()
        if hasattr(trainer.step_fn, "replays"):
            print(f"captured step: {trainer.step_fn.replays} replays, {trainer.step_fn.fallbacks} eager fallbacks")
        extra = streaming_overhead(args, data, dataset, tmp) if args.streaming else []
    rows = interleave.rows
    ours = statistics.median(r[2] for r in rows if r[1] == "ours")
    seed = statistics.median(r[2] for r in rows if r[1] == label)
    for line in extra:
        print(line)
    print(f"median training epoch: {label} {seed:.3f} s ({len(data.train) / seed:.0f} img/s), "
          f"ours {ours:.3f} s ({len(data.train) / ours:.0f} img/s)")
    speedup = seed / ours if ours > 0 else math.inf
    print(f"speedup: {speedup:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
