"""A ClickHouse server or cluster through clickhouse-connect, behind the same Storage interface."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlparse

import orjson

from trailmark.storage.base import QueryError, Row, StorageUnavailable, setting_literal


class ServerStorage:
    def __init__(self, url: str, database: str = "trailmark") -> None:
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import OperationalError

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
            )
        except OperationalError as exc:
            raise StorageUnavailable(f"cannot reach ClickHouse at {parts.hostname}: {exc}") from exc

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        try:
            self._client.command(sql, parameters=dict(params) if params else None)
        except Exception as exc:
            raise QueryError(str(exc)) from exc

    def query(
        self, sql: str, params: Mapping[str, Any] | None = None, *, readonly: bool = False,
        settings: Mapping[str, Any] | None = None, query_id: str | None = None,
    ) -> list[Row]:
        # settings travel as URL parameters and apply to this query only; a readonly among them makes
        # the server refuse any SETTINGS the query itself carries
        merged: dict[str, Any] = {"readonly": 2} if readonly else {}
        for name, value in (settings or {}).items():
            merged[name] = setting_literal(value) if isinstance(value, Mapping) else value
        try:
            result = self._client.query(sql, parameters=dict(params) if params else None,
                                        settings=merged or None, query_id=query_id)
        except Exception as exc:
            raise QueryError(str(exc)) from exc
        return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    def cancel(self, query_id: str) -> None:
        try:
            self._client.command("KILL QUERY WHERE query_id = {id:String} ASYNC", parameters={"id": query_id})
        except Exception as exc:
            raise QueryError(str(exc)) from exc

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """JSONEachRow, like the embedded backend's values: RFC 3339 strings for times, lists for arrays."""
        if not rows:
            return
        body = b"\n".join(orjson.dumps(r) for r in rows)
        try:
            self._client.raw_insert(
                f"{self.database}.{table}", column_names=list(rows[0].keys()), insert_block=body,
                fmt="JSONEachRow",
                settings={"date_time_input_format": "best_effort", "input_format_skip_unknown_fields": 1},
            )
        except Exception as exc:
            raise QueryError(str(exc)) from exc

    def close(self) -> None:
        self._client.close()
