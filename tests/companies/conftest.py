"""Fixtures: the fixture sites (HTTP, DNS, RDAP on loopback) and a migrated chDB database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.companies.sites import Sites
from tests.storage.backends import process_chdb
from trailmark.storage.base import apply_migrations
from trailmark.storage.chdb_backend import ChdbStorage


@pytest.fixture(scope="session")
def sites() -> Iterator[Sites]:
    s = Sites().start()
    yield s
    s.stop()


@pytest.fixture
def chdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbStorage]:
    store = process_chdb(tmp_path_factory)
    store.database = f"t_{uuid.uuid4().hex[:12]}"
    apply_migrations(store)
    yield store
    store.execute(f"DROP DATABASE IF EXISTS {store.database} SYNC")
