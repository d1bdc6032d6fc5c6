"""`vae-visdom replay RUN_DIR`: draw a run's windows again from its visdom.log.

The log holds every message the monitor drew (line points as appends, the rest whole),
in visdom's own `log_to_filename` format, so this works after the server lost the env,
on another server, or into another env (for side-by-side comparisons).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from vae_visdom.monitor.board import LOG_NAME, connect
from vae_visdom.config import DEFAULT_PORT, DEFAULT_SERVER, argparse_type


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


def replay(run_dir: str | Path, server: str = DEFAULT_SERVER, port: int = DEFAULT_PORT, env: str | None = None,
           username: str | None = None, password: str | None = None) -> dict:
    """Close the run's windows in the env, then post its log again; returns what was done.

    env None: the env the run wrote to. Raises FileNotFoundError (no log) or
    ConnectionError (no server).
    """
    path = Path(run_dir) / LOG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no visdom log (was the run trained with --no-visdom?)")
    entries = read_log(path)
    envs = sorted({msg.get("eid") for _, msg in entries if msg.get("eid")})
    target = env or (envs[0] if envs else Path(run_dir).name)
    client = connect(server, port, target, username, password)
    wins = list(dict.fromkeys(msg["win"] for _, msg in entries if msg.get("win")))
    for win in wins:  # windows left from an earlier replay or a newer run would mix in
        client.close(win=win, env=target)
    for endpoint, msg in entries:
        client._send(dict(msg, eid=target), endpoint=endpoint, from_log=True)
    client.save([target])
    return {"env": target, "windows": len(wins), "messages": len(entries), "entries": entries}


def add_cli(subparsers) -> None:
    """Register `vae-visdom replay RUN_DIR [--server --port --env]`."""
    p = subparsers.add_parser("replay", help="draw a run's visdom windows again from RUN_DIR/visdom.log",
                              description="Re-create a run's windows (loss curves, images, run info, events) "
                                          "from its visdom.log on a running visdom server.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (holds visdom.log)")
    p.add_argument("--server", type=argparse_type("server"), default=DEFAULT_SERVER,
                   help="visdom server address (default %(default)s)")
    p.add_argument("--port", type=argparse_type("port"), default=DEFAULT_PORT,
                   help="visdom server port (default %(default)s)")
    p.add_argument("--env", default=None, help="env to draw into (default: the run's own env)")
    p.add_argument("--browse", action="store_true",
                   help="then keep the view pane stepping through every epoch's images until Ctrl-C")
    p.set_defaults(func=_cmd_replay)


def _cmd_replay(args: argparse.Namespace) -> int:
    import sys

    import os

    try:  # credentials as the monitor takes them (a server with login; `vae-visdom serve`'s catch-up)
        done = replay(args.run_dir, args.server, args.port, args.env,
                      os.environ.get("VISDOM_USERNAME") or None, os.environ.get("VISDOM_PASSWORD") or None)
    except FileNotFoundError as err:
        print(f"vae-visdom replay: error: {err}", file=sys.stderr)
        return 2
    except ConnectionError:
        print(f"vae-visdom replay: error: no visdom server answers at {args.server}:{args.port} "
              f"(start one with `vae-visdom serve`)", file=sys.stderr)
        return 1
    print(f"replayed {done['messages']} messages into {done['windows']} windows of env {done['env']!r}: "
          f"{args.server}:{args.port}/env/{done['env']}")
    if args.browse:
        from vae_visdom.monitor.browse import browse

        print("the view pane steps through the run's epochs until Ctrl-C", flush=True)
        try:
            browse(args.run_dir, done["entries"], args.server, args.port, done["env"],
                   os.environ.get("VISDOM_USERNAME") or None, os.environ.get("VISDOM_PASSWORD") or None)
        except ValueError as err:
            print(f"vae-visdom replay: error: {err}", file=sys.stderr)
            return 2
    return 0
