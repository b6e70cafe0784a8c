"""A stage that keeps failing, or stops making progress, makes /readyz answer 503 with the reason,
and shows in /metrics (trailmark_stage_healthy, trailmark_stage_restarts_total); it turns ready
again once the stage recovers."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server
from tests.robustness.helpers import RAW, append_damaged_row, log_path, metric, readyz

STAGE = "enrich+journeys"
# a 1 s linger: the stalled test takes the log lock well before the stage commits its batch
FAST = {
    "TRAILMARK_HEALTH__STALL_AFTER_S": "2",
    "TRAILMARK_HEALTH__RESTART_DELAY_S": "0.2",
    "TRAILMARK_BUS__JOURNEYS_LINGER_MS": "1000",
}


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "data", env=FAST).start()
    yield server
    server.stop()


def until(check: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.time() + timeout
    while not (got := check()):
        assert time.time() < deadline, "condition never held"
        time.sleep(0.1)
    return got


def unready(server: Server) -> dict[str, Any] | None:
    status, body = readyz(server)
    return body if status == 503 else None


def test_a_crash_looping_stage_makes_readyz_503_until_it_recovers(srv: Server) -> None:
    assert readyz(srv)[0] == 200 and metric(srv, "trailmark_stage_healthy", stage=STAGE) == 1
    offset = append_damaged_row(srv, RAW)  # the stage cannot read its log past this row

    body = until(lambda: unready(srv))
    assert body["ready"] is False
    assert body["problems"][STAGE].startswith("crash-looping: 3 restarts without progress"), body
    assert "error" in body["problems"][STAGE]
    assert metric(srv, "trailmark_stage_healthy", stage=STAGE) == 0
    assert metric(srv, "trailmark_stage_restarts_total", stage=STAGE) >= 3
    assert metric(srv, "trailmark_stage_healthy", stage="dead_letters") == 1

    with sqlite3.connect(log_path(srv), timeout=30) as conn:  # the operator removes the damaged row
        conn.execute("DELETE FROM t_trailmark_raw WHERE offset = ?", (offset,))
    until(lambda: readyz(srv)[0] == 200)
    assert metric(srv, "trailmark_stage_healthy", stage=STAGE) == 1
    anon = f"after-{uuid.uuid4()}"
    assert srv.post("/v1/batch", {"batch": [{"type": "track", "event": "e", "anonymousId": anon}]}).status_code == 200
    srv.wait_for(f"SELECT count() FROM trailmark.events WHERE anonymous_id = '{anon}'", 1)


def test_a_stage_without_progress_makes_readyz_503_until_it_moves_again(srv: Server) -> None:
    anon = f"stalled-{uuid.uuid4()}"
    assert srv.post("/v1/batch", {"batch": [{"type": "track", "event": "e", "anonymousId": anon}]}).status_code == 200
    # Another process holds the log's write lock: the stage can read and write its journeys, but
    # not commit its offset, so its batch stays in flight.
    lock = sqlite3.connect(log_path(srv), timeout=30, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")
        body = until(lambda: unready(srv))
        assert body["problems"][STAGE].startswith("no progress for"), body
        assert "batch is still being written" in body["problems"][STAGE]
        assert metric(srv, "trailmark_stage_healthy", stage=STAGE) == 0
        assert metric(srv, "trailmark_stage_restarts_total", stage=STAGE) == 0
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    until(lambda: readyz(srv)[0] == 200)
    srv.wait_for(f"SELECT count() FROM trailmark.events WHERE anonymous_id = '{anon}'", 1)
