"""The chDB-backed endpoint speaks ClickHouse's HTTP interface as clickhouse-connect and plain HTTP
clients use it: queries, inserts, parameters, formats, headers, compression, errors, restarts."""

from __future__ import annotations

import gzip
import http.client
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import clickhouse_connect
import httpx
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from tests.chserver import ClickHouseEndpoint, clickhouse_endpoint  # noqa: F401


@pytest.fixture
def client(clickhouse_endpoint: ClickHouseEndpoint) -> Iterator[Any]:  # noqa: F811
    c = clickhouse_connect.get_client(host="127.0.0.1", port=clickhouse_endpoint.port, autogenerate_session_id=False)
    yield c
    c.close()


@pytest.fixture
def table(client: Any) -> Iterator[str]:
    db = f"ep_{uuid.uuid4().hex[:10]}"
    client.command(f"CREATE DATABASE {db}")
    client.command(
        f"CREATE TABLE {db}.t (a UInt32, s String, ts DateTime64(3, 'UTC'), arr Array(String)) "
        "ENGINE = MergeTree ORDER BY a"
    )
    yield f"{db}.t"
    client.command(f"DROP DATABASE {db}")


def test_clickhouse_connect_connects_and_reads_server_info(client: Any) -> None:
    assert client.server_version and client.server_version[0].isdigit()
    assert str(client.server_tz) == "UTC"
    assert "date_time_input_format" in client.server_settings


def test_native_and_json_inserts_and_typed_reads(client: Any, table: str) -> None:
    client.insert(table, [[1, "x", datetime(2026, 1, 1, 12, tzinfo=UTC), ["p"]]], column_names=["a", "s", "ts", "arr"])
    client.raw_insert(
        table,
        ["a", "s", "ts", "arr"],
        fmt="JSONEachRow",
        insert_block=b'{"a":2,"s":"y","ts":"2026-01-01T00:00:00.5Z","arr":["q","r"]}\n',
    )
    result = client.query(f"SELECT a, s, ts, arr FROM {table} ORDER BY a")
    assert result.result_rows == [
        (1, "x", datetime(2026, 1, 1, 12), ["p"]),
        (2, "y", datetime(2026, 1, 1, 0, 0, 0, 500000), ["q", "r"]),
    ]
    assert result.summary["read_rows"] == "2" and result.summary["query_id"]
    rows = client.raw_query(f"SELECT a FROM {table} WHERE s = {{s:String}} FORMAT JSONEachRow", parameters={"s": "y"})
    assert rows == b'{"a":2}\n'
    many = ["x"] + [f"n{i}" for i in range(3000)]  # long parameters travel as multipart/form-data
    assert client.command(f"SELECT count() FROM {table} WHERE s IN {{l:Array(String)}}", parameters={"l": many}) == 1


def test_errors_carry_code_header_text_and_status(clickhouse_endpoint: ClickHouseEndpoint, client: Any) -> None:  # noqa: F811
    for sql, code, status in [
        ("SELEC 1", 62, 400),
        ("SELECT * FROM system.nope", 60, 404),
        ("SELECT * FROM nodb.t", 81, 404),
        ("SELECT throwIf(1)", 395, 500),
    ]:
        r = httpx.post(clickhouse_endpoint.url, content=sql)
        assert r.status_code == status, r.text
        assert r.headers["x-clickhouse-exception-code"] == str(code)
        assert r.text.startswith(f"Code: {code}. DB::Exception: ") and "(version " in r.text
        with pytest.raises(DatabaseError) as info:
            client.query(sql)
        assert info.value.code == code
    unknown = httpx.post(clickhouse_endpoint.url, params={"no_such_setting": "1"}, content="SELECT 1")
    assert unknown.status_code == 404 and unknown.headers["x-clickhouse-exception-code"] == "115"


def test_readonly_settings_and_get_are_enforced(
    clickhouse_endpoint: ClickHouseEndpoint,  # noqa: F811
    client: Any,  # noqa: F811
    table: str,
) -> None:
    with pytest.raises(DatabaseError, match="READONLY"):
        client.command(f"INSERT INTO {table} (a) VALUES (1)", settings={"readonly": 2})
    r = httpx.get(clickhouse_endpoint.url, params={"query": f"INSERT INTO {table} (a) VALUES (1)"})
    assert r.headers["x-clickhouse-exception-code"] == "164"
    assert client.command("SELECT getSetting('max_threads')", settings={"max_threads": 1}) == 1
    assert client.command(f"SELECT count() FROM {table}") == 0


def test_headers_formats_and_compression(clickhouse_endpoint: ClickHouseEndpoint) -> None:  # noqa: F811
    url = clickhouse_endpoint.url
    r = httpx.post(
        url,
        params={"query_id": "q-1", "default_format": "JSONEachRow", "param_n": "3", "enable_http_compression": "1"},
        content="SELECT number FROM numbers({n:UInt8})",
        headers={"accept-encoding": "gzip"},
    )
    assert r.status_code == 200
    assert r.headers["x-clickhouse-query-id"] == "q-1" and r.headers["x-clickhouse-format"] == "JSONEachRow"
    assert r.headers["content-encoding"] == "gzip" and r.headers["x-clickhouse-timezone"] in ("UTC", "Etc/UTC")
    assert r.headers["x-clickhouse-server-display-name"]
    assert [json.loads(line)["number"] for line in r.text.splitlines()] == [0, 1, 2]
    assert json.loads(r.headers["x-clickhouse-summary"])["result_rows"] == "3"
    body = gzip.compress(b"SELECT 1 FORMAT CSV")
    r = httpx.post(url, content=body, headers={"content-encoding": "gzip"})
    assert r.text == "1\n" and r.headers["x-clickhouse-format"] == "CSV"
    ddl = httpx.post(url, content="CREATE TEMPORARY TABLE x (a UInt8) ENGINE = Memory")
    assert ddl.status_code == 200 and "x-clickhouse-format" not in ddl.headers
    assert httpx.get(url + "/ping").text == "Ok.\n" and httpx.get(url).text == "Ok.\n"


def test_server_side_sessions_are_refused(clickhouse_endpoint: ClickHouseEndpoint) -> None:  # noqa: F811
    r = httpx.post(clickhouse_endpoint.url, params={"session_id": "s1"}, content="SELECT 1")
    assert r.status_code == 501 and r.headers["x-clickhouse-exception-code"] == "48"
    c = clickhouse_connect.get_client(host="127.0.0.1", port=clickhouse_endpoint.port, session_id="s1")
    with pytest.raises(DatabaseError, match="session"):
        c.command("SELECT 1")


def test_set_in_a_query_does_not_leak_into_the_next(client: Any) -> None:
    client.command("SET max_threads = 1")
    assert client.command("SELECT getSetting('max_threads')") != 1


def test_stop_and_start_on_the_same_port_keeps_the_data(tmp_path: Path) -> None:
    endpoint = ClickHouseEndpoint(tmp_path / "data").start()
    try:
        c = clickhouse_connect.get_client(host="127.0.0.1", port=endpoint.port, autogenerate_session_id=False)
        c.command("CREATE TABLE default.kept (a UInt8) ENGINE = MergeTree ORDER BY a")
        c.command("INSERT INTO default.kept VALUES (7)")
        endpoint.stop()
        with pytest.raises(OperationalError):
            c.command("SELECT 1")
        endpoint.start()
        assert c.command("SELECT a FROM default.kept") == 7  # same client, same port
    finally:
        endpoint.stop()


def test_external_data_is_a_temporary_table_of_its_query(client: Any) -> None:
    """External data as clickhouse-connect sends it (file parts, ``<name>_structure`` / ``_types`` /
    ``_format``): a temporary table seen by that query only, readonly or not."""
    from clickhouse_connect.driver.external import ExternalData

    ext = ExternalData(file_name="pairs", data=b"1\ta\n2\tb\\tc\n", structure="n UInt8, s String")
    ext.add_file(file_name="blob", data=b'{"k": [1, 2]}', fmt="RawBLOB", types="String")
    sql = "SELECT n, s, (SELECT _1 FROM blob) AS b FROM pairs ORDER BY n FORMAT JSONEachRow"
    rows = client.raw_query(sql, external_data=ext, settings={"readonly": 2})
    assert [json.loads(line) for line in rows.splitlines()] == [
        {"n": 1, "s": "a", "b": '{"k": [1, 2]}'},
        {"n": 2, "s": "b\tc", "b": '{"k": [1, 2]}'},
    ]
    for _ in range(3):  # the same without readonly: on pooled connections, which drop them afterwards
        again = client.raw_query(sql, external_data=ext)
        assert [json.loads(line)["n"] for line in again.splitlines()] == [1, 2]
    for _ in range(3):  # the next queries do not see them, whichever connection they get
        with pytest.raises(DatabaseError) as info:
            client.raw_query("SELECT * FROM pairs")
        assert info.value.code == 60


def test_the_servers_http_limits_are_enforced(clickhouse_endpoint: ClickHouseEndpoint, client: Any) -> None:  # noqa: F811
    """As a server with default settings: a form field over 128 KiB (where clickhouse-connect puts long
    parameters) and a URL over 1 MiB are refused, so a client that would fail on a server fails here."""
    long = "x" * (128 * 1024 + 2)
    with pytest.raises(DatabaseError) as info:
        client.raw_query("SELECT length({v:String})", parameters={"v": long})
    assert info.value.code == 1000 and "Field value too long" in str(info.value)
    assert client.raw_query("SELECT length({v:String})", parameters={"v": long[:-2]}) == b"131072\n"
    conn = http.client.HTTPConnection("127.0.0.1", clickhouse_endpoint.port, timeout=30)  # httpx refuses such URLs
    try:
        conn.request("POST", "/?param_v=" + "y" * (1024 * 1024), body=b"SELECT {v:String}")
        answer = conn.getresponse()
        answer.read()
        answer.close()
        assert answer.status == 400 and answer.getheader("x-clickhouse-exception-code") is None
        conn.request("POST", "/?param_v=" + "y" * (900 * 1024), body=b"SELECT length({v:String})")
        answer = conn.getresponse()  # a URL within the limit is served, however long
        assert (answer.status, answer.read()) == (200, f"{900 * 1024}\n".encode())
    finally:
        conn.close()
