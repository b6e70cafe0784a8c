"""@segment/analytics-next 1.84.3 and @rudderstack/analytics-js 3.34.1, unmodified, in Debian chromium
(Playwright) on a page served from another origin than the collector, so CORS and preflights are
real. What the SDKs would fetch from their CDNs (Segment's settings, RudderStack's source config) is
served by the page server; any other address is blocked and recorded (no network beyond loopback).

Assertions: every event the SDK put on the wire is stored once (by messageId), at the client's time,
with the right person and account; the browser saw CORS answers; a bad write key is not retried."""

from __future__ import annotations

import http.server
import os
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from tests.clients.conftest import NODE_MODULES, account, by_message_id, contact, need, parse_time, run_id, wait_stored
from tests.conftest import CHROME_UA, Server
from tests.tracker.conftest import CHROMIUM, LAUNCH_ARGS

pytestmark = pytest.mark.browser

SDK_FILES = {
    "/sdk/segment.js": NODE_MODULES / "@segment/analytics-next/dist/umd/index.js",
    "/sdk/rudder.js": NODE_MODULES / "@rudderstack/analytics-js/dist/npm/modern/bundled/umd/index.js",
}
SEGMENT_CHUNKS = NODE_MODULES / "@segment/analytics-next/dist/umd"

PAGE = """<!doctype html><html><head><title>Client test</title></head><body><h1>SDK page</h1>
<script src="/sdk/{sdk}.js"></script>
<script>{script}</script></body></html>"""

SEGMENT_LOAD = """
window.sdkReady = AnalyticsNext.AnalyticsBrowser.load({
  writeKey: CFG.key, cdnURL: location.origin,
  cdnSettings: {integrations: {'Segment.io': Object.assign({apiKey: CFG.key, apiHost: CFG.apiHost, protocol: 'http'},
    CFG.batched ? {deliveryStrategy: {strategy: 'batching', config: {size: 10, timeout: 1500}}} : {})}},
}).then(([a]) => { window.sdk = a; return true })
window.drive = async (run) => {
  const a = window.sdk, user = 'u-' + run
  await a.identify(user, {firstName: 'Ann', lastName: 'Lee', email: 'ann-' + run + '@acme.io'})
  a.track('Order Completed', {revenue: 42.5, currency: 'EUR'}, {integrations: {All: true}})
  a.page('Docs', 'Install', {path: '/docs/install'})
  a.screen && a.screen('Billing')
  a.group('g-' + run, {name: 'Acme Inc', website: 'https://www.acme.io', employees: 120})
  a.alias(user, 'old-' + run)
}
"""

RUDDER_LOAD = """
window.sdk = new rudderanalytics.RudderAnalytics()
window.sdkReady = new Promise((resolve) => {
  window.sdk.load(CFG.key, CFG.collector, {
    configUrl: location.origin, logLevel: 'ERROR', useBeacon: CFG.beacon,
    beaconQueueOptions: {flushQueueInterval: 1500},
    queueOptions: CFG.batched ? {batch: {enabled: true, maxItems: 10, flushInterval: 1500}} : {},
    onLoaded: () => resolve(true),
  })
})
window.drive = async (run) => {
  const a = window.sdk, user = 'u-' + run
  a.identify(user, {firstName: 'Ann', lastName: 'Lee', email: 'ann-' + run + '@acme.io'})
  a.track('Order Completed', {revenue: 42.5, currency: 'EUR'}, {integrations: {All: true}})
  a.page('Docs', 'Install', {path: '/docs/install'})
  a.group('g-' + run, {name: 'Acme Inc', website: 'https://www.acme.io', employees: 120})
  a.alias(user, 'old-' + run)
}
"""


class PageServer:
    """Serves the SDK page, the SDK files and what their CDNs would answer, on its own port."""

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = urlsplit(self.path).path
                if path in SDK_FILES:
                    self.reply(SDK_FILES[path].read_bytes(), "application/javascript")
                elif path.startswith("/analytics-next/bundles/"):  # Segment's lazily loaded chunks
                    file = SEGMENT_CHUNKS / Path(path).name
                    if file.is_file():
                        self.reply(file.read_bytes(), "application/javascript")
                    else:
                        self.send_error(404)
                elif path.startswith("/sourceConfig"):  # RudderStack's source config endpoint
                    key = owner.config["key"]
                    body = {"source": {"id": "src-test", "name": "trailmark test", "writeKey": key,
                                       "workspaceId": "ws-test", "enabled": True, "config": {},
                                       "destinations": []}}  # fmt: skip
                    self.reply(orjson.dumps(body), "application/json", cors=True)
                elif path.endswith(".html"):
                    sdk = path.strip("/").removesuffix(".html")
                    script = f"const CFG = {orjson.dumps(owner.config).decode()};\n"
                    script += SEGMENT_LOAD if sdk == "segment" else RUDDER_LOAD
                    self.reply(PAGE.format(sdk=sdk, script=script).encode(), "text/html; charset=utf-8")
                else:
                    self.send_error(404)

            def reply(self, body: bytes, ctype: str, cors: bool = False) -> None:
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                if cors:
                    self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        # "localhost", while the collector is "127.0.0.1": another origin (and another site)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://localhost:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian chromium for this module (one Playwright at a time per process, as tests/map does)."""
    need(os.access(CHROMIUM, os.X_OK), f"browser tests need Debian chromium at {CHROMIUM} (make browser)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "browser tests need the playwright package (pip install -e '.[dev]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def pages() -> Iterator[PageServer]:
    for file in SDK_FILES.values():
        need(file.is_file(), "the npm SDKs are not installed: npm ci --prefix tests/clients (make test does it)")
    p = PageServer()
    yield p
    p.close()


class Wire:
    """What the browser sent to the collector and what it got back."""

    def __init__(self, collector: Server) -> None:
        self.collector = collector
        self.events: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.answers: list[dict[str, Any]] = []
        self.blocked: list[str] = []

    def on_request(self, r: Any) -> None:
        if not r.url.startswith(self.collector.url):
            return
        self.requests.append({"method": r.method, "path": urlsplit(r.url).path, "type": r.resource_type,
                              "headers": r.headers})  # fmt: skip
        if r.method == "POST" and r.post_data:
            body = orjson.loads(r.post_data)
            self.events += body.get("batch") or [body]

    def on_response(self, r: Any) -> None:
        if r.url.startswith(self.collector.url):
            self.answers.append({"status": r.status, "path": urlsplit(r.url).path, "method": r.request.method,
                                 "acao": r.headers.get("access-control-allow-origin"),
                                 "credentials": r.headers.get("access-control-allow-credentials")})  # fmt: skip


def open_page(browser: Any, pages: PageServer, collector: Server, sdk: str, wire: Wire) -> Any:
    context = browser.new_context(user_agent=CHROME_UA)
    context.set_default_timeout(20_000)

    def only_loopback(route: Any) -> None:
        host = urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            wire.blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_loopback)
    page = context.new_page()
    page.on("request", wire.on_request)
    page.on("response", wire.on_response)
    page.goto(f"{pages.url}/{sdk}.html")
    assert page.evaluate("window.sdkReady") is True
    return context, page


def client_time(ev: dict[str, Any]) -> str:
    return str(ev.get("timestamp") or ev.get("originalTimestamp"))


CASES = [("segment", False, False), ("segment", True, False), ("rudder", False, False), ("rudder", True, False),
         ("rudder", False, True)]  # fmt: skip


@pytest.mark.parametrize(
    "sdk, batched, beacon", CASES, ids=["segment", "segment-batched", "rudder", "rudder-batched", "rudder-beacon"]
)
def test_browser_sdk_events_are_stored_once(
    browser: Any, pages: PageServer, server: Server, sdk: str, batched: bool, beacon: bool
) -> None:
    rid = run_id()
    pages.config = {"key": server.site["write_key"], "collector": server.url, "apiHost": server.url[7:] + "/v1",
                    "batched": batched, "beacon": beacon}  # fmt: skip
    wire = Wire(server)
    context, page = open_page(browser, pages, server, sdk, wire)
    try:
        page.evaluate("(run) => window.drive(run)", rid)
        expected = 6 if sdk == "segment" else 5  # RudderStack's browser SDK has no screen()
        deadline = time.time() + 20
        while len({e.get("messageId") for e in wire.events}) < expected and time.time() < deadline:
            page.wait_for_timeout(200)
        sent = {e["messageId"]: e for e in wire.events}
        assert len(sent) == expected, (wire.requests, wire.answers)
        rows = wait_stored(server, f"message_id IN ({', '.join(repr(m) for m in sent)})", len(sent))
        page.wait_for_timeout(300)
        while len(wire.answers) < len([r for r in wire.requests if r["type"] != "ping"]) and time.time() < deadline:
            page.wait_for_timeout(200)
    finally:
        context.close()
    assert by_message_id(rows) == dict.fromkeys(sent, 1)
    for r in rows:
        assert abs(parse_time(r["timestamp"]) - parse_time(client_time(sent[r["message_id"]]))) < timedelta(seconds=1)
    posts = [a for a in wire.answers if a["method"] == "POST"]
    # a beacon is a no-cors request (no answer to read); fetch and XHR answers must be readable
    assert posts and all(a["status"] == 200 and a["acao"] == (None if beacon else pages.url)
                         and a["credentials"] is None for a in posts), wire.answers  # fmt: skip
    if beacon:
        assert {r["path"] for r in wire.requests if r["method"] == "POST"} == {"/beacon/v1/batch"}
    elif batched:
        assert {r["path"] for r in wire.requests if r["method"] == "POST"} == {"/v1/b" if sdk == "segment" else
                                                                               "/v1/batch"}  # fmt: skip
    assert not wire.blocked, wire.blocked  # nothing was fetched from a CDN
    by_type = {r["type"]: r for r in rows}
    assert by_type["page"]["context"]["page"]["url"].startswith(pages.url)
    assert by_type["track"]["properties"] == {"revenue": 42.5, "currency": "EUR"}
    assert by_type["track"]["extra"]["integrations"] == {"All": True}
    person = contact(server, f"user:u-{rid}")
    assert (person["first_name"], person["last_name"], person["email"]) == ("Ann", "Lee", f"ann-{rid}@acme.io")
    acct = account(server, f"g-{rid}")
    assert (acct["name"], acct["domain"]) == ("Acme Inc", "acme.io")


@pytest.mark.parametrize("sdk", ["segment", "rudder"])
def test_browser_sdk_stops_on_a_bad_write_key(browser: Any, pages: PageServer, server: Server, sdk: str) -> None:
    rid = run_id()
    pages.config = {"key": "wk_not_a_key_" + rid, "collector": server.url, "apiHost": server.url[7:] + "/v1",
                    "batched": False, "beacon": False}  # fmt: skip
    wire = Wire(server)
    context, page = open_page(browser, pages, server, sdk, wire)
    try:
        page.evaluate("(run) => window.drive(run)", rid)
        page.wait_for_timeout(6000)  # several retry periods of both SDKs
    finally:
        context.close()
    posts = [r for r in wire.requests if r["method"] == "POST"]
    answers = [a for a in wire.answers if a["method"] == "POST"]
    assert posts and answers, wire.requests
    # the browser could read each 401 (CORS), so the SDK dropped the event instead of retrying it
    assert all(a["status"] == 401 and a["acao"] == pages.url for a in answers), answers
    assert len(posts) == len({e["messageId"] for e in wire.events}), posts  # one request per event: no retries
