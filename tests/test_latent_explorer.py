"""The latent explorer: a point in latent space decoded on demand from a copy of the model, moved from the page.

The copy is refreshed by the trainer between steps and decoded on the page's thread: it never touches the
model the optimizer changes. A real Chromium moves the point while a real MNIST run is paused.
"""
from __future__ import annotations

import base64
import re
import threading

import pytest
import torch

from tests.builders import make_session
from tests.fixtures import click_in_pane, properties_pane, screenshot, until
from tests.test_e2e_browser import keep_for_docs, session_for
from tests.test_epoch_view import PauseAfter
from tests.test_panel import page  # noqa: F401  (the fixture: a browser page's websocket)
from vae_visdom.data.base import to_unit_float
from vae_visdom.insight.explorer import LatentExplorer
from vae_visdom.models import build_model


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", (1, 28, 28), 4, 32, "bernoulli")


def test_the_point_starts_at_a_test_images_posterior_mean_and_steps_along_a_dimension_by_the_step():
    model = small_model()
    x = (torch.rand(20, 1, 28, 28) * 255).to(torch.uint8)
    e = LatentExplorer(model, x)
    e.run_start()
    with e.lock:
        e.start_at(5)
        mean = model.encode(to_unit_float(x[5:6]))[0][0].detach()
        assert torch.allclose(e.point, mean, atol=1e-6)
        e.choose("dimension", 2, 0, 0.5)
        e.move(0, 1)
        e.move(0, 1)
        e.move(1, -1)
        assert torch.allclose(e.point - mean, torch.tensor([-0.5, 0.0, 1.0, 0.0]), atol=1e-6)
        out = e.decode()
    assert out.images.shape == (9, 1, 28, 28) and 0.0 <= float(out.images.min()) <= float(out.images.max()) <= 1
    centre = torch.sigmoid(model.decode(e.point[None]))[0].detach()
    assert torch.allclose(out.images[4], centre, atol=1e-6)  # the middle of the 3x3 grid is the point itself
    assert "test image 5" in out.caption and "+2 steps of 0.5 sd along z3" in out.caption


def test_principal_directions_are_unit_vectors_ordered_by_the_spread_of_the_means():
    model = small_model()
    e = LatentExplorer(model, (torch.rand(200, 1, 28, 28) * 255).to(torch.uint8))
    e.run_start()
    with e.lock:
        e.start_at(None)
        e.choose("principal", 0, 1, 1.0)
        d0, d1 = e._direction(0), e._direction(1)  # noqa: SLF001  (the rule under test)
        spread = e._spread  # noqa: SLF001
    assert spread is not None and spread[0] >= spread[1] >= spread[-1]
    assert float(d0.norm()) == pytest.approx(float(spread[0]), rel=1e-4)
    assert abs(float(d0 @ d1)) < 1e-4  # orthogonal


def test_the_copy_changes_only_when_the_trainer_refreshes_it_and_never_the_live_model():
    model = small_model()
    e = LatentExplorer(model, (torch.rand(20, 1, 28, 28) * 255).to(torch.uint8))
    e.run_start()
    before = [p.detach().clone() for p in model.parameters()]
    with e.lock:
        first = e.decode().images
    with torch.no_grad():
        for p in model.parameters():  # the optimizer changes the live model...
            p.add_(0.5)
    with e.lock:
        assert torch.equal(e.decode().images, first)  # ...the explorer still shows the copy
    e.epoch_end(1)  # the trainer's thread, between two steps
    with e.lock:
        again = e.decode()
    assert not torch.equal(again.images, first) and "after epoch 1" in again.caption
    assert all(torch.equal(p, b + 0.5) for p, b in zip(model.parameters(), before))  # decoding changed nothing


def grid_png(browser) -> bytes | None:
    pairs = browser.execute_script(
        "return Array.from(document.querySelectorAll('.content-text img')).map(i => [i.alt, i.src])")
    found = [src for alt, src in pairs if "along" in (alt or "") or "the origin" in (alt or "")
             or "test image" in (alt or "")]
    return base64.b64decode(re.sub("^data:image/png;base64,", "", found[0])) if found else None


def grid_caption(browser) -> str:
    alts = browser.execute_script("return Array.from(document.querySelectorAll('.content-text img')).map(i => i.alt)")
    return next((a for a in alts if "the model" in (a or "")), "")


@pytest.mark.browser
def test_the_explorer_moves_and_redraws_in_chromium_while_the_run_is_paused(visdom_server, browser, tmp_path, mnist):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    env = "explorer"
    session = session_for(visdom_server, tmp_path, env, mnist, epochs=3, batch_size=512, log_interval=50,
                          views=False)
    session.trainer.add_callback(PauseAfter(session.controller, 1))
    thread = threading.Thread(target=session.run, daemon=True)
    thread.start()
    try:
        until(lambda: session.trainer.state == "paused", "one epoch and the pause", timeout=180)
        browser.get(f"{visdom_server.url}/env/{env}")

        says = "start from: a test image"

        def pane():
            return properties_pane(browser, says)

        def click(label: str) -> None:
            click_in_pane(browser, says, label)

        until(lambda: "after epoch 1" in grid_caption(browser), "the grid of the model after epoch 1", timeout=30)
        first = grid_png(browser)
        click(">")
        until(lambda: "+1 step of 1 sd along PC1" in grid_caption(browser), "the point one step along PC1")
        until(lambda: grid_png(browser) not in (None, first), "the grid redrawn")
        moved = grid_png(browser)
        click("^")
        until(lambda: "+1 step of 1 sd along PC2" in grid_caption(browser), "a step up the second direction")

        start = pane().find_elements(By.CSS_SELECTOR, "input")[0]  # row 0: start from
        start.click()
        start.send_keys(Keys.CONTROL, "a")
        start.send_keys("7", Keys.ENTER)
        until(lambda: grid_caption(browser).startswith("test image 7 · "), "the point at test image 7's mean")
        until(lambda: grid_png(browser) not in (None, moved), "the grid of test image 7")
        until(lambda: re.search(r"decoded in \d+ ms", pane().text), "the decode time in the pane")
        ms = int(re.search(r"decoded in (\d+) ms", pane().text).group(1))
        assert ms < 1000, f"a decode took {ms} ms"
        keep_for_docs(screenshot(browser, tmp_path / "latent_explorer.png"), "latent_explorer.png")

        start = pane().find_elements(By.CSS_SELECTOR, "input")[0]
        start.click()
        start.send_keys(Keys.CONTROL, "a")
        start.send_keys("99999", Keys.ENTER)
        until(lambda: "rejected: '99999'" in pane().text, "a bad image number refused in the pane")
        assert session.trainer.state == "paused"
    finally:
        session.controller.stop(source="test")
        thread.join(timeout=120)
    assert session.monitor is not None and session.monitor.hook_errors == []



def test_replay_browse_brings_the_explorer_back_from_the_runs_checkpoint(server, page, tmp_path):  # noqa: F811
    """A finished run (real MNIST, a subset, one epoch): replayed into another env and browsed, its explorer
    answers the page from the checkpoint's model, with no trainer."""
    import json

    from vae_visdom.insight.explorer import explorer_for_run
    from vae_visdom.monitor.explorer_pane import ROWS
    from vae_visdom.pages.browse import browse
    from vae_visdom.pages.replay import replay

    run_dir = tmp_path / "done"
    session = make_session(run_dir, server=server, data=None, env="explored", epochs=1, subset=2000,
                           batch_size=200, views=False)
    assert session.run().state == "finished"
    done = replay(run_dir, port=server.port, env="explored-again")
    explorer = explorer_for_run(run_dir)
    assert explorer.epoch == 1
    stop, ready = threading.Event(), threading.Event()
    t = threading.Thread(target=browse, args=(run_dir, done["entries"], "http://127.0.0.1", server.port,
                                              "explored-again"),
                         kwargs={"stop": stop, "ready": ready, "explorer": explorer}, daemon=True)
    t.start()
    win = next(str(m["win"]) for _, m in done["entries"] if str(m.get("win", "")).endswith("-explorer"))

    def caption() -> str:
        data = json.loads(server.client("explored-again", use_incoming_socket=False).get_window_data(
            env="explored-again"))
        return str(data.get(f"{win}-grid", {}).get("content", ""))

    try:
        assert ready.wait(20)
        page(win, "explored-again", ROWS.index("forward"), "")
        until(lambda: "+1 step of 1 sd along PC1" in caption() and "after epoch 1" in caption(),
              "the replayed explorer one step along PC1", 30)
    finally:
        stop.set()
        t.join(20)
