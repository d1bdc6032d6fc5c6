"""The visdom server and its offline UI files: real servers on free loopback ports, a real Chromium."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures import REPO, screenshot, wait_for
from vae_visdom.serve import assets
from vae_visdom.serve import server as server_module
from vae_visdom.serve.net import find_free_port, server_answers

# a proxy nobody listens on: if anything in the server tried the web through urllib/requests, it would fail
NO_WEB = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
          "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}


def run_server_cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vae_visdom.serve.server", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.read()


# ---- assets ---------------------------------------------------------------------------------------

def test_assets_missing_lists_every_ui_file_of_an_empty_static_dir(tmp_path):
    gone = assets.missing(tmp_path)
    targets = {t for p in assets.load_manifest()["packages"].values() for ts in p["files"].values() for t in ts}
    assert set(gone) == targets | {"version.built"}
    # the files visdom's download_scripts checks by name, including the literal '#' one (MathJax: the version's)
    mathjax = {"0.2.4": "js/mathjax/2.7.5/MathJax.js", "0.3.0": "js/mathjax/3.2.2/es5/tex-mml-svg.js"}
    assert {"js/plotly-plotly.min.js", mathjax[assets.visdom_version()], "fonts/classnames",
            "fonts/glyphicons-halflings-regular.svg#glyphicons_halflingsregular"} <= set(gone)


def test_assets_check_cli_exits_1_and_lists_missing_files(tmp_path):
    out = subprocess.run([sys.executable, "-m", "vae_visdom.serve.assets", "check", "--static-dir", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "js/jquery.min.js" in out.stdout and "version.built" in out.stdout


def test_installed_visdom_has_every_ui_file_and_needs_no_npm_to_reinstall(monkeypatch, tmp_path):
    assert assets.missing() == [], "run `vae-visdom assets install` (scripts/setup.sh does)"
    assert (assets.default_static_dir() / "version.built").read_text() == assets.visdom_version()
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on PATH: a second install must not need it
    assets.install()


def test_assets_install_without_npm_is_a_clear_error_and_writes_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(assets.AssetError, match="npm not found"):
        assets.install(tmp_path / "static")
    assert not (tmp_path / "static").exists() or not any((tmp_path / "static").rglob("*"))


def test_assets_install_reports_an_unreachable_registry_within_seconds(monkeypatch, tmp_path):
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))  # empty cache: npm must go online
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    t0 = time.monotonic()
    with pytest.raises(assets.AssetError, match="npm pack .* failed"):
        assets.install(tmp_path / "static", quiet=True)
    assert time.monotonic() - t0 < 30  # npm's default retries take ~3.5 minutes here
    assert not any((tmp_path / "static").rglob("*.js"))


def test_assets_install_refuses_a_tarball_whose_sha512_differs(tmp_path):
    manifest = assets.load_manifest()
    pkg = dict(manifest["packages"]["classnames@2.2.5"])  # the smallest tarball (6 kB)
    pkg["integrity"] = assets.sri_sha512(b"not the published tarball")
    with pytest.raises(assets.AssetError, match="integrity mismatch for classnames@2.2.5"):
        assets.install(tmp_path, manifest={"packages": {"classnames@2.2.5": pkg}}, quiet=True)
    assert list(tmp_path.iterdir()) == []


# ---- server ---------------------------------------------------------------------------------------

def test_server_serves_page_and_every_ui_file_without_the_web(visdom_server_factory):
    server = visdom_server_factory(env=NO_WEB)
    status, page = get(server.url + "/")
    assert status == 200 and b"<title>visdom</title>" in page
    targets = sorted({t for p in assets.load_manifest()["packages"].values() for ts in p["files"].values() for t in ts})
    for target in targets:
        status, body = get(f"{server.url}/static/{urllib.parse.quote(target)}")
        assert status == 200 and len(body) > 0, target
    for path in ("/static/js/main.js", "/static/css/style.css", "/user/style.css"):
        assert get(server.url + path)[0] == 200, path
    log = server.log_tail(200)
    assert "Downloading scripts" not in log and "Checking for scripts" not in log, log


def copy_of_visdom_without_ui_files(site: Path) -> Path:
    """A private copy of the installed visdom package whose UI files are gone (the shared one is left alone)."""
    import shutil

    src = assets.default_static_dir().parent
    names = {Path(t).name for p in assets.load_manifest()["packages"].values()
             for ts in p["files"].values() for t in ts}
    shutil.copytree(src, site / "visdom", ignore=lambda d, files: [f for f in files if f in names or f in
                                                                   ("version.built", "mathjax", "__pycache__")])
    return site


def test_server_with_missing_ui_files_and_no_npm_fails_fast_with_a_clear_error(tmp_path):
    site = copy_of_visdom_without_ui_files(tmp_path / "site")
    env = {**NO_WEB, "PYTHONPATH": str(site), "PATH": str(tmp_path / "no_npm_here")}
    t0 = time.monotonic()
    out = run_server_cli("--port", str(find_free_port()), "--env-path", str(tmp_path / "env"), env=env, timeout=60)
    assert out.returncode == 1, out.stderr
    assert "visdom UI files are missing" in out.stderr and "npm not found" in out.stderr
    assert time.monotonic() - t0 < 20  # an error, not a wait on a CDN


def test_server_installs_missing_ui_files_before_it_starts(visdom_server_factory, tmp_path):
    site = copy_of_visdom_without_ui_files(tmp_path / "site")
    static = site / "visdom" / "static"
    assert "js/plotly-plotly.min.js" in assets.missing(static)
    server = visdom_server_factory(env={"PYTHONPATH": str(site)}, timeout=120)  # npm needs its registry
    assert assets.missing(static) == []
    assert get(server.url + "/static/js/plotly-plotly.min.js")[1] == (static / "js/plotly-plotly.min.js").read_bytes()
    assert "Downloading scripts" not in server.log_tail(200)


def test_application_runs_without_tornado_debug_mode(tmp_path):
    app = server_module.make_application(tmp_path)
    # debug would turn on autoreload (the server re-execs itself when a .py file changes) and no caching
    assert app.settings["debug"] is False and not app.settings.get("autoreload")
    assert (tmp_path / "main.json").is_file()  # it is visdom's Application: it created the main env


def test_busy_port_is_exit_2_with_one_clear_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # through the real command line, `vae-visdom serve`
        out = subprocess.run([sys.executable, "-m", "vae_visdom", "serve", "--port", str(port), "--env-path",
                              str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {port}" in lines[0] and "already in use" in lines[0], out.stderr


def test_non_loopback_host_without_credentials_is_refused(tmp_path):
    env = {"VISDOM_USERNAME": "", "VISDOM_PASSWORD": ""}
    port = find_free_port()
    out = run_server_cli("--host", "0.0.0.0", "--port", str(port), "--env-path", str(tmp_path), env=env)
    assert out.returncode == 2
    assert "VISDOM_USERNAME" in out.stderr and "VISDOM_PASSWORD" in out.stderr and "127.0.0.1" in out.stderr
    assert not server_answers("127.0.0.1", port)


def test_login_mode_serves_the_login_page_and_admits_only_the_right_password(visdom_server_factory, tmp_path):
    creds = {"VISDOM_USERNAME": "alice", "VISDOM_PASSWORD": "s3cret", "HOME": str(tmp_path)}  # cookie secret in tmp
    server = visdom_server_factory(args=["--login"], env=creds)
    assert b"Visdom Login" in get(server.url + "/")[1]
    assert (tmp_path / ".visdom" / "COOKIE_SECRET").is_file()
    vis = server.client("login_env", username="alice", password="s3cret", use_incoming_socket=False)
    assert vis.check_connection()
    vis.text("hello", win="t")
    assert vis.win_exists("t")
    with pytest.raises(RuntimeError, match="Authentication failed"):  # visdom's own refusal, not any error
        server.client("login_env", username="alice", password="wrong", use_incoming_socket=False).text("x")


def test_sigterm_saves_envs_and_sigkill_does_not(visdom_server):
    vis = visdom_server.client("sigterm_env", use_incoming_socket=False)
    vis.line(X=np.arange(5), Y=np.arange(5) ** 2, win="loss", opts={"title": "loss"})
    assert visdom_server.stop() == 0
    saved = json.loads((visdom_server.env_path / "sigterm_env.json").read_text())
    assert "loss" in saved["jsons"]

    visdom_server.start()
    vis = visdom_server.client("sigterm_env", use_incoming_socket=False)
    assert vis.win_exists("loss")
    assert json.loads(vis.get_window_data("loss", env="sigterm_env"))["content"]["data"][0]["y"] == [0, 1, 4, 9, 16]

    # the contrast that shows the save is ours: a SIGKILLed server loses what it held in memory
    vis.text("lost", win="unsaved")
    visdom_server.kill()
    visdom_server.start()
    vis = visdom_server.client("sigterm_env", use_incoming_socket=False)
    assert vis.win_exists("loss") and not vis.win_exists("unsaved")


def test_ctrl_c_saves_envs_too(visdom_server):
    visdom_server.client("ctrl_c_env", use_incoming_socket=False).text("kept", win="note")
    visdom_server.proc.send_signal(signal.SIGINT)
    assert visdom_server.proc.wait(15) == 0
    assert "note" in json.loads((visdom_server.env_path / "ctrl_c_env.json").read_text())["jsons"]


def test_detach_returns_0_when_a_server_already_answers(visdom_server):
    out = run_server_cli("--port", str(visdom_server.port), "--detach", timeout=30)
    assert out.returncode == 0 and "already answers" in out.stdout
    assert visdom_server.proc.poll() is None


def test_detach_starts_a_background_server_that_outlives_the_command(tmp_path):
    port = find_free_port()
    out = run_server_cli("--port", str(port), "--env-path", str(tmp_path / "env"), "--detach",
                         "--log", str(tmp_path / "server.log"), timeout=60)
    assert out.returncode == 0, out.stderr
    pid = int(re.search(r"pid (\d+)", out.stdout).group(1))
    try:
        assert f"http://127.0.0.1:{port}" in out.stdout
        assert server_answers("127.0.0.1", port)
        assert os.getsid(pid) == pid  # its own session: the caller's Ctrl-C does not reach it
    finally:
        os.kill(pid, signal.SIGTERM)


def test_two_detach_commands_at_the_same_moment_one_starts_the_other_says_it_lost(tmp_path):
    """Two `serve --detach` at once on one port and env folder both printed "started", though one server had
    already exited 2. The loser now says it lost, naming the winner, and exits non-zero."""
    port = find_free_port()
    cmd = [sys.executable, "-m", "vae_visdom.serve.server", "--port", str(port), "--env-path", str(tmp_path / "env"),
           "--runs-dir", str(tmp_path / "runs"), "--no-home", "--detach"]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=90) for p in procs]
    said = sorted(((p.returncode, (o + e).strip()) for p, (o, e) in zip(procs, outs)), key=lambda r: r[0])
    pids = [int(m) for _, text in said for m in re.findall(r"pid (\d+)", text)]
    try:
        (won, won_text), (lost, lost_text) = said
        assert won == 0 and won_text.startswith(f"visdom server started at http://127.0.0.1:{port} (pid "), said
        winner = int(re.search(r"pid (\d+)", won_text).group(1))
        assert lost != 0 and len(lost_text.splitlines()) == 1, said
        assert lost_text.startswith("error: lost the race: another vae-visdom server started at the same moment "
                                    f"answers at http://127.0.0.1:{port} (pid {winner}, "), said
        assert server_answers("127.0.0.1", port)
    finally:
        for pid in set(pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


# ---- browser --------------------------------------------------------------------------------------

def test_chromium_renders_a_line_plot_and_an_image_from_the_offline_files(visdom_server, browser, tmp_path):
    vis = visdom_server.client("smoke", use_incoming_socket=False)
    x = np.linspace(0, 6, 50)
    vis.line(X=np.stack([x, x], 1), Y=np.stack([np.sin(x), np.cos(x)], 1), win="curve",
             opts={"title": "line plot", "legend": ["sin", "cos"]})
    yy, xx = np.mgrid[0:28, 0:28]
    digits = np.stack([((xx - 14) ** 2 + (yy - 14) ** 2 < r * r).astype(np.float32) for r in range(3, 19)])
    vis.images(digits[:, None], nrow=8, win="grid", opts={"title": "image grid", "width": 300, "height": 120})

    browser.get(f"{visdom_server.url}/env/smoke")
    traces = wait_for(browser, ".js-plotly-plot .scatterlayer .trace", min_count=2)
    assert all(t.find_elements("css selector", "path.js-line") for t in traces)
    img = wait_for(browser, "img.content-image")[0]
    wait_for(browser, "img.content-image[src^='data:image']")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0
    # every library the page loads defined its global: nothing fell back to a CDN or failed
    assert browser.execute_script("return [typeof Plotly, typeof jQuery, typeof React, typeof MathJax, typeof d3]"
                                  ) == ["object", "function", "object", "object", "object"]
    screenshot(browser, tmp_path / "server_smoke.png")
    if os.environ.get("VAE_VISDOM_DOCS_IMG"):  # set when refreshing docs/img/
        screenshot(browser, Path(os.environ["VAE_VISDOM_DOCS_IMG"]) / "server_smoke.png")


def test_compare_view_answers_without_a_home_visdom_folder_and_merges_in_any_order(visdom_server_factory, tmp_path):
    # visdom 0.2.4 lists ~/.visdom for /compare/ and answers 500 where it is missing; ours uses the env path
    home = tmp_path / "empty-home"
    home.mkdir()
    server = visdom_server_factory(env={"HOME": str(home)})
    for env, ys in (("cmp_b", [3, 2, 1]), ("cmp_a", [1, 2, 3])):
        vis = server.client(env, use_incoming_socket=False)
        vis.line(X=np.arange(3), Y=np.array(ys), win=f"{env}_loss", opts={"title": "loss"})
    status, body = get(server.url + "/compare/cmp_b+cmp_a")
    assert status == 200 and b"<html" in body.lower()
    assert not (home / ".visdom").exists()
