"""A ClickHouse server outage in the middle of a load: the pipeline waits and retries, it does not
dead-letter. A real ``trailmark up`` (embedded bus) writes to the chDB-backed ClickHouse endpoint,
which is killed for 20 s while events keep arriving, then started again on the same port."""

from __future__ import annotations

import re
import threading
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.chserver import ClickHouseEndpoint
from tests.conftest import Server
from trailmark.storage.server_backend import ServerStorage

pytestmark = pytest.mark.slow


def _batch(tag: str, n: int, size: int) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    events = [
        {
            "type": "page" if i % 5 else "track",
            "event": "Clicked",
            "messageId": f"{tag}-{n}-{i}",
            "anonymousId": f"{tag}-v{(n * size + i) % 37}",
            "timestamp": now,
            "context": {"page": {"url": f"https://shop.example.com/p{i % 7}", "path": f"/p{i % 7}"}},
        }
        for i in range(size)
    ]
    return {"batch": events, "sentAt": now}


def _count(store: ServerStorage, sql: str) -> int:
    return int(store.query(sql)[0]["n"])


def _dead_letters_counted(server: Server) -> float:
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    return sum(
        float(m.group(1))
        for m in re.finditer(r'^trailmark_stage_records_total\{[^}]*outcome="dead_letter"[^}]*\} (\S+)$', metrics, re.M)
    )


def test_clickhouse_down_for_20s_mid_load_loses_nothing_and_stores_once(tmp_path: Path) -> None:
    with ExitStack() as stack:
        endpoint = ClickHouseEndpoint(tmp_path / "clickhouse")
        stack.callback(endpoint.stop)
        endpoint.start()
        server = Server(tmp_path / "data", env={"TRAILMARK_CLICKHOUSE_URL": endpoint.url})
        stack.callback(server.stop)
        server.start()
        store = ServerStorage(endpoint.url, "trailmark")
        stack.callback(store.close)
        _outage_mid_load(endpoint, server, store, stack)


def _outage_mid_load(endpoint: ClickHouseEndpoint, server: Server, store: ServerStorage, stack: ExitStack) -> None:
    tag = uuid.uuid4().hex[:8]
    batches, size = 60, 50
    sent: list[int] = []
    errors: list[str] = []

    def load() -> None:  # one batch every 0.5 s: ~30 s of traffic, the outage in the middle
        for n in range(batches):
            r = server.post("/v1/batch", _batch(tag, n, size))
            if r.status_code != 200 or r.json()["rejected"]:
                errors.append(f"{r.status_code} {r.text}")
            sent.append(n)
            time.sleep(0.5)

    sender = threading.Thread(target=load)
    sender.start()
    stack.callback(sender.join, 60)  # before the server stops
    deadline = time.time() + 30
    while _count(store, "SELECT count() AS n FROM trailmark.events") == 0:  # writes are flowing
        assert time.time() < deadline, server.tail()
        time.sleep(0.2)
    endpoint.stop(kill=True)
    down_at = len(sent)
    time.sleep(20)
    assert len(sent) > down_at + 20, "the collector kept accepting while ClickHouse was down"
    endpoint.start()
    sender.join(60)
    assert not errors, errors[:3]
    total = batches * size
    deadline = time.time() + 60
    while _count(store, "SELECT count() AS n FROM trailmark.events") < total and time.time() < deadline:
        time.sleep(0.5)
    rows = store.query("SELECT count() AS n, uniqExact(message_id) AS ids FROM trailmark.events")
    assert rows == [{"n": total, "ids": total}], server.tail()
    assert _count(store, "SELECT count() AS n FROM trailmark.dead_letters") == 0
    assert _dead_letters_counted(server) == 0
    assert "dependency unavailable, retrying" in server.tail(200_000)
