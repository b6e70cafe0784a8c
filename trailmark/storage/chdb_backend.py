"""Embedded ClickHouse (chDB): the real engine in-process, one data path per process.

chDB allows one data path per process and one process per path, but many sessions on that path; so a
writer session and a small pool of read-only sessions share one path. Read-only sessions run
``SET readonly = 2``: ClickHouse itself then refuses writes and refuses turning readonly off.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from trailmark.storage.base import QueryError, Row, StorageUnavailable

_OPEN_PATH: list[str] = []


def encode_param(value: Any, nested: bool = False) -> str:
    """A query parameter in ClickHouse's text format (chDB passes params through ``str()``)."""
    if isinstance(value, str):
        if nested:
            return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "NULL" if nested else "\\N"
    if isinstance(value, list | set | frozenset):
        return "[" + ",".join(encode_param(v, True) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ",".join(encode_param(v, True) for v in value) + ")"
    return str(value)


def _rows(data: bytes) -> list[Row]:
    return [orjson.loads(line) for line in data.splitlines() if line]


class ChdbStorage:
    def __init__(self, path: Path, database: str = "trailmark", read_sessions: int = 2) -> None:
        from chdb import session

        path.mkdir(parents=True, exist_ok=True)
        resolved = str(path.resolve())
        if _OPEN_PATH and _OPEN_PATH[0] != resolved:
            raise StorageUnavailable(
                f"chDB is already open on {_OPEN_PATH[0]} in this process; one path per process"
            )
        self.database = database
        self.path = resolved
        try:
            self._writer = session.Session(resolved)  # type: ignore[no-untyped-call]
            self._readers: queue.SimpleQueue[Any] = queue.SimpleQueue()
            for _ in range(read_sessions):
                reader = session.Session(resolved)  # type: ignore[no-untyped-call]
                reader.query("SET readonly = 2")  # type: ignore[no-untyped-call]
                self._readers.put(reader)
        except Exception as exc:  # chdb raises RuntimeError/ChdbError for a locked path
            raise StorageUnavailable(f"cannot open chDB at {resolved}: {exc}") from exc
        _OPEN_PATH[:] = [resolved]
        self._write_lock = threading.Lock()

    @contextmanager
    def _reader(self) -> Iterator[Any]:
        reader = self._readers.get()
        try:
            yield reader
        finally:
            self._readers.put(reader)

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        with self._write_lock:
            self._run(self._writer, sql, params)

    def query(
        self, sql: str, params: Mapping[str, Any] | None = None, *, readonly: bool = False
    ) -> list[Row]:
        if readonly:
            with self._reader() as reader:
                return _rows(self._run(reader, sql, params, "JSONEachRow"))
        with self._write_lock:
            return _rows(self._run(self._writer, sql, params, "JSONEachRow"))

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        body = b"\n".join(orjson.dumps(r) for r in rows).decode("utf-8")
        sql = f"INSERT INTO {self.database}.{table} SETTINGS input_format_skip_unknown_fields = 1 " \
              f"FORMAT JSONEachRow\n{body}"
        with self._write_lock:
            self._run(self._writer, sql, None)

    @staticmethod
    def _run(sess: Any, sql: str, params: Mapping[str, Any] | None, fmt: str = "CSV") -> bytes:
        try:
            encoded = {k: encode_param(v) for k, v in params.items()} if params else None
            result = sess.query(sql, fmt, params=encoded)
        except Exception as exc:
            raise QueryError(str(exc).strip()) from exc
        data: bytes = result.bytes() if result is not None else b""
        return data

    def close(self) -> None:
        # chDB keeps the embedded server for the life of the process; sessions close with it.
        pass
