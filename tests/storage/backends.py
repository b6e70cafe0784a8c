"""Both storage backends for tests: chDB in the pytest process, and a ClickHouse server through
clickhouse-connect (``CLICKHOUSE_URL`` when set, else the chDB-backed HTTP endpoint of tests/chserver).

``storage`` is parametrized over both: each test gets a fresh database with the migrations applied,
dropped afterwards. chDB allows one data path per process, so the pytest process opens one path for
the whole session.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.chserver import clickhouse_endpoint, clickhouse_url  # noqa: F401  (fixtures used below)
from trailmark.storage.base import Storage, apply_migrations
from trailmark.storage.chdb_backend import ChdbStorage
from trailmark.storage.server_backend import ServerStorage

__all__ = ["BACKENDS", "clickhouse_endpoint", "clickhouse_url", "process_chdb", "storage"]

BACKENDS = ["chdb", "server"]
_CHDB: list[ChdbStorage] = []


def process_chdb(tmp_path_factory: pytest.TempPathFactory) -> ChdbStorage:
    """The pytest process's one chDB store (its database is switched per test)."""
    if not _CHDB:
        _CHDB.append(ChdbStorage(tmp_path_factory.mktemp("chdb"), "unused"))
    return _CHDB[0]


@pytest.fixture(params=BACKENDS)
def storage(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storage]:
    """A fresh, migrated database on chDB and on a ClickHouse server."""
    database = f"t_{uuid.uuid4().hex[:12]}"
    store: Storage
    if request.param == "chdb":
        store = process_chdb(tmp_path_factory)
        store.database = database
    else:
        store = ServerStorage(request.getfixturevalue("clickhouse_url"), database)
    apply_migrations(store)
    yield store
    store.execute(f"DROP DATABASE IF EXISTS {database} SYNC")
    if isinstance(store, ServerStorage):
        store.close()
