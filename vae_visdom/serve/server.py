"""Run visdom's server so that it never touches the network (`vae-visdom serve`).

What differs from `python -m visdom.server` (visdom 0.2.4), and why:
- UI files come from `vae_visdom.serve.assets` (npm tarballs, sha512-checked) before the server
  starts, so visdom's `download_scripts()` (CDNs; hangs behind a firewall) is never called.
- Binds 127.0.0.1 by default (visdom binds every interface); any other address needs login
  credentials, because visdom without login lets anyone who can reach the port write windows.
- A busy port is an error (exit 2), never a silent move elsewhere: the trainer's monitor and
  the user's browser must agree on one URL.
- SIGTERM saves every env like Ctrl-C does (visdom 0.2.4 saves only on `vis.save()`), so a
  `kill`, a closed terminal session manager or a CI job's teardown keeps the windows.
- Tornado's debug mode (autoreload, tracebacks in responses) is off.
- Only its own pages may change anything (visdom trusts every web page; see server_guard.py):
  * Host: every request whose Host header names another machine than this server's names
    (127.0.0.1, localhost, ::1, any loopback address, the --host given; for a wildcard bind the
    machine's host names and the address the request came in on; any port) gets 403. This stops
    DNS rebinding.
  * Origin: a request that changes state (every POST, the websocket handshakes of /socket and
    /vis_socket, the polling socket's sign-up) gets 403 when it carries `Sec-Fetch-Site: cross-site`
    or `same-site`, or an Origin header other than http(s)://HOST, HOST being the request's own Host
    header (so a page reached through `ssh -L 9000:localhost:8097` keeps working); `Origin: null`
    is refused. No Origin at all (visdom's Python client, curl) is allowed: browsers always send one.
- Env ids follow config's name rule (check_name) wherever visdom takes one (/env/NAME, /compare,
  /events, /update, /close, /save, /delete_env, /fork_env, websocket messages): 400 otherwise, and
  env files are written and deleted only inside the env folder (server_envs.py).
- One server per env folder: a lock file there (flock, dropped by the OS when the holder dies)
  makes a second `serve` on the same --env-path exit 2, naming the holder; `--detach` says when
  the server already answering keeps its envs elsewhere.
- Catch-up: after it starts listening, the server replays (`vae-visdom replay`, in the background)
  every run under --runs-dir whose visdom.log is newer than the env saved for it.
- Runs home: beside it runs `vae-visdom home` for --runs-dir (serve/home_process.py), which keeps the
  env `runs` (http://127.0.0.1:8097/env/runs): every run with its true status, and buttons to compare,
  pause, resume or stop the ticked runs. A child process, ended with the server; if it fails, the
  server logs one line and goes on. --no-home leaves it out.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from vae_visdom import page_limit
from vae_visdom.config import DEFAULT_HOST, DEFAULT_PORT, argparse_type, env_login
from vae_visdom.page_limit import DEFAULT_MAX_PAGE_RUNS
from vae_visdom.serve import assets, compat
from vae_visdom.serve.app import login_credential, make_application, running_env_path
from vae_visdom.serve.envs import LOCK_NAME as ENV_LOCK_NAME
from vae_visdom.serve.envs import EnvFolderBusy, catch_up, lock_env_folder, lock_holder, save_envs
from vae_visdom.serve.home_process import HomeProcess
from vae_visdom.serve.net import connect_host, is_loopback, server_answers, url_of

DETACH_TIMEOUT_S = 30.0
EXIT_USAGE = 2  # busy port, refused address: the user must change the command line

log = logging.getLogger("vae_visdom.serve.server")


def default_env_path() -> Path:
    """~/.visdom: visdom's own default, so envs saved by a plain `visdom` server show up too."""
    return Path.home() / ".visdom"


def _bind(host: str, port: int) -> list[socket.socket]:
    from tornado.netutil import bind_sockets

    return bind_sockets(port, address=host)


async def _run(sockets: list[socket.socket], host: str, port: int, env_path: Path, credential: dict | None,
               runs_dir: Path, home: bool = True, max_page_runs: int = DEFAULT_MAX_PAGE_RUNS) -> int:
    import threading

    from tornado.httpserver import HTTPServer

    url = url_of(host, port)
    app = make_application(env_path, port, credential, host, url)
    server = HTTPServer(app, max_buffer_size=1024**3)  # visdom's limit: big image grids
    server.add_sockets(sockets)
    stop = asyncio.Event()
    got: list[int] = []
    loop = asyncio.get_running_loop()

    def on_signal(sig: int) -> None:
        got.append(sig)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    print(f"visdom server at {url} (envs in {env_path}); Ctrl-C or SIGTERM saves and stops", flush=True)
    stopping = threading.Event()
    server_address = "http://" + (f"[{connect_host(host)}]" if ":" in connect_host(host) else connect_host(host))
    catching_up = threading.Thread(target=catch_up, args=(runs_dir, env_path, server_address, port, stopping),
                                   name="catch-up", daemon=True)
    catching_up.start()
    runs_home = HomeProcess(runs_dir, server_address, port, max_page_runs).start() if home else None
    await stop.wait()
    stopping.set()
    server.stop()
    catching_up.join(5)
    if runs_home is not None:
        runs_home.stop()
    saved = save_envs(app)
    log.info("%s: saved %d env(s) to %s: %s", signal.Signals(got[0]).name, len(saved), env_path, ", ".join(saved))
    return 0


def _ensure_assets() -> str | None:
    """None when visdom imports and its UI files are in place (installing them if needed), else the error text."""
    problem = compat.visdom_problem()
    if problem:
        return problem
    try:
        if assets.missing():
            assets.install()
    except assets.AssetError as e:
        return f"visdom UI files are missing and could not be installed: {e}"
    return None


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, env_path: str | os.PathLike | None = None,
          login: bool = False, runs_dir: str | os.PathLike = "runs", home: bool = True,
          max_page_runs: int = DEFAULT_MAX_PAGE_RUNS) -> int:
    """Run the server in this process until SIGINT/SIGTERM; returns the exit code."""
    env_path = Path(env_path or default_env_path()).expanduser().resolve()
    runs_dir = Path(runs_dir).expanduser().resolve()
    credential = _check_access(host, login)
    if isinstance(credential, int):
        return credential
    problem = _ensure_assets()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    try:
        env_path.mkdir(parents=True, exist_ok=True)
        lock = lock_env_folder(env_path, host=host, port=port, url=url_of(host, port), env_path=str(env_path))
    except EnvFolderBusy as busy:
        h = busy.holder
        who = f"pid {h.get('pid', '?')}, {h.get('url', 'address unknown')}" if h else "its pid is not written yet"
        print(f"error: the envs in {env_path} are already served by another vae-visdom server ({who}); two servers "
              f"on one env folder overwrite each other's envs when they stop. Use that server, stop it, or pick "
              f"another --env-path", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        print(f"error: cannot use --env-path {env_path}: {e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        try:
            sockets = _bind(host, port)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                print(f"error: port {port} on {host} is already in use; stop that server, pick --port, "
                      f"or use `vae-visdom serve --detach` to reuse a visdom server there", file=sys.stderr)
            else:
                print(f"error: cannot listen on {host}:{port}: {e.strerror}", file=sys.stderr)
            return EXIT_USAGE
        _record_limit(runs_dir, max_page_runs)
        return asyncio.run(_run(sockets, host, port, env_path, credential, runs_dir, home, max_page_runs))
    finally:
        os.close(lock)  # after the exit save: the next server must not load envs half written


def _record_limit(runs_dir: Path, max_page_runs: int) -> None:
    """--max-page-runs where the home and every trainer that forks into runs_dir read it (runs/page_runs.py)."""
    try:
        page_limit.write_limit(runs_dir, max_page_runs)
    except OSError as err:
        log.warning("cannot record --max-page-runs in %s (%s); runs started from a page keep the limit recorded "
                    "there, or %d", runs_dir, err, DEFAULT_MAX_PAGE_RUNS)


def _check_access(host: str, login: bool) -> dict | None | int:
    """visdom's user_credential (None: no login), or an exit code after printing why we refuse."""
    if not login and is_loopback(host):
        return None
    creds = env_login()
    if creds is None:
        why = f"--host {host} is not a loopback address" if not login else "--login was given"
        print(f"error: {why}, and visdom without login lets anyone who reaches the port read and write "
              f"windows. Set VISDOM_USERNAME and VISDOM_PASSWORD in the environment to enable login, "
              f"or serve on 127.0.0.1 and reach it through an SSH tunnel (ssh -L {DEFAULT_PORT}:127.0.0.1:"
              f"{DEFAULT_PORT} HOST).", file=sys.stderr)
        return EXIT_USAGE
    return login_credential(*creds)


def detach(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, env_path: str | os.PathLike | None = None,
           log_file: str | os.PathLike | None = None, login: bool = False,
           runs_dir: str | os.PathLike = "runs", home: bool = True, max_page_runs: int = DEFAULT_MAX_PAGE_RUNS) -> int:
    """Make sure a visdom server answers on host:port, starting one in the background if needed.

    A server already answering is reused, unless --env-path was given and it keeps its envs elsewhere."""
    url = url_of(host, port)
    if server_answers(host, port):
        return _reuse(host, port, env_path)
    if isinstance(code := _check_access(host, login), int):
        return code
    problem = _ensure_assets()  # here, in the foreground: an npm download must not eat the start timeout
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    env_path = Path(env_path or default_env_path()).expanduser().resolve()
    env_path.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_file or env_path / "vae_visdom_server.log").expanduser().resolve()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "vae_visdom.serve.server", "--host", host, "--port", str(port),
           "--env-path", str(env_path), "--runs-dir", str(Path(runs_dir).expanduser().resolve())]
    cmd += ["--login"] if login else []
    cmd += [] if home else ["--no-home"]
    cmd += ["--max-page-runs", str(max_page_runs)]
    with open(log_path, "ab") as out:
        # new session: the server outlives this shell and its Ctrl-C; credentials travel in the env
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + DETACH_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            if server_answers(host, port):  # another `serve --detach` started at the same moment, and won
                winner = _written_holder(env_path)
                who = f"pid {winner['pid']}, " if winner.get("pid") not in (None, proc.pid) else ""
                where = running_env_path(host, port) or winner.get("env_path") or "a folder it does not say"
                print(f"error: lost the race: another vae-visdom server started at the same moment answers at {url} "
                      f"({who}envs in {where}); this one exited with code {proc.returncode} (log {log_path})",
                      file=sys.stderr)
                return EXIT_USAGE
            print(f"error: the server exited with code {proc.returncode}; log {log_path}:\n{_tail(log_path)}",
                  file=sys.stderr)
            return proc.returncode or 1
        # the one answering must be ours: the env folder's lock names the server that holds it
        if server_answers(host, port) and _written_holder(env_path).get("pid") == proc.pid:
            print(f"visdom server started at {url} (pid {proc.pid}, log {log_path})")
            return 0
        time.sleep(0.2)
    proc.terminate()
    print(f"error: no answer at {url} after {DETACH_TIMEOUT_S:.0f} s; log {log_path}:\n{_tail(log_path)}",
          file=sys.stderr)
    return 1


def _reuse(host: str, port: int, env_path: str | os.PathLike | None) -> int:
    """`serve --detach` found a server answering: say which env folder it keeps; refuse a different one."""
    url, theirs = url_of(host, port), running_env_path(host, port)
    if env_path is not None:
        asked = Path(env_path).expanduser().resolve()
        if theirs is None and (lock_holder(asked) or {}).get("port") == port:
            theirs = str(asked)  # login hides the server's answer; the folder's lock names it
        if theirs != str(asked):
            print(f"error: a visdom server already answers at {url}, but it keeps its envs in "
                  f"{theirs or 'another folder (it does not say which)'}, not in {asked}. Stop it, or pick another "
                  f"--port for {asked}", file=sys.stderr)
            return EXIT_USAGE
    print(f"a visdom server already answers at {url}" + (f" (envs in {theirs})" if theirs else ""))
    return 0


def _written_holder(env_path: Path) -> dict:
    """What the env folder's lock file says of its holder ({"pid", "url", ...}), read without locking it: a
    lock taken to look could make a server starting at that instant find the folder busy."""
    try:
        holder = json.loads((env_path / ENV_LOCK_NAME).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run(args: argparse.Namespace) -> int:
    if args.detach:
        return detach(args.host, args.port, args.env_path, args.log, args.login, args.runs_dir, not args.no_home,
                      args.max_page_runs)
    logging.basicConfig(level=logging.INFO, filename=args.log,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("tornado.access").setLevel(logging.WARNING)  # one line per request drowns the rest
    # index.html asks tornado to hash "../user/style.css", a route, not a file: a harmless ERROR line
    logging.getLogger("tornado.general").addFilter(lambda r: "user/style.css" not in r.getMessage())
    compat.without_torch()
    return serve(args.host, args.port, args.env_path, args.login, args.runs_dir, not args.no_home, args.max_page_runs)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("--host", default=DEFAULT_HOST,
                   help="address to listen on (default 127.0.0.1; others need VISDOM_USERNAME/VISDOM_PASSWORD)")
    p.add_argument("--port", type=argparse_type("port"), default=DEFAULT_PORT,
                   help="default %(default)s; busy is an error")
    p.add_argument("--env-path", default=None,
                   help="where envs are saved and loaded (default ~/.visdom); one server per folder")
    p.add_argument("--runs-dir", default="runs",
                   help="after starting, replay (in the background) each run here whose visdom.log is newer than "
                        "its saved env, e.g. a run that went on while the server was down; and list them all in the "
                        "env `runs` (default: ./runs)")
    p.add_argument("--no-home", action="store_true",
                   help="do not keep the env `runs` (the runs home: every run in --runs-dir, with actions)")
    p.add_argument("--max-page-runs", type=argparse_type("max_page_runs"), default=DEFAULT_MAX_PAGE_RUNS,
                   help="at most this many runs started from the pages (the runs home's form and the panels' Fork, "
                        "forks of forks included) run at once, counted from the run folders' trainer locks, so it "
                        "holds across restarts (default %(default)s; 0: the pages start none)")
    p.add_argument("--login", action="store_true",
                   help="require login even on loopback (credentials from VISDOM_USERNAME, VISDOM_PASSWORD)")
    p.add_argument("--detach", action="store_true",
                   help="reuse a server that already answers, or start one in the background and return")
    p.add_argument("--log", default=None,
                   help="log file (default: stderr; with --detach: ENV_PATH/vae_visdom_server.log)")


def main(argv: list[str] | None = None) -> int:
    """`python -m vae_visdom.serve.server [serve options]`: the same as `vae-visdom serve`."""
    p = argparse.ArgumentParser(prog="python -m vae_visdom.serve.server")
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
