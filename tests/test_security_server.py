"""Lock the doors (server half): only the server's own pages, on its own names, may change
anything; env ids follow config's name rule before they reach a file; one server per env folder; a
restarted server catches up the runs it missed. Real servers, a real training run, a real Chromium."""
from __future__ import annotations

import http.client
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import websocket

from tests.fixtures import REPO, until, wait_for
from vae_visdom.monitor.panel import ROWS
from vae_visdom.serve import compat
from vae_visdom.serve.envs import RUN_LOG, lock_holder, stale_runs
from vae_visdom.serve.net import find_free_port

EVIL = "http://evil.example"
NAME_RULE = "allowed: 1 to 100 of the characters"


# ---- helpers ------------------------------------------------------------------------------------------

def request(server, method: str, path: str, body=None, headers: dict | None = None) -> tuple[int, str]:
    """One raw HTTP request (http.client: nothing added but what is given; Host defaults to the server's)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    data = body if body is None or isinstance(body, (bytes, str)) else json.dumps(body)
    try:
        conn.request(method, path, body=data, headers={"Content-Type": "text/plain", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def page_socket(server, path: str = "/socket", **kw) -> websocket.WebSocket:
    """websocket-client as a page of the server would open it (Origin http://127.0.0.1:PORT, its default)."""
    return websocket.create_connection(f"ws://127.0.0.1:{server.port}{path}", timeout=5, **kw)


def forward(win: str, env: str, row: str, value) -> dict:
    """The message visdom's properties pane sends when a row is edited or clicked."""
    return {"cmd": "forward_to_vis", "data": {"target": win, "eid": env, "event_type": "PropertyUpdate",
                                              "propertyId": ROWS.index(row), "value": value}}


def envs_of(server) -> list[str]:
    status, body = request(server, "POST", "/env_state", {})
    assert status == 200, body
    return json.loads(body)


def windows_of(server, env: str) -> dict:
    return json.loads(server.client(env, use_incoming_socket=False).get_window_data(env=env))


def files_outside(root: Path, env_path: Path) -> dict[str, bytes]:
    """Every file under root that is not in the env folder, with its bytes (server logs left out)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and env_path not in p.parents and p.suffix != ".log"}


def refusals(server) -> list[str]:
    return [line for line in server.log_tail(10000).splitlines() if "refused" in line]


@contextmanager
def live_run(server, tmp_path: Path, env: str = "victim-run"):
    """A real training run (synthetic 28x28 images, the MLP VAE) streaming to `server`, paused by the
    test itself so that it spends no CPU while it is attacked; its panel still answers."""
    from tests.builders import make_session

    session = make_session(tmp_path / env, server=server, env=env, epochs=1000, batch_size=64, lr=1e-3,
                           log_interval=5, views=False, device="cpu")
    session.controller.pause(source="test")
    thread = threading.Thread(target=session.run, name="training", daemon=True)
    thread.start()
    m = session.monitor
    until(lambda: session.trainer.state == "paused", "the run to pause")
    assert m.wait_connected(20) and m.flush(20)
    until(lambda: m.windows["control"] in windows_of(server, env), "the control panel on the server")
    try:
        yield session
    finally:
        session.controller.stop(source="test teardown")
        thread.join(30)


def run_is_untouched(session) -> None:
    t, ctl = session.trainer, session.controller
    assert (t.lr, t.batch_size, t.epochs, t.log_interval, t.epoch) == (1e-3, 64, 1000, 5, 1)
    assert t.state == "paused" and ctl.paused and not ctl.stop_requested
    events = [json.loads(line) for line in (Path(session.run_dir) / "events.jsonl").read_text().splitlines()
              if line.strip()] if (Path(session.run_dir) / "events.jsonl").exists() else []
    assert [(e["name"], e["source"]) for e in events] in ([], [("pause", "test")]), events


class PageServer:
    """A plain HTML page on another loopback port (http.server in a thread): the hostile site."""

    def __init__(self, html: str):
        body = html.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Forwarder:
    """A loopback TCP forwarder: 127.0.0.1:self.port -> 127.0.0.1:target (as `ssh -L PORT:127.0.0.1:TARGET`)."""

    def __init__(self, target: int):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


HOSTILE_PAGE = """<!doctype html><html><head><title>cat pictures</title></head><body><script>
const A = %(attacks)s;
window.results = {ws: {}, posts: 0};
function attackSocket(path, msgs) {
  return new Promise(resolve => {
    let s;
    try { s = new WebSocket(A.ws + path); } catch (e) { window.results.ws[path] = "throw"; return resolve(); }
    s.onopen = () => {
      window.results.ws[path] = "open";
      for (const m of msgs) s.send(JSON.stringify(m));
      setTimeout(() => { s.close(); resolve(); }, 700);
    };
    s.onerror = () => { window.results.ws[path] = "error"; resolve(); };
  });
}
async function post(list) {
  for (const [path, body, policy] of list) {
    try {
      await fetch(A.http + path, {method: "POST", mode: "no-cors", referrerPolicy: policy,
                                  headers: {"Content-Type": "text/plain"}, body: JSON.stringify(body)});
      window.results.posts++;
    } catch (e) {}
  }
}
async function attack() {
  await post(A.posts_first);  // env ids with a path in them, for the socket's delete_env and the exit save
  await attackSocket("/socket", A.socket);
  await attackSocket("/vis_socket", A.vis_socket);
  await post(A.posts_after);
  document.title = "done";
}
attack();
</script></body></html>"""


def hostile_attacks(server, env: str, wins: dict, pwned: Path) -> dict:
    """What the hostile page tries: each of the reproduced attacks 1-5."""
    cross = "strict-origin-when-cross-origin"  # Chromium's default; "no-referrer" sends Origin: null
    text = [{"content": "pwned", "type": "text"}]
    posts_first = [["/env/x", {"eid": "../victim"}, cross], ["/env/x", {"eid": str(pwned)}, cross]]
    posts_after = [  # [path, body, referrer policy]
        ["/events", {"eid": env, "win": "pwned", "data": text, "opts": {"title": "pwned"}}, cross],
        ["/events", {"eid": env, "win": "pwned-null", "data": text}, "no-referrer"],
        ["/update", {"eid": env, "win": wins["events"], "data": text}, cross],
        ["/fork_env", {"prev_eid": env, "eid": "pwned-fork"}, cross],
        ["/save", {"data": ["../victim"]}, cross],
        ["/delete_env", {"eid": "keep-me"}, cross],
        ["/close", {"eid": env, "win": wins["control"]}, cross],
    ]
    control = wins["control"]
    return {
        "http": f"http://127.0.0.1:{server.port}", "ws": f"ws://127.0.0.1:{server.port}",
        "posts_first": posts_first, "posts_after": posts_after,
        "socket": [forward(control, env, "lr", "0.5"), forward(control, env, "batch_size", "7"),
                   forward(control, env, "epochs", "2"), forward(control, env, "status", "clicked"),
                   forward(control, env, "stop", "clicked"),
                   {"cmd": "delete_env", "prev_eid": env, "eid": "../victim"},
                   {"cmd": "delete_env", "prev_eid": env, "eid": "keep-me"},
                   {"cmd": "save", "data": {}, "prev_eid": env, "eid": "../pwned-save"},
                   {"cmd": "close", "eid": env, "data": wins["events"]}],
        "vis_socket": [{"cmd": "echo", **forward(control, env, "log_interval", "3")["data"]}],
    }


# ---- (a) a hostile page in a real Chromium --------------------------------------------------------------

def test_a_hostile_page_in_chromium_cannot_steer_write_or_delete(visdom_server_factory, browser, tmp_path):
    root = tmp_path / "root"
    server = visdom_server_factory(env_path=root / "env")
    victim = root / "victim.json"
    victim.write_text('{"jsons": {}, "reload": {}}')
    (tmp_path / "somewhere").mkdir()
    pwned = tmp_path / "somewhere" / "pwned"
    server.client("keep-me", use_incoming_socket=False).text("keep", win="keep")
    server.client("keep-me", use_incoming_socket=False).save(["keep-me"])
    before = files_outside(root, root / "env")
    with live_run(server, tmp_path) as session:
        m, env = session.monitor, session.cfg.env
        attacks = hostile_attacks(server, env, m.windows, pwned)
        tried = len(attacks["posts_first"]) + len(attacks["posts_after"]) + 2  # POSTs and websocket handshakes
        page = PageServer(HOSTILE_PAGE % {"attacks": json.dumps(attacks)})
        try:
            browser.get(page.url)
            until(lambda: browser.title == "done", "the hostile page to finish", timeout=30)
            results = browser.execute_script("return window.results")
        finally:
            page.close()
        time.sleep(0.5)  # anything that got through has reached the trainer by now
        print(f"hostile page: {tried} attacks tried, results in the page {results}, "
              f"{len(refusals(server))} refusals in the server log")
        assert results["ws"] == {"/socket": "error", "/vis_socket": "error"}, results
        run_is_untouched(session)
        wins = windows_of(server, env)
        assert m.windows["control"] in wins and m.windows["events"] in wins
        assert not [w for w, pane in wins.items() if "pwned" in w or "pwned" in json.dumps(pane)]
        assert "keep-me" in envs_of(server) and "pwned-fork" not in envs_of(server)
        assert len(refusals(server)) >= tried, refusals(server)
    assert server.stop() == 0  # save-on-exit: nothing it writes may land outside the env folder
    assert files_outside(root, root / "env") == before and not any((tmp_path / "somewhere").iterdir())
    assert (root / "env" / "keep-me.json").is_file()
    assert not list(tmp_path.rglob("pwned*"))


# ---- (c) the server's own page through another local port (an SSH tunnel) ------------------------------

def test_the_page_through_a_tunnel_on_another_port_still_steers_the_run(visdom_server_factory, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    server = visdom_server_factory()
    tunnel = Forwarder(server.port)
    try:
        with live_run(server, tmp_path, env="tunnelled") as session:
            browser.get(f"http://127.0.0.1:{tunnel.port}/env/tunnelled")
            lr = wait_for(browser, ".content-properties input", min_count=4)[0]
            until(lambda: lr.get_attribute("value").strip() == "0.001", "the lr in the tunnelled page")
            lr.click()
            lr.send_keys(Keys.CONTROL, "a")
            lr.send_keys("3e-4", Keys.ENTER)
            until(lambda: session.trainer.lr == 3e-4, "the trainer to take lr 3e-4 from the tunnelled page")
            until(lambda: browser.find_elements(By.CSS_SELECTOR, ".content-properties input")[0]
                  .get_attribute("value").strip() == "0.0003", "the page to show the lr in force")
        assert not refusals(server), refusals(server)
    finally:
        tunnel.close()


# ---- (b, d) the same attacks from Python, one test per item of the issue -------------------------------

def test_1_websockets_with_a_foreign_origin_are_refused(server):
    port = server.port
    for path in ("/socket", "/vis_socket"):
        for origin in (EVIL, "null", f"http://127.0.0.1:{find_free_port()}", f"http://localhost:{port}",
                       f"https://127.0.0.1:{port}.evil.example"):
            with pytest.raises(websocket.WebSocketBadStatusException) as err:
                page_socket(server, path, origin=origin)
            assert err.value.status_code == 403, (path, origin)
        # the server's own page, and visdom's Python client (websocket-client's Origin is http://HOST:PORT)
        page_socket(server, path).close()
        page_socket(server, path, host=f"localhost:{port}", origin=f"http://localhost:{port}").close()


def test_1_a_foreign_socket_cannot_steer_a_run_but_the_page_can(server, tmp_path):
    with live_run(server, tmp_path, env="steer") as session:
        control = session.monitor.windows["control"]
        with pytest.raises(websocket.WebSocketBadStatusException):
            ws = page_socket(server, origin=EVIL)
            for row, value in (("lr", "0.5"), ("batch_size", "7"), ("epochs", "2"), ("stop", "clicked")):
                ws.send(json.dumps(forward(control, "steer", row, value)))
        time.sleep(0.3)
        run_is_untouched(session)
        ws = page_socket(server)  # the server's own page: same origin
        ws.send(json.dumps(forward(control, "steer", "lr", "3e-4")))
        until(lambda: session.trainer.lr == 3e-4, "the page's lr to reach the trainer")
        ws.close()


def test_2_vis_socket_with_a_foreign_origin_cannot_echo_to_the_trainer(server):
    got = []
    vis = server.client("echo-env", use_incoming_socket=True)
    vis.text("x", win="echo-win")
    vis.register_event_handler(got.append, "echo-win")
    until(lambda: vis.socket_alive, "the Python client's /vis_socket")
    with pytest.raises(websocket.WebSocketBadStatusException):
        ws = page_socket(server, "/vis_socket", origin=EVIL)
        ws.send(json.dumps({"cmd": "echo", "target": "echo-win", "eid": "echo-env", "event_type": "KeyPress"}))
    time.sleep(0.5)
    assert got == []
    # a same-origin page event still reaches the Python client (visdom's client unchanged)
    ws = page_socket(server)
    ws.send(json.dumps({"cmd": "forward_to_vis", "data": {"target": "echo-win", "eid": "echo-env",
                                                          "event_type": "KeyPress", "key": "a"}}))
    until(lambda: got, "the page's event at the Python client")
    ws.close()
    vis.use_socket = False  # its socket thread would reconnect for ever


CROSS_SITE = [{"Origin": EVIL}, {"Origin": "null"}, {"Origin": "http://127.0.0.1:1"},
              {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}]


def test_3_cross_site_text_plain_posts_are_refused_and_change_nothing(server):
    vis = server.client("keep", use_incoming_socket=False)
    vis.text("kept", win="note")
    vis.save(["keep"])
    text = [{"content": "pwned", "type": "text"}]
    for headers in CROSS_SITE:
        for path, body in (("/delete_env", {"eid": "keep"}), ("/events", {"eid": "keep", "win": "pwned", "data": text}),
                           ("/update", {"eid": "keep", "win": "note", "data": text}), ("/close", {"eid": "keep"}),
                           ("/env/keep", {"eid": "pwned"}), ("/save", {"data": ["keep"]}),
                           ("/fork_env", {"prev_eid": "keep", "eid": "pwned"})):
            status, answer = request(server, "POST", path, body, headers)
            assert status == 403 and "refused" in answer, (headers, path, status, answer)
    assert "keep" in envs_of(server) and "pwned" not in envs_of(server)
    assert (server.env_path / "keep.json").is_file()
    assert windows_of(server, "keep")["note"]["content"] == "kept"
    # the same request from the server's own page (its Origin is the Host it asked) acts
    status, _ = request(server, "POST", "/delete_env", {"eid": "keep"},
                        {"Origin": f"http://127.0.0.1:{server.port}", "Sec-Fetch-Site": "same-origin"})
    assert status == 200 and "keep" not in envs_of(server)
    assert not (server.env_path / "keep.json").exists()


def test_4_env_ids_outside_the_name_rule_are_refused_and_no_file_outside_is_removed(server):
    env_path = server.env_path
    victim = env_path.parent / "victim.json"
    victim.write_text('{"jsons": {}, "reload": {}}')
    before = files_outside(env_path.parent, env_path)
    for path, body in (("/env/x", {"eid": "../victim"}), ("/delete_env", {"eid": "../victim"}),
                       ("/save", {"data": ["../victim"]}), ("/close", {"eid": "../victim"}),
                       ("/events", {"eid": "../victim", "win": "w", "data": [{"content": "x", "type": "text"}]}),
                       ("/update", {"eid": "../victim", "win": "w", "data": [{"content": "x", "type": "text"}]}),
                       ("/fork_env", {"prev_eid": "main", "eid": "../victim"}), ("/env/..%2Fvictim", {}),
                       ("/compare/main+..%2Fvictim", {"sid": "x"}), ("/env/x", {"eid": "a b"}),
                       ("/env/x", {"eid": "<script>"}), ("/env/x", {"eid": 5}), ("/env/x", {"eid": "x" * 101})):
        status, text = request(server, "POST", path, body)
        assert status == 400 and NAME_RULE in text, (path, body, status, text)
        assert "Traceback" not in text
    for path in ("/env/..%2Fvictim", "/env/.hidden", "/compare/main+..%2Fvictim"):
        status, text = request(server, "GET", path)
        assert status == 400 and NAME_RULE in text, (path, status, text)
    ws = page_socket(server)
    for msg in ({"cmd": "delete_env", "prev_eid": "main", "eid": "../victim"},
                {"cmd": "save", "data": {}, "prev_eid": "main", "eid": "../victim"},
                {"cmd": "close", "eid": "../victim", "data": "w"},
                {"cmd": "layout_item_update", "eid": "../victim", "win": "w", "data": {}},
                forward("w", "../victim", "lr", "1")):
        ws.send(json.dumps(msg))
    ws.send(json.dumps({"cmd": "save", "data": {}, "prev_eid": "main", "eid": "fine-name"}))  # a good one
    until(lambda: (env_path / "fine-name.json").is_file(), "the well-named env saved")
    ws.close()
    # the polling socket (visdom's fallback for pages without websockets) carries the same messages
    status, answer = request(server, "GET", "/socket_wrap")
    assert status == 200, answer
    sid = json.loads(answer)["sid"]
    for msg in ({"cmd": "delete_env", "eid": "../victim"}, {"cmd": "save", "data": {}, "prev_eid": "main",
                                                            "eid": "../victim"}):
        status, answer = request(server, "POST", "/socket_wrap", {"message_type": "send", "sid": sid,
                                                                  "message": json.dumps(msg)})
        assert status == 200, answer
    assert request(server, "GET", "/socket_wrap", None, {"Origin": EVIL})[0] == 403
    assert victim.is_file() and files_outside(env_path.parent, env_path) == before
    assert not [e for e in envs_of(server) if "victim" in e]
    # an /update without data: visdom 0.2.4 looks the env up first (404), visdom 0.3 checks the body first (400)
    update = (404, "no such env") if compat.is_old_visdom() else (400, "must include one of: data, layout, or opts")
    for path, body, status, says in (("/env/x", "{", 400, "not JSON"), ("/events", "[1, 2", 400, "not JSON"),
                                     ("/update", {"eid": "no-such-env", "win": "w"}, *update)):
        answer = request(server, "POST", path, body)
        assert answer[0] == status and says in answer[1], (path, answer)
    assert request(server, "POST", "/env/x", {"eid": "fine-name-2"})[0] == 200
    assert "fine-name-2" in envs_of(server)
    log = server.log_tail(400)
    assert "'../victim' is not allowed" in log and "Traceback" not in log, log


def test_5_save_on_exit_never_writes_outside_the_env_folder(visdom_server_factory, tmp_path):
    server = visdom_server_factory(env_path=tmp_path / "env")
    pwned = tmp_path / "somewhere" / "pwned"
    pwned.parent.mkdir()
    for eid in (str(pwned), "../pwned", "/tmp/../" + str(pwned)):
        assert request(server, "POST", "/env/x", {"eid": eid})[0] == 400
        assert request(server, "POST", "/events", {"eid": eid, "win": "w", "data": [
            {"content": "x", "type": "text"}]})[0] == 400
    server.client("good", use_incoming_socket=False).text("kept", win="w")
    assert server.stop() == 0
    assert not list(tmp_path.rglob("pwned*"))
    assert (tmp_path / "env" / "good.json").is_file()


def test_5_save_envs_and_visdoms_own_writer_skip_ids_outside_the_rule(tmp_path, caplog):
    from visdom.utils import server_utils

    from vae_visdom.serve import server as server_module

    env = tmp_path / "env"
    app = server_module.make_application(env)
    for eid in (str(tmp_path / "pwned"), "../pwned", "a b", "good"):
        app.state[eid] = {"jsons": {}, "reload": {}}
    assert server_module.save_envs(app) == ["main", "good"]
    # visdom's own writer (its /save, fork and websocket save call it) is wrapped the same way
    assert server_utils.serialize_env(app.state, ["../pwned", "good"], env_path=str(env)) == ["good"]
    assert not list(tmp_path.rglob("pwned*")) and not (env / "a b.json").exists()
    assert "'../pwned' is not allowed" in caplog.text


def test_6_a_host_header_naming_another_machine_is_refused(server):
    port = server.port
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}", f"10.9.8.7:{port}"):
        for method, path in (("GET", "/"), ("GET", "/static/js/main.js"), ("POST", "/env_state")):
            status, text = request(server, method, path, {} if method == "POST" else None, {"Host": host})
            assert status == 403 and "Host" in text, (host, path, status, text)
        with pytest.raises(websocket.WebSocketBadStatusException):
            page_socket(server, host=host, origin=f"http://{host}")
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost:9000", "127.0.0.1"):
        assert request(server, "GET", "/", None, {"Host": host})[0] == 200, host


def test_6_the_host_rule_knows_the_bound_name_of_a_remote_bind():
    from vae_visdom.serve.guard import host_refusal

    for bind in ("gpu-box.example", "10.1.2.3"):
        assert host_refusal(f"{bind}:8097", bind) is None
        assert host_refusal(f"{bind.upper()}:9000", bind) is None  # by name, any port
        assert host_refusal("localhost:8097", bind) is None
        assert "not a name of this server" in host_refusal("evil.example:8097", bind)
    assert host_refusal("[::1]:8097", "127.0.0.1") is None


def run_server_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vae_visdom.serve.server", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_16_a_second_server_on_the_same_env_folder_is_refused(visdom_server_factory):
    first = visdom_server_factory()
    vis = first.client("finished", use_incoming_socket=False)
    vis.text("4 epochs", win="w")
    vis.save(["finished"])
    saved = (first.env_path / "finished.json").read_bytes()
    out = run_server_cli("--port", str(find_free_port()), "--env-path", str(first.env_path))
    assert out.returncode == 2, out
    line = out.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, line
    assert str(first.env_path) in line and f"pid {first.proc.pid}" in line and str(first.port) in line, line
    assert (first.env_path / "finished.json").read_bytes() == saved
    # the OS drops the lock with its holder: a killed server leaves no stale lock behind
    assert lock_holder(first.env_path)["pid"] == first.proc.pid
    first.kill()
    assert lock_holder(first.env_path) is None


def test_16_detach_says_when_the_running_server_keeps_another_env_folder(server, tmp_path):
    port = str(server.port)
    out = run_server_cli("--port", port, "--env-path", str(tmp_path / "other"), "--detach")
    assert out.returncode == 2, out
    assert str(server.env_path) in out.stderr and str(tmp_path / "other") in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    out = run_server_cli("--port", port, "--env-path", str(server.env_path), "--detach")
    assert out.returncode == 0 and "already answers" in out.stdout and str(server.env_path) in out.stdout


def test_17_a_restarted_server_catches_up_a_run_that_finished_while_it_was_down(visdom_server_factory,
                                                                                   tmp_path):
    from tests.builders import make_session

    runs = tmp_path / "runs"
    server = visdom_server_factory(args=["--runs-dir", str(runs)], start=False)  # down while the run trains
    server.env_path.mkdir(parents=True)
    env_file = server.env_path / "late.json"
    env_file.write_text(json.dumps({"jsons": {}, "reload": {}}))  # what the server had saved before it died
    session = make_session(runs / "late", server=server, env="late", epochs=4, batch_size=128, log_interval=1,
                           views=False, device="cpu")
    assert session.run().state == "finished"
    os.utime(env_file, ns=(time.time_ns() - 10**9,) * 2)  # saved before the run's last log line (coarse clocks)

    def epochs_in(path: Path) -> list:
        loss = [p for p in json.loads(path.read_text())["jsons"].values() if p.get("title") == "loss"]
        return [t["x"] for t in loss[0]["content"]["data"] if t["name"] == "train"][0] if loss else []

    assert epochs_in(env_file) == []
    server.start()
    until(lambda: epochs_in(env_file) == [1, 2, 3, 4], "the restarted server to catch the env up", timeout=60)
    assert server.client("late", use_incoming_socket=False).win_exists(session.monitor.windows["control"])
    assert len(re.findall(r"catch-up: replaying", server.log_tail(400))) == 1, server.log_tail(400)
    # up to date now: the scan the next start makes finds nothing to replay; a newer log line would count
    assert server.stop() == 0
    assert stale_runs(runs, server.env_path) == (1, [])
    os.utime(runs / "late" / RUN_LOG, ns=(time.time_ns() + 10**9,) * 2)
    assert stale_runs(runs, server.env_path) == (1, [(runs / "late", "late")])


def test_17_catch_up_skips_runs_it_cannot_name_and_reads_the_monitors_log(tmp_path):
    from vae_visdom.monitor.visdom_monitor import LOG_NAME

    assert RUN_LOG == LOG_NAME  # the server may not import the monitor: one name, checked here
    runs, env_path = tmp_path / "runs", tmp_path / "env"
    env_path.mkdir()
    for name, config in (("ok", {"env": "ok"}), ("bad", {"env": "../x"}), ("none", None), ("broken", "{")):
        (runs / name).mkdir(parents=True)
        (runs / name / RUN_LOG).write_text("")
        if config is not None:
            (runs / name / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    assert stale_runs(runs, env_path) == (4, [(runs / "ok", "ok")])
