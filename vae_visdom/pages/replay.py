"""`vae-visdom replay RUN_DIR`: draw a run's windows again from its visdom.log.

The log holds every message the monitor drew (line points as appends, the rest whole),
in visdom's own `log_to_filename` format, so this works after the server lost the env,
on another server, or into another env (for side-by-side comparisons).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from vae_visdom.config import DEFAULT_PORT, DEFAULT_SERVER, add_server_arguments, check_name, env_login
from vae_visdom.monitor.board import LOG_NAME, connect
from vae_visdom.pages.home import HOME_ENV
from vae_visdom.pages.log_screen import screen


def read_log(path: Path) -> list[tuple[str, dict]]:
    """The (endpoint, msg) pairs of a visdom.log; a torn last line (a crash mid-write) is skipped."""
    entries = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            endpoint, msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and endpoint in ("events", "update"):
            entries.append((endpoint, msg))
    return entries


def own_env(run_dir: Path, entries: list[tuple[str, dict]]) -> str:
    """The env the run drew into: config.json's, else the log's first, else the folder's name (each by the name
    rule). Raises ValueError when there is none that passes the rule."""
    try:
        env = json.loads((run_dir / "config.json").read_text(encoding="utf-8")).get("env")
    except (OSError, ValueError, AttributeError):
        env = None
    if env is None:
        env = next((m["eid"] for _, m in entries if isinstance(m.get("eid"), str)), run_dir.name)
    return check_name(env, "the run's env")


def replay(run_dir: str | Path, server: str = DEFAULT_SERVER, port: int = DEFAULT_PORT, env: str | None = None,
           username: str | None = None, password: str | None = None) -> dict:
    """Close the run's windows in the env, then draw them again from its log; returns what was done.

    The log is untrusted input: only the run's own windows of its own env are drawn, rebuilt from their data
    (pages/log_screen.py), never into the runs home. env None: the env the run wrote to. Raises
    FileNotFoundError (no log), ValueError (no env it may draw into) or ConnectionError (no server).
    """
    run_dir = Path(run_dir)
    path = run_dir / LOG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no visdom log (was the run trained with --no-visdom?)")
    raw = read_log(path)
    own = own_env(run_dir, raw)
    target = check_name(env, "env") if env is not None else own
    if target == HOME_ENV:
        raise ValueError(f"env {target!r} is the runs home's: a run's log is never drawn there")
    entries, refused = screen(raw, own, target, run_dir)
    client = connect(server, port, target, username, password)
    wins = list(dict.fromkeys(msg["win"] for _, msg in entries))
    for win in wins:  # windows left from an earlier replay or a newer run would mix in
        client.close(win=win, env=target)
    for endpoint, msg in entries:
        client._send(msg, endpoint=endpoint, from_log=True)
    client.save([target])
    return {"env": target, "windows": len(wins), "messages": len(entries), "entries": entries, "refused": refused}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """`vae-visdom replay RUN_DIR [--server --port --env]`."""
    p.description = ("Re-create a run's windows (loss curves, images, run info, events) "
                     "from its visdom.log on a running visdom server.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (holds visdom.log)")
    add_server_arguments(p)
    p.add_argument("--env", default=None, help="env to draw into (default: the run's own env)")
    p.add_argument("--browse", action="store_true",
                   help="then keep the view pane stepping through every epoch's images until Ctrl-C")


def run(args: argparse.Namespace) -> int:
    import sys

    login = env_login() or (None, None)  # as the monitor logs in (a server with login; `serve`'s catch-up)
    try:
        done = replay(args.run_dir, args.server, args.port, args.env, *login)
    except (FileNotFoundError, ValueError) as err:  # ConfigError is a ValueError
        print(f"vae-visdom replay: error: {err}", file=sys.stderr)
        return 2
    except ConnectionError:
        print(f"vae-visdom replay: error: no visdom server answers at {args.server}:{args.port} "
              f"(start one with `vae-visdom serve`)", file=sys.stderr)
        return 1
    print(f"replayed {done['messages']} messages into {done['windows']} windows of env {done['env']!r}: "
          f"{args.server}:{args.port}/env/{done['env']}")
    if done["refused"]:  # the log held what a run's monitor never writes: someone else wrote it
        print("refused " + ", ".join(f"{n} message(s) {why}" for why, n in done["refused"].items()))
    if args.browse:
        from vae_visdom.pages.browse import browse

        explorer = None
        try:  # the latent explorer needs the model: torch, imported here only
            from vae_visdom.insight.explorer import explorer_for_run

            explorer = explorer_for_run(args.run_dir)
        except Exception as err:  # noqa: BLE001  (no checkpoint, a damaged one, no data: browse without it)
            print(f"note: no latent explorer ({str(err).splitlines()[0][:200] if str(err) else type(err).__name__})",
                  file=sys.stderr)
        print("the view pane" + (" and the latent explorer" if explorer else "") +
              " answer the page until Ctrl-C", flush=True)
        try:
            browse(args.run_dir, done["entries"], args.server, args.port, done["env"], login[0], login[1],
                   explorer=explorer)
        except ValueError as err:
            print(f"vae-visdom replay: error: {err}", file=sys.stderr)
            return 2
    return 0
