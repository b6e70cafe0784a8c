"""A timestamp more than the skew window (7 days) ahead of receivedAt is clamped to receivedAt:
a year-9999 event must not sit at the top of every time-ordered list."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import RawBatch, unfold
from tests.conftest import Server

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def one(ev: dict[str, Any], sent_at: str | None = None) -> dict[str, Any]:
    raw: RawBatch = {
        "v": 1,
        "site_id": "s",
        "received_at": "2026-06-01T12:00:00Z",
        "ip": "",
        "user_agent": "",
        "body": {"batch": [{"type": "track", "event": "T", "anonymousId": "a", **ev}], "sentAt": sent_at},
    }
    return dict(unfold(raw)[0])


def test_far_future_is_clamped_to_received_at() -> None:
    hour_ago = (NOW - timedelta(hours=1)).isoformat()
    for ev, sent in [
        ({"timestamp": "9999-01-01T00:00:00Z"}, None),
        ({"timestamp": "9999-01-01T00:00:00Z"}, NOW.isoformat()),
        ({"timestamp": "9999-12-31T23:59:59.999Z"}, hour_ago),  # the correction would overflow
        ({"originalTimestamp": "3000-01-01T00:00:00Z"}, None),
        ({"timestamp": (NOW + timedelta(days=8)).isoformat()}, None),
    ]:
        assert one(ev, sent)["timestamp"] == "2026-06-01T12:00:00Z", (ev, sent)


def test_within_the_window_is_kept() -> None:
    ahead = NOW + timedelta(days=6)
    assert one({"timestamp": ahead.isoformat()})["timestamp"] == "2026-06-07T12:00:00Z"
    assert one({"timestamp": "2026-05-01T00:00:00Z"})["timestamp"] == "2026-05-01T00:00:00Z"


def test_year_9999_is_stored_as_received(server: Server) -> None:
    anon = f"ts-{uuid.uuid4()}"
    now = datetime.now(UTC)
    events = [
        {"type": "track", "event": name, "anonymousId": anon, "timestamp": ts}
        for name, ts in [("far", "9999-01-01T00:00:00Z"), ("near", (now - timedelta(minutes=5)).isoformat())]
    ]
    assert server.post("/v1/batch", {"batch": events, "sentAt": now.isoformat()}).json()["accepted"] == 2
    server.wait_for(f"SELECT count() FROM trailmark.events WHERE anonymous_id = '{anon}'", 2)
    rows = server.sql(
        "SELECT event, timestamp = received_at AS clamped, toYear(timestamp) AS year "
        f"FROM trailmark.events WHERE anonymous_id = '{anon}' ORDER BY event"
    )
    assert rows == [
        {"event": "far", "clamped": 1, "year": now.year},
        {"event": "near", "clamped": 0, "year": (now - timedelta(minutes=5)).year},
    ], rows
