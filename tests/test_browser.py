"""The report as a reader sees it: headless Chromium opens reports/report.html at 1280 x 900 px
with the network cut off; every image must load, no request may leave the page (only the file
itself and data: URIs), the console must show no error, nothing may be wider than the window,
and the first screen must hold each claim's sentence and the rates per arm. A screenshot of the
first screen is saved to reports/screenshot.png of the test's run folder (and to
$RECURSTUDY_SCREENSHOT when set, e.g. as a CI artefact).

Hostile text: every field of the config or data that reaches the page (study title, event name
and its plural, covariate labels, units and level order, claim statement, both arm labels, a
covariate category from the data, a data file name) is filled with script tags, quoted and
unquoted event handlers, javascript: links, srcset, poster, object data, a meta refresh and
Markdown image links; the report re-rendered from the custom study's results shows each of them
as text, runs no script (a flag the payloads would set stays unset, no dialog opens), embeds no
participant data and requests nothing. Model names, claim ids and covariate names cannot carry
such text (the schema's patterns), nor option values (enums, or the formula grammar).

Chromium (Debian package `chromium`) is installed by `make browser`, which `make test` runs; the
test installs it itself when it can (root with apt-get) and is skipped only when it cannot. It is
driven through the DevTools protocol over a websocket (tornado's client, already in the lock).
"""

import asyncio
import base64
import html as html_lib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_report import (  # noqa: F401  (session fixtures: one workflow run each)
    HOSTILE_ARM,
    HOSTILE_CONTROL,
    HOSTILE_LEVEL,
    STUDY_TITLE,
    custom_study,
)

REPO = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 1280, 900

# Run before any script of the page: a dialog would only set a counter (and never block the
# page), so that "no script ran" is a plain check of two window properties.
NO_DIALOGS = (
    "window.__rs_dialogs = 0;"
    "for (const f of ['alert', 'confirm', 'prompt', 'print'])"
    "  window[f] = function () { window.__rs_dialogs += 1; };"
)

# What the page looks like once loaded, in one evaluation: its width against the window, the
# elements wider than the window, the text of the first screen (text nodes wholly inside the
# top 1280 x 900 px), whether a payload ran, and elements or attributes that could run or load
# anything.
PAGE_FACTS = r"""
(() => {
  const w = window.innerWidth, h = window.innerHeight;
  const wide = [];
  const over = el => {
    const r = el.getBoundingClientRect();
    return r.width > 0 && (r.right > w + 0.5 || r.left < -0.5);
  };
  for (const el of document.body.querySelectorAll('*')) {
    if (!over(el) || (el.parentElement && over(el.parentElement))) continue;  // outermost only
    const r = el.getBoundingClientRect();
    const out = el.closest('.jp-OutputArea-output') || el;
    const what = out.innerText.trim().slice(0, 60).replace(/\s+/g, ' ');
    wide.push(`${el.tagName.toLowerCase()} ${Math.round(r.left)}..${Math.round(r.right)}: ${what}`);
  }
  const first = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (!node.textContent.trim()) continue;
    const range = document.createRange();
    range.selectNodeContents(node);
    const rects = Array.from(range.getClientRects()).filter(r => r.width > 0);
    if (rects.length && rects.every(r => r.top >= 0 && r.bottom <= h && r.right <= w)) {
      first.push(node.textContent);
    }
  }
  const handlers = [];
  for (const el of document.querySelectorAll('*')) {
    for (const a of el.attributes) {
      const v = a.value.trim().toLowerCase();
      if (a.name.startsWith('on') || ['srcset', 'poster'].includes(a.name) ||
          v.startsWith('javascript:')) {
        handlers.push(`${el.tagName.toLowerCase()} ${a.name}`);
      }
    }
  }
  return JSON.stringify({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: w,
    wide: wide.slice(0, 20),
    firstScreen: first.join(' ').replace(/\s+/g, ' '),
    pwned: window.__rs_pwned === undefined ? null : String(window.__rs_pwned),
    dialogs: window.__rs_dialogs,
    handlers: handlers.slice(0, 20),
    active: document.querySelectorAll(
      'script, iframe, object, embed, frame, video, audio, svg, meta[http-equiv="refresh" i], ' +
      'base, form').length,
    url: location.href,
  });
})()
"""

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
    f"--window-size={WIDTH},{HEIGHT}",
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
        {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        session=s,
    )
    await cdp.send("Page.addScriptToEvaluateOnNewDocument", {"source": NO_DIALOGS}, session=s)
    cdp.events.clear()
    await cdp.send("Page.navigate", {"url": page_url}, session=s)
    await cdp.wait_for("Page.loadEventFired", timeout=120)
    await asyncio.sleep(1.5)  # late requests, refreshes or console messages, if any
    res = await cdp.send(
        "Runtime.evaluate", {"expression": PAGE_FACTS, "returnByValue": True}, session=s
    )
    facts = json.loads(res["result"]["value"])
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
        "facts": facts,
        "dialogs": [e for e in cdp.events if e.get("method") == "Page.javascriptDialogOpening"],
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


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip()


def first_screen_expectations(run: Path) -> dict[str, list[str]]:
    """What the first screen must show, read from the run's own results: per claim its
    statement and verdict; per arm its label and its rate per 100 participant-months (from
    results/rates.csv, as the first screen rounds it: one decimal)."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    claims = pd.read_csv(run / "results/claims.csv")
    expected: dict[str, list[str]] = {}
    for c in claims.to_dict("records"):
        expected[f"claim {c['claim_id']}"] = [_flat(c["statement"]), _flat(c["verdict"])]
    arms = config.get("arms") or {"control": "control", "intervention": "intervention"}
    rates_csv = run / "results/rates.csv"
    rates = pd.read_csv(rates_csv) if rates_csv.exists() else None
    for role in ("control", "intervention"):
        label = arms[role]
        want = [_flat(label), "per 100 participant-months"]
        if rates is not None:
            sel = rates[
                (rates["quantity"] == "rate")
                & (rates["arm"].astype(str) == label)
                & (rates["unit"] == "per 100 participant-months")
            ]
            if len(sel):
                want.append(f"{float(sel['estimate'].iloc[0]):.1f} per 100 participant-months")
        expected[f"rates of {role}"] = want
    return expected


def assert_offline_and_inert(seen: dict, html: Path) -> None:
    outside = [u for u in seen["requests"] if not (u == html.as_uri() or u.startswith("data:"))]
    assert not outside, outside
    assert not seen["failed"], seen["failed"]
    assert not seen["errors"], seen["errors"]
    facts = seen["facts"]
    assert facts["pwned"] is None, f"a script ran: {facts['pwned']}"
    assert facts["dialogs"] == 0 and not seen["dialogs"]
    assert facts["handlers"] == [], facts["handlers"]
    assert facts["active"] == 0
    assert facts["url"] == html.as_uri()  # no refresh took the page elsewhere
    assert seen["dom"]["scripts"] == 0 and seen["dom"]["links"] == 0
    for img in seen["images"]:
        assert img["complete"] and img["w"] > 0 and img["h"] > 0, img
        assert img["src"].startswith("data:image/png;base64,"), img["src"][:80]


def test_report_in_headless_chromium(demo_report, tmp_path):
    chromium = ensure_chromium()
    html = demo_report / "reports/report.html"
    seen = open_in_chromium(chromium, html, tmp_path / "profile")
    # the artefact: the first screen at 1280 x 900 px
    (demo_report / "reports/screenshot.png").write_bytes(seen["screenshot"])
    if os.environ.get("RECURSTUDY_SCREENSHOT"):
        Path(os.environ["RECURSTUDY_SCREENSHOT"]).write_bytes(seen["screenshot"])

    config = yaml.safe_load((demo_report / "config.yaml").read_text())
    assert seen["dom"]["title"] == config["study"]["title"]
    assert len(seen["dom"]["h2"]) >= 10
    assert len(seen["images"]) >= 4
    assert_offline_and_inert(seen, html)
    assert seen["screenshot"].startswith(b"\x89PNG")

    # no horizontal scrolling at 1280 px: the page and every element fit the window
    facts = seen["facts"]
    assert facts["innerWidth"] == WIDTH
    assert facts["scrollWidth"] <= WIDTH, facts["wide"]
    assert facts["wide"] == [], facts["wide"]

    # the first screen answers the question: each claim's sentence, the rates per arm
    first = facts["firstScreen"]
    missing = {
        what: [x for x in texts if x not in first]
        for what, texts in first_screen_expectations(demo_report).items()
    }
    missing = {k: v for k, v in missing.items() if v}
    assert not missing, f"not on the first screen: {missing}; it shows: {first[:1500]}"


# Hostile text for every field that reaches the page, within each field's length limit. Every
# payload would set window.__rs_pwned or load something from 127.0.0.1:9 (nothing listens).
SCRIPTS = (
    '<script>window.__rs_pwned="script"</script>'
    "<img src=x onerror=window.__rs_pwned=1>"
    "<img src='x' onerror='window.__rs_pwned=2'>"
    '<svg onload="window.__rs_pwned=3"></svg>'
)
LOADS = (
    '<a href="javascript:window.__rs_pwned=4">go</a> [md](javascript:window.__rs_pwned=5) '
    '<img srcset="http://127.0.0.1:9/s.png 1x"> <video poster="http://127.0.0.1:9/p.png">'
    '</video> <object data="http://127.0.0.1:9/o"></object> '
    '<meta http-equiv="refresh" content="0;url=http://127.0.0.1:9/r"> '
    "![c](data/participants.csv) ![c](cohort/participants.csv) ![r](http://127.0.0.1:9/m.png)"
)
FULL = f"{SCRIPTS} {LOADS}"
NEW_ARM = f"re-education {FULL}"
FIELDS = {
    "title": ("Trial " + SCRIPTS)[:200],
    "event": "flare <img src=x onerror=window.__rs_pwned=6>",
    "label": '<img src="x" onerror="window.__rs_pwned=7"> ![c](data/participants.csv)',
    "unit": "<script>window.__rs_pwned=8</script>",
    "statement": f"Re-education halves exacerbations. {FULL}",
    "event_plural": "flares <svg onload=window.__rs_pwned=9></svg>",
    "sex_label": '<a href="javascript:window.__rs_pwned=10">Sex</a> ![c](data/participants.csv)',
    "sex_unit": '" onerror="window.__rs_pwned=16',
    # a data path: the file name is shown in the provenance table
    "participants_file": 'p" onerror="window.__rs_pwned=17 <b>x.csv',
}
# Texts that must reach the page (as the characters they are made of) for the test to mean
# anything: every field above but the file's folder, and the custom study's own hostile data.
SHOWN = [
    FIELDS["title"],
    FIELDS["event"],
    FIELDS["label"],
    FIELDS["unit"],
    FIELDS["statement"],
    FIELDS["event_plural"],
    FIELDS["sex_label"],
    FIELDS["sex_unit"],
    FIELDS["participants_file"],
    NEW_ARM,
    HOSTILE_CONTROL,
    HOSTILE_LEVEL,
]


def _replace(value, old: str, new: str):
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_replace(v, old, new) for v in value]
    if isinstance(value, dict):
        return {_replace(k, old, new): _replace(v, old, new) for k, v in value.items()}
    return value


def _relabel(results: Path, old: str, new: str) -> int:
    """Every text cell of every result table and JSON under `results` with arm label `old`
    (inside longer text too, such as ``arm[T.<label>]``) rewritten to `new`; returns how many
    files changed."""
    changed = 0
    for path in sorted(results.rglob("*")):
        if path.suffix == ".csv":
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
            new_df = df.map(lambda v: v.replace(old, new)).rename(
                columns=lambda c: c.replace(old, new)
            )
            if not new_df.equals(df) or list(new_df.columns) != list(df.columns):
                new_df.to_csv(path, index=False)
                changed += 1
        elif path.suffix == ".parquet":
            df = pd.read_parquet(path)
            hit = False
            for col in df.columns:
                if df[col].dtype == object or isinstance(df[col].dtype, pd.CategoricalDtype):
                    was_cat = isinstance(df[col].dtype, pd.CategoricalDtype)
                    col_new = (
                        df[col]
                        .astype(object)
                        .map(lambda v: v.replace(old, new) if isinstance(v, str) else v)
                    )
                    if not col_new.equals(df[col].astype(object)):
                        hit = True
                    df[col] = col_new.astype("category") if was_cat else col_new
            if hit:
                df.to_parquet(path, index=False)
                changed += 1
        elif path.suffix == ".json":
            data = json.loads(path.read_text())
            new_data = _replace(data, old, new)
            if new_data != data:
                path.write_text(json.dumps(new_data))
                changed += 1
    return changed


RENDER = """
import sys
from recurstudy.config import load_config, study_text
from recurstudy.report.render import execute_notebook, render_html
config = load_config("config.yaml")
params = {"config": config, "source_commit": "unknown", "assets": "reports"}
nb, _ = execute_notebook(sys.argv[1], params, ".")
open("reports/report.html", "w", encoding="utf-8").write(
    render_html(nb, title=study_text(config)["title"])
)
"""


@pytest.fixture(scope="module")
def hostile_report(custom_study, tmp_path_factory) -> Path:  # noqa: F811
    """The custom study's results with hostile text in every field that reaches the report,
    and its report notebook executed and rendered again on them (no workflow run)."""
    run = tmp_path_factory.mktemp("hostile") / "run"
    shutil.copytree(
        custom_study, run, ignore=shutil.ignore_patterns(".snakemake", "reports", "code", "logs")
    )
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["study"]["title"] = FIELDS["title"]
    config["study"]["event"] = FIELDS["event"]
    config["study"]["event_plural"] = FIELDS["event_plural"]
    config["study"]["labels"]["age"] = {"label": FIELDS["label"], "unit": FIELDS["unit"]}
    config["study"]["labels"]["sex"] = {
        "label": FIELDS["sex_label"],
        "unit": FIELDS["sex_unit"],
        "levels": ["M", HOSTILE_LEVEL],
    }
    hostile_file = run / "cohort" / FIELDS["participants_file"]
    shutil.copy(run / "cohort/participants.csv", hostile_file)
    config["data"]["participants"] = f"cohort/{hostile_file.name}"
    config["arms"]["intervention"] = NEW_ARM
    old_statement = config["claims"][0]["statement"]
    config["claims"][0]["statement"] = FIELDS["statement"]
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert _relabel(run / "results", HOSTILE_ARM, NEW_ARM) >= 3
    assert _relabel(run / "results", old_statement, FIELDS["statement"]) >= 1
    (run / "data").mkdir(exist_ok=True)
    shutil.copy(run / "cohort/participants.csv", run / "data/participants.csv")
    (run / "reports").mkdir()
    env = dict(os.environ, PYTHONPATH=str(custom_study / "code/src"))
    proc = subprocess.run(
        [sys.executable, "-c", RENDER, str(REPO / "workflow/notebooks/report.py.ipynb")],
        cwd=run,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run


class _Tags(HTMLParser):
    """Every start tag of a page with its attributes, as a browser's parser sees them."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str]]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, [(k, v or "") for k, v in attrs]))


ACTIVE_TAGS = {"script", "iframe", "object", "embed", "frame", "video", "audio", "svg", "base"}


def test_hostile_text_is_inert_in_html(hostile_report):
    page = (hostile_report / "reports/report.html").read_text(encoding="utf-8")
    parser = _Tags()
    parser.feed(page)
    bad = []
    for tag, attrs in parser.tags:
        if tag in ACTIVE_TAGS:
            bad.append(tag)
        for name, value in attrs:
            if name.startswith("on") or name in ("srcset", "poster"):
                bad.append(f"{tag} {name}")
            if value.strip().lower().startswith("javascript:"):
                bad.append(f"{tag} {name}={value[:40]}")
            if name in ("src", "href", "data") and not value.startswith(("data:", "#")):
                bad.append(f"{tag} {name}={value[:40]}")
        if tag == "meta" and any(n == "http-equiv" for n, _ in attrs):
            bad.append("meta http-equiv")
    assert not bad, bad
    people = pd.read_csv(hostile_report / "cohort/participants.csv", dtype=str)
    assert not any(pid in page for pid in people["participant_id"])  # no file embedded
    text = html_lib.unescape(re.sub(r"<[^>]+>", " ", page))
    assert "window.__rs_pwned" in text  # shown as the characters it is made of
    # every hostile field reached the page, as text (else this test would prove nothing)
    seen = _flat(text)
    missing = [v for v in SHOWN if _flat(v) not in seen]
    assert not missing, missing


def test_hostile_text_runs_nothing_in_chromium(hostile_report, tmp_path):
    chromium = ensure_chromium()
    html = hostile_report / "reports/report.html"
    seen = open_in_chromium(chromium, html, tmp_path / "profile")
    assert seen["dom"]["title"] == FIELDS["title"]
    assert_offline_and_inert(seen, html)


def test_report_with_hostile_labels_in_headless_chromium(custom_study, tmp_path):  # noqa: F811
    """The custom study's own run (title and arm label made of <script> and Markdown image
    syntax): the page runs no script, requests nothing (no data/participants.csv), and shows
    the title as text."""
    chromium = ensure_chromium()
    html = custom_study / "reports/report.html"
    seen = open_in_chromium(chromium, html, tmp_path / "profile")
    assert seen["dom"]["title"] == STUDY_TITLE
    assert_offline_and_inert(seen, html)


# ------------------------------------------------------------------------------ PDF


def test_pdf_dates_fixed_and_skip_rules(monkeypatch, tmp_path):
    from recurstudy.report import pdf

    raw = b"%PDF-1.4\n/CreationDate (D:20261204181029+00'00')\n/ModDate (D:20261204181030Z)\n"
    fixed = pdf.fix_dates(raw)
    assert len(fixed) == len(raw)  # no offset moves
    assert b"D:20000101000000+00'00'" in fixed and b"D:20000101000000Z" in fixed
    assert b"2026" not in fixed
    monkeypatch.setenv(pdf.ENV, "none")
    assert pdf.find_chromium() is None and "skipped" in pdf.skip_message()
    monkeypatch.setenv(pdf.ENV, str(tmp_path / "no-such-browser"))
    assert pdf.find_chromium() is None and "not found" in pdf.skip_message()
    page = tmp_path / "remote.html"
    page.write_text('<html><body><img src="https://example.org/x.png"></body></html>')
    with pytest.raises(ValueError, match="external resource"):
        pdf.print_pdf(page, tmp_path / "remote.pdf", "chromium")
    assert not (tmp_path / "remote.pdf").exists()


def test_pdf_same_html_same_bytes(tmp_path):
    from recurstudy.report import pdf

    chromium = ensure_chromium()
    page = tmp_path / "page.html"
    page.write_text(
        "<html><head><title>t</title></head><body><h1>Report</h1><p>Text.</p></body></html>"
    )
    a = pdf.print_pdf(page, tmp_path / "a.pdf", chromium)
    b = pdf.print_pdf(page, tmp_path / "b.pdf", chromium)
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes()
    assert a["pages"] == 1 and a["html_sha256"] == b["html_sha256"]


def test_report_pdf_of_the_demo_run(demo_report):
    """The workflow printed the report (where Chromium is installed), offline, kept it out of
    the manifest, and logged what it printed."""
    from recurstudy.provenance import sha256_file
    from recurstudy.report.pdf import find_chromium

    out = demo_report / "reports/report.pdf"
    if not find_chromium():
        assert not out.exists()
        pytest.skip("no Chromium: the workflow skips the PDF (checked: none written)")
    data = out.read_bytes()
    assert data.startswith(b"%PDF-") and len(re.findall(rb"/Type\s*/Page\b", data)) >= 5
    assert b"D:20000101000000" in data
    manifest = json.loads((demo_report / "reports/manifest.json").read_text())
    assert "reports/report.pdf" not in {e["path"] for e in manifest["outputs"]}
    log = (demo_report / "logs/report_pdf.log").read_text()
    assert sha256_file(demo_report / "reports/report.html") in log


def test_workflow_without_chromium_skips_the_pdf(demo_report):
    """`make report` without Chromium: the PDF is not a target and one line says why."""
    from conftest import run_workflow

    proc = run_workflow(
        demo_report, "-n", "--forcerun", "report", env={"RECURSTUDY_CHROMIUM": "none"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    assert "report_pdf" not in text
    assert "reports/report.pdf skipped" in text
