"""The ClickHouse server backend, through the same SQL layer as chDB. Runs when CLICKHOUSE_URL is set
(e.g. http://default:@127.0.0.1:8123); skipped, saying so, otherwise."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from trailmark.storage.base import QueryError, apply_migrations

URL = os.environ.get("CLICKHOUSE_URL", "")
pytestmark = [
    pytest.mark.clickhouse_server,
    pytest.mark.skipif(not URL, reason="CLICKHOUSE_URL is not set: no ClickHouse server to test the server backend"),
]


@pytest.fixture
def server_storage() -> Iterator[object]:
    from trailmark.storage.server_backend import ServerStorage

    store = ServerStorage(URL, f"tm_test_{uuid.uuid4().hex[:10]}")
    apply_migrations(store)
    yield store
    store.execute(f"DROP DATABASE IF EXISTS {store.database}")
    store.close()


def test_migrations_are_idempotent(server_storage: object) -> None:
    from trailmark.storage.server_backend import ServerStorage

    assert isinstance(server_storage, ServerStorage)
    assert apply_migrations(server_storage) == []
    tables = {r["name"] for r in server_storage.query(
        "SELECT name FROM system.tables WHERE database = {d:String}", {"d": server_storage.database})}
    assert {"events", "sessions", "touchpoints", "contacts", "identities"} <= tables


def test_the_builder_writes_and_the_read_api_reads(server_storage: object) -> None:
    from journey_builder import queries
    from tests.journeys.conftest import Journey

    j = Journey(server_storage)  # type: ignore[arg-type]
    j.send(j.event("page", "srv", 0, path="/", query="?utm_source=google&utm_medium=cpc"),
           j.event("identify", "srv", 1, user_id="u-srv", traits={"email": "srv@acme.io"}))
    body = queries.journey(server_storage, "s1", "u-srv")  # type: ignore[arg-type]
    assert body is not None and body["contact_id"] == "user:u-srv"
    assert [s["channel"] for s in body["sessions"]] == ["Paid Search"]


def test_readonly_queries_cannot_write(server_storage: object) -> None:
    from trailmark.storage.server_backend import ServerStorage

    assert isinstance(server_storage, ServerStorage)
    with pytest.raises(QueryError, match="(?i)readonly"):
        server_storage.query(f"INSERT INTO {server_storage.database}.dead_letters (stage) VALUES ('x')",
                             readonly=True)
