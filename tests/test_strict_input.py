"""Strict input: plain ASCII numbers only, integer fields take integers,
one rule for run and env names, and nothing a user or a page types ends in a traceback."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vae_visdom.cli import main
from vae_visdom.config import ConfigError, TrainConfig, check_name, parse_value
from vae_visdom.train.controller import Controller

REPO = Path(__file__).resolve().parents[1]

LENIENT = [
    ("lr", "\u0663"),  # Arabic-Indic three: float() reads it as 3.0
    ("lr", "\uff11e-3"),  # full-width one
    ("lr", "0.00_1"),  # an underscore, as in Python literals
    ("lr", "1e-3\u00a0x"),
    ("lr", "0x1p-3"),
    ("batch_size", "\u0661\u0662\u0668"),  # Arabic-Indic 128
    ("batch_size", "1_28"),
    ("batch_size", "128.0000000000000001"),  # float() rounds it to 128.0
    ("batch_size", "128.0"),
    ("batch_size", "1e2"),
    ("epochs", "\uff15"),
    ("log_interval", "\u0967\u0966"),  # Devanagari 10
]


@pytest.mark.parametrize("name,raw", LENIENT)
def test_only_plain_ascii_numbers_are_accepted(name, raw):
    with pytest.raises(ConfigError, match=rf"^{name}: .*allowed: "):
        parse_value(name, raw, {"n_train": 60000})


@pytest.mark.parametrize("name,raw,value", [("lr", "3e-4", 3e-4), ("lr", "1E-3", 1e-3), ("lr", "+0.5", 0.5),
                                            ("lr", ".5", 0.5), ("lr", " 0.001 ", 1e-3), ("batch_size", "64", 64),
                                            ("batch_size", 64, 64), ("epochs", "+7", 7), ("lr", 2, 2.0)])
def test_plain_numbers_still_parse(name, raw, value):
    assert parse_value(name, raw, {"n_train": 60000}) == value


@pytest.mark.parametrize("raw", [10**400, -10**400, True, [1], {"a": 1}, 2.5],
                         ids=["1e400", "-1e400", "true", "list", "dict", "2.5"])
def test_json_values_outside_the_rules_are_refused_not_raised(raw):
    for name in ("lr", "batch_size", "epochs", "log_interval"):
        if name == "lr" and raw == 2.5:
            continue  # a real number in range
        with pytest.raises(ConfigError):
            parse_value(name, raw, {"n_train": 60000})


def test_the_controller_answers_a_huge_json_integer_with_a_verdict():
    ctl = Controller()
    for name in ("lr", "batch_size", "epochs", "log_interval"):
        cmd = ctl.submit(name, 10**400, source="panel")
        assert not cmd.accepted and cmd.message.startswith(f"rejected: {name}: "), cmd.message
        assert len(cmd.message) < 300  # the 401 digits are not echoed whole
    assert len(ctl.drain()) == 4


def test_a_long_value_is_shown_shortened_in_the_verdict():
    with pytest.raises(ConfigError) as err:
        parse_value("lr", "x" * 100_000)
    assert len(str(err.value)) < 250 and "100000 characters" in str(err.value)


@pytest.mark.parametrize("name", ["run-1", "mnist-mlp-lr0.001-bs128-20261124-101500", "a", "A_b.c-d", "x" * 100])
def test_good_names_pass(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "../../x", "team/a", "a\\b", "bob's run & co", "cmp'", "<b>",
                                  'a"b', "x" * 101, "x" * 300, "-lead", ".hidden", "caf\u00e9", "a b", "a+b", "a\nb"])
def test_bad_names_are_refused_with_what_is_allowed(name):
    with pytest.raises(ConfigError, match="allowed: 1 to 100 of the characters"):
        check_name(name)
    with pytest.raises(ConfigError):
        TrainConfig(name=name).validate()
    with pytest.raises(ConfigError):
        TrainConfig(env=name).validate()


@pytest.mark.parametrize("flag,value", [("--name", "../../x"), ("--env", "bob's run & co"), ("--env", "team/a"),
                                        ("--env", "e" * 300), ("--name", "a b")])
def test_train_refuses_a_bad_name_with_exit_2_and_writes_nothing(tmp_path, capsys, flag, value):
    runs = tmp_path / "runs"
    code = main(["train", "--no-visdom", "--runs-dir", str(runs), flag, value])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "allowed: 1 to 100 of the characters" in err, err
    assert not runs.exists() and not (tmp_path / "x").exists()


def test_a_run_named_after_its_out_folder_must_have_a_good_name(tmp_path, capsys):
    code = main(["train", "--no-visdom", "--out", str(tmp_path / "my run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--name" in err and len(err.splitlines()) == 1, err


def test_compare_and_sweep_refuse_bad_names(tmp_path, capsys):
    assert main(["compare", str(tmp_path), "--env", "cmp'"]) == 2
    err = capsys.readouterr().err.strip()
    assert "allowed: 1 to 100 of the characters" in err and len(err.splitlines()) == 1, err
    assert main(["sweep", "--runs-dir", str(tmp_path / "runs"), "--name", "sw/../x", "--lr", "1e-3"]) == 2
    assert "allowed: 1 to 100" in capsys.readouterr().err
    # a sweep whose run names would be too long is refused before anything starts
    assert main(["sweep", "--runs-dir", str(tmp_path / "runs"), "--name", "s" * 95, "--lr", "1e-3,3e-4"]) == 2
    assert "allowed: 1 to 100" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_huge_number_from_the_page_reaches_events_jsonl_without_a_traceback(tmp_path):
    """A real `vae-visdom train` process with a control command typed as a JSON integer of 401 digits
    (sent over the panel's own path: the Controller) is answered and recorded; stderr has no traceback."""
    script = (
        "import sys, threading\n"
        "from tests.builders import make_session\n"
        f"s = make_session({str(tmp_path / 'run')!r}, progress=True, epochs=1, batch_size=64)\n"
        "s.controller.submit('lr', 10**400)\n"
        "s.controller.submit('batch_size', '\\u0661\\u0662\\u0668')\n"
        "print(s.run().state)\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "finished" in proc.stdout, proc.stderr
    assert "Traceback" not in proc.stderr and "OverflowError" not in proc.stderr
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert [(e["name"], e["accepted"]) for e in events] == [("lr", False), ("batch_size", False)]
    assert events[0]["message"].startswith("rejected: lr: ")
