"""A test-only ClickHouse HTTP endpoint backed by chDB (the ClickHouse engine, in-process).

No ClickHouse server package is available on this machine, so the server backend's tests talk to
this process instead: the real engine behind ClickHouse's HTTP interface, as clickhouse-connect
uses it. Run it as its own process (chDB allows one data path per process)::

    python -m tests.chserver.server --port 8123 --path /tmp/ch

What it speaks (ClickHouse's HTTP interface, https://clickhouse.com/docs/interfaces/http):

- ``GET|POST /`` with the query in the ``query`` URL parameter, in the body, or both (the body is
  then appended after a newline: the data of an ``INSERT ... FORMAT X``); a multipart/form-data body
  whose ``query`` and ``param_*`` fields carry the query (clickhouse-connect switches to it for long
  parameters). ``GET`` queries run with ``readonly=2``, as on a server. ``GET /`` without a query and
  ``GET|HEAD /ping`` answer ``Ok.``.
- URL parameters: ``database``, ``default_format`` (else TabSeparated), ``query_id`` (echoed, else
  generated), ``param_<name>`` (server-side query parameters), ``wait_end_of_query`` (answers are
  always buffered), ``enable_http_compression`` with ``Accept-Encoding`` (gzip, deflate, zstd, lz4),
  ``Content-Encoding`` of the request body (same list), ``user``/``password``/``quota_key``/``role``
  (accepted, ignored); every other parameter is a ClickHouse setting for this query (unknown settings
  fail with UNKNOWN_SETTING as on a server).
- External data: multipart file parts, each a temporary table named after its part, with
  ``<name>_structure`` or ``<name>_types`` and ``<name>_format`` (TabSeparated by default) URL
  parameters, as a server takes them; they are created on the query's pooled connection before it
  runs and dropped after it (a readonly query, which cannot create them, gets a connection of its
  own, closed afterwards).
- The server's default HTTP limits, so a client that oversteps them fails here as on a server: the
  URL at most ``http_max_uri_size`` (1 MiB; longer is answered 400 without a ClickHouse code, as the
  request is refused before it is parsed), each form field at most ``http_max_field_value_size``
  (128 KiB; the server takes one byte past it) and ``http_max_fields`` (1,000) of them (refused as
  ClickHouse's HTML form reader does, POCO_EXCEPTION).
- Formats: whatever the engine supports, chosen by the query's ``FORMAT`` clause or
  ``default_format``; clickhouse-connect's Native and RowBinaryWithNamesAndTypes answers and its
  Native / JSONEachRow / raw inserts (``INSERT ... FORMAT X`` followed by the data).
- Response headers clickhouse-connect reads: ``X-ClickHouse-Query-Id``, ``X-ClickHouse-Format``
  (only for statements that return a result), ``X-ClickHouse-Timezone``,
  ``X-ClickHouse-Server-Display-Name``, ``X-ClickHouse-Summary`` (rows and bytes read/written,
  elapsed_ns) and ``Content-Encoding`` when compressed.
- ``query_id``: the engine picks its own ids, so the client's travels in a comment before the query,
  and ``KILL QUERY WHERE query_id = ...`` (clickhouse-connect's cancel) is rewritten to find it there.
- Errors as a server reports them: the ``Code: N. DB::Exception: ... (NAME) (version V)`` text,
  the ``X-ClickHouse-Exception-Code`` header and the HTTP status of ClickHouse's
  exceptionCodeToHTTPStatus (400 for syntax and parse errors, 404 for unknown tables, databases,
  settings..., 501 not implemented, 500 otherwise).

What it does not cover: authentication, users, quotas, roles and grants (any credentials are
accepted); TLS; clusters, replication, Keeper, ``ON CLUSTER`` and Distributed tables over several
nodes; server-side sessions (``session_id`` is refused with NOT_IMPLEMENTED, so a client that needs
them fails loudly rather than silently losing its session state); ClickHouse's own block compression
(``compress=1`` / ``decompress=1``: refused); progress headers and streaming (``X-ClickHouse-Progress``
is never sent, answers are buffered, so an error never arrives in the middle of a body and
``X-ClickHouse-Exception-Tag`` is not used);
``client_protocol_version`` (Native answers use protocol 0: clickhouse-connect's probe sees that
and falls back); query cancellation when the client disconnects; multi-statement refusal (the
engine runs ``SELECT 1; SELECT 2``, a server refuses it); ``SET``/``USE`` inside a query affect that
query only (as on a server without a session); the predefined and custom HTTP handlers (/play,
/dashboard, /replicas_status, http_handlers config).
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import gzip
import os
import re
import tempfile
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import chdb
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

DISPLAY_NAME = "chdb-test-endpoint"

# URL parameters that belong to the HTTP interface rather than to the query's settings.
HTTP_PARAMS = {
    "query",
    "database",
    "default_format",
    "query_id",
    "wait_end_of_query",
    "user",
    "password",
    "quota_key",
    "role",
    "buffer_size",
    "client_protocol_version",
    "session_timeout",
    "session_check",
    "stacktrace",
}
REFUSED_PARAMS = {
    "session_id": "server-side sessions",
    "compress": "ClickHouse block compression of answers",
    "decompress": "ClickHouse block compression of request bodies",
}

# ClickHouse's exceptionCodeToHTTPStatus (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp), by error name.
STATUS_BY_NAME: dict[str, int] = {
    "REQUIRED_PASSWORD": 401,
    **dict.fromkeys(
        ["UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED", "SET_NON_GRANTED_ROLE", "ACCESS_DENIED"], 403
    ),
    **dict.fromkeys(
        [
            "BAD_ARGUMENTS",
            "CANNOT_COMPILE_REGEXP",
            "CANNOT_PARSE_TEXT",
            "CANNOT_PARSE_ESCAPE_SEQUENCE",
            "CANNOT_PARSE_QUOTED_STRING",
            "CANNOT_PARSE_DATE",
            "CANNOT_PARSE_DATETIME",
            "CANNOT_PARSE_NUMBER",
            "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING",
            "CANNOT_PARSE_IPV4",
            "CANNOT_PARSE_IPV6",
            "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
            "CANNOT_PARSE_UUID",
            "DUPLICATE_COLUMN",
            "ILLEGAL_COLUMN",
            "UNKNOWN_ELEMENT_IN_AST",
            "UNKNOWN_TYPE_OF_AST_NODE",
            "THERE_IS_NO_COLUMN",
            "TOO_DEEP_AST",
            "TOO_BIG_AST",
            "UNEXPECTED_AST_STRUCTURE",
            "SYNTAX_ERROR",
            "INCORRECT_DATA",
            "TYPE_MISMATCH",
            "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
        ],
        400,
    ),
    **dict.fromkeys(
        [
            "UNKNOWN_TABLE",
            "UNKNOWN_FUNCTION",
            "UNKNOWN_IDENTIFIER",
            "UNKNOWN_TYPE",
            "UNKNOWN_STORAGE",
            "UNKNOWN_DATABASE",
            "UNKNOWN_SETTING",
            "UNKNOWN_DIRECTION_OF_SORTING",
            "UNKNOWN_AGGREGATE_FUNCTION",
            "UNKNOWN_FORMAT",
            "UNKNOWN_DATABASE_ENGINE",
            "UNKNOWN_TYPE_OF_QUERY",
            "UNKNOWN_ROLE",
        ],
        404,
    ),
    "QUERY_IS_TOO_LARGE": 413,
    "NOT_IMPLEMENTED": 501,
    **dict.fromkeys(["SOCKET_TIMEOUT", "CANNOT_OPEN_FILE", "CANNOT_SCHEDULE_TASK"], 503),
    "HTTP_LENGTH_REQUIRED": 411,
    "TIMEOUT_EXCEEDED": 408,
    "UNSUPPORTED_MEDIA_TYPE": 415,
}
NOT_IMPLEMENTED, UNKNOWN_FORMAT, POCO_EXCEPTION, STD_EXCEPTION = 48, 73, 1000, 1001
# The server's defaults (Settings.cpp): http_max_uri_size, http_max_field_value_size, http_max_fields.
HTTP_MAX_URI_SIZE, HTTP_MAX_FIELD_VALUE_SIZE, HTTP_MAX_FIELDS = 1024 * 1024, 128 * 1024, 1000

CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "JSON": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
}
BINARY = "application/octet-stream"

# Statements that produce a result set (X-ClickHouse-Format is set for them, as on a server).
RESULT_STATEMENTS = {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN", "CHECK", "KILL"}
_LEADING = re.compile(rb"^(?:\s+|--[^\n]*\n|/\*.*?\*/|\()*([A-Za-z]+)", re.S)
_FORMAT_AT_END = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.I)
_INSERT_FORMAT = re.compile(rb"\bFORMAT[ \t\r\n]+([A-Za-z0-9_]+)", re.I)
_SETTINGS_CLAUSE = re.compile(rb"\bSETTINGS\b", re.I)
_KILL_BY_ID = re.compile(
    r"^\s*KILL\s+QUERY\s+WHERE\s+query_id\s*=\s*(?:\{(\w+):String\}|'((?:[^'\\]|\\.)*)')"
    r"(\s+(?:ASYNC|SYNC|TEST))?\s*;?\s*$",
    re.I,
)
QUERY_TAG = "chserver-query-id:"
_ERROR = re.compile(r"Code: (\d+)\. DB::Exception: .*?(?: \(([A-Z0-9_]+)\))?\s*$", re.S)


class ClickHouseException(Exception):
    """An error to answer as ClickHouse would: code, name and message."""

    def __init__(self, code: int, name: str, message: str) -> None:
        super().__init__(message)
        self.code, self.name = code, name

    @classmethod
    def from_engine(cls, exc: BaseException) -> ClickHouseException:
        text = str(exc).strip()
        m = _ERROR.match(text)
        if m:
            return cls(int(m.group(1)), m.group(2) or "", text)
        return cls(STD_EXCEPTION, "STD_EXCEPTION", f"Code: {STD_EXCEPTION}. DB::Exception: {text}. (STD_EXCEPTION)")

    @classmethod
    def new(cls, code: int, name: str, message: str) -> ClickHouseException:
        return cls(code, name, f"Code: {code}. DB::Exception: {message}. ({name})")


@dataclass
class Query:
    """One query as the HTTP interface received it."""

    sql: bytes
    database: str
    settings: dict[str, str]
    params: dict[str, str]
    query_id: str
    default_format: str
    accept_encoding: str = ""
    compress_answer: bool = False
    external: list[External] = field(default_factory=list)


@dataclass
class External:
    """One external-data table: its name, column declarations, input format and data."""

    name: str
    columns: str
    fmt: str
    data: bytes

    @classmethod
    def of(cls, name: str, data: bytes, url: Mapping[str, str]) -> External:
        if structure := url.get(f"{name}_structure"):
            columns = structure
        elif types := url.get(f"{name}_types"):
            columns = ", ".join(f"_{i} {t}" for i, t in enumerate(top_level_split(types), 1))
        else:
            raise ClickHouseException.new(
                36, "BAD_ARGUMENTS", f"Neither structure nor types have not been provided for external table {name}"
            )
        return cls(name, columns, url.get(f"{name}_format") or "TabSeparated", data)


def top_level_split(types: str) -> list[str]:
    """``String,Tuple(UInt8, String)`` -> the two types (commas inside brackets stay)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(types):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(types[start:i].strip())
            start = i + 1
    parts.append(types[start:].strip())
    return [p for p in parts if p]


class Engine:
    """chDB connections on one path, pooled by (database, settings): a connection keeps the
    settings it was opened with (``SET`` on open), so a request reuses one that matches exactly."""

    def __init__(self, path: str, max_idle: int = 32) -> None:
        self.path = path
        self._base = chdb.connect(path)  # type: ignore[no-untyped-call]  # the engine lives as long as one connection is open
        self.version = self._scalar("SELECT version()")
        self.timezone = self._scalar("SELECT timezone()")
        self._idle: OrderedDict[tuple[Any, ...], list[Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._max_idle = max_idle

    def _scalar(self, sql: str) -> str:
        return bytes(self._base.query(sql, "TabSeparated").bytes()).decode().strip()

    def _open(self, database: str, settings: Mapping[str, str], external: list[External] | None = None) -> Any:
        conn = chdb.connect(self.path)  # type: ignore[no-untyped-call]
        try:
            if database:
                conn.query(f"USE {quote_identifier(database)}")
            self._load(conn, external or [])  # before readonly is set
            # readonly last: with readonly=1 no other setting could be changed after it
            for name, value in sorted(settings.items(), key=lambda kv: kv[0] == "readonly"):
                conn.query(f"SET {quote_identifier(name)} = {quote_string(value)}")
        except Exception:
            conn.close()
            raise
        return conn

    @staticmethod
    def _load(conn: Any, external: list[External]) -> None:
        """External data as temporary tables of this connection (chDB keeps them per connection)."""
        for t in external:
            table = quote_identifier(t.name)
            conn.query(f"CREATE TEMPORARY TABLE {table} ({t.columns}) ENGINE = Memory")
            fd, name = tempfile.mkstemp(prefix="chserver-external-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(t.data)
                conn.query(f"INSERT INTO {table} FROM INFILE {quote_string(name)} FORMAT {t.fmt}")
            finally:
                os.unlink(name)

    @contextmanager
    def connection(
        self, database: str, settings: Mapping[str, str], reusable: bool, external: list[External] | None = None
    ) -> Iterator[Any]:
        key = (database, tuple(sorted(settings.items())))
        conn = None
        # a readonly connection cannot create tables: one of its own, holding them, never reused;
        # any other is taken from the pool, given the tables, and returned without them
        pooled = not (external and settings.get("readonly", "0") != "0")
        if pooled:
            with self._lock:
                idle = self._idle.get(key)
                conn = idle.pop() if idle else None
        try:
            if conn is None:
                conn = self._open(database, settings, external)
            elif external:
                self._load(conn, external)
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        try:
            yield conn
            for t in external or ():
                conn.query(f"DROP TEMPORARY TABLE IF EXISTS {quote_identifier(t.name)}")
        except BaseException:
            reusable = False
            raise
        finally:
            if reusable and pooled:
                self._release(key, conn)
            else:
                conn.close()

    def _release(self, key: tuple[Any, ...], conn: Any) -> None:
        evicted = []
        with self._lock:
            self._idle.setdefault(key, []).append(conn)
            self._idle.move_to_end(key)
            while sum(len(v) for v in self._idle.values()) > self._max_idle:
                _, conns = next(iter(self._idle.items()))
                evicted.append(conns.pop(0))
                if not conns:
                    self._idle.popitem(last=False)
        for c in evicted:
            c.close()


def quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def leading_keyword(sql: bytes) -> str:
    m = _LEADING.match(sql)
    return m.group(1).decode().upper() if m else ""


def decode_body(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if not body or encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "zstd":
        from backports import zstd

        return zstd.decompress(body)
    if encoding == "lz4":
        import lz4.frame

        return bytes(lz4.frame.decompress(body))
    raise ClickHouseException.new(NOT_IMPLEMENTED, "NOT_IMPLEMENTED", f"Unknown Content-Encoding {encoding!r}")


def encode_answer(data: bytes, accept: str) -> tuple[bytes, str]:
    """ClickHouse's preference order among what the client accepts."""
    offered = {e.split(";")[0].strip().lower() for e in accept.split(",")}
    if "gzip" in offered:
        return gzip.compress(data, 1), "gzip"
    if "deflate" in offered:
        return zlib.compress(data, 1), "deflate"
    if "zstd" in offered:
        from backports import zstd

        return zstd.compress(data), "zstd"
    if "lz4" in offered:
        import lz4.frame

        return bytes(lz4.frame.compress(data)), "lz4"
    return data, ""


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, bytes]]:
    """Text fields (query and param_*) and file parts (external data) of a multipart/form-data body,
    within the server's limits on fields."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise ClickHouseException.new(POCO_EXCEPTION, "POCO_EXCEPTION", "HTML Form Exception: Invalid form field")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else str(payload).encode()
        if part.get_filename() is not None:
            files[name] = data
            continue
        if len(data) > HTTP_MAX_FIELD_VALUE_SIZE + 1:
            raise ClickHouseException.new(POCO_EXCEPTION, "POCO_EXCEPTION", "HTML Form Exception: Field value too long")
        fields[name] = data.decode()
        if len(fields) > HTTP_MAX_FIELDS:
            raise ClickHouseException.new(POCO_EXCEPTION, "POCO_EXCEPTION", "HTML Form Exception: Too many form fields")
    return fields, files


class Endpoint:
    def __init__(self, path: str) -> None:
        self.engine = Engine(path)
        self.tmp = tempfile.mkdtemp(prefix="chserver-insert-")

    def headers(self, query_id: str) -> dict[str, str]:
        return {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Server-Display-Name": DISPLAY_NAME,
            "X-ClickHouse-Timezone": self.engine.timezone,
        }

    async def handle(self, request: Request) -> Response:
        query_id = request.query_params.get("query_id") or str(uuid.uuid4())
        if len(request.url.path) + len(request.url.query) + 1 > HTTP_MAX_URI_SIZE:
            return Response(b"Too long URI\n", status_code=400, media_type="text/plain; charset=UTF-8")
        try:
            req = await self.parse(request, query_id)
            if req is None:
                return Response(b"Ok.\n", headers=self.headers(query_id))
            return await run_in_threadpool(self.run, req)
        except ClickHouseException as exc:
            return self.error(exc, query_id)

    async def ping(self, request: Request) -> Response:
        return Response(b"Ok.\n")

    def error(self, exc: ClickHouseException, query_id: str) -> Response:
        body = f"{exc} (version {self.engine.version})\n".encode()
        headers = {**self.headers(query_id), "X-ClickHouse-Exception-Code": str(exc.code)}
        return Response(
            body, status_code=STATUS_BY_NAME.get(exc.name, 500), headers=headers, media_type="text/plain; charset=UTF-8"
        )

    async def parse(self, request: Request, query_id: str) -> Query | None:
        url = dict(parse_qsl(request.url.query, keep_blank_values=True))
        body = decode_body(await request.body(), request.headers.get("content-encoding", ""))
        content_type = request.headers.get("content-type", "")
        files: dict[str, bytes] = {}
        if content_type.startswith("multipart/form-data"):
            fields, files = parse_multipart(content_type, body)
            url.update(fields)
            body = b""
        external = [External.of(name, data, url) for name, data in files.items()]
        for t in external:
            for suffix in ("_structure", "_types", "_format"):
                url.pop(t.name + suffix, None)
        for name, what in REFUSED_PARAMS.items():
            if url.get(name, "") not in ("", "0"):
                raise ClickHouseException.new(
                    NOT_IMPLEMENTED, "NOT_IMPLEMENTED", f"{what} ({name}) are not supported by the chDB test endpoint"
                )
        query = url.get("query", "").encode()
        sql = query + b"\n" + body if query and body else query or body
        if not sql.strip():
            if request.method == "GET":
                return None
            raise ClickHouseException.new(62, "SYNTAX_ERROR", "Empty query")
        params = {k[6:]: v for k, v in url.items() if k.startswith("param_")}
        settings = {
            k: v
            for k, v in url.items()
            if k not in HTTP_PARAMS and k not in REFUSED_PARAMS and not k.startswith("param_")
        }
        if request.method == "GET" and settings.get("readonly", "0") == "0":
            settings["readonly"] = "2"
        return Query(
            sql=sql,
            database=url.get("database", ""),
            settings=settings,
            params=params,
            query_id=query_id,
            default_format=url.get("default_format") or "TabSeparated",
            accept_encoding=request.headers.get("accept-encoding", ""),
            compress_answer=settings.get("enable_http_compression", "0") not in ("0", "false"),
            external=external,
        )

    def run(self, req: Query) -> Response:
        keyword = leading_keyword(req.sql)
        started = time.perf_counter_ns()
        insert_file = None
        fmt = ""
        if keyword == "INSERT" and (m := _INSERT_FORMAT.search(req.sql)):
            sql, insert_file, fmt = self.stage_insert(req.sql, m)
        else:
            sql = req.sql.decode()
            if keyword in RESULT_STATEMENTS:
                found = _FORMAT_AT_END.search(sql)
                fmt = found.group(1) if found else req.default_format
            if keyword == "KILL":
                sql = self.kill_by_tag(sql, req.params)
        # the engine picks its own query ids: the client's travels in a comment, where KILL finds it
        sql = f"/* {QUERY_TAG}{req.query_id} */ {sql}"
        try:
            # a SET or USE in the query changes its connection: that one is not reused
            reusable = keyword not in ("SET", "USE")
            with self.engine.connection(req.database, req.settings, reusable, req.external) as conn:
                result = conn.query(sql, fmt if keyword in RESULT_STATEMENTS else "TabSeparated", params=req.params)
        except ClickHouseException:
            raise
        except Exception as exc:
            raise ClickHouseException.from_engine(exc) from exc
        finally:
            if insert_file:
                os.unlink(insert_file)
        data = bytes(result.bytes()) if result is not None else b""
        summary = self.summary(result, data, time.perf_counter_ns() - started)
        headers = {**self.headers(req.query_id), "X-ClickHouse-Summary": summary}
        media_type = "text/plain; charset=UTF-8"
        if keyword in RESULT_STATEMENTS:
            headers["X-ClickHouse-Format"] = fmt
            media_type = CONTENT_TYPES.get(
                fmt, BINARY if "Binary" in fmt or fmt in ("Native", "Parquet", "Arrow") else "text/plain; charset=UTF-8"
            )
        if req.compress_answer and data:
            data, encoding = encode_answer(data, req.accept_encoding)
            if encoding:
                headers["Content-Encoding"] = encoding
        return Response(data, headers=headers, media_type=media_type)

    @staticmethod
    def kill_by_tag(sql: str, params: dict[str, str]) -> str:
        """``KILL QUERY WHERE query_id = <id>`` (clickhouse-connect's cancel) finds the query by the
        comment that carries the client's id; other KILL statements run as given."""
        m = _KILL_BY_ID.match(sql)
        if not m:
            return sql
        query_id = params.get(m.group(1), "") if m.group(1) else m.group(2).replace("\\'", "'")
        params["__chserver_tag"] = f"{QUERY_TAG}{query_id} "
        # the pattern is built from a parameter, so this KILL's own text never matches it
        return f"KILL QUERY WHERE query LIKE concat('%', {{__chserver_tag:String}}, '%'){m.group(3) or ''}"

    def stage_insert(self, sql: bytes, m: re.Match[bytes]) -> tuple[str, str, str]:
        """``INSERT ... FORMAT X <data>`` becomes ``INSERT ... FROM INFILE '<data in a file>' FORMAT X``:
        the engine takes insert data from a file, not from bytes appended to the query text. The data
        starts after the first newline following the format name, or after the whitespace (as on a
        server)."""
        head, rest = sql[: m.start()], sql[m.end() :]
        stripped = rest.lstrip(b" \t\r")
        data = stripped[1:] if stripped.startswith(b"\n") else rest.lstrip()
        fd, name = tempfile.mkstemp(dir=self.tmp)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        settings_at = _SETTINGS_CLAUSE.search(head)
        cut = settings_at.start() if settings_at else len(head)
        fmt = m.group(1).decode()
        text = head[:cut].decode() + f" FROM INFILE {quote_string(name)} " + head[cut:].decode() + f" FORMAT {fmt}"
        return text, name, fmt

    @staticmethod
    def summary(result: Any, data: bytes, elapsed_ns: int) -> str:
        if result is None:
            values = dict.fromkeys(("read_rows", "read_bytes", "written_rows", "written_bytes"), 0)
        else:
            values = {
                "read_rows": result.rows_read(),
                "read_bytes": result.bytes_read(),
                "written_rows": result.rows_written(),
                "written_bytes": result.bytes_written(),
            }
        values |= {
            "total_rows_to_read": 0,
            "result_rows": values["read_rows"],
            "result_bytes": len(data),
            "elapsed_ns": elapsed_ns,
        }
        return "{" + ",".join(f'"{k}":"{v}"' for k, v in values.items()) + "}"


def create_app(path: str) -> Starlette:
    endpoint = Endpoint(path)
    return Starlette(
        routes=[
            Route("/", endpoint.handle, methods=["GET", "POST"]),
            Route("/ping", endpoint.ping, methods=["GET", "HEAD"]),
        ]
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="ClickHouse HTTP interface over chDB, for tests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--path", required=True, help="chDB data path (one per process)")
    args = parser.parse_args()
    # h11 holds a request line up to the server's http_max_uri_size (the handler answers a longer URL
    # as a server does); httptools refuses one past 64 KiB with a parse error of its own
    uvicorn.run(
        create_app(args.path),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        http="h11",
        h11_max_incomplete_event_size=HTTP_MAX_URI_SIZE + 64 * 1024,
    )


if __name__ == "__main__":
    main()
