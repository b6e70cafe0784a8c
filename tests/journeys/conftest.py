"""In-process journey tests: the real Enricher and JourneyBuilder, on chDB and on a ClickHouse server
through clickhouse-connect (the ``storage`` fixture of tests/storage/backends.py: a fresh database
per test on each)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from enrich import Enricher, EnrichSettings
from journey_builder.builder import JourneyBuilder
from schemas import EnrichedEvent, RawBatch, unfold
from tests.storage.backends import clickhouse_endpoint, clickhouse_url, storage  # noqa: F401  (fixtures)
from trailmark.settings import JourneySettings
from trailmark.storage.base import Storage

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


_ENRICHER: list[Enricher] = []


def enricher() -> Enricher:
    if not _ENRICHER:
        _ENRICHER.append(Enricher(EnrichSettings()))
    return _ENRICHER[0]


class Journey:
    """Builds realistic events (through unfold + the real Enricher) and feeds the builder."""

    def __init__(self, store: Storage, **settings: Any) -> None:
        self.storage = store
        self.builder = JourneyBuilder(store, JourneySettings(**settings))

    @staticmethod
    def event(
        kind: str,
        anon: str,
        minutes: float,
        *,
        path: str = "/",
        query: str = "",
        referrer: str = "",
        event: str = "",
        user_id: str | None = None,
        traits: dict[str, Any] | None = None,
        ua: str = CHROME,
        properties: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        ts = (T0 + timedelta(minutes=minutes)).isoformat()
        ev: dict[str, Any] = {
            "type": kind,
            "messageId": str(uuid.uuid4()),
            "anonymousId": anon,
            "timestamp": ts,
            "context": {
                "page": {"url": f"https://shop.example.com{path}{query}", "path": path, "referrer": referrer},
                "userAgent": ua,
            },
        }
        if event:
            ev["event"] = event
        if user_id:
            ev["userId"] = user_id
        if traits:
            ev["traits"] = traits
        if properties:
            ev["properties"] = properties
        return ev

    def enrich(self, events: list[dict[str, Any]]) -> list[EnrichedEvent]:
        raw: RawBatch = {
            "v": 1,
            "site_id": "s1",
            "received_at": T0.isoformat(),
            "ip": "81.2.69.142",
            "user_agent": CHROME,
            "body": {"batch": events},
        }
        return [enricher().enrich(e, None) for e in unfold(raw)]

    def send(self, *events: dict[str, Any]) -> None:
        self.builder.process(self.enrich(list(events)))

    def sql(self, query: str) -> list[dict[str, Any]]:
        return self.storage.query(query.replace("{db}", self.storage.database))


@pytest.fixture
def journey(storage: Storage) -> Journey:  # noqa: F811
    return Journey(storage)
