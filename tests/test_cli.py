"""The command line: bad input is exit status 2 and one line saying what is wrong and what is allowed."""
import subprocess
import sys

import pytest

from vae_visdom.cli import main


def run_cli(*args, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "vae_visdom", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=900)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("args,expected", [
    (["--lr", "-1"], "allowed: a number in (0, 10]"),
    (["--lr", "0"], "allowed: a number in (0, 10]"),
    (["--lr", "abc"], "is not a number"),
    (["--batch-size", "0"], "allowed: a whole number from 1"),
    (["--epochs", "2.5"], "is not a whole number"),
    (["--dataset", "imagenet"], "invalid choice: 'imagenet'"),
    (["--model", "resnet"], "invalid choice: 'resnet'"),
    (["--optimizer", "lbfgs"], "invalid choice"),
])
def test_bad_flags_exit_2_with_one_line(args, expected, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--no-visdom", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert expected in err


def test_missing_data_dir_is_exit_2(tmp_path, capsys):
    code = main(["train", "--no-visdom", "--data-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "does not exist" in err and str(tmp_path / "nope") in err


def test_unwritable_output_dir_is_exit_2(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = main(["train", "--no-visdom", "--out", str(blocker / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "not writable" in err and "--out" in err


def test_folder_dataset_without_data_dir_is_exit_2(capsys):
    code = main(["train", "--no-visdom", "--dataset", "folder"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "needs --data-dir" in err


def test_batch_size_larger_than_the_training_set_is_exit_2(tmp_path, capsys, mnist):
    code = main(["train", "--no-visdom", "--batch-size", "60001", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "larger than the training set (60000 examples)" in err


def test_resume_of_a_folder_that_is_no_run_is_exit_2(tmp_path, capsys):
    code = main(["train", "--no-visdom", "--resume", str(tmp_path)])
    assert code == 2 and "not a run directory" in capsys.readouterr().err


def test_help_lists_every_subcommand():
    code, out, _ = run_cli("--help")
    assert code == 0
    for sub in ("train", "serve", "data", "assets"):
        assert sub in out
    code, out, _ = run_cli("train", "--help")
    assert code == 0 and "--resume" in out and "--no-visdom" in out


def test_one_epoch_on_real_mnist_writes_every_run_file(tmp_path):
    import json

    from PIL import Image

    code, out, err = run_cli("train", "--no-visdom", "--epochs", "1", "--out", str(tmp_path / "run"))
    assert code == 0, err
    run = tmp_path / "run"
    for name in ("config.json", "metrics.jsonl", "steps.jsonl", "status.json", "checkpoint.pt",
                 "reconstruction_1.png", "sample_1.png"):
        assert (run / name).exists(), name
    (row,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for key in ("epoch", "train_loss", "test_loss", "train_recon", "train_kl", "test_recon", "test_kl", "lr",
                "batch_size", "seconds"):
        assert key in row, key
    assert 120.0 < row["test_loss"] < 135.0, row  # the seed reports 127.6 after one epoch
    assert abs(row["test_recon"] + row["test_kl"] - row["test_loss"]) < 1e-3
    assert Image.open(run / "reconstruction_1.png").size == (242, 62)  # 2 rows of 8, as the seed saves
    assert Image.open(run / "sample_1.png").size == (242, 242)  # 8x8 samples
    assert "====> Epoch: 1 Average loss:" in err and "Test set loss:" in err
    assert json.loads((run / "config.json").read_text())["lr"] == 1e-3


def test_two_epochs_equal_one_plus_resume_on_real_mnist(tmp_path):
    import torch

    assert run_cli("train", "--no-visdom", "--epochs", "2", "--out", str(tmp_path / "a"))[0] == 0
    assert run_cli("train", "--no-visdom", "--epochs", "1", "--out", str(tmp_path / "b"))[0] == 0
    code, _, err = run_cli("train", "--no-visdom", "--resume", str(tmp_path / "b"), "--epochs", "2")
    assert code == 0, err
    a = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    b = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()

    def strip(rows):
        return [{k: v for k, v in __import__("json").loads(r).items() if "second" not in k} for r in rows]

    assert strip(a) == strip(b)
    wa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
