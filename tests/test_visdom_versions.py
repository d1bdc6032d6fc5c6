"""Each supported visdom line (0.2.4 on Python <= 3.11, 0.3.0 on >= 3.12; scripts/compat_visdom03.sh runs
this file against 0.3.0): the page loads every static file it asks for, and the UI files are that version's."""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import numpy as np
import pytest

from tests.fixtures import until, wait_for
from vae_visdom.serve import assets, compat


def test_the_visdom_under_test_is_the_one_expected():
    """The compat run sets VAE_VISDOM_EXPECT_VISDOM=0.3.0: proof that it really ran against that version."""
    want = os.environ.get("VAE_VISDOM_EXPECT_VISDOM")
    import visdom

    assert visdom.__version__ == compat.installed_version()
    assert visdom.__version__ in compat.SUPPORTED
    if want:
        assert visdom.__version__ == want


def test_the_installed_ui_files_are_this_versions_set():
    static = assets.default_static_dir()
    assert assets.missing() == []
    assert (static / "version.built").read_text() == compat.installed_version()
    mathjax = {"0.2.4": "js/mathjax/2.7.5/MathJax.js", "0.3.0": "js/mathjax/3.2.2/es5/tex-mml-svg.js"}
    assert (static / mathjax[compat.installed_version()]).stat().st_size > 10_000


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=20) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


PAGE_URLS = """
const urls = performance.getEntriesByType('resource').map(e => [e.name, e.responseStatus || 0]);
for (const el of document.querySelectorAll('script[src], link[href]')) urls.push([el.src || el.href, 0]);
return urls;
"""


@pytest.mark.browser
def test_the_page_loads_every_static_file_it_asks_for(visdom_server, browser):
    vis = visdom_server.client("statics", use_incoming_socket=False)
    vis.line(X=np.arange(3), Y=np.array([1.0, 2.0, 3.0]), win="statics_loss", opts={"title": "loss"})
    vis.text("$$x^2$$ and text", win="statics_text")  # MathJax typesets it: its files load on demand
    browser.get(f"{visdom_server.url}/env/statics")
    wait_for(browser, ".layout .react-grid-item", min_count=2)
    until(lambda: browser.execute_script("return document.readyState") == "complete", "page loaded", timeout=30)
    urls = {}
    for url, code in browser.execute_script(PAGE_URLS):
        if urlsplit(url).path.startswith("/static/"):
            urls[url.split("?")[0]] = code
    assert len(urls) >= 12, urls
    bad = {url: status_of(url) for url in urls}
    bad = {url: code for url, code in bad.items() if code != 200}
    seen_bad = {url: code for url, code in urls.items() if code not in (0, 200)}  # as the browser saw them
    assert not bad and not seen_bad, f"static URLs not answering 200: {json.dumps({**seen_bad, **bad}, indent=1)}"
    mathjax = [u for u in urls if "/js/mathjax/" in u]
    assert mathjax, "the page asked for no MathJax file"
    assert browser.execute_script("return typeof MathJax") == "object"


def test_a_window_saved_without_a_version_key_takes_appends(visdom_server_factory, tmp_path):
    """visdom 0.2.4 saves windows without the "version" key that 0.3's /update counts up: a user moving to
    Python 3.12 keeps appending to the envs of ~/.visdom."""
    env_path = tmp_path / "envs"
    server = visdom_server_factory(env_path=env_path)
    vis = server.client("old_env", use_incoming_socket=False)
    vis.line(X=np.arange(3), Y=np.array([1.0, 2.0, 3.0]), win="old_loss", opts={"title": "loss"})
    assert server.stop() == 0
    saved = json.loads((env_path / "old_env.json").read_text())
    for win in saved["jsons"].values():
        win.pop("version", None)  # as visdom 0.2.4 writes it
    (env_path / "old_env.json").write_text(json.dumps(saved))
    server.start()
    vis = server.client("old_env", use_incoming_socket=False)
    vis.line(X=np.array([3, 4]), Y=np.array([4.0, 5.0]), win="old_loss", update="append")
    data = json.loads(vis.get_window_data(win="old_loss", env="old_env"))["content"]["data"][0]
    assert list(data["y"]) == [1.0, 2.0, 3.0, 4.0, 5.0]
