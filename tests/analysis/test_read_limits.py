"""Analysis reads (funnel, attribution, retention, KPIs, moments, ...) run a few at once per read key
and per server through a real ``trailmark up``: the rest wait their turn, and past the queue's time
get 429 with Retry-After; a slot is given back whatever the read's outcome."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import Server

READS = [
    "/v1/moments?conversion=Signed%20Up&min_support=1&fresh=true",
    "/v1/funnel?steps=/,/pricing,Signed%20Up",
    "/v1/attribution?conversion=Signed%20Up&model=linear",
    "/v1/kpis?weeks=4",
    "/v1/retention?periods=4",
    "/v1/paths?start=/",
]


def _traffic(server: Server) -> None:
    now = datetime.now(UTC) - timedelta(days=1)
    batch = []
    for v in range(40):
        for i, path in enumerate(("/", "/pricing", "/signup")):
            batch.append(
                {
                    "type": "page",
                    "messageId": str(uuid.uuid4()),
                    "anonymousId": f"v{v}",
                    "timestamp": (now + timedelta(minutes=v * 10 + i)).isoformat(),
                    "context": {"page": {"url": f"https://shop.example.com{path}", "path": path}},
                }
            )
        if v % 3 == 0:
            batch.append(
                {"type": "track", "event": "Signed Up", "messageId": str(uuid.uuid4()), "anonymousId": f"v{v}"}
                | {"timestamp": (now + timedelta(minutes=v * 10 + 5)).isoformat()}
            )
    assert server.post("/v1/batch", {"batch": batch}).status_code == 200
    server.wait_for("SELECT count() AS n FROM trailmark.events", len(batch))


@pytest.fixture(scope="module")
def one_at_a_time(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "TRAILMARK_JOURNEYS__ANALYSIS__MAX_CONCURRENT_READS_PER_KEY": "1",
        "TRAILMARK_JOURNEYS__ANALYSIS__QUEUE_TIMEOUT_S": "0",
        "TRAILMARK_JOURNEYS__ANALYSIS__MOMENTS_MAX_AGE_S": "0",
    }
    server = Server(tmp_path_factory.mktemp("limits") / "data", env).start()
    try:
        _traffic(server)
        yield server
    finally:
        server.stop()


def test_a_read_key_runs_one_analysis_read_at_a_time_and_the_rest_get_429(one_at_a_time: Server) -> None:
    server = one_at_a_time
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(server.read, READS * 4))
    codes = [r.status_code for r in answers]
    assert set(codes) == {200, 429}, codes  # some overlapped the one running, none failed otherwise
    busy = next(r for r in answers if r.status_code == 429)
    assert busy.headers["retry-after"] == "5"
    assert "at most 1 analysis reads at once per read key; retry later" in busy.json()["detail"]
    # one after another, every read is answered: no slot was kept by a read that was refused
    for path in READS:
        assert server.read(path).status_code == 200, path


def test_a_slot_is_given_back_after_a_bad_request_and_a_failed_query(one_at_a_time: Server) -> None:
    server = one_at_a_time
    assert server.read("/v1/moments?limit=0").status_code == 400  # refused before any slot
    assert server.read("/v1/retention?start_event=&periods=4&from=not-a-date").status_code == 400
    assert server.read("/v1/moments?conversion=Signed%20Up&persona=Nobody").status_code == 400
    for path in READS:  # with one slot per key, a slot kept by any of those would make these 429
        assert server.read(path).status_code == 200, path


def test_reads_wait_their_turn_within_the_queue_time(tmp_path: Path) -> None:
    env = {
        "TRAILMARK_JOURNEYS__ANALYSIS__MAX_CONCURRENT_READS_PER_KEY": "1",
        "TRAILMARK_JOURNEYS__ANALYSIS__MAX_CONCURRENT_READS": "1",
        "TRAILMARK_JOURNEYS__ANALYSIS__MOMENTS_MAX_AGE_S": "0",
    }
    server = Server(tmp_path / "data", env).start()
    try:
        _traffic(server)
        with ThreadPoolExecutor(12) as pool:
            codes = [r.status_code for r in pool.map(server.read, READS * 2)]
        assert codes == [200] * len(READS) * 2  # queued (30 s by default), not refused
    finally:
        server.stop()
