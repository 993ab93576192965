"""The report as a reader sees it: headless Chromium opens reports/report.html with the network
cut off; every image must load, no request may leave the page (only the file itself and data:
URIs), and the console must show no error. A screenshot of the first screen is saved to
reports/screenshot.png of the test run.

Chromium (Debian package `chromium`) is installed by `make browser`, which `make test` runs; the
test installs it itself when it can (root with apt-get) and is skipped only when it cannot. It is
driven through the DevTools protocol over a websocket (tornado's client, already in the lock).
"""

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from test_report import (  # noqa: F401  (session fixtures: one workflow run each)
    STUDY_TITLE,
    custom_study,
)

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    "--remote-debugging-port=0",
    "--window-size=1280,900",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def ensure_chromium() -> str:
    path = find_chromium()
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=600, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "chromium"],
            capture_output=True,
            timeout=1200,
            env=env,
        )
        path = find_chromium()
        if path:
            return path
    pytest.skip(
        "chromium is not installed and could not be installed (run `make browser` as "
        "root, or apt-get install chromium)"
    )


class DevTools:
    """A minimal Chrome DevTools Protocol client (one websocket, flattened sessions)."""

    def __init__(self, conn):
        self.conn = conn
        self.next_id = 0
        self.events: list[dict] = []

    async def send(
        self,
        method: str,
        params: dict | None = None,
        session: str | None = None,
        timeout: float = 60,
    ):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        await self.conn.write_message(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            raw = await asyncio.wait_for(self.conn.read_message(), deadline - time.monotonic())
            if raw is None:
                raise RuntimeError("DevTools connection closed")
            data = json.loads(raw)
            if data.get("id") == self.next_id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data.get("result", {})
            self.events.append(data)

    async def wait_for(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for e in self.events:
                if e.get("method") == method:
                    return e
            raw = await asyncio.wait_for(self.conn.read_message(), deadline - time.monotonic())
            if raw is None:
                raise RuntimeError("DevTools connection closed")
            self.events.append(json.loads(raw))


async def inspect_page(ws_url: str, page_url: str) -> dict:
    from tornado.websocket import websocket_connect

    conn = await websocket_connect(ws_url, max_message_size=256 << 20)
    cdp = DevTools(conn)
    target = await cdp.send("Target.createTarget", {"url": "about:blank"})
    att = await cdp.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
    s = att["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        await cdp.send(f"{domain}.enable", session=s)
    # Cut the network off: any request that tries to leave the page fails (and is recorded).
    await cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
        session=s,
    )
    await cdp.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        session=s,
    )
    cdp.events.clear()
    await cdp.send("Page.navigate", {"url": page_url}, session=s)
    await cdp.wait_for("Page.loadEventFired", timeout=120)
    await asyncio.sleep(1.0)  # late requests or console messages, if any
    res = await cdp.send(
        "Runtime.evaluate",
        {
            "expression": "JSON.stringify(Array.from(document.images).map(i => "
            "({complete: i.complete, w: i.naturalWidth, h: i.naturalHeight, "
            "src: i.src.slice(0, 30)})))",
            "returnByValue": True,
        },
        session=s,
    )
    images = json.loads(res["result"]["value"])
    res = await cdp.send(
        "Runtime.evaluate",
        {
            "expression": "JSON.stringify({title: document.title, "
            "h2: Array.from(document.querySelectorAll('h2')).map(h => h.innerText), "
            "scripts: document.scripts.length, "
            "links: Array.from(document.querySelectorAll('link[href]')).length})",
            "returnByValue": True,
        },
        session=s,
    )
    dom = json.loads(res["result"]["value"])
    shot = await cdp.send("Page.captureScreenshot", {"format": "png"}, session=s)
    await cdp.send("Target.closeTarget", {"targetId": target["targetId"]})
    conn.close()
    requests = [
        e["params"]["request"]["url"]
        for e in cdp.events
        if e.get("method") == "Network.requestWillBeSent"
    ]
    failed = [e["params"] for e in cdp.events if e.get("method") == "Network.loadingFailed"]
    errors = [
        e["params"]
        for e in cdp.events
        if (
            e.get("method") == "Runtime.consoleAPICalled"
            and e["params"].get("type") in ("error", "assert")
        )
        or e.get("method") == "Runtime.exceptionThrown"
        or (e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error")
    ]
    return {
        "images": images,
        "dom": dom,
        "requests": requests,
        "failed": failed,
        "errors": errors,
        "screenshot": base64.b64decode(shot["data"]),
    }


def open_in_chromium(chromium: str, html: Path, profile: Path) -> dict:
    profile.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not start: " + proc.stderr.read().decode()[-2000:])
            time.sleep(0.1)
        port, path = port_file.read_text().split()[:2]
        return asyncio.run(inspect_page(f"ws://127.0.0.1:{port}{path}", html.as_uri()))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_report_in_headless_chromium(demo_report, tmp_path):
    chromium = ensure_chromium()
    html = demo_report / "reports/report.html"
    seen = open_in_chromium(chromium, html, tmp_path / "profile")
    (demo_report / "reports/screenshot.png").write_bytes(seen["screenshot"])
    if os.environ.get("RECURSTUDY_SCREENSHOT"):
        Path(os.environ["RECURSTUDY_SCREENSHOT"]).write_bytes(seen["screenshot"])

    config = yaml.safe_load((demo_report / "config.yaml").read_text())
    assert seen["dom"]["title"] == config["study"]["title"]
    assert seen["dom"]["scripts"] == 0 and seen["dom"]["links"] == 0
    assert len(seen["dom"]["h2"]) == 13
    assert len(seen["images"]) >= 4
    for img in seen["images"]:
        assert img["complete"] and img["w"] > 0 and img["h"] > 0, img
        assert img["src"].startswith("data:image/png;base64,")
    outside = [u for u in seen["requests"] if not (u == html.as_uri() or u.startswith("data:"))]
    assert not outside, outside
    assert not seen["failed"], seen["failed"]
    assert not seen["errors"], seen["errors"]
    assert seen["screenshot"].startswith(b"\x89PNG")


def test_report_with_hostile_labels_in_headless_chromium(custom_study, tmp_path):  # noqa: F811
    """A study title and an arm label made of <script> and Markdown image syntax: the page runs
    no script, requests nothing (no data/participants.csv), and shows the title as text."""
    chromium = ensure_chromium()
    html = custom_study / "reports/report.html"
    seen = open_in_chromium(chromium, html, tmp_path / "profile")
    assert seen["dom"]["title"] == STUDY_TITLE
    assert seen["dom"]["scripts"] == 0 and seen["dom"]["links"] == 0
    for img in seen["images"]:
        assert img["src"].startswith("data:image/png;base64,"), img["src"][:80]
    outside = [u for u in seen["requests"] if not (u == html.as_uri() or u.startswith("data:"))]
    assert not outside, outside
    assert not seen["failed"], seen["failed"]
    assert not seen["errors"], seen["errors"]
