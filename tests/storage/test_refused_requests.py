"""A request refused for its size on the way to ClickHouse (a reverse proxy's body limit: nginx's
``client_max_body_size`` is 1 MB by default) is the request's fault, not an outage: the same request
would be refused again, so the server backend reports it as a query error and the journey builder
splits its batch until each part passes, rather than retrying one request forever and holding the
stream (server_backend.translate, REFUSED_REQUEST_STATUSES)."""

from __future__ import annotations

import asyncio
import http.client
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.chserver import clickhouse_endpoint, clickhouse_url  # noqa: F401  (fixtures)
from tests.journeys.conftest import Journey
from trailmark.results import Ok
from trailmark.runtime import BuildStage
from trailmark.settings import Settings
from trailmark.storage.base import QueryError, apply_migrations
from trailmark.storage.server_backend import ServerStorage

BODY_LIMIT = 48 * 1024
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True
    refused = 0


def _proxy_to(upstream: str) -> _Proxy:
    """A reverse proxy on a free port that answers 413 to a request body over BODY_LIMIT bytes and
    passes every other request to ``upstream``."""
    target = urlparse(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    data += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
                return data
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _forward(self) -> None:
            body = self._body()
            if len(body) > BODY_LIMIT:
                assert isinstance(self.server, _Proxy)
                self.server.refused += 1
                page = b"<html><body>413 Request Entity Too Large</body></html>"
                self._answer(413, [("Content-Type", "text/html")], page)
                return
            conn = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port or 80, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                kept = [(k, v) for k, v in answer.getheaders() if k.lower() not in _HOP]
                self._answer(answer.status, kept, data)
            finally:
                conn.close()

        do_GET = do_POST = _forward  # noqa: N815

    return _Proxy(("127.0.0.1", 0), Handler)


@pytest.fixture
def proxied(clickhouse_url: str) -> Iterator[tuple[ServerStorage, _Proxy]]:  # noqa: F811
    proxy = _proxy_to(clickhouse_url)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    store = ServerStorage(f"http://127.0.0.1:{proxy.server_address[1]}", f"t_{uuid.uuid4().hex[:12]}")
    try:
        apply_migrations(store)
        yield store, proxy
        store.execute(f"DROP DATABASE IF EXISTS {store.database} SYNC")
    finally:
        store.close()
        proxy.shutdown()
        proxy.server_close()


def test_an_insert_a_proxy_refuses_for_its_size_is_a_query_error(proxied: tuple[ServerStorage, _Proxy]) -> None:
    store, proxy = proxied
    rows = [{"stage": "journeys", "reason": "r" * 200, "payload": "{}"} for _ in range(400)]  # ~100 KB
    with pytest.raises(QueryError, match="HTTP status 413"):
        store.insert("dead_letters", rows)
    store.insert("dead_letters", rows[:100])
    assert proxy.refused == 1
    assert store.query(f"SELECT count() AS n FROM {store.database}.dead_letters") == [{"n": 100}]


def test_the_journey_builder_splits_a_batch_a_proxy_refuses_and_stores_every_event(
    proxied: tuple[ServerStorage, _Proxy],
) -> None:
    store, proxy = proxied
    j = Journey(store)
    events = j.enrich([j.event("page", f"v{i % 40}", i / 10, path=f"/p{i}") for i in range(400)])
    stage = BuildStage(Settings(), store, {})

    failed = asyncio.run(stage.write([Ok(b"s1:x", e) for e in events]))

    assert failed == []
    assert proxy.refused >= 1  # the whole batch's events insert (~400 rows of ~80 columns) was refused
    assert j.sql("SELECT count() AS n, uniqExact(message_id) AS ids FROM {db}.events") == [{"n": 400, "ids": 400}]
    assert j.sql("SELECT uniqExact(anonymous_id) AS n FROM {db}.sessions") == [{"n": 40}]
