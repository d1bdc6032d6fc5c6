"""What the docs' page-shot scripts share: a fresh `vae-visdom serve` in a temp folder and headless Chromium
(Debian's chromium and chromium-driver)."""
import subprocess
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

REPO = Path(__file__).resolve().parent.parent
VV = str(REPO / ".venv" / "bin" / "vae-visdom")


def serve(port: int, tmp: Path) -> subprocess.Popen:
    """A server on `port` with its envs and runs under `tmp`, given 4 s to come up."""
    srv = subprocess.Popen([VV, "serve", "--port", str(port), "--env-path", str(tmp / "envs"), "--runs-dir",
                            str(tmp / "runs")], stdout=open(tmp / "serve.log", "w"), stderr=subprocess.STDOUT)
    time.sleep(4)
    return srv


def chromium(tmp: Path, size: str) -> webdriver.Chrome:
    """Headless Chromium with a window of `size` ("1600,1100") and its profile under `tmp`."""
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for f in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={size}",
              f"--user-data-dir={tmp / 'profile'}"):
        opts.add_argument(f)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
