"""The view pane against a real visdom server, driven by the websocket message a browser page
sends: stepping back and forward through the run folder's PNGs, following the newest, a resumed run,
`replay --browse`, the loss axis and the EMA trace."""
from __future__ import annotations

import base64
import re
import threading

from tests.fixtures import until
from tests.test_monitor import feed_steps, images, record, run_info, window_data
from tests.test_panel import page  # noqa: F401  (the fixture: a browser page's websocket)
from vae_visdom.monitor import VisdomMonitor
from vae_visdom.monitor.curves import EMA
from vae_visdom.monitor.view_pane import ROWS
from vae_visdom.pages.browse import browse
from vae_visdom.pages.replay import replay
from vae_visdom.runs.files import RunFiles


def epoch(m: VisdomMonitor, files: RunFiles, e: int) -> None:
    """One epoch as the trainer reports it: the run files first (the PNGs), then the monitor."""
    feed_steps(m, e)
    files.on_epoch_end(record(e), images(e))
    m.on_epoch_end(record(e), images(e))


def pane_png(server, env: str, win: str) -> tuple[str, bytes]:
    """(caption, PNG bytes) of an image pane as the server holds it."""
    content = until(lambda: window_data(server, env).get(win), f"window {win}")["content"]
    alt = re.search(r'alt="([^"]*)"', content).group(1)
    return alt, base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', content).group(1))


def showing(server, env, win, caption, png) -> bool:
    return pane_png(server, env, win) == (caption, png)


def three_epochs(port: int, env: str, run_dir) -> tuple[VisdomMonitor, RunFiles]:
    """A run's first three epochs streamed and written to its folder, the panel's back channel connected."""
    run_dir.mkdir()
    files = RunFiles(run_dir)
    m = VisdomMonitor(port=port, env=env, run_dir=run_dir)
    m.on_run_start(run_info(run_dir))
    for e in (1, 2, 3):
        epoch(m, files, e)
    assert m.flush(10) and m.wait_connected(10)
    return m, files


def test_step_back_follow_resume_and_replay_browse(server, page, tmp_path):  # noqa: F811
    run_dir = tmp_path / "run"
    m, files = three_epochs(server.port, "views", run_dir)
    w = m.windows
    png = {e: (run_dir / f"sample_{e}.png").read_bytes() for e in (1, 2, 3)}
    assert pane_png(server, "views", w["samples"]) == ("epoch 3", png[3])  # the newest, as before
    page(w["view"], "views", ROWS.index("back"), "")
    page(w["view"], "views", ROWS.index("back"), "")
    until(lambda: showing(server, "views", w["samples"], "epoch 1 of 3 (stepped back)", png[1]), "epoch 1")
    assert pane_png(server, "views", w["recon"])[1] == (run_dir / "reconstruction_1.png").read_bytes()
    epoch(m, files, 4)  # a new epoch while stepped back: the panes stay where the user is
    png[4] = (run_dir / "sample_4.png").read_bytes()
    assert m.flush(10)
    assert pane_png(server, "views", w["samples"]) == ("epoch 1 of 3 (stepped back)", png[1])
    page(w["view"], "views", ROWS.index("forward"), "")
    until(lambda: showing(server, "views", w["samples"], "epoch 2 of 4 (stepped back)", png[2]), "epoch 2")
    page(w["view"], "views", ROWS.index("epoch"), "99")
    until(lambda: "no epoch 99 yet" in str(window_data(server, "views")[w["view"]]["content"]), "the refusal")
    page(w["view"], "views", ROWS.index("newest"), "")
    until(lambda: showing(server, "views", w["samples"], "epoch 4", png[4]), "the newest again")

    # the loss axis and the EMA trace
    loss = lambda: window_data(server, "views")[w["loss"]]  # noqa: E731
    assert "range" in loss()["content"]["layout"]["yaxis"]
    page(w["view"], "views", ROWS.index("y_axis"), "")
    until(lambda: "range" not in loss()["content"]["layout"]["yaxis"], "the whole y-axis")
    page(w["view"], "views", ROWS.index("smoothing"), "0.6")
    until(lambda: EMA in {t["name"] for t in loss()["content"]["data"]}, "the EMA trace")
    page(w["view"], "views", ROWS.index("smoothing"), "2")
    until(lambda: "allowed: a number from 0 to 0.99" in str(window_data(server, "views")[w["view"]]["content"]),
          "the refused smoothing")
    m.close()

    # a resumed run shows its last epoch at once and steps through the epochs before the resume
    r = VisdomMonitor(port=server.port, env="views", run_dir=run_dir)
    r.on_run_start(run_info(run_dir, resumed=True, start_epoch=5))
    assert r.flush(10) and r.wait_connected(10)
    assert pane_png(server, "views", w["samples"]) == ("epoch 4", png[4])
    page(w["view"], "views", ROWS.index("epoch"), "2")
    until(lambda: showing(server, "views", w["samples"], "epoch 2 of 4 (stepped back)", png[2]), "resumed: epoch 2")
    r.close()

    # replay into another env, then browse it without any trainer
    done = replay(run_dir, port=server.port, env="replayed")
    stop, ready = threading.Event(), threading.Event()
    t = threading.Thread(target=browse, args=(run_dir, done["entries"], "http://127.0.0.1", server.port, "replayed"),
                         kwargs={"stop": stop, "ready": ready}, daemon=True)
    t.start()
    try:
        assert ready.wait(20)
        until(lambda: showing(server, "replayed", w["samples"], "epoch 4", png[4]), "replayed: the newest")
        page(w["view"], "replayed", ROWS.index("back"), "")
        until(lambda: showing(server, "replayed", w["samples"], "epoch 3 of 4 (stepped back)", png[3]),
              "replayed: one back")
    finally:
        stop.set()
        t.join(20)


def test_stepping_back_works_after_a_server_restart(visdom_server_factory, tmp_path):
    """The server is killed and started again (envs from its last save): the trainer's monitor reconnects,
    and a step back in the page is answered with the epoch's images from the run folder."""
    import json

    import websocket

    srv = visdom_server_factory()
    run_dir = tmp_path / "run"
    m, _ = three_epochs(srv.port, "restarted", run_dir)
    w = m.windows
    srv.kill()
    srv.start()
    until(lambda: m.board.wait_connected(0.2) and w["view"] in window_data(srv, "restarted"),
          "the monitor back on the restarted server", 30)
    ws = websocket.create_connection(f"ws://127.0.0.1:{srv.port}/socket", timeout=5)
    try:
        ws.send(json.dumps({"cmd": "forward_to_vis", "data": {"target": w["view"], "eid": "restarted",
                                                             "event_type": "PropertyUpdate",
                                                             "propertyId": ROWS.index("back"), "value": ""}}))
        png = (run_dir / "sample_2.png").read_bytes()
        until(lambda: showing(srv, "restarted", w["samples"], "epoch 2 of 3 (stepped back)", png),
              "epoch 2 after the restart", 20)
    finally:
        ws.close()
        m.close()
