"""A real headless Chromium (the OS package) driven over the DevTools protocol, for the report tests.

No browser library: Chromium's own `--remote-debugging-port` and aiohttp's websocket client (already
installed, a DVC dependency). `visit` loads a page and returns what a reader would hit: console
errors, uncaught exceptions, resources that failed to load, and values read from the DOM."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import free_port


def chromium() -> str:
    """The Chromium binary; skip where it is missing (`.ci/run` installs it, so CI never skips)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed: .ci/run installs it (apt-get install -y chromium)")
    pytest.skip("chromium is not installed (apt-get install -y chromium)")


class Browser:
    def __init__(self):
        self.port = free_port()
        self.profile = tempfile.mkdtemp(prefix="cvrepro-chromium-")
        self.proc = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
             f"--remote-debugging-port={self.port}", f"--user-data-dir={self.profile}", "--window-size=1280,900",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=1) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
                if pages:
                    self.ws_url = pages[0]["webSocketDebuggerUrl"]
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.2)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    def visit(self, path: Path, expressions: dict[str, str] | None = None, screenshot: Path | None = None) -> dict:
        return asyncio.run(self._visit(Path(path).resolve().as_uri(), expressions or {}, screenshot))

    async def _visit(self, url: str, expressions: dict[str, str], screenshot: Path | None) -> dict:
        import aiohttp

        problems: list[str] = []
        out: dict = {"problems": problems, "values": {}}
        async with aiohttp.ClientSession() as session, session.ws_connect(self.ws_url, max_msg_size=0) as ws:
            ids = iter(range(1, 10_000))

            async def call(method: str, **params) -> dict:
                my = next(ids)
                await ws.send_str(json.dumps({"id": my, "method": method, "params": params}))
                while True:
                    msg = json.loads((await ws.receive(timeout=60)).data)
                    if msg.get("id") == my:
                        if "error" in msg:
                            raise RuntimeError(f"{method}: {msg['error']}")
                        return msg.get("result", {})
                    note(msg)

            def note(msg: dict) -> None:
                method, p = msg.get("method"), msg.get("params", {})
                if method == "Runtime.exceptionThrown":
                    problems.append(f"exception: {p['exceptionDetails'].get('text')}")
                elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                    problems.append(f"console.{p['type']}: {[a.get('value') for a in p.get('args', [])]}")
                elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
                    problems.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
                elif method == "Network.loadingFailed":
                    problems.append(f"failed to load: {p.get('errorText')}")

            for domain in ("Page", "Runtime", "Log", "Network"):
                await call(f"{domain}.enable")
            await call("Page.navigate", url=url)
            while True:  # until the load event: every image and stylesheet came (or failed)
                msg = json.loads((await ws.receive(timeout=60)).data)
                note(msg)
                if msg.get("method") == "Page.loadEventFired":
                    break
            for name, expr in expressions.items():
                res = await call("Runtime.evaluate", expression=expr, returnByValue=True)
                out["values"][name] = res.get("result", {}).get("value")
            if screenshot is not None:
                metrics = await call("Page.getLayoutMetrics")
                size = metrics.get("cssContentSize") or metrics["contentSize"]
                clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 5000), "scale": 1}
                shot = await call("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)
                Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
            await asyncio.sleep(0.2)  # late console messages
            while True:
                try:
                    note(json.loads((await ws.receive(timeout=0.3)).data))
                except (asyncio.TimeoutError, TypeError):
                    break
        return out
