"""``trailmark up`` with its ClickHouse server down at start: it starts anyway, accepts events into
the embedded log, says not ready, answers reads 503, and stores everything once the server is up."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx

from tests.chserver import ClickHouseEndpoint
from tests.conftest import CHROME_UA, Server


def test_up_waits_for_a_clickhouse_server_that_is_down_at_start(tmp_path: Path) -> None:
    endpoint = ClickHouseEndpoint(tmp_path / "ch")  # a port, nothing listening yet
    srv = Server(tmp_path / "data", env={"TRAILMARK_CLICKHOUSE_URL": endpoint.url})
    try:
        srv.start_unready()
        assert httpx.get(srv.url + "/readyz", timeout=5).status_code == 503
        anon = f"early-{uuid.uuid4().hex[:8]}"
        events = [
            {
                "type": "page",
                "messageId": str(uuid.uuid4()),
                "anonymousId": anon,
                "context": {"page": {"url": f"https://shop.example.com/p{i}"}},
            }
            for i in range(5)
        ]
        r = srv.post("/v1/batch", {"batch": events}, headers={"user-agent": CHROME_UA})
        assert r.status_code == 200, r.text
        read = srv.read(f"/v1/journeys/{anon}")
        assert read.status_code == 503 and read.headers["retry-after"], read.text
        endpoint.start()
        deadline = time.time() + 60
        while httpx.get(srv.url + "/readyz", timeout=5).status_code != 200:
            assert time.time() < deadline, srv.tail()
            time.sleep(0.5)
        srv.wait_for(f"SELECT count() FROM trailmark.events WHERE anonymous_id = '{anon}'", 5, timeout=30)
    finally:
        srv.stop()
        endpoint.stop()
