"""The trainer driven by a controller, without any server: resume, pause, live changes, stop."""
import json
import threading
import time

import pytest
import torch

from tests.builders import make_session
from tests.conftest import synthetic_data
from vae_visdom.runs.files import read_jsonl
from vae_visdom.train import checkpoint
from vae_visdom.train.events import Callback

KEYS = ("epoch", "step", "train_loss", "train_recon", "train_kl", "test_loss", "test_recon", "test_kl", "lr",
        "batch_size")


def run(tmp_path, name, data, callbacks=(), resume=False, overrides=None, **cfg):
    fields = {} if resume else {"epochs": 2, "log_interval": 2, **cfg}  # a resume reads the run's own config
    session = make_session(tmp_path / name, data=data, callbacks=callbacks, resume=resume, overrides=overrides,
                           **fields)
    status = session.run()
    return session, status


def metrics(tmp_path, name):
    return [{k: r[k] for k in KEYS} for r in read_jsonl(tmp_path / name / "metrics.jsonl")]


def weights(tmp_path, name):
    return checkpoint.load(tmp_path / name)["model"]


class At(Callback):
    """Calls `action(trainer_step)` when the trainer logs step `step` of epoch `epoch`."""

    def __init__(self, action, step=None, epoch_end=None):
        self.action, self.step, self.epoch_end, self.done = action, step, epoch_end, False

    def on_step(self, log):
        if self.step is not None and not self.done and log.step >= self.step:
            self.done = True
            self.action(log)

    def on_epoch_end(self, record, images):
        if self.epoch_end is not None and record.epoch == self.epoch_end:
            self.action(record)


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_two_epochs_equal_one_epoch_plus_resume(tmp_path, tiny_data):
    run(tmp_path, "straight", tiny_data)
    run(tmp_path, "split", tiny_data, epochs=1)
    _, status = run(tmp_path, "split", tiny_data, resume=True, overrides={"epochs": 2})
    assert status.state == "finished" and status.epoch == 2
    assert metrics(tmp_path, "split") == metrics(tmp_path, "straight")
    assert_same_weights(weights(tmp_path, "split"), weights(tmp_path, "straight"))


def test_stop_mid_epoch_writes_a_checkpoint_and_resume_continues_exactly(tmp_path, tiny_data):
    run(tmp_path, "straight", tiny_data)
    holder = {}
    stopper = At(lambda log: holder["session"].controller.stop(source="test"), step=6)
    session = make_session(tmp_path / "stopped", data=tiny_data, callbacks=[stopper], epochs=2, log_interval=2)
    holder["session"] = session
    status = session.run()
    assert status.state == "stopped"
    state = checkpoint.load(tmp_path / "stopped")
    assert state["epoch"] == 1 and state["epoch_state"] is not None and state["step"] == 6  # mid epoch 2
    assert json.loads((tmp_path / "stopped" / "status.json").read_text())["state"] == "stopped"
    _, status = run(tmp_path, "stopped", tiny_data, resume=True)
    assert status.state == "finished"
    assert metrics(tmp_path, "stopped") == metrics(tmp_path, "straight")
    assert_same_weights(weights(tmp_path, "stopped"), weights(tmp_path, "straight"))


def test_paused_and_resumed_run_gives_the_same_numbers_and_excludes_paused_time(tmp_path, tiny_data):
    run(tmp_path, "straight", tiny_data, epochs=1)
    holder, pause_s = {}, 1.5

    def pause(log):
        c = holder["session"].controller
        c.pause(source="test")
        threading.Timer(pause_s, c.submit, args=("resume",), kwargs={"source": "test"}).start()

    span = {}

    class Span(Callback):
        def on_run_start(self, run):
            span["start"] = time.perf_counter()

        def on_epoch_end(self, record, images):
            span["end"] = time.perf_counter()

    session = make_session(tmp_path / "paused", data=tiny_data, callbacks=[At(pause, step=2), Span()], epochs=1,
                           log_interval=2)
    holder["session"] = session
    session.run()
    wall = span["end"] - span["start"]
    assert wall >= pause_s
    assert metrics(tmp_path, "paused") == metrics(tmp_path, "straight")
    assert_same_weights(weights(tmp_path, "paused"), weights(tmp_path, "straight"))
    epoch_seconds = read_jsonl(tmp_path / "paused" / "metrics.jsonl")[0]["seconds"]
    assert epoch_seconds <= wall - pause_s + 0.05, (epoch_seconds, wall)  # paused time is not epoch time
    events = read_jsonl(tmp_path / "paused" / "events.jsonl")
    assert [e["name"] for e in events] == ["pause", "resume"] and all(e["accepted"] for e in events)


def test_lr_change_applies_to_every_group_and_shows_in_metrics(tmp_path, tiny_data):
    holder = {}
    changer = At(lambda rec: holder["s"].controller.submit("lr", "3e-4", source="test"), epoch_end=1)
    session = make_session(tmp_path / "lr", data=tiny_data, callbacks=[changer], epochs=2, log_interval=2)
    holder["s"] = session
    session.run()
    rows = read_jsonl(tmp_path / "lr" / "metrics.jsonl")
    assert [r["lr"] for r in rows] == [1e-3, 3e-4]
    assert all(g["lr"] == 3e-4 for g in session.trainer.optimizer.param_groups)
    (event,) = read_jsonl(tmp_path / "lr" / "events.jsonl")
    assert event["name"] == "lr" and event["accepted"] and event["value"] == 3e-4 and event["epoch"] == 1
    assert event["latency_ms"] is not None and event["latency_ms"] < 1000


def test_batch_size_change_mid_epoch_re_slices_the_permutation(tmp_path):
    data = synthetic_data(n_train=500, n_test=50)
    seen = []

    class Record(Callback):
        def on_step(self, log):
            seen.append((log.step, log.batch_size, log.epoch_progress))

    holder = {}
    changer = At(lambda log: holder["s"].controller.submit("batch_size", "64", source="test"), step=2)
    session = make_session(tmp_path / "bs", data=data, callbacks=[changer, Record()], epochs=1, log_interval=1,
                           batch_size=100)
    holder["s"] = session
    batches = []
    session.trainer.wrap_step(lambda step: lambda x: (batches.append(len(x)), step(x))[1])
    session.run()
    # two steps of 100, then 300 examples left in 64s: 64*4 + 44
    assert batches == [100, 100, 64, 64, 64, 64, 44]
    assert sum(batches) == 500  # every example exactly once
    assert seen[-1][2] == pytest.approx(1.0)
    assert read_jsonl(tmp_path / "bs" / "metrics.jsonl")[0]["batch_size"] == 64


def test_rejected_commands_are_recorded_and_change_nothing(tmp_path, tiny_data):
    holder = {}

    def bad(log):
        for raw in ("abc", "-1", "0", "1e9", "nan", "inf", ""):
            holder["s"].controller.submit("lr", raw, source="test")
        holder["s"].controller.submit("batch_size", "100000", source="test")

    session = make_session(tmp_path / "bad", data=tiny_data, callbacks=[At(bad, step=2)], epochs=1, log_interval=2)
    holder["s"] = session
    status = session.run()
    assert status.state == "finished"
    events = read_jsonl(tmp_path / "bad" / "events.jsonl")
    assert len(events) == 8 and not any(e["accepted"] for e in events)
    assert "larger than the training set (512 examples)" in events[-1]["message"]
    row = read_jsonl(tmp_path / "bad" / "metrics.jsonl")[0]
    assert row["lr"] == 1e-3 and row["batch_size"] == 128


def test_lowering_epochs_below_the_current_one_finishes_after_it(tmp_path, tiny_data):
    holder = {}
    changer = At(lambda log: holder["s"].controller.submit("epochs", "1", source="test"), step=6)
    session = make_session(tmp_path / "ep", data=tiny_data, callbacks=[changer], epochs=5, log_interval=2)
    holder["s"] = session
    status = session.run()
    assert status.state == "finished" and status.epoch == 2  # step 6 is in epoch 2, which is completed
    assert [r["epoch"] for r in read_jsonl(tmp_path / "ep" / "metrics.jsonl")] == [1, 2]


def test_the_fast_path_visits_every_example_once_per_epoch(tmp_path):
    data = synthetic_data(n_train=300, n_test=20)
    data.train[:, 0, 0, 0] = (torch.arange(300) % 256).to(torch.uint8)
    data.train[:, 0, 0, 1] = (torch.arange(300) // 256).to(torch.uint8)
    visited = []
    session = make_session(tmp_path / "perm", data=data, epochs=2, batch_size=64)
    def spy(step):
        def watched(x):
            ids = (x[:, 0, 0, 0] * 255).round().long() + 256 * (x[:, 0, 0, 1] * 255).round().long()
            visited.append(ids)
            return step(x)
        return watched

    session.trainer.wrap_step(spy)
    session.run()
    ids = torch.cat(visited)
    assert sorted(ids[:300].tolist()) == list(range(300)) and sorted(ids[300:].tolist()) == list(range(300))
    assert not torch.equal(ids[:300], ids[300:])  # a new permutation each epoch
