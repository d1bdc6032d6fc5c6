"""Every epoch's images in the page: a real Chromium steps the image panes of a 3-epoch MNIST run
back to epoch 1 and forward again with the view pane, then still types a value into the control panel."""
from __future__ import annotations

import base64
import re
import threading

import pytest

from tests.fixtures import screenshot, until
from tests.test_e2e_browser import keep_for_docs, session_for, window
from vae_visdom.runs.files import read_jsonl
from vae_visdom.train.events import Callback

pytestmark = pytest.mark.browser


class PauseAfter(Callback):
    """Pauses the run after epoch `n`: the trainer (and its monitor) stay up for the browser."""

    def __init__(self, controller, n: int):
        self.controller, self.n = controller, n

    def on_epoch_end(self, record, images) -> None:
        if record.epoch == self.n:
            self.controller.pause(source="test")


def shown(browser, caption: str) -> list[bytes]:
    """The PNG bytes of every <img> in the page captioned `caption` (+ " (stepped back)"): the two image panes."""
    pairs = browser.execute_script(  # read at once: the page redraws panes under our feet
        "return Array.from(document.querySelectorAll('.content-text img')).map(i => [i.alt, i.src])")
    return [base64.b64decode(re.sub("^data:image/png;base64,", "", src)) for alt, src in pairs
            if (alt or "").split(" (")[0] == caption]


@pytest.mark.slow
def test_step_back_to_epoch_one_and_forward_then_type_into_the_control_panel(visdom_server, browser, tmp_path,
                                                                              mnist):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    env = "epoch-view"
    session = session_for(visdom_server, tmp_path, env, mnist, epochs=4, batch_size=256, log_interval=20,
                          views=False)
    session.trainer.add_callback(PauseAfter(session.controller, 3))
    run_dir = tmp_path / env
    thread = threading.Thread(target=session.run, daemon=True)
    thread.start()
    try:
        until(lambda: session.trainer.state == "paused", "three epochs and the pause", timeout=180)
        browser.get(f"{visdom_server.url}/env/{env}")

        def view_pane():
            for pane in browser.find_elements(By.CSS_SELECTOR, ".content-properties"):
                if "images of epoch" in pane.text:
                    return pane
            return None

        def click(label: str) -> None:
            pane = until(view_pane, "the view pane", timeout=30)
            next(b for b in pane.find_elements(By.CSS_SELECTOR, "button") if b.text.strip() == label).click()

        saved = {e: sorted([(run_dir / f"reconstruction_{e}.png").read_bytes(),
                            (run_dir / f"sample_{e}.png").read_bytes()])
                 for e in (1, 2, 3)}
        until(lambda: sorted(shown(browser, "epoch 3")) == saved[3], "epoch 3's samples, the newest", timeout=30)
        click("<")
        until(lambda: sorted(shown(browser, "epoch 2 of 3")) == saved[2], "epoch 2 after one step back")
        click("<")
        until(lambda: sorted(shown(browser, "epoch 1 of 3")) == saved[1], "epoch 1 after two steps back")
        until(lambda: "1 of 3" in view_pane().text, "the view pane to say epoch 1 of 3")
        keep_for_docs(screenshot(browser, tmp_path / "epoch_view.png"), "epoch_view.png")
        click(">")
        until(lambda: sorted(shown(browser, "epoch 2 of 3")) == saved[2], "epoch 2 after a step forward")

        # the panel's text fields still take keys with the image panes on the page
        lr = browser.find_elements(By.CSS_SELECTOR, ".content-properties input")[0]
        lr.click()
        lr.send_keys(Keys.CONTROL, "a")
        lr.send_keys("3e-4" + Keys.ENTER)
        until(lambda: session.trainer.lr == 3e-4, "the trainer to apply lr 3e-4")
        until(lambda: any(e["name"] == "lr" and e["accepted"] for e in read_jsonl(run_dir / "events.jsonl")),
              "the change in events.jsonl")
        # and typing an epoch into the view pane jumps there
        field = view_pane().find_elements(By.CSS_SELECTOR, "input")[0]
        field.click()
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys("1" + Keys.ENTER)
        until(lambda: sorted(shown(browser, "epoch 1 of 3")) == saved[1], "epoch 1 typed into the view pane")
        click("newest")
        until(lambda: sorted(shown(browser, "epoch 3")) == saved[3], "the newest epoch again")
    finally:
        session.controller.stop(source="test teardown")
        thread.join(60)
    assert not thread.is_alive()
    # the end of the run shows the samples' animation (RUN_DIR/samples.gif) in the page
    pane = window(visdom_server, env, "the prior samples, epoch by epoch")
    gif = base64.b64decode(re.search(r'src="data:image/gif;base64,([^"]+)"', pane["content"]).group(1))
    assert gif == (run_dir / "samples.gif").read_bytes()
