"""The report as PDF: ``reports/report.html`` printed by headless Chromium, offline.

For reviewers who file PDFs. The PDF is printed from the very HTML the workflow wrote (no second
rendering path): Chromium runs headless with a throw-away profile, JavaScript off, every host name
resolving to nothing and every request sent to a closed proxy, so the page cannot reach the
network even if it tried (the HTML itself is checked first: it must load nothing from outside;
it has no script, which tests/test_browser.py checks; Chromium's own switch to turn scripts off,
``--blink-settings=scriptEnabled=false``, makes headless printing write no file).

Chromium stamps the PDF with its creation and modification time; those two dates are replaced
by a fixed one of the same length (no offset in the file moves), so that printing the same HTML
with the same Chromium gives the same bytes. The PDF is still left out of the manifest
(:data:`recurstudy.provenance.EXCLUDED_OUTPUTS`): its bytes depend on the Chromium build and the
system fonts, which the manifest does not pin, and a machine without Chromium makes none; the
HTML it is printed from is in the manifest, and the rule's log names that HTML's SHA-256 and the
Chromium version.

Where no Chromium is found, the workflow leaves the PDF out of its targets and says so in one
line (:func:`skip_message`). ``RECURSTUDY_CHROMIUM`` names the browser to use, or ``none`` to
skip the PDF.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

ENV = "RECURSTUDY_CHROMIUM"
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
OFF = ("", "0", "no", "none", "off", "false")
FIXED_DATE = b"20000101000000"  # the 14 digits of D:YYYYMMDDHHmmSS
_DATE = re.compile(rb"/(CreationDate|ModDate) ?\(D:(\d{14})")

# Headless, offline, no state kept: the flags of tests/test_browser.py plus no
# DNS (every host maps to nothing) and a proxy nobody listens on (port 9, discard).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
    "--no-pdf-header-footer",
)


def find_chromium() -> str | None:
    """The Chromium to print with: ``$RECURSTUDY_CHROMIUM`` (a path or name; ``none`` turns
    the PDF off), else the first of chromium, chromium-browser, google-chrome on PATH, else
    None."""
    if ENV in os.environ:
        value = os.environ[ENV].strip()
        if value.lower() in OFF:
            return None
        return shutil.which(value)
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def skip_message() -> str:
    """The one line said when there is no PDF: why, and how to get one."""
    if os.environ.get(ENV, "x").strip().lower() in OFF:
        return f"recurstudy: reports/report.pdf skipped ({ENV}={os.environ[ENV]!r})"
    if ENV in os.environ:
        return f"recurstudy: reports/report.pdf skipped: {ENV}={os.environ[ENV]!r} not found"
    return (
        "recurstudy: reports/report.pdf skipped: no Chromium found (apt-get install chromium, "
        f"or set {ENV}); the HTML report is complete without it"
    )


def fix_dates(pdf: bytes) -> bytes:
    """`pdf` with its creation and modification dates set to :data:`FIXED_DATE` (same length:
    the cross-reference offsets stay right)."""
    return _DATE.sub(lambda m: m.group(0)[: -len(m.group(2))] + FIXED_DATE, pdf)


def chromium_version(chromium: str) -> str:
    """``chromium --version``'s line, for the log."""
    try:
        proc = subprocess.run(
            [chromium, "--version"], capture_output=True, text=True, timeout=60, check=False
        )
    except OSError as exc:
        return f"unknown ({exc})"
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "unknown"


def print_pdf(
    html: str | Path, pdf: str | Path, chromium: str, *, timeout: float = 600
) -> dict[str, Any]:
    """Print `html` to `pdf` with headless `chromium`, offline, with fixed dates.

    Raises ValueError when the HTML would load anything from outside (it is not printed) and
    RuntimeError when Chromium fails or writes no PDF (with the end of its error output).
    Returns what the log records: Chromium's version, the HTML's SHA-256, the PDF's size and
    page count.
    """
    from recurstudy.report.render import EXTERNAL

    html = Path(html).resolve()
    pdf = Path(pdf)
    page = html.read_text(encoding="utf-8")
    bad = EXTERNAL.search(page)
    if bad:
        start = max(bad.start() - 60, 0)
        raise ValueError(
            f"{html.name} would load an external resource; not printed: "
            f"{page[start : bad.end() + 60]!r}"
        )
    pdf.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="recurstudy-pdf-") as tmp:
        out = Path(tmp) / "report.pdf"
        cmd = [
            chromium,
            *FLAGS,
            f"--user-data-dir={Path(tmp) / 'profile'}",
            f"--print-to-pdf={out}",
            html.as_uri(),
        ]
        env = dict(os.environ, TZ="UTC", HOME=tmp)
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"chromium did not print {html.name} within {timeout:g} s") from exc
        if proc.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
            tail = "\n".join(proc.stderr.splitlines()[-15:])
            raise RuntimeError(
                f"chromium could not print {html.name} (exit {proc.returncode}):\n{tail}"
            )
        data = fix_dates(out.read_bytes())
    if not data.startswith(b"%PDF-"):
        raise RuntimeError(f"chromium wrote something that is not a PDF for {html.name}")
    pdf.write_bytes(data)
    return {
        "chromium": chromium_version(chromium),
        "html": str(html.name),
        "html_sha256": hashlib.sha256(page.encode("utf-8")).hexdigest(),
        "pdf_bytes": len(data),
        "pages": len(re.findall(rb"/Type\s*/Page\b", data)),
    }
