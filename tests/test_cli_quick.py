"""The quick command line: no torch for --help, `train --help` and `runs`; every command that does not need
visdom works when visdom is missing or refuses to import, and the ones that need it say so in one line."""
import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vae_visdom import cli
from vae_visdom.serve import assets, compat
from vae_visdom.serve.net import find_free_port

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "visdom", "tornado", "numpy")


def run_py(code: str, env: dict | None = None, timeout: float = 300):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_building_the_parser_and_the_light_commands_import_no_torch(tmp_path):
    code = f"""
import sys
from vae_visdom.cli import build_parser, main
build_parser()
print("after-parser", sorted(m for m in {HEAVY!r} if m in sys.modules))
for argv in (["--help"], ["train", "--help"]):
    try:
        main(argv)
    except SystemExit:
        pass
print("after-help", sorted(m for m in {HEAVY!r} if m in sys.modules))
main(["runs", "--runs-dir", {str(tmp_path)!r}])
print("after-runs", sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    proc = run_py(code)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("after-")]
    assert lines == ["after-parser []", "after-help []", "after-runs []"], proc.stdout


def test_runs_lists_a_run_without_torch(tmp_path):
    run = tmp_path / "r1"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "mlp", "dataset": "mnist", "lr": 1e-3, "batch_size": 128,
                                                 "epochs": 2, "optimizer": "adam", "latent_dim": 20}))
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": 130.0, "test_loss": 120.5}) + "\n")
    proc = run_py(f"import sys; from vae_visdom.cli import main; main(['runs', '--runs-dir', {str(tmp_path)!r}]); "
                  "print('torch' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert "r1" in proc.stdout and "120.5" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "False"


def test_every_model_of_the_one_table_builds_and_the_flags_list_each_with_its_help():
    from vae_visdom import train_command
    from vae_visdom.models import MODEL_SPECS, build_model

    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    help_text = " ".join(parser.format_help().split())
    for name, spec in MODEL_SPECS.items():
        assert f"{name}: {spec.help}" in help_text
        size = spec.image_size or 28
        model = build_model(name, (1, size, size), 4, 16, "bernoulli")
        assert model.latent_dim == 4 and model.image_shape == (1, size, size)


def test_every_command_of_the_table_is_listed_with_its_help_and_has_a_handler():
    listed = cli.build_parser([]).format_help()
    for command in cli.COMMANDS:
        assert command.name in listed and " ".join(command.help.split()[:3]) in " ".join(listed.split())
        module = importlib.import_module(command.module)
        assert callable(module.add_arguments) and callable(module.run), command.name
    assert [c.name for c in cli.COMMANDS] == ["train", "serve", "assets", "data", "replay", "eval", "runs", "compare",
                                              "home", "sweep", "animate"]


def test_only_the_command_given_gets_its_arguments():
    args = cli.build_parser(["eval"]).parse_args(["eval", "runs/x", "--iw-samples", "10"])
    assert args.command == "eval" and args.run_dir == "runs/x" and callable(args.run)
    with pytest.raises(SystemExit):  # runs' parser was never given eval's flags
        cli.build_parser(["runs"]).parse_args(["runs", "--iw-samples", "10"])


@pytest.fixture
def refusing_visdom(tmp_path):
    """A `visdom` package that does what visdom 0.3.0 does below Python 3.12: raise RuntimeError on import."""
    pkg = tmp_path / "fake" / "visdom"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('raise RuntimeError("Visdom requires Python 3.12 or newer.")\n')
    (pkg / "VERSION").write_text("0.3.0\n")
    return {"PYTHONPATH": f"{tmp_path / 'fake'}{os.pathsep}{REPO}"}


def vae(args: list[str], env: dict, timeout: float = 600):
    return subprocess.run([sys.executable, "-m", "vae_visdom", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, env={**os.environ, **env})


def test_without_a_usable_visdom_the_other_commands_work(refusing_visdom, tmp_path):
    env = refusing_visdom
    assert vae(["--help"], env).returncode == 0
    proc = vae(["runs", "--runs-dir", str(tmp_path)], env)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    proc = vae(["assets", "check", "--static-dir", str(tmp_path / "static")], env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "missing" in proc.stdout
    proc = vae(["train", "--no-visdom", "--epochs", "1", "--no-views", "--out", str(tmp_path / "run")], env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "checkpoint.pt").exists() and "Epoch: 1" in proc.stderr


@pytest.mark.parametrize("args", [["replay", "runs/x"], ["compare", "runs/x"], ["serve", "--port", "0"]])
def test_without_a_usable_visdom_the_commands_that_need_it_say_so_in_one_line(refusing_visdom, tmp_path, args):
    if args[0] == "serve":
        args = ["serve", "--port", str(find_free_port("127.0.0.1")), "--env-path", str(tmp_path / "envs")]
    proc = vae(args, refusing_visdom, timeout=120)
    err = proc.stderr.strip()
    assert proc.returncode in (1, 2) and len(err.splitlines()) == 1, err
    assert "needs visdom" in err and "Python 3.12" in err and "0.2.4" in err and "0.3.0" in err


def test_an_unknown_visdom_version_is_a_clear_error_and_writes_nothing(tmp_path):
    with pytest.raises(compat.UnsupportedVisdom) as exc:
        compat.manifest_path("0.9.9")
    assert "visdom 0.9.9 is installed" in str(exc.value) and "0.2.4" in str(exc.value) and "0.3.0" in str(exc.value)
    pkg = tmp_path / "fake" / "visdom"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "VERSION").write_text("0.9.9\n")
    proc = vae(["assets", "install", "--static-dir", str(tmp_path / "static")],
               {"PYTHONPATH": f"{tmp_path / 'fake'}{os.pathsep}{REPO}"})
    err = proc.stderr.strip()
    assert proc.returncode == 1 and len(err.splitlines()) == 1, err
    assert "visdom 0.9.9 is installed" in err and "visdom 0.2.4" in err and "visdom 0.3.0" in err
    assert not (tmp_path / "static").exists()


def test_one_manifest_per_supported_visdom_version():
    for version in compat.SUPPORTED:
        manifest = assets.load_manifest(version)
        assert manifest["visdom"] == version
    old, new = assets.load_manifest("0.2.4")["packages"], assets.load_manifest("0.3.0")["packages"]
    assert set(old) - set(new) == {"react-resizable@1.4.6", "react-grid-layout@0.16.3", "mathjax@2.7.5"}
    assert set(new) - set(old) == {"react-resizable@3.1.3", "react-grid-layout@2.2.3", "mathjax@3.2.2"}
    assert new["mathjax@3.2.2"]["files"] == {"package/es5/tex-mml-svg.js": ["js/mathjax/3.2.2/es5/tex-mml-svg.js"]}
    assert assets.load_manifest()["visdom"] == compat.installed_version()


def test_the_server_process_never_loads_torch(tmp_path):
    port = find_free_port("127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-m", "vae_visdom", "serve", "--port", str(port), "--env-path",
                             str(tmp_path / "envs"), "--runs-dir", str(tmp_path / "runs")], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from tests.fixtures import until
        from vae_visdom.serve.net import server_answers

        until(lambda: server_answers("127.0.0.1", port, timeout=0.5) or proc.poll() is not None, "server up", 60)
        assert proc.poll() is None
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "libtorch" not in maps and "torch/_C" not in maps
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize("module", ["home", "home_table", "home_form", "compare", "family", "population", "rebuild",
                                    "replay", "browse", "log_screen"])
def test_the_pages_wing_never_imports_torch(module):
    """pages/ is built from run folders: the runs home's process must stay light (torch is blocked here)."""
    proc = run_py(f"import sys; from vae_visdom.serve import compat; compat.without_torch(); "
                  f"import vae_visdom.pages.{module}; print('torch' in sys.modules)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"
