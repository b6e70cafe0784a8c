"""Storage: the SQL layer over chDB (embedded) and a ClickHouse server (clickhouse-connect)."""

from __future__ import annotations

from trailmark.settings import Settings
from trailmark.storage.base import (
    JsonColumns,
    QueryError,
    Row,
    Storage,
    StorageError,
    StorageUnavailable,
    apply_migrations,
)


def open_storage(settings: Settings) -> Storage:
    """The server when TRAILMARK_CLICKHOUSE_URL is set, else chDB under <data-dir>/clickhouse."""
    if settings.clickhouse_url:
        from trailmark.storage.server_backend import ServerStorage

        s = settings.storage
        return ServerStorage(settings.clickhouse_url, s.database, s.connect_timeout_s, s.query_timeout_s)
    from trailmark.storage.chdb_backend import ChdbStorage

    return ChdbStorage(settings.data_dir / "clickhouse", settings.storage.database, settings.storage.read_sessions)


__all__ = [
    "JsonColumns",
    "QueryError",
    "Row",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "apply_migrations",
    "open_storage",
]
