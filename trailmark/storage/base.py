"""The storage interface: one SQL layer over embedded chDB and a ClickHouse server."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any, Protocol

from trailmark.errors import Rejected, TrailmarkError, Unavailable

Row = dict[str, Any]


class StorageError(TrailmarkError):
    """Base of storage errors; ``QueryError`` carries ClickHouse's message for a bad query."""


class QueryError(StorageError, Rejected):
    """ClickHouse rejected the query (syntax, unknown column, readonly violation...)."""


class StorageUnavailable(StorageError, Unavailable):
    """The database cannot be reached; callers retry rather than dead-letter."""


class Storage(Protocol):
    database: str

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement that returns nothing (DDL, OPTIMIZE...)."""

    def query(
        self, sql: str, params: Mapping[str, Any] | None = None, *, readonly: bool = False,
        settings: Mapping[str, Any] | None = None, query_id: str | None = None,
    ) -> list[Row]:
        """Rows as dicts. ``readonly`` runs under ClickHouse's readonly setting, so writes fail.

        ``settings`` are ClickHouse settings for this query alone, applied before it runs (a
        ``readonly`` among them is applied last, so the query itself cannot change any of them);
        nothing of them outlives the call. ``query_id`` lets :meth:`cancel` stop the query."""

    def cancel(self, query_id: str) -> None:
        """Stop a running query started with ``query_id`` (no error if it already ended)."""

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert rows (one batch, one INSERT) into ``database.table``."""

    def close(self) -> None: ...


def setting_literal(value: Any) -> str:
    """A settings value as a ClickHouse literal (strings quoted, maps as ``{'k': 'v'}``)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{setting_literal(str(k))}: {setting_literal(v)}" for k, v in value.items()) + "}"
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def migrations() -> list[tuple[str, str]]:
    """(name, sql) of every DDL file in schemas/ddl, in order."""
    ddl = resources.files("schemas") / "ddl"
    files = sorted((f for f in ddl.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name, f.read_text(encoding="utf-8")) for f in files]


def split_statements(sql: str, database: str) -> list[str]:
    """Statements of one migration file (separated by lines holding only ';'), with ``{db}`` set."""
    out = []
    for chunk in sql.replace("{db}", database).split("\n;\n"):
        body = "\n".join(line for line in chunk.splitlines() if not line.lstrip().startswith("--"))
        if body.strip():
            out.append(body.strip())
    return out


def apply_migrations(storage: Storage) -> list[str]:
    """Apply schemas/ddl idempotently; records applied versions in ``schema_migrations``."""
    db = storage.database
    storage.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
    storage.execute(
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations (name String, applied_at DateTime64(3, 'UTC')"
        " DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY name"
    )
    done = {r["name"] for r in storage.query(f"SELECT name FROM {db}.schema_migrations")}
    applied = []
    for name, sql in migrations():
        if name in done:
            continue
        for statement in split_statements(sql, db):
            storage.execute(statement)
        storage.insert("schema_migrations", [{"name": name}])
        applied.append(name)
    return applied
