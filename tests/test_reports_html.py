"""The HTML report: escaping of target text, no network, capping, a snapshot, and a real headless browser."""

from __future__ import annotations

import base64
import copy
import json
import os
import queue
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from conformance.reports.html import BODY_CAP, EVENTS_CAP, render_html, write_html
from conformance.reports.sample import sample_results
from conformance.reports.schema import results_errors

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return sample_results(include_error=True)


@pytest.fixture(scope="module")
def html(results: dict[str, Any]) -> str:
    return render_html(results)


def test_target_text_is_escaped(results: dict[str, Any], html: str) -> None:
    raw = json.dumps(results)
    assert HOSTILE in json.loads(raw)["checks"][1]["exchanges"][0]["body_text"]  # the sample carries it
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "\x1b" not in html and "\\x1b[31m" in html  # ANSI escapes are shown, not passed through
    assert "<h1>Internal Server Error" not in html  # an HTML error page of the target stays text
    # the only <script> element is the page's own, and it holds no target text
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", html, flags=re.S)
    assert len(scripts) == 1
    assert "alert" not in scripts[0] and "tiny-chat" not in scripts[0] and "127.0.0.1" not in scripts[0]


def test_no_external_resources(html: str) -> None:
    lowered = html.lower()
    for attr in ("src=", "href="):
        for m in re.finditer(attr + r"\s*[\"']?([^\"'\s>]*)", lowered):
            assert m.group(1).startswith("#") or m.group(1) == "", f"{attr}{m.group(1)} leaves the page"
    assert "<link" not in lowered and "@import" not in lowered and "url(" not in lowered
    assert "default-src 'none'" in html  # the CSP forbids any fetch even if something slipped through


def test_report_content(results: dict[str, Any], html: str) -> None:
    assert results["verdict"] in html
    assert 'class="banner warn"' in html  # exit code 4: amber
    for text in ("http://127.0.0.1:8080/v1", "tiny-chat", results["suite_version"], results["spec_hash"],
                 "2026-01-01 00:00:00 UTC", "12.3 s", "72 prompt", "24 completion", "1 retries"):
        assert text in html, text
    # capabilities with their reasons, the unsupported ones first
    assert html.index("target rejected the probe with HTTP 400") < html.index("probe accepted (HTTP 200)")
    # every requirement has a row with data attributes for the filters
    rows = re.findall(r'<tr class="req row-[^"]+" data-verdict="([^"]+)" data-level="([^"]+)" '
                      r'data-capability="([^"]+)"', html)
    assert len(rows) == len(results["requirements"])
    # a failure shows the requirement, its source, the violation, the exchange and a reproducer
    block = html[html.index('id="req-CORE-OBJECT"'):]
    block = block[:block.index("</article>")]
    for text in ("The response&#39;s object field", "Seed document", "$.object", "&#34;chat.completion&#34;",
                 "Request headers", "Bearer ***", "Response body", "curl -sS -X POST",
                 "$CONFORMANCE_API_KEY", "ttfb 12.3 ms"):
        assert text in block, text
    stream = html[html.index('id="req-STREAM-DONE-TERMINATES"'):]
    stream = stream[:stream.index("</article>")]
    assert "Stream events" in stream and "13.1 ms" in stream and "curl -sS -N" in stream
    errors = html[html.index('id="req-ERROR-MALFORMED-JSON"'):]
    assert "Transport error: RemoteProtocolError" in errors[:errors.index("</article>")]
    assert "Internal error of the suite" in html and "KeyError" in html


def test_huge_bodies_and_streams_are_capped(results: dict[str, Any], tmp_path: Path) -> None:
    big = copy.deepcopy(results)
    ex = big["checks"][2]["exchanges"][0]
    ex["events"] = [dict(ex["events"][1], t=0.001 * i) for i in range(EVENTS_CAP + 50)]
    big["checks"][1]["exchanges"][0]["body_text"] = "y" * (BODY_CAP * 5)
    assert results_errors(big) == []
    page = write_html(big, tmp_path).read_text(encoding="utf-8")
    assert "y" * BODY_CAP in page and "y" * (BODY_CAP + 1) not in page
    assert f"First {BODY_CAP} of {BODY_CAP * 5} characters shown" in page
    assert f"First {EVENTS_CAP} of {EVENTS_CAP + 50} events shown" in page
    assert len(page) < 2_000_000


def test_output_is_deterministic(results: dict[str, Any], html: str) -> None:
    assert render_html(copy.deepcopy(results)) == html
    assert render_html(json.loads(json.dumps(results))) == html


def test_snapshot() -> None:
    """tests/snapshots/report.html from the frozen input tests/snapshots/report-input.json.

    Regenerate both with ``UPDATE_SNAPSHOTS=1 python -m pytest tests/test_reports_html.py``.
    """
    inp, out = SNAPSHOTS / "report-input.json", SNAPSHOTS / "report.html"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOTS.mkdir(exist_ok=True)
        frozen = sample_results(include_error=True)
        frozen["spec_hash"], frozen["suite_version"] = "0" * 64, "0.0.0-snapshot"
        inp.write_text(json.dumps(frozen, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        out.write_text(render_html(frozen), encoding="utf-8")
    if not inp.is_file() or not out.is_file():
        pytest.fail("snapshot missing: run UPDATE_SNAPSHOTS=1 python -m pytest tests/test_reports_html.py")
    frozen = json.loads(inp.read_text(encoding="utf-8"))
    assert results_errors(frozen) == [], "the frozen input no longer matches spec/results.schema.json"
    rendered = render_html(frozen)
    expected = out.read_text(encoding="utf-8")
    if rendered != expected:
        diff_at = next(i for i, (a, b) in enumerate(zip(rendered + "\0", expected + "\0", strict=False))
                       if a != b)
        pytest.fail(f"report.html differs from the snapshot at character {diff_at}: "
                    f"{rendered[diff_at - 80:diff_at + 80]!r}\n(if intended: UPDATE_SNAPSHOTS=1)")


# ---- a real browser ---------------------------------------------------------------------------------------

class _WebSocket:
    """The smallest client of RFC 6455 that the DevTools protocol needs (text frames, no extensions)."""

    def __init__(self, url: str, timeout: float) -> None:
        u = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((u.hostname or "127.0.0.1", u.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = bytearray()
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise ConnectionError(f"websocket upgrade refused: {head[:200]!r}")
        self.buf = bytearray(rest)

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("devtools connection closed")
        self.buf += chunk

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _frame(self, opcode: int, data: bytes) -> None:
        n = len(data)
        head = bytearray([0x80 | opcode])
        if n < 126:
            head.append(0x80 | n)
        elif n < 1 << 16:
            head.append(0x80 | 126)
            head += struct.pack(">H", n)
        else:
            head.append(0x80 | 127)
            head += struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(bytes(head) + mask + masked)

    def send(self, text: str) -> None:
        self._frame(0x1, text.encode())

    def recv(self) -> str:
        parts: list[bytes] = []
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise ConnectionError("devtools connection closed by the browser")
            if opcode == 0x9:
                self._frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            parts.append(payload)
            if b0 & 0x80:
                return b"".join(parts).decode()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class _Browser:
    """Headless Chromium over the DevTools protocol: one page, its console errors, evaluate, screenshot."""

    def __init__(self, exe: str, profile_dir: Path, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--mute-audio", f"--user-data-dir={profile_dir}",
             "--remote-debugging-port=0", "--window-size=1280,2000", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            self._connect(timeout)
        except BaseException:
            self.close()
            raise

    def _connect(self, timeout: float) -> None:
        lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stderr is not None
        stderr = self.proc.stderr
        threading.Thread(target=lambda: [lines.put(ln) for ln in stderr], daemon=True).start()
        deadline = time.monotonic() + timeout
        url = None
        while url is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError("chromium did not print its DevTools URL in time") from None
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            url = m.group(1) if m else None
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not print its DevTools URL in time")
        self.ws = _WebSocket(url, timeout)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable", session=True)

    def call(self, method: str, params: dict[str, Any] | None = None,
             session: bool = False) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)
        raise TimeoutError(f"{method}: no reply in {self.timeout}s")

    def wait_for(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        for ev in self.events:
            if ev.get("method") == method:
                return ev
        while time.monotonic() < deadline:
            ev = json.loads(self.ws.recv())
            self.events.append(ev)
            if ev.get("method") == method:
                return ev
        raise TimeoutError(f"no {method} in {self.timeout}s")

    def evaluate(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                             "awaitPromise": True}, session=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page script failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def errors(self) -> list[str]:
        out = []
        for ev in self.events:
            m, p = ev.get("method"), ev.get("params", {})
            if m == "Runtime.exceptionThrown":
                details = p.get("exceptionDetails", {})
                described = str((details.get("exception") or {}).get("description", ""))[:300]
                out.append("exception: " + described + " " + json.dumps(details)[:500])
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(f"console.{p.get('type')}: " + json.dumps(p.get("args", []))[:500])
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append("log: " + json.dumps(p["entry"])[:500])
        return out

    def screenshot(self, path: Path, full_page: bool = True) -> None:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics", session=True)["cssContentSize"]
            height = min(size["height"], 16000)
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": 1280, "height": height, "scale": 1})
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", params, session=True)["data"]))

    def close(self) -> None:
        if hasattr(self, "ws"):
            self.ws.close()
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass


def _chromium() -> str:
    exe = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p),
               None)
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed: CI must install it (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (CI=true makes this a failure)")
    return exe


def open_in_browser(page: Path, tmp_path: Path) -> _Browser:
    """Start a headless Chromium on ``page`` and wait for its load event (the caller closes it)."""
    browser = _Browser(_chromium(), tmp_path / "chromium-profile")
    try:
        browser.call("Page.navigate", {"url": page.resolve().as_uri()}, session=True)
        browser.wait_for("Page.loadEventFired")
    except BaseException:
        browser.close()
        raise
    return browser


VISIBLE_ROWS = ("JSON.stringify(Array.from(document.querySelectorAll('#req-table tbody tr.req'))"
                ".filter(r => r.offsetParent !== null).map(r => r.dataset.verdict))")


def test_in_a_headless_browser(results: dict[str, Any], tmp_path: Path) -> None:
    page = write_html(results, tmp_path / "report")
    browser = open_in_browser(page, tmp_path)
    try:
        assert browser.evaluate("document.getElementById('verdict').textContent") == results["verdict"]
        assert browser.evaluate("typeof window.alert_called") == "undefined"
        everything = json.loads(browser.evaluate(VISIBLE_ROWS))
        assert len(everything) == len(results["requirements"])
        assert browser.evaluate("document.getElementById('f-shown').textContent") == \
            f"{len(everything)} of {len(everything)} shown"
        # the status filter: only failing rows remain
        browser.evaluate("(() => { const s = document.getElementById('f-verdict'); s.value = 'fail';"
                         " s.dispatchEvent(new Event('change')); })()")
        shown = json.loads(browser.evaluate(VISIBLE_ROWS))
        assert shown and set(shown) == {"fail"}
        assert len(shown) == sum(r["verdict"] == "fail" for r in results["requirements"].values())
        # filters combine: level MUST and capability streaming
        browser.evaluate("(() => { for (const [id, v] of [['f-verdict', ''], ['f-level', 'MUST'],"
                         " ['f-capability', 'streaming']]) { const s = document.getElementById(id);"
                         " s.value = v; s.dispatchEvent(new Event('change')); } })()")
        rows = json.loads(browser.evaluate(
            "JSON.stringify(Array.from(document.querySelectorAll('#req-table tbody tr.req'))"
            ".filter(r => r.offsetParent !== null).map(r => [r.dataset.level, r.dataset.capability]))"))
        assert rows and all(r == ["MUST", "streaming"] for r in rows)
        # a matrix cell sets the filters
        browser.evaluate("document.querySelector('td.cell[data-set-verdict=\"unsupported\"]').click()")
        assert set(json.loads(browser.evaluate(VISIBLE_ROWS))) == {"unsupported"}
        browser.evaluate("document.getElementById('f-reset').click()")
        assert len(json.loads(browser.evaluate(VISIBLE_ROWS))) == len(results["requirements"])
        # the hostile body is text on screen, not markup
        assert browser.evaluate("document.querySelectorAll('script').length") == 1
        assert "<script>alert(1)</script>" in browser.evaluate("document.body.innerText")
        browser.screenshot(tmp_path / "report.png")
        assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert browser.errors() == []
    finally:
        browser.close()


def test_the_browser_harness_sees_page_errors(tmp_path: Path) -> None:
    """The console-error assertion above is not vacuous: a broken page is caught."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><title>x</title><script>console.error('seen');"
                    "throw new Error('boom');</script>", encoding="utf-8")
    browser = open_in_browser(page, tmp_path)
    try:
        deadline = time.monotonic() + 10  # the console events may trail the load event under load
        while True:
            browser.evaluate("1")  # drain the events that arrived so far
            errors = browser.errors()
            if (any("seen" in e for e in errors) and any("boom" in e for e in errors)) \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert any("seen" in e for e in errors) and any("boom" in e for e in errors), errors
    finally:
        browser.close()


def test_informational_findings_are_apart_from_failures(html: str) -> None:
    failures = html.split('id="failures"', 1)[1].split("</section>", 1)[0]
    informational = html.split('id="informational"', 1)[1].split("</section>", 1)[0]
    assert 'id="req-RANGE-TEMPERATURE-BOUNDARY"' in informational  # the sample's MAY finding
    assert "RANGE-TEMPERATURE-BOUNDARY" not in failures
    assert 'id="req-CORE-OBJECT"' in failures
    assert "they do not fail the gate" in informational
    assert '<a href="#informational">Informational (1)</a>' in html


def test_level_reached_is_explained_and_the_profile_named(results: dict[str, Any]) -> None:
    page = render_html(results)
    assert (
        '<div class="why" id="level-note">the highest level with no failure, waived ones included, at it or '
        "a stricter level: a MUST requirement failed</div>"
    ) in page
    mine = copy.deepcopy(results)
    mine["target"].update(profile="profiles/acme.toml", profile_name="acme")
    page = render_html(mine)
    assert "<dt>Profile</dt><dd>acme (profiles/acme.toml, extends seed)</dd>" in page
    assert "profile acme (profiles/acme.toml, extends seed) · level MAY" in page
