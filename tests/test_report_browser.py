"""report.html in a real browser: headless Chromium loads it with no console errors, no failed or outside
request, and every plot is visible (its screenshot region is not blank).

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages separated by
NUL bytes on file descriptors 3 and 4), so nothing beyond Chromium itself is needed. The test skips, saying why,
only where no Chromium is installed (Debian: `apt-get install chromium`; .ci/run installs it).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_report import make_workdir, run_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_S = 60.0


def find_browser() -> str | None:
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


class Browser:
    """Headless Chromium over the DevTools pipe: enough of the protocol to load a page, watch it and screenshot it."""

    def __init__(self, executable: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="report-browser-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def child_fds() -> None:  # the protocol's fixed descriptors: 3 = commands in, 4 = replies out
            read_end, write_end = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self.process = subprocess.Popen(
            [executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--remote-debugging-pipe", f"--user-data-dir={self.profile}", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars", "--window-size=1280,900",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=child_fds, pass_fds=(3, 4))  # kept open by the close that follows preexec_fn
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable", session=True)
        except BaseException:
            self.close()  # no browser left behind when it does not start
            raise

    def call(self, method: str, params: dict | None = None, session: bool = False) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        reply = self._wait(lambda m: m.get("id") == self._next_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def _wait(self, wanted) -> dict:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if wanted(message):
                    return message
                self.events.append(message)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._from_browser], [], [], remaining)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk

    def load(self, url: str) -> None:
        self.call("Page.navigate", {"url": url}, session=True)
        if not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._wait(lambda m: m.get("method") == "Page.loadEventFired"))

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, session=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, x: float, y: float, width: float, height: float) -> Image.Image:
        data = self.call("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": x, "y": y, "width": width, "height": height, "scale": 1}}, session=True)["data"]
        return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions, failed loads, any request that is not file: or data:."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                found.append(f"console.{params['type']}: {[a.get('value') for a in params.get('args', [])]}")
            elif method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails'].get('text')}")
            elif method == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
                found.append(f"log {params['entry']['level']}: {params['entry'].get('text')}")
            elif method == "Network.loadingFailed":
                found.append(f"failed load: {params.get('errorText')}")
            elif method == "Network.requestWillBeSent":
                url = params["request"]["url"]
                if not url.startswith(("file:", "data:")):
                    found.append(f"outside request: {url}")
        return found

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            self.call("Browser.close")
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        shutil.rmtree(self.profile, ignore_errors=True)


PLOTS_JS = """JSON.stringify([...document.querySelectorAll('img.plot')].map(img => {
  const box = img.getBoundingClientRect();
  return {id: img.id, complete: img.complete, naturalWidth: img.naturalWidth,
          x: box.x + window.scrollX, y: box.y + window.scrollY, width: box.width, height: box.height};
}))"""


def visible_content(image: Image.Image) -> tuple[float, float]:
    """(pixel standard deviation, fraction of pixels that are not near-white) of a screenshot region."""
    pixels = np.asarray(image, dtype=np.float64)
    return float(pixels.std()), float((pixels.min(axis=2) < 200).mean())


def inspect(browser: Browser, page: Path) -> tuple[list[str], list[dict], list[Image.Image]]:
    browser.events.clear()
    browser.load(page.resolve().as_uri())
    time.sleep(0.3)  # late console messages of the load
    plots = json.loads(browser.evaluate(PLOTS_JS))
    shots = [browser.screenshot(p["x"], p["y"], p["width"], p["height"]) for p in plots
             if p["width"] >= 1 and p["height"] >= 1]
    return browser.problems(), plots, shots


@pytest.fixture(scope="module")
def browser():
    executable = find_browser()
    if executable is None:
        pytest.skip(f"no Chromium found ({', '.join(BROWSERS)}): install it with 'apt-get install -y chromium' "
                    "(.ci/run does), or point $CHROMIUM at one")
    instance = Browser(executable)
    yield instance
    instance.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    work = make_workdir(tmp_path_factory.mktemp("browser"), batches=(1, 4, 16))
    proc = run_report(work, "--arch", "RepVGG-A0")
    assert proc.returncode == 0, proc.stderr
    return work / "report.html"


def test_report_loads_cleanly_and_every_plot_is_visible(browser, report, tmp_path):
    problems, plots, shots = inspect(browser, report)
    assert problems == []
    assert [p["id"] for p in plots] == ["plot-throughput", "plot-compute-times"]
    assert all(p["complete"] and p["naturalWidth"] > 0 for p in plots), plots
    assert len(shots) == len(plots)
    for plot, shot in zip(plots, shots, strict=True):
        assert plot["width"] >= 400 and plot["height"] >= 250, plot  # shown at a readable size
        deviation, ink = visible_content(shot)
        assert deviation > 20 and ink > 0.01, (plot["id"], deviation, ink)
    title = browser.evaluate("document.title")
    assert title == "RepVGG-A0 offline inference report"
    assert browser.evaluate("document.querySelectorAll('table').length") >= 5


def test_the_check_fails_on_a_broken_page(browser, tmp_path):
    """The same inspection flags console errors, a blank plot and an outside request: its passing means something."""
    blank = base64.b64encode(b"<svg xmlns='http://www.w3.org/2000/svg' width='500' height='300'/>").decode()
    page = tmp_path / "broken.html"
    page.write_text(f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>x</title></head><body>
<img class="plot" id="blank" src="data:image/svg+xml;base64,{blank}">
<img src="http://192.0.2.1/x.png"><script>console.error("boom")</script></body></html>""")
    problems, plots, shots = inspect(browser, page)
    assert any("boom" in p for p in problems), problems
    assert any("outside request: http://192.0.2.1/x.png" in p for p in problems), problems
    assert len(shots) == 1 and visible_content(shots[0])[0] < 1
