"""The terminal display: a tqdm bar on a terminal, one plain line per epoch anywhere else."""
import io

from vae_visdom.runs.progress import ProgressPrinter
from vae_visdom.train.events import EpochRecord, StepLog


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def steps(epoch: int, n: int = 10):
    for i in range(1, n + 1):
        yield StepLog(epoch=epoch, step=(epoch - 1) * n + i, epoch_progress=epoch - 1 + i / n, loss=130.5 - i,
                      recon=100.25, kl=25.75, lr=3e-4, batch_size=64)


def record(epoch: int) -> EpochRecord:
    return EpochRecord(epoch=epoch, step=10 * epoch, train_loss=128.1234, train_recon=101.5, train_kl=26.6,
                       test_loss=127.6, test_recon=100.9, test_kl=26.7, lr=3e-4, batch_size=64, seconds=2.5,
                       test_seconds=0.2, images_per_second=24000.0)


def feed(printer: ProgressPrinter, epochs: int = 3) -> None:
    for epoch in range(1, epochs + 1):
        for log in steps(epoch):
            printer.on_step(log)
        printer.on_epoch_end(record(epoch), None)


def test_not_a_terminal_gets_one_plain_line_per_epoch_with_every_figure():
    out = io.StringIO()
    feed(ProgressPrinter(out), epochs=3)
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 6  # instead of the bar one line, then the seed's summary line, per epoch
    for epoch in range(1, 4):
        bar, summary = lines[2 * epoch - 2: 2 * epoch]
        assert bar == f"epoch {epoch} 100.0%  loss   120.50  (recon 100.25 + KL 25.75)  lr 0.0003  bs 64"
        assert summary.startswith(f"====> Epoch: {epoch} Average loss: 128.1234  Test set loss: 127.6000")


def test_a_terminal_gets_a_redrawn_bar_with_percent_loss_terms_lr_and_batch_size():
    out = Terminal()
    feed(ProgressPrinter(out), epochs=1)
    text = out.getvalue()
    assert "\r" in text  # redrawn in place
    assert "epoch 1" in text and " 50.0%" in text and "100.0%" in text
    assert "loss   125.50  (recon 100.25 + KL 25.75)  lr 0.0003  bs 64" in text
    assert text.rstrip().splitlines()[-1].strip().startswith("====> Epoch: 1 Average loss: 128.1234")
    assert "\nepoch 1 100.0%" not in text  # the plain line is for files and pipes only


def test_an_iwae_run_shows_the_bound_as_the_loss_and_the_elbo_beside_it():
    from tests.test_monitor import run_info

    out = io.StringIO()
    printer = ProgressPrinter(out)
    info = run_info("/tmp/r")
    info.config.update(objective="iwae", iwae_k=5)
    printer.on_run_start(info)
    feed(printer, epochs=1)
    text = out.getvalue()
    assert "objective: the IWAE bound with K=5" in text
    assert "epoch 1 100.0%  loss   120.50  (-ELBO 126.00: recon 100.25 + KL 25.75)  lr 0.0003  bs 64" in text
