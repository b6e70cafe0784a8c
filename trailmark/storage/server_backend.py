"""A ClickHouse server or cluster through clickhouse-connect, behind the same Storage interface.

Rows come back as JSONEachRow text parsed with orjson, as on the embedded backend, so both return
the same JSON values (clickhouse-connect's typed results would give ``datetime`` and ``UUID``
objects where chDB gives strings, and the read API would answer differently on each). The JSON
output settings are pinned to the engine defaults chDB runs with, so an older server formats 64-bit
integers and times the same way. Inserts are JSONEachRow with RFC 3339 times parsed best-effort.

A query parameter too large for ClickHouse's HTTP limits (each form field at most
``http_max_field_value_size``, 128 KiB by default; the URL at most ``http_max_uri_size``, 1 MiB)
travels as external data instead: a file part, which has no such cap, read as a one-row temporary
table. clickhouse-connect would send it in the URL, or as a form field once parameters pass 4 KiB,
and a server would refuse the query (the journey builder's key sets are about 1 MB for 20k events).
A command's parameters all travel in the URL, so there they go as external data once together they
pass 4 KiB.

Errors are translated here, once: "cannot be served now" becomes :class:`StorageUnavailable` (the
runners retry without committing), an error caused by the query or its rows becomes
:class:`QueryError` (the record is dead-lettered, the read API answers 400):

- no answer at all (connection refused or reset, timeouts, a broken stream): unavailable;
- an HTTP error without a ClickHouse exception code (a proxy or load balancer answered): unavailable,
  except a request refused for what it is (400, 413, 414, 431: too long a URL, too large a body or
  headers), which the same request would meet again: a query error, so the journey builder splits
  its batch into smaller requests instead of retrying one forever (:data:`REFUSED_REQUEST_STATUSES`);
- a ClickHouse error: unavailable when its code is in :data:`UNAVAILABLE_CODES` (overload, memory,
  network, Keeper, replicas, read-only tables, authentication), except a per-query limit the caller
  set itself (``max_execution_time``, ``max_memory_usage``) or a cancellation it asked for;
  otherwise a query error;
- errors raised by clickhouse-connect before sending (bad parameters, unsupported types): query errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal
from urllib.parse import quote_plus, urlparse

import orjson
import urllib3.exceptions
from clickhouse_connect.driver import binding
from clickhouse_connect.driver import exceptions as ch
from clickhouse_connect.driver.binding import format_bind_value
from clickhouse_connect.driver.external import ExternalData

from schemas.columns import rows_as_columns
from trailmark.storage.base import (
    IsolatedQuery,
    JsonColumns,
    QueryError,
    Row,
    StorageError,
    StorageUnavailable,
    setting_literal,
)

# ClickHouse error codes that say the server or cluster cannot serve now, not that the query is wrong.
UNAVAILABLE_CODES: dict[int, str] = {
    95: "CANNOT_READ_FROM_SOCKET",
    96: "CANNOT_WRITE_TO_SOCKET",
    159: "TIMEOUT_EXCEEDED",
    173: "CANNOT_ALLOCATE_MEMORY",
    192: "UNKNOWN_USER",
    193: "WRONG_PASSWORD",
    194: "REQUIRED_PASSWORD",
    201: "QUOTA_EXCEEDED",
    202: "TOO_MANY_SIMULTANEOUS_QUERIES",
    209: "SOCKET_TIMEOUT",
    210: "NETWORK_ERROR",
    225: "NO_ZOOKEEPER",
    236: "ABORTED",
    241: "MEMORY_LIMIT_EXCEEDED",
    242: "TABLE_IS_READ_ONLY",
    243: "NOT_ENOUGH_SPACE",
    244: "UNEXPECTED_ZOOKEEPER_ERROR",
    252: "TOO_MANY_PARTS",
    265: "NO_AVAILABLE_REPLICA",
    279: "ALL_CONNECTION_TRIES_FAILED",
    285: "TOO_FEW_LIVE_REPLICAS",
    289: "REPLICA_IS_NOT_IN_QUORUM",
    341: "UNFINISHED",
    369: "ALL_REPLICAS_ARE_STALE",
    394: "QUERY_WAS_CANCELLED",
    415: "ALL_REPLICAS_LOST",
    439: "CANNOT_SCHEDULE_TASK",
    516: "AUTHENTICATION_FAILED",
    571: "DATABASE_REPLICATION_FAILED",
    745: "SERVER_OVERLOADED",
    999: "KEEPER_EXCEPTION",
}
# HTTP statuses without a ClickHouse code that refuse the request itself (a server answers a URL past
# http_max_uri_size with 400 before reading it; proxies use 413, 414 and 431 for sizes): sending it
# again gets the same answer. Read from clickhouse-connect's message, which is where it puts the status.
REFUSED_REQUEST_STATUSES = frozenset({400, 413, 414, 431})
_HTTP_STATUS = re.compile(r"\bHTTP status (\d{3})\b")
# A code that is the query's own doing when the caller set the limit (or asked for the cancel).
_OWN_LIMIT = {159: "max_execution_time", 241: "max_memory_usage", 394: "query_id"}

# What each exception class clickhouse-connect (and urllib3, under it) raises means here;
# "by_code" = the server answered with an error: decided by its ClickHouse code. Looked up along
# the class's MRO; tests check that every clickhouse-connect exception class is listed.
Meaning = Literal["unavailable", "query", "by_code"]
EXCEPTION_MEANING: dict[type[BaseException], Meaning] = {
    ch.ClickHouseError: "query",
    ch.Warning: "query",
    ch.Error: "by_code",
    ch.DatabaseError: "by_code",
    ch.OperationalError: "unavailable",  # transport failures; 429/503/504 after retries
    ch.StreamFailureError: "unavailable",  # the answer broke off mid-stream
    ch.InterfaceError: "query",
    ch.DataError: "query",  # values that cannot be encoded
    ch.IntegrityError: "query",
    ch.InternalError: "query",
    ch.ProgrammingError: "query",  # bad parameters or settings, caught before sending
    ch.NotSupportedError: "query",
    ch.StreamClosedError: "query",
    ch.StreamCompleteException: "unavailable",  # internal end-of-stream marker: an answer cut short
    urllib3.exceptions.HTTPError: "unavailable",  # reading a body after the request returned
    OSError: "unavailable",
}

# The JSON output settings chDB runs with (ClickHouse's current defaults), stated for every query.
JSON_ROWS: dict[str, Any] = {
    "output_format_json_quote_64bit_integers": 0,
    "output_format_json_quote_64bit_floats": 0,
    "output_format_json_quote_denormals": 0,
    "output_format_json_quote_decimals": 0,
    "output_format_json_named_tuples_as_objects": 1,
    "date_time_output_format": "simple",
}
INSERT_SETTINGS: dict[str, Any] = {
    "date_time_input_format": "best_effort",
    "input_format_skip_unknown_fields": 1,
    "parallel_view_processing": 1,  # a table's views (events has five) fill theirs side by side
}
# A parameter whose text passes this goes as external data (well under the 128 KiB a form field may
# hold, so the query's other parameters and its text still fit beside it).
LARGE_PARAM_BYTES = 32 * 1024
EXTERNAL_PREFIX = "_trailmark_param_"
# What a command's parameters may take of its URL together (clickhouse-connect sends a query's as a
# form once they pass 4 KiB, a command's always in the URL): the rest go as external data
COMMAND_URL_BYTES = 4 * 1024


# clickhouse-connect's escaping of a string, as one str.translate: its own escape_str builds each
# string a character at a time, and a batch's duplicate check binds 20,000 message ids (16 % of a
# journey builder's CPU on a server, bench/RESULTS.md 2026-12-05)
_ESCAPES = str.maketrans({c: binding.BS + c for c in binding.must_escape})


def bind_text(value: Any, top_level: bool = True) -> str:
    """``format_bind_value(value, None)``'s text, with strings, lists and tuples formatted here
    (the same text, tests/storage/test_server_backend.py) and any other value by it."""
    if isinstance(value, str):
        text = value.translate(_ESCAPES)
        return text if top_level else f"'{text}'"
    if isinstance(value, list):
        return f"[{', '.join([bind_text(x, False) for x in value])}]"
    if isinstance(value, tuple):
        return f"({', '.join([bind_text(x, False) for x in value])})"
    return str(format_bind_value(value, None, top_level))


def bind_large(
    sql: str, params: Mapping[str, Any] | None, url_budget: int | None = None
) -> tuple[str, dict[str, Any] | None, ExternalData | None]:
    """The query with each large ``{name:Type}`` parameter read from an external table instead.

    The table holds one row, the parameter's text exactly as it would travel in a ``param_`` field
    (ClickHouse parses both in its escaped text format), so the value is the same; the placeholder
    becomes a scalar subquery on that table. A large value whose name appears in the query under
    two types, or not as a ``{name:Type}`` placeholder at all, is left to travel as a parameter.

    ``url_budget``: the parameters travel in the URL (clickhouse-connect's ``command`` puts them
    there however long), so those kept together stay under this many bytes as encoded there, the rest
    going as external data: a URL is refused past ``http_max_uri_size`` by a server, and far
    sooner by proxies (nginx's default is 8 KiB)."""
    if not params:
        return sql, None, None
    small: dict[str, Any] = {}
    external: ExternalData | None = None
    spent = 0  # of url_budget
    for name, value in params.items():
        plain = isinstance(value, str | bytes | int | float)
        if url_budget is None and plain and len(str(value)) < LARGE_PARAM_BYTES // 2:
            small[name] = value  # even fully escaped, short of the limit
            continue
        text = bind_text(value)
        # in the URL a parameter takes "&param_<name>=" (8 bytes and its name) and its text
        # percent-encoded (a quote or a bracket takes three bytes there)
        size = len(text.encode()) if url_budget is None else len(name) + 8 + len(quote_plus(text))
        placeholder = re.compile(r"\{\s*" + re.escape(name) + r"\s*:\s*([^{}]+?)\s*\}")
        types = {m.group(1) for m in placeholder.finditer(sql)}
        fits = size < LARGE_PARAM_BYTES if url_budget is None else spent + size < url_budget
        if fits or len(types) != 1:
            small[name] = value
            spent += size
            continue
        table = EXTERNAL_PREFIX + name
        sql = placeholder.sub(f"assumeNotNull((SELECT value FROM {table}))".replace("\\", "\\\\"), sql)
        external = external or ExternalData()
        external.add_file(
            file_name=table, data=text.encode() + b"\n", fmt="TabSeparated", structure=f"value {types.pop()}"
        )
    return sql, small or None, external


def translate(exc: BaseException, settings: Mapping[str, Any] | None = None) -> StorageError:
    """Our error for a clickhouse-connect (or transport) error; see the module docstring."""
    meaning: Meaning = next((EXCEPTION_MEANING[c] for c in type(exc).__mro__ if c in EXCEPTION_MEANING), "query")
    text = str(exc).strip() or type(exc).__name__
    if meaning == "by_code":
        code = getattr(exc, "code", None)
        if code is None:
            status = _HTTP_STATUS.search(text)
            meaning = "query" if status and int(status.group(1)) in REFUSED_REQUEST_STATUSES else "unavailable"
        elif code in UNAVAILABLE_CODES and _OWN_LIMIT.get(code) not in (settings or {}):
            meaning = "unavailable"
        else:
            meaning = "query"
    return StorageUnavailable(text) if meaning == "unavailable" else QueryError(text)


class ServerStorage:
    """Storage on a ClickHouse server: ``http(s)://user:password@host:port``."""

    json_columns = True  # a JSONColumns document is what insert_columns sends

    def __init__(
        self, url: str, database: str = "trailmark", connect_timeout_s: float = 10.0, query_timeout_s: float = 120.0
    ) -> None:
        import clickhouse_connect

        parts = urlparse(url)
        self.database = database
        try:
            self._client = clickhouse_connect.get_client(
                host=parts.hostname or "127.0.0.1",
                port=parts.port or (8443 if parts.scheme == "https" else 8123),
                username=parts.username or "default",
                password=parts.password or "",
                secure=parts.scheme == "https",
                autogenerate_session_id=False,
                connect_timeout=connect_timeout_s,
                send_receive_timeout=query_timeout_s,
            )
        except Exception as exc:
            raise translate(exc) from exc

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        try:
            sql, small, external = bind_large(sql, params, COMMAND_URL_BYTES)
            self._client.command(sql, parameters=small, external_data=external)
        except Exception as exc:
            raise translate(exc) from exc

    def query(
        self,
        sql: str,
        params: Mapping[str, Any] | None = None,
        *,
        readonly: bool = False,
        settings: Mapping[str, Any] | None = None,
        query_id: str | None = None,
    ) -> list[Row]:
        # settings travel as URL parameters and apply to this query only; a readonly among them makes
        # the server refuse any SETTINGS the query itself carries
        merged: dict[str, Any] = dict(JSON_ROWS)
        if readonly:
            merged["readonly"] = 2
        for name, value in (settings or {}).items():
            merged[name] = setting_literal(value) if isinstance(value, Mapping) else value
        if settings is not None:  # as on chDB: unqualified names are trailmark's
            merged["database"] = self.database
        if query_id is not None:  # a transport setting: the query_id URL parameter
            merged["query_id"] = query_id
        try:
            # default_format rather than a FORMAT clause appended to the text: EXPLAIN AST of a query
            # must show the query as given, as on chDB (which takes the format beside the text)
            sql, small, external = bind_large(sql, params)
            body = self._client.raw_query(
                sql,
                parameters=small,
                settings={**merged, "default_format": "JSONEachRow"},
                external_data=external,
            )
            return [orjson.loads(line) for line in body.splitlines() if line]
        except Exception as exc:
            raise translate(exc, merged) from exc

    @contextmanager
    def native_blocks(
        self, sql: str, params: Mapping[str, Any] | None = None, *, settings: Mapping[str, Any] | None = None
    ) -> Iterator[Iterator[bytes]]:
        """The answer's body as it arrives (HTTP chunks of up to 1 MiB, cut anywhere in its blocks);
        leaving early closes the response, and the server stops the query."""
        merged: dict[str, Any] = {"readonly": 2, "database": self.database}
        for name, value in (settings or {}).items():
            merged[name] = setting_literal(value) if isinstance(value, Mapping) else value
        try:
            sql, small, external = bind_large(sql, params)
            # the sync client's answer is urllib3's HTTPResponse (typed as IOBase | StreamContext)
            body: Any = self._client.raw_stream(
                sql, parameters=small, settings=merged, fmt="Native", external_data=external
            )
        except Exception as exc:
            raise translate(exc, merged) from exc

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.stream(1 << 20)
            except Exception as exc:
                raise translate(exc, merged) from exc

        try:
            yield chunks()
        finally:
            body.close()

    @contextmanager
    def isolated(self, settings: Mapping[str, Any]) -> Iterator[IsolatedQuery]:
        """Each query carries ``settings`` (URL parameters: nothing outlives it)."""

        def run(sql: str, params: Mapping[str, Any] | None = None, query_id: str | None = None) -> list[Row]:
            return self.query(sql, params, settings=settings, query_id=query_id)

        yield run

    def cancel(self, query_id: str) -> None:
        try:
            self._client.command("KILL QUERY WHERE query_id = {id:String} ASYNC", parameters={"id": query_id})
        except Exception as exc:
            raise translate(exc) from exc

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Rows, turned into columns (``rows_as_columns``) as on chDB: one orjson call for the batch
        instead of one per row (JSONEachRow took 13 % of a journey builder's CPU on a server,
        bench/RESULTS.md 2026-12-05)."""
        if rows:
            self.insert_columns(table, rows_as_columns(rows))

    def insert_columns(self, table: str, columns: Mapping[str, Sequence[Any]]) -> None:
        """One JSONColumns document: the columns as they are, without a dict per row."""
        if not columns or not next(iter(columns.values())):
            return
        # lists and tuples as they are (copying a batch's columns cost a third of the dumps)
        body = orjson.dumps({c: v if type(v) in (list, tuple) else list(v) for c, v in columns.items()})
        self.insert_json_columns(table, JsonColumns(list(columns), body))

    def insert_json_columns(self, table: str, document: JsonColumns) -> None:
        """The document as it is, in one INSERT."""
        try:
            self._client.raw_insert(
                f"{self.database}.{table}",
                column_names=document.names,
                insert_block=document.body,
                fmt="JSONColumns",
                settings=INSERT_SETTINGS,
            )
        except Exception as exc:
            raise translate(exc) from exc

    def close(self) -> None:
        self._client.close()
