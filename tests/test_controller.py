"""The controller alone: validation with the CLI's rules, ordering, thread safety, pause without busy-waiting."""
import threading
import time

import pytest

from vae_visdom.train.controller import Controller


@pytest.mark.parametrize("raw", ["abc", "-1", "0", "1e9", "nan", "inf", "", "  ", None])
def test_bad_learning_rates_are_rejected_with_the_rule(raw):
    c = Controller()
    cmd = c.submit("lr", raw)
    assert not cmd.accepted
    assert cmd.message.startswith("rejected: lr:") and "allowed: a number in (0, 10]" in cmd.message


@pytest.mark.parametrize("raw,value", [("1e-3", 1e-3), (" 0.0003 ", 3e-4), ("2", 2.0), (0.5, 0.5)])
def test_good_learning_rates_are_accepted_as_floats(raw, value):
    cmd = Controller().submit("lr", raw)
    assert cmd.accepted and cmd.value == pytest.approx(value)


def test_batch_size_larger_than_the_training_set_is_rejected():
    c = Controller()
    c.context["n_train"] = 100
    assert not c.submit("batch_size", "101").accepted
    assert "larger than the training set (100 examples)" in c.submit("batch_size", "101").message
    assert c.submit("batch_size", "100").accepted
    for raw in ("0", "-5", "2.5", "abc", "1e9"):
        assert not c.submit("batch_size", raw).accepted, raw


def test_unknown_commands_are_rejected_not_raised():
    cmd = Controller().submit("momentum", "0.9")
    assert not cmd.accepted and "unknown command" in cmd.message


def test_commands_are_drained_in_submission_order():
    c = Controller()
    for lr in ("1e-3", "2e-3", "bad", "3e-3"):
        c.submit("lr", lr)
    cmds = c.drain()
    assert [cmd.value for cmd in cmds] == [1e-3, 2e-3, "bad", 3e-3]
    assert [cmd.accepted for cmd in cmds] == [True, True, False, True]
    assert c.drain() == []


def test_many_threads_submitting_lose_nothing():
    c = Controller()
    n_threads, per_thread = 8, 500

    def worker(k):
        for i in range(per_thread):
            c.submit("epochs", str(1 + k * per_thread + i))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    drained = []
    while any(t.is_alive() for t in threads):
        drained += c.drain()
    for t in threads:
        t.join()
    drained += c.drain()
    values = [cmd.value for cmd in drained]
    assert sorted(values) == list(range(1, n_threads * per_thread + 1))
    for k in range(n_threads):  # each thread's commands keep their order
        mine = [v for v in values if k * per_thread < v <= (k + 1) * per_thread]
        assert mine == sorted(mine)


def test_pause_blocks_without_spinning_and_stop_wakes_it():
    c = Controller()
    c.pause()
    c.drain()
    t0, cpu0 = time.perf_counter(), time.thread_time()
    assert c.wait_while_paused(0.3) is True
    assert time.perf_counter() - t0 >= 0.25
    assert time.thread_time() - cpu0 < 0.05  # waited on a condition, did not burn CPU
    threading.Timer(0.1, c.stop).start()
    t0 = time.perf_counter()
    assert c.wait_while_paused(5.0) is False  # the stop woke it long before the timeout
    assert time.perf_counter() - t0 < 1.0
    assert c.stop_requested
