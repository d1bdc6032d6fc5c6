"""The server's doors: no framing by another origin (24.1), a run folder is data never code (24.2),
bad env files and odd messages refused with one line (24.4), compare and the family view under login (24.8).

Real servers on free loopback ports, real headless Chromium, real files."""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websocket

from tests.fixtures import REPO, until, wait_for
from tests.test_security_server import PageServer, live_run, page_socket, request, windows_of
from vae_visdom.serve import compat

CREDS = {"VISDOM_USERNAME": "alice", "VISDOM_PASSWORD": "s3cret"}


def get(server, path: str, headers: dict | None = None) -> http.client.HTTPResponse:
    """One raw GET; the response is read (headers and body) before the connection closes."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        resp.body = resp.read()
        return resp
    finally:
        conn.close()


def login_server(factory, tmp_path: Path, **kw):
    return factory(args=["--login", *kw.pop("args", [])], env={**CREDS, "HOME": str(tmp_path)}, **kw)


# ---- 24.1: no framing ---------------------------------------------------------------------------------

def assert_no_framing(resp, what: str) -> None:
    csp = resp.getheader("Content-Security-Policy") or ""
    assert "frame-ancestors 'self'" in csp or "frame-ancestors 'none'" in csp, (what, resp.status, csp)
    assert (resp.getheader("X-Frame-Options") or "").upper() in ("SAMEORIGIN", "DENY"), (what, resp.status)


def test_24_1_every_kind_of_response_forbids_framing_by_another_origin(visdom_server_factory, tmp_path):
    server = visdom_server_factory()
    server.client("framed", use_incoming_socket=False).text("x", win="w")
    # visdom 0.3 answers /env/NAME with 404 until the env has a window: the home draws its panes within seconds
    until(lambda: get(server, "/env/runs").status == 200, "the runs home's env", 60)
    cases = {
        "the index page": ("/", 200), "an env page": ("/env/framed", 200), "the runs home": ("/env/runs", 200),
        "the compare view": ("/compare/framed+main", 200), "a static file": ("/static/js/main.js", 200),
        "our info endpoint": ("/vae_visdom/server", 200), "a user css": ("/user/style.css", 200),
        "a bad env id (400)": ("/env/..%2Fx", 400), "an unknown static file (404)": ("/static/nope.js", 404),
        "visdom's error page": ("/error/boom", 500 if compat.is_old_visdom() else 400),  # 0.3: no such status
    }
    for what, (path, status) in cases.items():
        resp = get(server, path)
        assert resp.status == status, (what, resp.status, resp.body[:200])
        assert_no_framing(resp, what)
    refused = get(server, "/", {"Host": "evil.example"})
    assert refused.status == 403
    assert_no_framing(refused, "a refusal (403)")
    ws = page_socket(server)  # the websocket handshake's 101 says it too
    try:
        assert "frame-ancestors 'self'" in (ws.getheaders() or {}).get("content-security-policy", "")
    finally:
        ws.close()


def test_24_1_login_page_forbids_framing_and_the_login_cookie_is_samesite_strict(visdom_server_factory, tmp_path):
    server = login_server(visdom_server_factory, tmp_path)
    page = get(server, "/")
    assert page.status == 200 and b"login" in page.body.lower()
    assert_no_framing(page, "the login page")
    assert_no_framing(get(server, "/env/x"), "an env page without login")
    import hashlib

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    body = json.dumps({"username": "alice", "password": hashlib.sha256(b"s3cret").hexdigest()})
    conn.request("POST", "/", body=body, headers={"Origin": server.url})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 200
    cookie = resp.getheader("Set-Cookie") or ""
    assert cookie.startswith("user_password=") and "samesite=strict" in cookie.lower(), cookie
    assert_no_framing(resp, "the login POST")


FRAMING_PAGE = """<!doctype html><html><body style="margin:0">
<button id="decoy" style="position:absolute;left:0;top:0;width:1400px;height:1000px">win a prize</button>
<iframe id="app" src="%(src)s" style="position:absolute;left:0;top:0;width:1400px;height:1000px;border:0;
 opacity:0.01;z-index:2"></iframe></body></html>"""


def button_centre(browser, label: str) -> tuple[int, int]:
    """Viewport coordinates of the middle of the properties-pane button reading `label`."""
    from selenium.webdriver.common.by import By

    def find():
        found = [b for b in browser.find_elements(By.CSS_SELECTOR, ".content-properties button")
                 if b.text.strip() == label]
        return found[0] if found else None

    # the runs home is a process of its own, started with the server: on a loaded 2-core machine under
    # visdom 0.3.0 its page took over 30 s to show its Start button (a compat run of 2026-12-02)
    button = until(find, f"the {label} button", timeout=90)
    r = browser.execute_script("const r = arguments[0].getBoundingClientRect();"
                               "return [Math.round(r.left + r.width / 2), Math.round(r.top + r.height / 2)];",
                               button)
    return r[0], r[1]


def click_at(browser, x: int, y: int) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    actions = ActionBuilder(browser)
    actions.pointer_action.move_to_location(x, y).click()
    actions.perform()
    ActionChains(browser).reset_actions()


def frame_shows_the_app(browser) -> bool:
    """Inside the (only) iframe: does it hold visdom's page? A refused frame holds Chromium's error page."""
    from selenium.webdriver.common.by import By

    browser.switch_to.frame(browser.find_element(By.ID, "app"))
    try:
        return bool(browser.find_elements(By.CSS_SELECTOR, "#app .navbar, .react-grid-layout, .layout"))
    finally:
        browser.switch_to.default_content()


@pytest.mark.slow
def test_24_1_a_page_on_another_port_cannot_frame_the_app_and_click_start_fork_or_stop(visdom_server_factory,
                                                                                        browser, tmp_path):
    server = visdom_server_factory()
    runs = server.env_path.parent / "runs"
    with live_run(server, tmp_path, env="framed-run") as session:
        m = session.monitor
        # where a person sees Stop and Fork on the run's own page, and Start on the runs home
        browser.get(f"{server.url}/env/framed-run")
        stop_at, fork_at = button_centre(browser, "Stop"), button_centre(browser, "Fork")
        browser.get(f"{server.url}/env/runs")
        start_at = button_centre(browser, "Start")
        runs_before = sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []
        for env, spots in (("framed-run", (fork_at, stop_at)), ("runs", (start_at,))):
            page = PageServer(FRAMING_PAGE % {"src": f"{server.url}/env/{env}"})
            try:
                browser.get(page.url)
                time.sleep(3)  # the frame's page (or its refusal) has loaded
                framed = frame_shows_the_app(browser)
                for x, y in spots:
                    click_at(browser, x, y)
                    time.sleep(1)
            finally:
                page.close()
            assert session.trainer.state == "paused" and not session.controller.stop_requested, \
                f"a click through the frame of /env/{env} reached the run"
            assert not framed, f"/env/{env} was shown inside a page of another origin"
        time.sleep(1)
        assert not session.controller.stop_requested
        assert m.windows["control"] in windows_of(server, "framed-run")
        runs_after = sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []
        assert runs_after == runs_before, "a click through the frame started or forked a run"


# ---- 24.4: bad env files, the info endpoint, save_layouts --------------------------------------------

def socket_loads(server, eid: str) -> list:
    """What a page's websocket receives after asking for env `eid` (its windows), or fails."""
    ws = page_socket(server)
    try:
        sid = json.loads(ws.recv())["data"]  # register: its sid
        status, body = request(server, "POST", f"/env/{eid}", {"sid": sid})  # how the page asks for an env
        assert status == 200, body
        got, deadline = [], time.monotonic() + 5
        ws.settimeout(1)
        while time.monotonic() < deadline:
            try:
                got.append(json.loads(ws.recv()))
            except websocket.WebSocketTimeoutException:
                break
        return got
    finally:
        ws.close()


def env_json(text: str) -> str:
    return json.dumps({"jsons": {"w": {"command": "window", "id": "w", "title": text, "type": "text",
                                       "content": text, "contentID": "c", "width": 300, "height": 200,
                                       "i": 1}}, "reload": {}})


def test_24_4_an_env_file_that_links_out_of_the_env_folder_is_skipped_with_one_line(visdom_server_factory,
                                                                                        tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text(env_json("secret outside"))
    server = visdom_server_factory(start=False)
    server.env_path.mkdir(parents=True)
    (server.env_path / "good.json").write_text(env_json("good env"))
    (server.env_path / "linked.json").symlink_to(outside / "secret.json")
    server.start()
    page = get(server, "/env/good")
    assert page.status == 200 and b"linked" not in page.body
    got = socket_loads(server, "good")
    assert any(w.get("content") == "good env" for w in got), got
    assert get(server, "/env/linked").status in (200, 404)
    assert not any("secret outside" in json.dumps(w) for w in socket_loads(server, "linked"))
    lines = [ln for ln in server.log_tail(400).splitlines() if "linked" in ln and "env file skipped" in ln]
    assert len(lines) == 1 and "outside the env folder" in lines[0], lines  # said once, also when read on demand
    assert "Traceback" not in server.log_tail(400)
    assert server.stop() == 0
    assert (outside / "secret.json").read_text() == env_json("secret outside")


def test_24_4_an_env_file_named_with_a_backslash_is_skipped_and_every_page_still_works(visdom_server_factory,
                                                                                          browser):
    server = visdom_server_factory(start=False)
    server.env_path.mkdir(parents=True)
    (server.env_path / "good.json").write_text(env_json("good env"))
    (server.env_path / "bad\\name.json").write_text(env_json("from another tool"))
    server.start()
    page = get(server, "/env/good")
    assert page.status == 200 and b"bad\\\\name" not in page.body and b"bad\\name" not in page.body
    browser.get(f"{server.url}/env/good")
    wait_for(browser, ".content-text", timeout=30)
    assert "good env" in browser.page_source
    lines = [ln for ln in server.log_tail(400).splitlines() if "bad\\\\name" in ln or "bad\\name" in ln]
    assert len(lines) == 1 and "skipped" in lines[0], lines
    assert "Traceback" not in server.log_tail(400)


def test_24_4_the_info_endpoint_answers_403_without_login_in_one_line(visdom_server_factory, tmp_path):
    server = login_server(visdom_server_factory, tmp_path)
    resp = get(server, "/vae_visdom/server")
    assert resp.status in (401, 403), (resp.status, resp.body)
    assert b"env_path" not in resp.body
    time.sleep(0.3)
    log = server.log_tail(200)
    assert "Traceback" not in log, log
    assert len([ln for ln in log.splitlines() if "/vae_visdom/server" in ln]) == 1, log


def test_24_4_save_layouts_with_data_that_is_no_layout_keeps_the_layouts_file(visdom_server_factory):
    server = visdom_server_factory()
    layouts = server.env_path / "view" / "layouts.json"
    ws = page_socket(server)
    try:
        ws.recv()
        ws.send(json.dumps({"cmd": "save_layouts", "data": json.dumps({"main": {"mine": {}}})}))
        until(lambda: layouts.is_file() and "mine" in layouts.read_text(), "the good layouts to be saved")
        for bad in (5, None, [1, 2], True):
            ws.send(json.dumps({"cmd": "save_layouts", "data": bad}))
        time.sleep(0.5)
    finally:
        ws.close()
    assert json.loads(layouts.read_text()) == {"main": {"mine": {}}}
    log = server.log_tail(400)
    assert "Traceback" not in log
    assert len([ln for ln in log.splitlines() if "refused websocket message save_layouts" in ln]) == 4, log


# ---- 24.8: compare and the family view under login ------------------------------------------------------

def finished_run(runs: Path, name: str, parent: Path | None = None) -> Path:
    """A run folder as a finished 2-epoch run leaves it (typed files only; no trainer needed)."""
    run = runs / name
    run.mkdir(parents=True)
    config = {"name": name, "env": name, "lr": 1e-3, "batch_size": 64, "epochs": 2, "dataset": "mnist",
              "model": "mlp"}
    if parent is not None:
        config["parent"] = str(parent)
        config["forked_at"] = {"epoch": 1, "step": 10}
    (run / "config.json").write_text(json.dumps(config))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "train_loss": 150.0 - e, "test_loss": 149.0 - e})
                                               + "\n" for e in (1, 2)))
    (run / "status.json").write_text(json.dumps({"state": "finished", "epoch": 2, "epochs": 2, "step": 20}))
    return run


@pytest.mark.slow
def test_24_8_compare_and_the_family_view_log_in_with_the_servers_credentials(visdom_server_factory, tmp_path):
    from vae_visdom.pages.family import FamilyView

    server = login_server(visdom_server_factory, tmp_path)
    runs = tmp_path / "runs"
    parent = finished_run(runs, "lr1")
    fork = finished_run(runs, "lr1-fork", parent=parent)
    out = subprocess.run([sys.executable, "-m", "vae_visdom", "compare", "lr1", "lr1-fork", "--runs-dir", str(runs),
                          "--port", str(server.port), "--env", "cmp-login"], cwd=REPO, capture_output=True,
                         text=True, timeout=120, env={**os.environ, **CREDS, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "PermissionError" not in out.stderr
    vis = server.client("cmp-login", username="alice", password="s3cret", use_incoming_socket=False)
    assert len(json.loads(vis.get_window_data(env="cmp-login"))) >= 3
    old = {k: os.environ.get(k) for k in CREDS}
    os.environ.update(CREDS)
    try:
        family = FamilyView(fork, "http://127.0.0.1", server.port)
        assert family.build()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert len(json.loads(vis.get_window_data(env=family.env))) >= 3


def test_24_8_a_sweeps_population_view_logs_in_with_the_servers_credentials(visdom_server_factory, tmp_path):
    """The population env of a sweep (compare-<sweep> with its table) was built without the login."""
    from vae_visdom.pages.population import PopulationView

    server = login_server(visdom_server_factory, tmp_path)
    runs = tmp_path / "runs"
    members = [finished_run(runs, "sw-1"), finished_run(runs, "sw-2")]
    old = {k: os.environ.get(k) for k in CREDS}
    os.environ.update(CREDS)
    try:
        view = PopulationView(lambda: members, "http://127.0.0.1", server.port, "compare-sw")
        built = view.build()
        view.close()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert built
    vis = server.client("compare-sw", username="alice", password="s3cret", use_incoming_socket=False)
    titles = {pane["title"] for pane in json.loads(vis.get_window_data(env="compare-sw")).values()}
    assert "population now" in " ".join(titles).lower(), titles


# ---- 24.2: a run folder is data, never code -------------------------------------------------------------

ONERROR = "<img src=x onerror=\"window.pwned=1;document.title='pwned'\">"
STYLED = '<b style="font-size:60px">styled</b>'


def hostile_folder(runs: Path, name: str, env: str, messages: list) -> Path:
    run = runs / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"name": name, "env": env}))
    (run / "visdom.log").write_text("".join(json.dumps(m) + "\n" for m in messages))
    return run


def text_msg(env: str, win: str, content: str, title: str = "run") -> list:
    return ["events", {"eid": env, "win": win, "data": [{"content": content, "type": "text"}],
                       "opts": {"title": title}}]


def legend_texts(browser) -> list[str]:
    return browser.execute_script("return [...document.querySelectorAll('.legendtext')].map(e => e.textContent)")


def no_script_ran(browser) -> None:
    assert browser.execute_script("return window.pwned === undefined") and browser.title != "pwned"


@pytest.mark.slow
def test_24_2_a_hostile_run_folder_never_runs_script_nor_writes_another_env_or_the_home(visdom_server_factory,
                                                                                          browser, tmp_path):
    from vae_visdom.pages.home import TABLE_WIN

    server = visdom_server_factory(start=False)
    runs = server.env_path.parent / "runs"
    victim_win = "victim-123abc-run"
    hostile_folder(runs, "hostile", "hostile", [
        text_msg("hostile", "hostile-abcdef-run", f"{ONERROR}<b>kept text</b><script>window.pwned=2</script>"),
        ["events", {"eid": "hostile", "win": "hostile-abcdef-loss", "data": [
            {"x": [1, 2], "y": [3, 4], "name": STYLED, "type": "scatter", "mode": "lines"}],
            "layout": {"title": {"text": STYLED}, "showlegend": True}, "opts": {"title": "loss"}}],
        text_msg("runs", TABLE_WIN, f"pwned home {ONERROR}", "runs"),
        text_msg("victim", victim_win, f"pwned victim {ONERROR}"),
        text_msg("hostile", victim_win, f"pwned victim {ONERROR}"),
    ])
    hostile_folder(runs, "homey", "runs", [text_msg("runs", TABLE_WIN, f"pwned home {ONERROR}", "runs")])
    hostile_folder(runs, "imposter", "victim", [text_msg("victim", victim_win, f"pwned victim {ONERROR}")])
    server.env_path.mkdir(parents=True)
    victim = {"jsons": {victim_win: {"command": "window", "id": victim_win, "title": "run", "type": "text",
                                     "content": "the victim's own", "contentID": "c", "width": 300, "height": 200,
                                     "i": 1}}, "reload": {}}
    (server.env_path / "victim.json").write_text(json.dumps(victim))
    os.utime(server.env_path / "victim.json", ns=(time.time_ns() - 10**10,) * 2)  # older than every log
    server.start()
    until(lambda: server.log_tail(400).count("catch-up: ") >= 1 + 2 * 3, "the catch-up of the three folders",
          timeout=120)
    browser.get(f"{server.url}/env/hostile")
    until(lambda: "kept text" in browser.page_source, "the hostile env's panes in the page", timeout=30)
    until(lambda: legend_texts(browser), "the plot's legend")
    time.sleep(1)
    no_script_ran(browser)
    assert STYLED in legend_texts(browser), legend_texts(browser)  # shown as text, not as markup
    for env in ("victim", "runs"):
        browser.get(f"{server.url}/env/{env}")
        wait_for(browser, ".content-text", timeout=30)
        time.sleep(1)
        no_script_ran(browser)
    assert "pwned" not in browser.find_element("css selector", ".react-grid-layout").text  # the home's own panes

    log = server.log_tail(400)
    assert "is the runs home's" in log, log

    def pane_text(env: str) -> str:
        return json.dumps(windows_of(server, env))

    hostile = windows_of(server, "hostile")
    assert "kept text" in pane_text("hostile") and "onerror" not in pane_text("hostile")
    assert "<script" not in pane_text("hostile") and victim_win not in hostile
    # a folder that names another run's env may add panes of its own there (its own window ids, rebuilt), but
    # never replace or close that run's windows
    from vae_visdom.monitor.windows import window_prefix

    victim_env = windows_of(server, "victim")
    assert victim_env[victim_win]["content"] == "the victim's own"
    assert all(w == victim_win or w.startswith(window_prefix("victim", runs / "imposter")) for w in victim_env)
    assert "onerror" not in pane_text("victim")
    until(lambda: TABLE_WIN in windows_of(server, "runs"), "the runs home's table")
    assert "pwned" not in pane_text("runs")


@pytest.mark.slow
def test_24_2_compare_and_the_family_view_show_markup_from_run_folders_as_text(visdom_server_factory, browser,
                                                                               tmp_path):
    from vae_visdom.pages.compare import compare_runs
    from vae_visdom.runs.records import load_run

    server = visdom_server_factory()
    runs = tmp_path / "runs"
    a, b = finished_run(runs, "run-a"), finished_run(runs, "run-b")
    config = json.loads((b / "config.json").read_text())
    (b / "config.json").write_text(json.dumps({**config, "optimizer": STYLED}))
    done = compare_runs([load_run(a), load_run(b)], "http://127.0.0.1", server.port, "cmp-markup")
    names = [t["name"] for t in windows_of(server, "cmp-markup")[done.windows["epochs"]]["content"]["data"]]
    assert any("&lt;b style" in n for n in names) and not any("<b" in n for n in names), names
    browser.get(f"{server.url}/env/cmp-markup")
    until(lambda: len(legend_texts(browser)) >= 4, "the comparison's legend", timeout=30)
    assert any(STYLED in t for t in legend_texts(browser)), legend_texts(browser)
