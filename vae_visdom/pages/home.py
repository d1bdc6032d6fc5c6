"""The runs home: the env `runs` lists every run of a runs folder and acts on the runs a user ticks.

    RunsHome(runs_dir, server, port).run()     until close(); `vae-visdom serve` starts one beside itself
    add_arguments(p), run(args)                 the `vae-visdom home` command

Two panes: `runs`, the table (home_table.py), and `actions`, a properties pane with the buttons
Compare selected, Pause selected, Resume selected, Stop selected, a message row with the last
verdict, the new-run form (home_form.py) and a checkbox per run. Every `interval` seconds the
folder is looked at; a run's files are read again only when their modification times changed, and a live run's
trainer.lock is asked again (a kill -9 changes no file: runs/lock.py is_held). A pane is sent only when its
content changed.

A tick arrives as (pane, row index). A new run gets a new row at the end (the rows before it keep
their index); a deleted run's row goes, and the rows after it move up. So that a click made on the
list the page showed before a move cannot act on another run (a Stop redirected), the lists sent to
the page in the last RECENT_S seconds are kept: a row index counts only when every one of them (and
the current list) names the same run there; otherwise the click is refused with "tick again". Where
visdom sends the pane as the page showed it (`pane_data`, visdom 0.3), the row's name there wins.
Pause, resume and stop go to the run's own control panel as a RunCommand on this process's
/vis_socket (event_socket.run_command_message); that panel answers them like its own buttons. No torch in this
process: `vae-visdom home` blocks the import visdom tries.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from vae_visdom import page_limit
from vae_visdom.config import (
    DEFAULT_PORT,
    DEFAULT_SERVER,
    add_server_arguments,
    argparse_type,
    check_name,
    env_login,
    fit_name,
)
from vae_visdom.monitor.board import Board, Client, connect
from vae_visdom.monitor.event_socket import EventSocket, property_index, run_command_message
from vae_visdom.monitor.windows import PropertiesPane, TextPane, unbreakable
from vae_visdom.pages.compare import compare_runs
from vae_visdom.pages.home_form import ROWS as FORM_ROWS
from vae_visdom.pages.home_form import NewRunForm
from vae_visdom.pages.home_table import env_of, table_html
from vae_visdom.runs.layout import run_folders
from vae_visdom.runs.lock import is_held
from vae_visdom.runs.records import LIVE_STATES, RunRecord, load_run

log = logging.getLogger(__name__)
HOME_ENV = "runs"
TABLE_WIN, ACTIONS_WIN = "runs-home-table", "runs-home-actions"
BUTTONS = {"compare": "Compare selected", "pause": "Pause selected", "resume": "Resume selected",
           "stop": "Stop selected"}
ACTION_ROWS = (*BUTTONS, "message", *FORM_ROWS)  # rows 0..10; a checkbox per run follows
CAN = {"pause": ("running", "starting"), "resume": ("paused",), "stop": ("starting", "running", "paused")}
RECENT_S = 10.0  # how long a list of rows sent to the page may still be the one a click was made on
MOVED = "\x00moved"  # _row_of: the row index names different runs in lists the page may still show
FILES = ("config.json", "status.json", "metrics.jsonl", "steps.jsonl", "events.jsonl")


class RunsHome:
    def __init__(self, runs_dir: str | Path, server: str = DEFAULT_SERVER, port: int = DEFAULT_PORT,
                 env: str = HOME_ENV, interval: float = 2.0, username: str | None = None,
                 password: str | None = None, parent: int | None = None):
        self.runs_dir, self.server, self.port, self.env = Path(runs_dir), server, port, env
        self.interval, self.username, self.password = interval, username, password
        self.parent = parent  # the server that started it: the home ends when it is gone (even after kill -9)
        self.board = Board(server, port, env, log_path=None, username=username, password=password)
        self.table = self.board.add(TextPane(TABLE_WIN, "runs", width=1180, height=260))
        self.actions = self.board.add(PropertiesPane(ACTIONS_WIN, "actions", self._rows, width=460, height=260))
        self.socket = EventSocket(server, port, cookie=self.board.login_cookie, on_event=self.handle,
                                  on_disconnect=self.board.mark_stale)
        self.form = NewRunForm(self.runs_dir, server, port, say=self._say)  # a new run from the page (home_form.py)
        self.records: dict[str, RunRecord] = {}  # run folder ("<run>", "<sweep>/<run>") -> what its files said last
        self.created: dict[str, float] = {}  # run folder name -> config.json's mtime (newest first)
        self._seen: dict[str, tuple] = {}  # run folder name -> its files' mtimes when last read
        self.order: list[str] = []  # checkbox rows (after ACTION_ROWS): new runs at the end, see the module's text
        self._sent: list[tuple[float, tuple[str, ...]]] = []  # (last on show, the rows): see the module's text
        self.selected: set[str] = set()
        self.message = "tick runs below, then press a button"
        self.comparison: str | None = None
        self.comparing = False
        self._envs_client: Client | None = None
        self._wake, self._stop = threading.Event(), threading.Event()

    # -- reading the runs folder (the home's own thread) ------------------------------------------
    def scan(self) -> None:
        """Read what changed; a live run's lock again whatever changed."""
        found: dict[str, tuple[float | None, ...]] = {}
        for folder in run_folders(self.runs_dir):  # a sweep's runs too, by "<sweep>/<run>"
            stamps = tuple(_mtime(folder / n) for n in FILES)
            if stamps[0] is not None:
                found[folder.relative_to(self.runs_dir).as_posix()] = stamps
        for name, stamps in found.items():
            rec = self.records.get(name)
            if stamps != self._seen.get(name) or rec is None:
                try:
                    rec = load_run(self.runs_dir / name, lenient=True)  # a damaged file: said in its row
                except (OSError, ValueError) as err:  # gone between the glob and the read: next tick
                    log.debug("runs home: %s: %s", name, err)
                    continue
                created = stamps[0]
                assert created is not None  # found holds only runs whose config.json has a modification time
                self._seen[name], self.created[name] = stamps, created
            elif rec.status.get("state") in LIVE_STATES:
                rec.held = is_held(rec.run_dir)
            self.records[name] = rec
        with self.board.lock:
            for name in [n for n in self.records if n not in found]:  # deleted: its row goes (see the top)
                del self.records[name]
                self.selected.discard(name)
            kept = [n for n in self.order if n in self.records]
            if kept != self.order:
                self.order = kept
                self.actions.touch(urgent=True)
            new = sorted((n for n in self.records if n not in self.order), key=lambda n: -self.created[n])
            self.order += new
            if new:
                self.actions.touch(urgent=True)

    def envs(self) -> set[str] | None:
        """The envs the server has (None: it did not say)."""
        try:
            if self._envs_client is None:
                self._envs_client = connect(self.server, self.port, self.env, self.username, self.password)
            return set(json.loads(self._envs_client._send({}, endpoint="env_state", quiet=True)))
        except Exception:  # no server yet, a login refused: link every run
            return None

    def refresh(self) -> None:
        self.scan()
        newest = sorted(self.records, key=lambda n: -self.created[n])
        html = table_html([self.records[n] for n in newest], str(self.runs_dir), self.envs(), self.comparison)
        with self.board.lock:
            self.table.height = min(900, 130 + 26 * max(1, len(newest)))
            self.table.set(html)
            self.actions.height = min(1000, 380 + 24 * len(self.order))
        self.board.wake()

    def run(self) -> None:
        """Keep the env up to date until close()."""
        self.board.start()
        self.socket.start()
        while not self._stop.is_set() and (self.parent is None or os.getppid() == self.parent):
            try:
                self.refresh()
            except Exception:  # the home must outlive a bug in one tick
                log.exception("runs home")
            self._wake.wait(self.interval)
            self._wake.clear()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self.socket.close()
        self.board.close(5.0)

    # -- browser events (the socket's thread) -----------------------------------------------------
    def handle(self, event: dict) -> None:
        if (event.get("target"), event.get("eid"), event.get("event_type")) != (ACTIONS_WIN, self.env,
                                                                              "PropertyUpdate"):
            return
        with self.board.lock:
            row = self._row_of(event)
            if row is None:
                return
            if row == MOVED:
                self.message = "the list of runs changed as you clicked; tick again"
            elif row in self.order:
                if row in self.records:
                    (self.selected.add if event.get("value") in (True, "true") else self.selected.discard)(row)
                else:
                    self.message = f"{row}: its folder is gone"
            elif row == "message":
                self.message = ""
            elif row in FORM_ROWS:
                self.message = self.form.start() if row == "start" else self.form.edit(row, event.get("value"))
            elif row == "compare":
                self._compare()
            else:
                self.message = self._command(row)
            self.actions.touch(urgent=True)
        self.board.wake()
        self._wake.set()

    def _row_of(self, event: dict) -> str | None:
        """The row's action ("compare", ...) or run folder name; the name the page showed wins (see top)."""
        names = [*ACTION_ROWS, *self.order]
        i = property_index(event, len(names))
        if i is None:
            return None
        pane = event.get("pane_data")
        content = pane.get("content") if isinstance(pane, dict) else None
        if isinstance(content, list) and 0 <= i < len(content) and isinstance(content[i], dict):
            shown = unbreakable(str(content[i].get("name", "")))
            if shown in self.order:
                return shown
            if content[i].get("type") == "checkbox":  # a run the page showed that is gone (or renamed)
                return MOVED
            for action, label in BUTTONS.items():
                if content[i].get("value") == label:
                    return action
        k = i - len(ACTION_ROWS)
        if k >= 0:  # a run's row: only when every list the page may still show names the same run there
            now = time.monotonic()
            lists = [rows for shown_until, rows in self._sent if now - shown_until < RECENT_S]
            if {rows[k] if k < len(rows) else None for rows in [*lists, tuple(self.order)]} != {self.order[k]}:
                return MOVED
        return names[i]

    def _say(self, verdict: str) -> None:
        """A verdict that comes later (a started run passed its start-up checks, or refused): the message row."""
        with self.board.lock:
            self.message = verdict
            self.actions.touch(urgent=True)
        self.board.wake()
        self._wake.set()

    def _picked(self) -> list[RunRecord]:
        return [self.records[n] for n in self.order if n in self.selected and n in self.records]

    def _compare(self) -> None:
        picked = self._picked()
        if len(picked) < 2:
            self.message = "tick at least two runs to compare"
            return
        if self.comparing:
            self.message = "a comparison is being built; press again when it is done"
            return
        picked.sort(key=lambda r: r.run_dir.name)  # the same runs, the same env, whatever the tick order
        env = fit_name("compare-" + "-".join(r.run_dir.name for r in picked))
        self.comparing, self.message = True, f"building {env} ..."
        threading.Thread(target=self._build, args=(picked, env), name="runs-home-compare", daemon=True).start()

    def _build(self, picked: list[RunRecord], env: str) -> None:
        try:
            compare_runs(picked, self.server, self.port, env, self.username, self.password)
            verdict, done = f"comparison {env} built: its link is above the table", env
        except Exception as err:  # a server gone, a broken sample PNG: said in the message row
            verdict, done = f"comparison failed: {type(err).__name__}: {err}", None
        with self.board.lock:
            self.comparing, self.message = False, verdict
            self.comparison = done or self.comparison
            self.actions.touch(urgent=True)
        self.board.wake()
        self._wake.set()

    def _command(self, command: str) -> str:
        """Send `command` to each ticked run that can take it; the verdict names every one."""
        picked = self._picked()
        if not picked:
            return f"tick the runs to {command} first"
        sent, skipped = [], []
        for rec in picked:
            state, cfg = rec.state, rec.config
            if state not in CAN[command]:
                skipped.append(f"{rec.name} is {state}")
            elif not cfg.get("visdom", True) or int(cfg.get("port") or DEFAULT_PORT) != int(self.port):
                skipped.append(f"{rec.name} has no control panel on this server")
            elif self.socket.send(run_command_message(env_of(rec), rec.run_dir, command, source="home")):
                sent.append(rec.name)
            else:
                skipped.append(f"{rec.name}: not sent (no connection to the server)")
        text = f"{command} sent to {', '.join(sent)}" if sent else f"nothing to {command}"
        return text + (f"; {'; '.join(skipped)}" if skipped else "")

    def _rows(self) -> list[dict]:
        now, order = time.monotonic(), tuple(self.order)
        if self._sent and self._sent[-1][1] != order:
            self._sent[-1] = (now, self._sent[-1][1])  # on show until now, when the new list goes out
        self._sent = [e for e in self._sent if now - e[0] < RECENT_S and e[1] != order] + [(now, order)]
        rows = [{"type": "button", "name": "a comparison env of the ticked runs", "value": BUTTONS["compare"]},
                {"type": "button", "name": "pause the ticked running runs", "value": BUTTONS["pause"]},
                {"type": "button", "name": "resume the ticked paused runs", "value": BUTTONS["resume"]},
                {"type": "button", "name": "stop the ticked runs (each writes a checkpoint)",
                 "value": BUTTONS["stop"]},
                {"type": "button", "name": f"message: {self.message}", "value": "Clear"}]
        return rows + self.form.rows() + [{"type": "checkbox", "name": n, "value": n in self.selected}
                                          for n in self.order]


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


# -- command line ----------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """`vae-visdom home`."""
    p.description = ("Keep the visdom env `runs` up to date with a table of every run in "
                     "--runs-dir (status, epochs, losses, settings) and a pane to compare, "
                     "pause, resume or stop the ticked runs, and a small form that starts a new run "
                     "(dataset, model, lr, batch size, epochs). `vae-visdom serve` starts one "
                     "itself; this is for a server started otherwise. Ctrl-C stops it.")
    p.add_argument("--runs-dir", default="runs", help="where runs live (default: %(default)s)")
    add_server_arguments(p)
    p.add_argument("--env", default=HOME_ENV, help="the env it keeps (default: %(default)s)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between looks (default: %(default)s)")
    p.add_argument("--max-page-runs", type=argparse_type("max_page_runs"), default=None,
                   help="at most this many runs started from the pages (this form and the panels' Fork) run at once; "
                        f"recorded in RUNS_DIR/{page_limit.LIMIT_FILE} (default: what is recorded there, else "
                        f"{page_limit.DEFAULT_MAX_PAGE_RUNS}; `vae-visdom serve` passes its own)")
    p.add_argument("--parent", type=int, default=None, help="end when process PARENT, the one that started this, "
                   "is gone (`vae-visdom serve` passes its own pid)")


def run(args: argparse.Namespace) -> int:
    check_name(args.env, "env")
    if args.max_page_runs is not None:
        try:
            page_limit.write_limit(args.runs_dir, args.max_page_runs)
        except OSError as err:
            print(f"vae-visdom home: warning: cannot record --max-page-runs in {args.runs_dir} ({err}); the "
                  f"trainers' Fork keeps the limit recorded there, or {page_limit.DEFAULT_MAX_PAGE_RUNS}",
                  file=sys.stderr)
    username, password = env_login() or (None, None)
    home = RunsHome(args.runs_dir, args.server, args.port, args.env, max(0.2, args.interval), username, password,
                    args.parent)
    print(f"runs home: {args.server}:{args.port}/env/{args.env} (runs in {args.runs_dir}); Ctrl-C stops it",
          flush=True)
    try:
        home.run()
    except KeyboardInterrupt:
        pass
    finally:
        home.close()
    return 0
