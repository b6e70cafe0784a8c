"""Browser harness for the tracker tests: headless Debian chromium driven by Playwright, the real
collector (``trailmark up`` via tests.conftest.Server, one per test module) and a tiny page server.

The page server runs on its own loopback port, so by default the collector is cross-origin (CORS is
exercised). ``Tab.goto(..., same_origin=True)`` serves the same fixture from the collector's origin
instead (Playwright answers the document request; t.js and /v1/batch still hit the real collector).

Fixture pages (tests/tracker/fixtures/*.html) hold ``<!--TRACKER-->``, replaced by the async stub,
``site.before`` (JS run right after the stub, i.e. calls made before t.js loads) and the script tag
with ``site.attrs`` as data-attributes; ``{{COLLECTOR}}`` and ``{{KEY}}`` are replaced too.
"""

from __future__ import annotations

import html
import http.server
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from tests.conftest import CHROME_UA, ROOT, Server

FIXTURES = Path(__file__).parent / "fixtures"
TRACKER = ROOT / "ingest" / "static" / "t.js"
CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update",
               "--no-first-run"]  # fmt: skip
STUB = ("window.trailmark = window.trailmark || function(){(window.trailmark.q = window.trailmark.q || [])"
        ".push(arguments)}")  # fmt: skip
DEFAULT_TIMEOUT = 20.0

T = TypeVar("T")


# the open tabs: polling pumps them, because the sync Playwright API runs route handlers and
# delivers events only while the test is inside a Playwright call
LIVE: list[Tab] = []


def until(fn: Callable[[], T], timeout: float = DEFAULT_TIMEOUT, what: str = "condition", every: float = 0.1) -> T:
    """Poll ``fn`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.time() + timeout
    last: Any = None
    while time.time() < deadline:
        for tab in LIVE:
            tab.pump()
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what} not reached in {timeout}s; last: {last!r}")


# -- the page server ------------------------------------------------------------------------------


class Site:
    """Serves the fixture pages (and a copy of t.js at /t.js) from its own loopback port."""

    def __init__(self, collector: Server) -> None:
        self.collector = collector
        self.key = collector.site["write_key"]
        self.reset()
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = urlsplit(self.path).path
                if path == "/t.js":
                    body, ctype = TRACKER.read_bytes(), "application/javascript"
                else:
                    name = path.strip("/").split("/")[-1] or "basic.html"
                    if not name.endswith(".html"):
                        name = "basic.html"  # SPA routes and the like all serve the default page
                    file = FIXTURES / name
                    if not file.is_file():
                        self.send_error(404)
                        return
                    body, ctype = site.render(name).encode(), "text/html; charset=utf-8"
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802 - the relay: record, then forward to the collector
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                site.received.append((self.path, dict(self.headers), body))
                keep = ("content-type", "user-agent", "origin", "content-encoding")
                r = httpx.post(
                    site.collector.url + self.path,
                    content=body,
                    timeout=30,
                    headers={k: v for k, v in self.headers.items() if k.lower() in keep},
                )
                self.send_response(site.relay_status or r.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(r.content)))
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()
                self.wfile.write(r.content)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def relay(self) -> str:
        """Base URL of the recording relay: POSTs here are recorded in ``received`` and forwarded
        to the collector (use as data-api to see every request at the network level, beacons sent
        while a page unloads included)."""
        return self.url

    def relayed(self) -> list[dict[str, Any]]:
        """The events that went through the relay."""
        return [e for path, _, body in self.received if path.startswith("/v1/batch")
                for e in orjson.loads(body).get("batch", [])]  # fmt: skip

    def reset(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.relay_status = 0  # answer this status instead of the collector's (still forwarded)
        self.attrs: dict[str, str] = {}  # data-* attributes of the script tag ("" = bare attribute)
        self.before = ""  # JS after the stub, before t.js runs
        self.src = self.collector.url + "/t.js"  # where t.js is loaded from
        self.stub = True

    def render(self, name: str) -> str:
        attrs = {"key": self.key, **self.attrs}
        tag_attrs = "".join(f' data-{k}="{html.escape(v)}"' if v != "" else f" data-{k}" for k, v in attrs.items())
        stub = f"<script>{STUB}\n{self.before}</script>" if self.stub else ""
        tracker = f'{stub}<script defer src="{html.escape(self.src)}"{tag_attrs}></script>'
        text = (FIXTURES / name).read_text()
        return (text.replace("<!--TRACKER-->", tracker).replace("{{COLLECTOR}}", self.collector.url)
                .replace("{{KEY}}", self.key))  # fmt: skip

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- browser tabs ---------------------------------------------------------------------------------


class Tab:
    """One browser context + page, recording /v1/batch traffic, beacons and page errors."""

    def __init__(self, browser: Any, site: Site, **context_args: Any) -> None:
        self.site = site
        self.collector = site.collector
        context_args.setdefault("user_agent", CHROME_UA)
        self.context = browser.new_context(**context_args)
        self.context.set_default_timeout(15_000)
        self.page = self.context.new_page()
        # POSTs to /v1/batch that Playwright saw: (resource type, body). Beacons show up as type
        # "ping" while the page lives; a beacon sent as the page unloads is not reported at all
        # (Site.received, the recording relay, sees those).
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.content_types: list[str] = []
        self.responses: list[tuple[int, str | None]] = []  # (status, Access-Control-Allow-Origin)
        self.errors: list[str] = []
        self.page.on("request", self._request)
        self.page.on("response", self._response)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _request(self, r: Any) -> None:
        if "/v1/batch" in r.url:
            self.content_types.append(r.headers.get("content-type", ""))
            try:
                body = orjson.loads(r.post_data or "{}")
            except orjson.JSONDecodeError:
                body = {"unparsed": r.post_data}
            self.posts.append((r.resource_type, body))

    def _response(self, r: Any) -> None:
        if "/v1/batch" in r.url:
            self.responses.append((r.status, r.headers.get("access-control-allow-origin")))

    def pump(self) -> None:
        """Let Playwright deliver what the browser has already reported and run route handlers (the
        sync API only does that while it waits for the browser): one short wait does it."""
        page = self.page if not self.page.is_closed() else next(iter(self.context.pages), None)
        if page is None:
            return
        try:
            page.wait_for_timeout(1)
        except Exception:  # noqa: BLE001 - the page is closing: nothing to deliver then
            pass

    @property
    def batches(self) -> list[dict[str, Any]]:
        """The bodies of the fetch POSTs to /v1/batch."""
        self.pump()
        return [b for kind, b in self.posts if kind == "fetch"]

    @property
    def sent(self) -> list[dict[str, Any]]:
        """Every event of every fetch batch, in order."""
        return [e for b in self.batches for e in b.get("batch", [])]

    @property
    def beacons(self) -> list[dict[str, Any]]:
        """The bodies of the beacons Playwright saw (not those sent while the page unloads)."""
        self.pump()
        return [b for kind, b in self.posts if kind != "fetch"]

    def url(self, name: str, query: str = "", same_origin: bool = False) -> str:
        base = self.collector.url + "/site" if same_origin else self.site.url
        return f"{base}/{name}{query}"

    def goto(self, name: str = "basic.html", query: str = "", same_origin: bool = False, **kw: Any) -> str:
        url = self.url(name, query, same_origin)
        if same_origin:

            def fulfill(route: Any) -> None:
                page_name = urlsplit(route.request.url).path.rsplit("/", 1)[-1]
                route.fulfill(status=200, content_type="text/html; charset=utf-8", body=self.site.render(page_name))

            self.context.route(self.collector.url + "/site/**", fulfill)
        self.page.goto(url, **kw)
        return url

    def js(self, expr: str, arg: Any = None) -> Any:
        return self.page.evaluate(expr, arg)

    def storage(self) -> dict[str, Any]:
        return self.js("""() => ({local: {...localStorage}, session: {...sessionStorage}, cookie: document.cookie})""")

    @property
    def aid(self) -> str:
        """The anonymousId the tracker created (stored in localStorage; else seen on the wire)."""
        aid = self.js("localStorage.getItem('tm_aid')")
        if not aid:
            aid = until(lambda: next((e["anonymousId"] for e in self.sent), None), what="a sent event")
        return str(aid)

    def hide(self) -> None:
        """The page goes to the background (as on a tab switch): visibilitychange with hidden."""
        self.js("""() => {
          Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true})
          Object.defineProperty(document, 'hidden', {value: true, configurable: true})
          document.dispatchEvent(new Event('visibilitychange'))
        }""")

    def close(self) -> None:
        self.context.close()


# -- queries --------------------------------------------------------------------------------------

COLUMNS = ("type, event, page_path, page_url, page_title, referrer, referrer_host, properties, traits, context,"
           " anonymous_id, user_id, email, utm_source, utm_medium, utm_campaign, utm_term, utm_content,"
           " click_id_type, click_id, channel, ua_browser, is_bot, message_id, timestamp")  # fmt: skip


def rows(server: Server, where: str) -> list[dict[str, Any]]:
    out = server.sql(f"SELECT {COLUMNS} FROM trailmark.events WHERE {where} ORDER BY timestamp, message_id")
    for r in out:
        for k in ("properties", "traits", "context"):
            r[k] = orjson.loads(r[k]) if r[k] else {}
    return out


def wait_rows(server: Server, where: str, n: int, timeout: float = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
    """Wait until at least ``n`` events match, then return them all."""
    return until(lambda: (lambda r: r if len(r) >= n else None)(rows(server, where)), timeout,
                 f"{n} events WHERE {where}")  # fmt: skip


def of(server: Server, aid: str, n: int, extra: str = "", timeout: float = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
    return wait_rows(server, f"anonymous_id = '{aid}'" + (f" AND ({extra})" if extra else ""), n, timeout)


def settle(server: Server) -> None:
    """Post a marker through the collector and wait for it, so that events sent before it have had
    their chance to be stored (used before asserting that nothing arrived)."""
    import uuid

    mid = str(uuid.uuid4())
    r = server.post("/v1/batch", {"batch": [{"type": "track", "event": "settle", "anonymousId": "settle-" + mid,
                                             "messageId": mid}]})  # fmt: skip
    assert r.status_code == 200, r.text
    server.wait_for(f"SELECT count() FROM trailmark.events WHERE message_id = '{mid}'", 1)


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian chromium for one module: one Playwright (sync API) runs at a time in a process, and
    tests/map and tests/analysis start their own, so none may outlive its module."""
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which("chromium")):
        message = f"browser tests need Debian chromium at {CHROMIUM} (make browser)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("browser tests need the playwright package (pip install -e '.[dev]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium"),
                              headless=True, args=LAUNCH_ARGS)  # fmt: skip
        yield b
        b.close()


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real collector (``trailmark up``) per test module."""
    srv = Server(tmp_path_factory.mktemp("tracker") / "data").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def site_server(collector: Server) -> Iterator[Site]:
    s = Site(collector)
    yield s
    s.close()


@pytest.fixture
def site(site_server: Site) -> Iterator[Site]:
    site_server.reset()
    yield site_server
    site_server.reset()


@pytest.fixture
def open_tab(browser: Any, site: Site) -> Iterator[Callable[..., Tab]]:
    """Factory: ``open_tab(**context_args)`` opens a fresh context (fresh ids and storage)."""
    tabs: list[Tab] = []

    def make(**kw: Any) -> Tab:
        t = Tab(browser, site, **kw)
        tabs.append(t)
        LIVE.append(t)
        return t

    yield make
    for t in tabs:
        LIVE.remove(t)
        t.close()


@pytest.fixture
def tab(open_tab: Callable[..., Tab]) -> Tab:
    return open_tab()
