"""A ``trailmark up`` with two sites, and helpers to run SQL as either site's read key."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import CHROME_UA, Server
from trailmark.keys import new_site

# Small limits so the limit tests finish quickly; the defaults are documented in docs/sql.md.
LIMITS = {
    "TRAILMARK_SQL__MAX_EXECUTION_S": "6",
    "TRAILMARK_SQL__MAX_RESULT_ROWS": "1000",
    "TRAILMARK_SQL__MAX_MEMORY_BYTES": str(256 * 1024**2),
    "TRAILMARK_SQL__MAX_CONCURRENT": "2",
    "TRAILMARK_SQL__MAX_CONCURRENT_PER_KEY": "1",
    "TRAILMARK_SQL__QUEUE_TIMEOUT_S": "1",
}


class TwoSites:
    def __init__(self, server: Server, sites: list[dict[str, Any]]) -> None:
        self.server = server
        self.a, self.b = sites

    def sql(
        self, query: str, site: dict[str, Any] | None = None, params: dict[str, Any] | None = None, timeout: float = 30
    ) -> httpx.Response:
        key = (site or self.a)["read_key"]
        return httpx.post(
            self.server.url + "/v1/sql",
            json={"query": query, "params": params},
            headers={"authorization": f"Bearer {key}"},
            timeout=timeout,
        )

    def rows(self, query: str, site: dict[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
        r = self.sql(query, site, **kw)
        assert r.status_code == 200, r.text
        rows: list[dict[str, Any]] = r.json()["rows"]
        return rows

    def post(self, site: dict[str, Any], events: list[dict[str, Any]]) -> None:
        r = httpx.post(
            self.server.url + "/v1/batch",
            auth=(site["write_key"], ""),
            timeout=30,
            headers={"user-agent": CHROME_UA},  # not a bot: the events make sessions
            json={"batch": events, "sentAt": datetime.now(UTC).isoformat()},
        )
        assert r.status_code == 200, r.text


def page(anon: str, path: str) -> dict[str, Any]:
    return {
        "type": "page",
        "messageId": str(uuid.uuid4()),
        "anonymousId": anon,
        "timestamp": datetime.now(UTC).isoformat(),
        "context": {"page": {"url": f"https://shop.example.com{path}", "path": path}},
    }


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoSites]:
    data = tmp_path_factory.mktemp("sql") / "data"
    data.mkdir(parents=True)
    sites = [new_site("alpha"), new_site("beta")]
    (data / "keys.json").write_bytes(orjson.dumps({"sites": sites}))
    (data / "keys.json").chmod(0o600)
    srv = Server(Path(data), env=LIMITS).start()
    try:
        both = TwoSites(srv, [dict(s) for s in sites])
        both.post(both.a, [page("alpha-1", "/a1"), page("alpha-2", "/a2"), page("alpha-2", "/a3")])
        both.post(both.b, [page("beta-1", "/b1")])
        for site, n in ((both.a, 3), (both.b, 1)):
            deadline = time.time() + 20
            while both.rows("SELECT count() AS n FROM trailmark.sessions", site)[0]["n"] != n - (site is both.a):
                assert time.time() < deadline, "events never reached the sessions"
                time.sleep(0.1)
        yield both
    finally:
        srv.stop()
