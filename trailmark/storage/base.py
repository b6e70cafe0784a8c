"""The storage interface: one SQL layer over embedded chDB and a ClickHouse server."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

from trailmark.errors import ConfigError, Rejected, TrailmarkError, Unavailable
from trailmark.settings import StorageSettings

Row = dict[str, Any]


class StorageError(TrailmarkError):
    """Base of storage errors; ``QueryError`` carries ClickHouse's message for a bad query."""


class QueryError(StorageError, Rejected):
    """ClickHouse rejected the query (syntax, unknown column, readonly violation...)."""


class StorageUnavailable(StorageError, Unavailable):
    """The database cannot be reached; callers retry rather than dead-letter."""


class IsolatedQuery(Protocol):
    """A query of a ``Storage.isolated`` block."""

    def __call__(self, sql: str, params: Mapping[str, Any] | None = None, query_id: str | None = None) -> list[Row]:
        """Rows as dicts; ``query_id`` lets ``Storage.cancel`` stop it."""


@dataclass(frozen=True, slots=True)
class JsonColumns:
    """A batch of rows as one ClickHouse ``JSONColumns`` document: ``body`` is the JSON object
    ``{"name": [values], ...}`` of the columns ``names``, in that order. The Kafka journey builder
    writes a batch's ``events`` so, each value copied as it came off the bus (trailmark/native's
    ``RecordTexts``), to a storage that takes the document as it is (``Storage.json_columns``)."""

    names: list[str]
    body: bytes


class Storage(Protocol):
    database: str
    json_columns: bool
    """Whether ``insert_json_columns`` sends the document as it is (a server); else it is read back
    into columns first, and a writer has no reason to make one."""

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement that returns nothing (DDL, OPTIMIZE...)."""

    def query(
        self,
        sql: str,
        params: Mapping[str, Any] | None = None,
        *,
        readonly: bool = False,
        settings: Mapping[str, Any] | None = None,
        query_id: str | None = None,
    ) -> list[Row]:
        """Rows as dicts. ``readonly`` runs under ClickHouse's readonly setting, so writes fail.

        ``settings`` are ClickHouse settings for this query alone, applied before it runs (a
        ``readonly`` among them is applied last, so the query itself cannot change any of them);
        nothing of them outlives the call. ``query_id`` lets :meth:`cancel` stop the query."""

    def isolated(self, settings: Mapping[str, Any]) -> AbstractContextManager[IsolatedQuery]:
        """Several queries in a row under ``settings``, as ``query(..., settings=settings)`` runs
        one: applied before the first, ``readonly`` among them last, nothing of them outliving the
        block (the SQL endpoint's checks and its query). On chDB they share one session made for
        the block, set up once instead of once per query."""

    def native_blocks(
        self, sql: str, params: Mapping[str, Any] | None = None, *, settings: Mapping[str, Any] | None = None
    ) -> AbstractContextManager[Iterator[bytes]]:
        """A read-only query's answer in ClickHouse's Native format as it comes, for a reader that
        keeps less than the whole answer: bytes that, joined, are its blocks (chDB gives them whole,
        a server's HTTP chunks may cut them anywhere). ``settings`` as for ``query``; leaving the
        block before the end stops the query. Errors are ``QueryError`` / ``StorageUnavailable``."""

    def cancel(self, query_id: str) -> None:
        """Stop a running query started with ``query_id`` (no error if it already ended)."""

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert rows (one batch, one INSERT) into ``database.table``."""

    def insert_columns(self, table: str, columns: Mapping[str, Sequence[Any]]) -> None:
        """Insert a batch given as columns of equal length (one INSERT): for wide tables written
        in large batches (``events``), where building a dict per row costs more than the insert."""

    def insert_json_columns(self, table: str, document: JsonColumns) -> None:
        """Insert a batch given as one ``JSONColumns`` document (one INSERT)."""

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


# --- Cluster rendering -------------------------------------------------------------------------------
#
# With ``TRAILMARK_STORAGE__CLUSTER`` set, every statement of the DDL files is rendered for a
# ClickHouse cluster before it runs: ``ON CLUSTER``, a Replicated* engine under ``<table>_local``, and
# a Distributed table under the public name, so the builder, the read API and data-team SQL keep
# their names. Without it the statements run exactly as split_statements gives them.
#
# Why substitution and not a parser: the DDL files are ours and written in a few fixed shapes
# (``CREATE DATABASE|TABLE|VIEW|MATERIALIZED VIEW IF NOT EXISTS {db}.name``, ``ALTER TABLE {db}.name``,
# one ``ENGINE = ...MergeTree[(args)]``); a statement of any other shape stops the migration with
# ClusterDDLError instead of being guessed at. tests/cluster checks every rendered statement with
# ClickHouse's own parser (chDB's formatQuery / EXPLAIN AST).

_VISITOR = "cityHash64(site_id, anonymous_id)"
# How each table is spread over shards. Everything one visitor does is on one shard (its events,
# sessions, touchpoints, identities, stage entries, account links), so FINAL and the per-visitor
# lookups of the journey builder never need another shard's rows; contacts and accounts shard by
# their own key, which is their ReplacingMergeTree key. contact_handles / contact_devices are filled
# by materialized views on the shard of the identities row that made them: their key only matters
# for direct inserts, which trailmark never makes. A table missing here cannot be rendered.
SHARD_KEYS: dict[str, str] = {
    "events": _VISITOR,
    "sessions_data": _VISITOR,
    "touchpoints_data": _VISITOR,
    "identities_data": _VISITOR,
    "stage_transitions_data": _VISITOR,
    "account_links_data": _VISITOR,
    "interest_hours": _VISITOR,  # filled by interest_hours_mv on the shard of the visitor's events
    "device_days": _VISITOR,  # as interest_hours (device_days_mv); its backfill goes by the same key
    "track_events": _VISITOR,
    "device_stages": _VISITOR,  # filled by device_stages_mv, beside the visitor's stage rows
    "session_touches": _VISITOR,  # filled by session_touches_mv, beside the visitor's touchpoints
    "step_events": _VISITOR,  # filled by step_events_mv, beside the visitor's events
    "event_keys": _VISITOR,  # filled by event_keys_mv, beside the visitor's events
    "visitor_state": _VISITOR,  # the journey builder's per-visitor state, read by visitor
    "contact_devices": _VISITOR,
    "shared_devices": _VISITOR,  # written by the journey builder after its identities, beside them
    "contact_handles": "cityHash64(site_id, handle)",
    "contacts_data": "cityHash64(site_id, contact_id)",
    "accounts_data": "cityHash64(site_id, group_id)",
    "dead_letters": "rand()",
    "dead_letter_replays": "cityHash64(dead_letter_id)",
    "suppressed_identifiers": "cityHash64(site_id, hash)",
    "erasure_requests": "cityHash64(site_id, request_id)",
    "consent_aggregates": "cityHash64(site_id, day)",  # its sum key's prefix: rows of one key meet on one shard
    "erasure_subjects": "cityHash64(request_id)",
    "company_profiles_data": "cityHash64(site_id, domain)",
    "saved_answers": "cityHash64(site_id, kind, key)",  # a key's computations meet on one shard
}
LOCAL_SUFFIX = "_local"
_NAME = r"(?P<db>[A-Za-z_][A-Za-z0-9_]*)\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
_CREATE_DATABASE = re.compile(r"CREATE DATABASE IF NOT EXISTS (?P<db>[A-Za-z_][A-Za-z0-9_]*)\Z")
_CREATE_TABLE = re.compile(rf"CREATE TABLE IF NOT EXISTS {_NAME}(?P<rest>\s.*)\Z", re.S)
_ENGINE = re.compile(r"\bENGINE = (?P<family>[A-Za-z]*)MergeTree(?:\((?P<args>[^()]*)\))?")
# OR REPLACE: a view over ``SELECT *`` is redefined by a migration that adds columns to its table
_CREATE_VIEW = re.compile(rf"CREATE (?P<how>VIEW IF NOT EXISTS|OR REPLACE VIEW) {_NAME}(?P<rest>\s+AS\s.*)\Z", re.S)
_CREATE_MV = re.compile(
    rf"CREATE MATERIALIZED VIEW IF NOT EXISTS {_NAME}"
    rf"(?P<rest>\s+TO {_NAME.replace('db', 'tdb').replace('name', 'target')}\s+AS\s.*)\Z",
    re.S,
)
_ALTER = re.compile(rf"ALTER TABLE {_NAME}(?P<rest>\s.*)\Z", re.S)
_INSERT = re.compile(rf"INSERT INTO {_NAME}\s+SELECT\s.*\Z", re.S)
_COLUMN_ALTER = re.compile(r"\s*(ADD|DROP|MODIFY|RENAME|COMMENT) COLUMN\b")
_CLUSTER_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")


class ClusterDDLError(ConfigError):
    """A DDL statement or cluster setting the cluster rendering cannot handle (the reason says which)."""


class ClusterRenderer:
    """Renders split statements for a cluster; remembers the tables created so far, because a
    materialized view reads and writes their local tables and an ALTER changes both tables.

    Feed it every migration in order, applied ones included (their tables are still there)."""

    def __init__(self, cluster: str, replication_path: str) -> None:
        if not _CLUSTER_NAME.match(cluster):
            raise ClusterDDLError(f"cluster name {cluster!r}: use letters, digits, '_', '.', '-'")
        self.cluster = cluster
        self.on = f" ON CLUSTER '{cluster}'"
        self.replication_path = replication_path
        self.tables: set[str] = set()

    def render(self, statement: str) -> list[str]:
        """The cluster statements for one statement of a migration file (one or two)."""
        if m := _CREATE_DATABASE.match(statement):
            return [statement + self.on]
        if m := _CREATE_TABLE.match(statement):
            return self._table(m["db"], m["name"], m["rest"], statement)
        if m := _CREATE_VIEW.match(statement):  # reads the public (Distributed) names: sees every shard
            return [f"CREATE {m['how']} {m['db']}.{m['name']}{self.on}{m['rest']}"]
        if m := _CREATE_MV.match(statement):  # fires on each shard's inserts: local tables in, local out
            return [
                f"CREATE MATERIALIZED VIEW IF NOT EXISTS {m['db']}.{m['name']}{self.on}"
                + self._to_local(m["db"], m["rest"])
            ]
        if m := _ALTER.match(statement):
            name, rest = m["name"], m["rest"]
            if name not in self.tables:
                return [f"ALTER TABLE {m['db']}.{name}{self.on}{rest}"]
            local = f"ALTER TABLE {m['db']}.{name}{LOCAL_SUFFIX}{self.on}{rest}"
            # a Distributed table has the columns of its local table, and nothing else to alter
            return [local, f"ALTER TABLE {m['db']}.{name}{self.on}{rest}"] if _COLUMN_ALTER.match(rest) else [local]
        if _INSERT.match(statement):
            # a backfill (a new summary table filled from the rows stored before its materialized
            # view existed): INSERT has no ON CLUSTER, and needs none. Run once from one node over the
            # public (Distributed) names, it reads every shard and sends each row to the shard of its
            # sharding key, the same visitor key as the events it summarizes
            return [statement]
        raise ClusterDDLError(f"cannot render for a cluster (not a known DDL shape): {statement[:200]!r}")

    def _table(self, db: str, name: str, rest: str, statement: str) -> list[str]:
        engine = _ENGINE.search(rest)
        if engine is None:
            raise ClusterDDLError(f"table {name}: only MergeTree-family tables can be rendered for a cluster")
        if name not in SHARD_KEYS:
            raise ClusterDDLError(f"table {name} has no sharding key: add it to SHARD_KEYS in {__name__}")
        local = name + LOCAL_SUFFIX
        path = self.replication_path.replace("{database}", db).replace("{table}", local)
        args = ", ".join(a for a in (_literal(path), "'{replica}'", (engine["args"] or "").strip()) if a)
        replicated = f"ENGINE = Replicated{engine['family']}MergeTree({args})"
        rest = rest[: engine.start()] + replicated + rest[engine.end() :]
        self.tables.add(name)
        return [
            f"CREATE TABLE IF NOT EXISTS {db}.{local}{self.on}{rest}",
            f"CREATE TABLE IF NOT EXISTS {db}.{name}{self.on} AS {db}.{local}\n"
            f"ENGINE = Distributed({_literal(self.cluster)}, {_literal(db)}, {_literal(local)}, {SHARD_KEYS[name]})",
        ]

    def _to_local(self, db: str, text: str) -> str:
        def local(m: re.Match[str]) -> str:
            return m[0] + LOCAL_SUFFIX if m["name"] in self.tables else m[0]

        return re.sub(rf"\b{re.escape(db)}\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)\b", local, text)


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def rendered_migrations(
    database: str,
    cluster: str = "",
    replication_path: str = "/clickhouse/tables/{shard}/{database}/{table}",
) -> list[tuple[str, list[str]]]:
    """(name, statements) of every migration as it runs: for ``cluster`` when it is set, else as
    split_statements gives them (byte for byte what trailmark has always run)."""
    renderer = ClusterRenderer(cluster, replication_path) if cluster else None
    out = []
    for name, sql in migrations():
        statements = split_statements(sql, database)
        if renderer is not None:
            statements = [s for statement in statements for s in renderer.render(statement)]
        out.append((name, statements))
    return out


def _bookkeeping(database: str, cluster: str, replication_path: str) -> list[str]:
    """The database and the table of applied migrations. On a cluster the table is one replicated
    table across every node of every shard (its path has no {shard}), so each node knows what ran."""
    if not cluster:
        return [
            f"CREATE DATABASE IF NOT EXISTS {database}",
            f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations (name String, applied_at"
            " DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY name",
        ]
    on = ClusterRenderer(cluster, replication_path).on
    path = _literal(f"/clickhouse/tables/all/{database}/schema_migrations")
    return [
        f"CREATE DATABASE IF NOT EXISTS {database}{on}",
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations{on} (name String, applied_at"
        " DateTime64(3, 'UTC') DEFAULT now64(3))"
        f" ENGINE = ReplicatedReplacingMergeTree({path}, '{{shard}}-{{replica}}') ORDER BY name",
    ]


def apply_migrations(storage: Storage, settings: StorageSettings | None = None) -> list[str]:
    """Apply schemas/ddl idempotently; records applied versions in ``schema_migrations``.

    With ``settings.cluster`` set, the statements are rendered for that cluster (see ClusterRenderer)."""
    db = storage.database
    cluster = settings.cluster if settings is not None else ""
    path = settings.replication_path if settings is not None else StorageSettings().replication_path
    for statement in _bookkeeping(db, cluster, path):
        storage.execute(statement)
    done = {r["name"] for r in storage.query(f"SELECT name FROM {db}.schema_migrations")}
    applied = []
    for name, statements in rendered_migrations(db, cluster, path):
        if name in done:
            continue
        for statement in statements:
            storage.execute(statement)
        storage.insert("schema_migrations", [{"name": name}])
        applied.append(name)
    return applied
