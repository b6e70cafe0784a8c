"""The storage backends behave alike: the same SQL layer and the same JSON values on chDB and on a
ClickHouse server (``CLICKHOUSE_URL``, else the chDB-backed HTTP endpoint), and the server backend
tells "unavailable, retry" from "this query is wrong"."""

from __future__ import annotations

import inspect
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import urllib3.exceptions
from clickhouse_connect.driver import exceptions as ch
from clickhouse_connect.driver.binding import format_bind_value
from hypothesis import given, settings
from hypothesis import strategies as hs

from tests.chserver import ClickHouseEndpoint
from tests.conftest import free_port
from trailmark.storage.base import JsonColumns, QueryError, Storage, StorageUnavailable, apply_migrations
from trailmark.storage.server_backend import EXCEPTION_MEANING, ServerStorage, bind_large, bind_text, translate


def test_migrations_are_idempotent(storage: Storage) -> None:
    assert apply_migrations(storage) == []
    tables = {
        r["name"]
        for r in storage.query("SELECT name FROM system.tables WHERE database = {d:String}", {"d": storage.database})
    }
    assert {"events", "sessions", "touchpoints", "contacts", "identities"} <= tables


# tables that take no part per journey-builder batch (written on request or by hand, rarely)
NOT_PER_BATCH = {
    "dead_letters", "dead_letter_replays", "erasure_requests", "erasure_subjects", "saved_answers",
    "schema_migrations", "suppressed_identifiers", "company_profiles_data",
}  # fmt: skip


def test_every_table_a_batch_writes_merges_with_base_10(storage: Storage) -> None:
    """Migration 030: the tables a batch adds a part to (the builder's inserts and the views they
    fire) merge with merge_selector_base = 10, so a mid-size table is not rewritten every few
    seconds under load. A per-batch table added later without it fails here."""
    rows = storage.query(
        "SELECT name, create_table_query AS ddl FROM system.tables WHERE database = {d:String}"
        " AND engine LIKE '%MergeTree'",
        {"d": storage.database},
    )
    per_batch = {r["name"]: r["ddl"] for r in rows if r["name"] not in NOT_PER_BATCH}
    assert {"events", "event_keys", "sessions_data", "visitor_state", "device_stages"} <= per_batch.keys()
    assert [n for n, ddl in per_batch.items() if "merge_selector_base = 10" not in ddl] == []
    assert all("merge_selector_base" not in r["ddl"] for r in rows if r["name"] in NOT_PER_BATCH)


def test_the_builder_writes_and_the_read_api_reads(storage: Storage) -> None:
    from journey_builder import queries
    from tests.journeys.conftest import Journey

    j = Journey(storage)
    j.send(
        j.event("page", "srv", 0, path="/", query="?utm_source=google&utm_medium=cpc"),
        j.event("identify", "srv", 1, user_id="u-srv", traits={"email": "srv@acme.io"}),
    )
    body = queries.journey(storage, "s1", "u-srv")
    assert body is not None and body["contact_id"] == "user:u-srv"
    assert [s["channel"] for s in body["sessions"]] == ["Paid Search"]


def test_query_values_are_the_same_json_on_both_backends(storage: Storage) -> None:
    rows = storage.query(
        "SELECT toUInt64(18446744073709551615) AS big, toInt32(-3) AS small, 1.5 AS f, toDecimal64(2.25, 2) AS d,"
        " toDateTime64('2026-11-02 09:00:00.123', 3, 'UTC') AS t, toDate('2026-11-02') AS day,"
        " toUUID('00000000-0000-0000-0000-00000000002a') AS u, ['a', 'b'] AS arr, map('k', 1) AS m, NULL AS n,"
        " true AS b, {s:String} AS s, {l:Array(String)} AS l",
        {"s": "tab\there 'quoted'", "l": ["x", "y'z"]},
    )
    assert rows == [
        {
            "big": 18446744073709551615,
            "small": -3,
            "f": 1.5,
            "d": 2.25,
            "t": "2026-11-02 09:00:00.123",
            "day": "2026-11-02",
            "u": "00000000-0000-0000-0000-00000000002a",
            "arr": ["a", "b"],
            "m": {"k": 1},
            "n": None,
            "b": True,
            "s": "tab\there 'quoted'",
            "l": ["x", "y'z"],
        }
    ]


def test_parameters_past_a_servers_http_limits_give_the_same_answers(storage: Storage) -> None:
    """Parameters of ~1 MB (String and Array, used twice, with characters that need escaping) answer
    as small ones do; on the server path they travel as external data (see server_backend.py)."""
    names = [f"n{i}'\\\t\"ü" for i in range(40_000)]
    text = "[" + ",".join(f'"{i}"' for i in range(60_000)) + "]"
    rows = storage.query(
        "SELECT length({t:String}) AS chars, length(JSONExtract({t:String}, 'Array(String)')) AS ids,"
        " length({a:Array(String)}) AS names, has({a:Array(String)}, {one:String}) AS found,"
        " (SELECT count() FROM numbers(10) WHERE toString(number) IN {a:Array(String)}) AS none",
        {"t": text, "a": names, "one": names[-1]},
    )
    assert rows == [{"chars": len(text), "ids": 60_000, "names": 40_000, "found": 1, "none": 0}]
    storage.execute(
        f"CREATE TABLE {storage.database}.big_params ENGINE = Memory AS"
        " SELECT arrayJoin(JSONExtract({t:String}, 'Array(String)')) AS id",
        {"t": text},
    )
    assert storage.query(f"SELECT count() AS n FROM {storage.database}.big_params") == [{"n": 60_000}]


def test_a_command_with_several_mid_size_parameters_runs(storage: Storage) -> None:
    """A command's parameters, each under the size that goes as external data but together far
    past what a URL may carry (the journey builder's shared-devices insert after a restart binds two
    key sets of ~30 KB each), give the same rows on both backends."""
    sets = {f"k{i}": "[" + ",".join(f'["default","user:{i}-{j}"]' for j in range(1_200)) + "]" for i in range(4)}
    assert all(20_000 < len(v) < 32_000 for v in sets.values())
    storage.execute(
        f"CREATE TABLE {storage.database}.mid_params ENGINE = Memory AS SELECT k.2 AS contact FROM ("
        + " UNION ALL ".join(
            f"SELECT arrayJoin(JSONExtract({{{n}:String}}, 'Array(Tuple(String, String))')) AS k" for n in sets
        )
        + ")",
        sets,
    )
    rows = storage.query(f"SELECT count() AS n, uniqExact(contact) AS u FROM {storage.database}.mid_params")
    assert rows == [{"n": 4_800, "u": 4_800}]


def test_a_commands_parameters_kept_in_its_url_stay_within_the_budget() -> None:
    """Of a command's parameters, those left in the URL take at most the budget together; the
    others are read from external data under their own placeholder."""
    params = {"a": "x" * 3_000, "b": "y" * 3_000, "c": "z" * 10, "d": ["w" * 2_000, "v"]}
    sql = "SELECT {a:String}, {b:String}, {c:String}, {d:Array(String)}"
    bound, small, external = bind_large(sql, params, 4_096)
    assert small is not None and external is not None
    assert sum(len(bind_text(v)) for v in small.values()) < 4_096
    assert set(small) == {"a", "c"}
    assert "{b:String}" not in bound and "{d:Array(String)}" not in bound and "{a:String}" in bound
    assert bind_large(sql, params) == (sql, params, None)  # a query's go in a form: each may be larger


def test_the_url_budget_counts_a_parameters_text_as_encoded_in_the_url() -> None:
    """Quotes, commas and brackets take three bytes each in a URL: a list of short strings whose
    text is under the budget but whose encoded form is over it goes as external data."""
    ids = ["a"] * 450  # 2,250 bytes of text ("['a', 'a', ...]"), ~4.5 KiB in the URL
    params = {"ids": ids, "n": 1}
    sql = "SELECT {ids:Array(String)}, {n:UInt8}"
    assert len(bind_text(ids)) < 4_096
    bound, small, external = bind_large(sql, params, 4_096)
    assert small == {"n": 1} and external is not None and "{ids:Array(String)}" not in bound
    assert bind_large(sql, {"ids": ids[:50], "n": 1}, 4_096)[2] is None  # a short one stays in the URL


def test_rows_with_differing_keys_store_the_missing_values_as_defaults(storage: Storage) -> None:
    """Row inserts go as columns on both backends; a row lacking a value gets the column's default,
    and a key the first row lacks is not read."""
    db = storage.database
    storage.execute(
        f"CREATE TABLE {db}.ragged (k UInt32, s String, n UInt32, l Array(String)) ENGINE = MergeTree ORDER BY k"
    )
    storage.insert(
        "ragged",
        [
            {"k": 1, "s": "it's", "n": 5, "l": ["a", "b"]},
            {"k": 2, "n": 6},
            {"k": 3, "s": "z", "l": [], "extra": "not read"},
        ],
    )
    assert storage.query(f"SELECT k, s, n, l FROM {db}.ragged ORDER BY k") == [
        {"k": 1, "s": "it's", "n": 5, "l": ["a", "b"]},
        {"k": 2, "s": "", "n": 6, "l": []},
        {"k": 3, "s": "z", "n": 0, "l": []},
    ]
    storage.execute(f"DROP TABLE {db}.ragged")


_BOUND = hs.recursive(
    hs.text() | hs.integers() | hs.floats(allow_nan=False) | hs.booleans() | hs.none(),
    lambda inner: hs.lists(inner, max_size=5) | hs.tuples(inner, inner),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(_BOUND)
def test_large_parameters_are_written_as_clickhouse_connect_writes_them(value: object) -> None:
    """bind_large's own formatting (strings escaped in one str.translate) gives clickhouse-connect's
    text for every value: strings with any character, numbers, NULLs, nested lists and tuples."""
    assert bind_text(value) == format_bind_value(value, None)


def test_explain_shows_the_query_as_given(storage: Storage) -> None:
    """No FORMAT clause is added to the text: the SQL sandbox reads EXPLAIN AST."""
    rows = storage.query("EXPLAIN AST SELECT 1")
    assert [r["explain"].strip() for r in rows] == [
        "SelectWithUnionQuery (children 1)",
        "ExpressionList (children 1)",
        "SelectQuery (children 1)",
        "ExpressionList (children 1)",
        "Literal UInt64_1",
    ]


def test_inserted_rows_read_back_alike(storage: Storage) -> None:
    storage.insert("dead_letters", [{"stage": "journeys", "reason": "r1", "payload": "{}"}])
    assert storage.query(f"SELECT stage, reason FROM {storage.database}.dead_letters") == [
        {"stage": "journeys", "reason": "r1"}
    ]


def test_settings_apply_to_one_query(storage: Storage) -> None:
    one = storage.query("SELECT getSetting('max_result_rows') AS v", settings={"max_result_rows": 7})
    assert one == [{"v": 7}]
    assert storage.query("SELECT getSetting('max_result_rows') AS v") == [{"v": 0}]


def test_an_isolated_block_holds_its_settings_for_each_query_and_no_longer(storage: Storage) -> None:
    """The SQL endpoint's checks and query share one block: every query of it runs under the
    settings, readonly among them refuses a change from inside, and nothing outlives the block."""
    only_system = {"system.databases": "name = 'system'"}
    settings = {"readonly": 1, "max_result_rows": 7, "additional_table_filters": only_system}
    with storage.isolated(settings) as query:
        assert query("SELECT getSetting('max_result_rows') AS v") == [{"v": 7}]
        assert query("SELECT name FROM system.databases") == [{"name": "system"}]  # the filter holds
        with pytest.raises(QueryError, match="(?i)readonly"):
            query("SELECT 1 AS v SETTINGS max_result_rows = 100")
        with pytest.raises(QueryError, match="(?i)readonly"):
            query("SET max_result_rows = 100")
        assert query("SELECT getSetting('max_result_rows') AS v") == [{"v": 7}]
    assert storage.query("SELECT getSetting('max_result_rows') AS v") == [{"v": 0}]
    assert storage.query("SELECT count() > 1 AS n FROM system.databases") == [{"n": True}]
    with storage.isolated({"max_result_rows": 9}) as query:  # a new block starts from the defaults
        assert query("SELECT getSetting('max_result_rows') AS v, getSetting('readonly') AS r") == [{"v": 9, "r": 0}]


def test_cancel_stops_a_running_query(storage: Storage) -> None:
    query_id = uuid.uuid4().hex
    errors: list[Exception] = []

    def run() -> None:
        try:
            storage.query(
                "SELECT sleepEachRow(0.05) FROM numbers(400) SETTINGS max_block_size = 1",
                readonly=True,
                settings={"max_threads": 1},
                query_id=query_id,
            )
        except Exception as exc:
            errors.append(exc)

    worker = threading.Thread(target=run)
    started = time.monotonic()
    worker.start()
    time.sleep(1)
    storage.cancel(query_id)
    worker.join(15)
    assert time.monotonic() - started < 10, "the query ran to its end (20 s)"
    assert len(errors) == 1 and isinstance(errors[0], QueryError), errors


def test_readonly_queries_cannot_write(storage: Storage) -> None:
    with pytest.raises(QueryError, match="(?i)readonly"):
        storage.query(f"INSERT INTO {storage.database}.dead_letters (stage) VALUES ('x')", readonly=True)


def test_a_bad_query_is_a_query_error_with_clickhouses_message(storage: Storage) -> None:
    with pytest.raises(QueryError, match="UNKNOWN_TABLE|Unknown table"):
        storage.query(f"SELECT * FROM {storage.database}.nope")
    with pytest.raises(QueryError, match="SYNTAX_ERROR|Syntax error"):
        storage.execute("CREATE TABLEZ x")


# --- error translation at the server adapter -------------------------------------------------------


def test_every_clickhouse_connect_exception_class_has_a_meaning() -> None:
    classes = {
        c
        for _, c in inspect.getmembers(ch, inspect.isclass)
        if issubclass(c, BaseException) and c.__module__ == ch.__name__
    }
    assert classes, "clickhouse-connect's exception module moved"
    assert classes - set(EXCEPTION_MEANING) == set()
    assert EXCEPTION_MEANING[urllib3.exceptions.HTTPError] == "unavailable"


@pytest.mark.parametrize(
    ("exc", "settings", "expected"),
    [
        (ch.OperationalError("Error HTTPConnectionPool: Connection refused"), None, StorageUnavailable),
        (ch.StreamFailureError("stream broke"), None, StorageUnavailable),
        (urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"), None, StorageUnavailable),  # type: ignore[arg-type]
        (ConnectionResetError(104, "reset"), None, StorageUnavailable),
        (ch.DatabaseError("HTTP driver received HTTP status 502", code=None), None, StorageUnavailable),
        (
            ch.DatabaseError("HTTP driver received HTTP status 503, server response: busy", code=None),
            None,
            StorageUnavailable,
        ),
        (ch.DatabaseError("HTTP driver received HTTP status 403", code=None), None, StorageUnavailable),  # config
        (ch.DatabaseError("HTTP driver received HTTP status 429", code=None), None, StorageUnavailable),
        (
            ch.DatabaseError("HTTP driver received HTTP status 413, server response: too large", code=None),
            None,
            QueryError,
        ),
        (ch.DatabaseError("HTTP driver received HTTP status 414", code=None), None, QueryError),
        (ch.DatabaseError("HTTP driver received HTTP status 400, server response: x", code=None), None, QueryError),
        (ch.DatabaseError("code 400 in the text, no status", code=None), None, StorageUnavailable),
        (ch.DatabaseError("too many", code=202), None, StorageUnavailable),
        (ch.DatabaseError("memory (total)", code=241), None, StorageUnavailable),
        (ch.DatabaseError("keeper", code=999), None, StorageUnavailable),
        (ch.DatabaseError("read only replica", code=242), None, StorageUnavailable),
        (ch.DatabaseError("socket timeout", code=209), None, StorageUnavailable),
        (ch.DatabaseError("timeout", code=159), None, StorageUnavailable),
        (ch.DatabaseError("timeout", code=159), {"max_execution_time": 1}, QueryError),  # the caller's own limit
        (ch.DatabaseError("memory (for query)", code=241), {"max_memory_usage": 10}, QueryError),
        (ch.DatabaseError("syntax", code=62), None, QueryError),
        (ch.DatabaseError("cannot parse", code=27), None, QueryError),
        (ch.DatabaseError("readonly", code=164), None, QueryError),
        (ch.ProgrammingError("bad parameter"), None, QueryError),
        (ch.DataError("cannot encode"), None, QueryError),
    ],
)
def test_translation_by_class_and_code(
    exc: BaseException, settings: dict[str, int] | None, expected: type[Exception]
) -> None:
    assert type(translate(exc, settings)) is expected


def test_server_errors_not_about_the_query_mean_unavailable(clickhouse_url: str) -> None:
    """Real answers of the server: the codes travel in X-ClickHouse-Exception-Code (throwIf raises any)."""
    store = ServerStorage(clickhouse_url, "default")
    try:
        for code in (202, 241, 242, 999):
            with pytest.raises(StorageUnavailable, match=f"code: {code}"):
                store.query(
                    f"SELECT throwIf(1, 'injected', toInt32({code}))",
                    settings={"allow_custom_error_code_in_throwif": 1},
                )
        with pytest.raises(QueryError, match="TIMEOUT_EXCEEDED|159"):
            store.query(
                "SELECT sleepEachRow(0.1) FROM numbers(30)", settings={"max_execution_time": 0.3, "max_block_size": 1}
            )
    finally:
        store.close()


def test_a_request_the_server_refuses_for_its_size_is_a_query_error(clickhouse_url: str) -> None:
    """A URL past the server's http_max_uri_size (here a setting's value) is answered 400 with no
    ClickHouse code, before the server reads the query: the same request would be refused again,
    so it is the query's error (the builder splits its batch), not a wait for the server."""
    store = ServerStorage(clickhouse_url, "default")
    try:
        with pytest.raises(QueryError, match="HTTP status 400"):
            store.query("SELECT 1 AS one", settings={"log_comment": "x" * (1024 * 1024 + 1)})
        assert store.query("SELECT 1 AS one", settings={"log_comment": "x" * 1024}) == [{"one": 1}]
    finally:
        store.close()


def test_nothing_listening_is_unavailable() -> None:
    with pytest.raises(StorageUnavailable):
        ServerStorage(f"http://127.0.0.1:{free_port()}")


def test_an_endpoint_outage_is_unavailable_for_every_call_then_recovers(tmp_path: Path) -> None:
    endpoint = ClickHouseEndpoint(tmp_path / "data").start()
    store = ServerStorage(endpoint.url, f"o_{uuid.uuid4().hex[:8]}")
    try:
        apply_migrations(store)
        endpoint.stop()
        calls: list[Callable[[], object]] = [
            lambda: store.query("SELECT 1"),
            lambda: store.execute("SELECT 1"),
            lambda: store.insert("dead_letters", [{"stage": "x"}]),
        ]
        for call in calls:
            with pytest.raises(StorageUnavailable):
                call()
        endpoint.start()
        store.insert("dead_letters", [{"stage": "x"}])
        assert store.query(f"SELECT count() AS n FROM {store.database}.dead_letters") == [{"n": 1}]
    finally:
        store.close()
        endpoint.stop()


def test_a_json_columns_document_stores_what_its_columns_store(storage: Storage) -> None:
    """``insert_json_columns``: a ``JSONColumns`` document sent as it is (server) or read back into
    columns (chDB) stores the same rows; one that is not such a document is a query error."""
    db = storage.database
    storage.execute(f"CREATE TABLE {db}.doc (k UInt32, s String, l Array(String)) ENGINE = MergeTree ORDER BY k")
    body = b'{"k":[2,1],"s":["say \\"hi\\" \\u00e9",null],"l":[["x"],[]]}'
    storage.insert_json_columns("doc", JsonColumns(["k", "s", "l"], body))
    assert storage.query(f"SELECT k, s, l FROM {db}.doc ORDER BY k") == [
        {"k": 1, "s": "", "l": []},
        {"k": 2, "s": 'say "hi" \u00e9', "l": ["x"]},
    ]
    for bad in (b'{"k":[3],"s":["x"],"l":[[]]', b'{"k":["three"],"s":["x"],"l":[[]]}'):
        with pytest.raises(QueryError):
            storage.insert_json_columns("doc", JsonColumns(["k", "s", "l"], bad))
    assert storage.query(f"SELECT count() AS n FROM {db}.doc") == [{"n": 2}]


def test_the_kafka_builder_writes_events_rows_as_they_came(
    clickhouse_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a server the Kafka journey builder writes a batch's ``events`` rows from the values as they
    came off the bus (one ``JSONColumns`` document: ``RecordTexts``), its dicts without the fields it only
    stores, and stores exactly the rows it stores from whole dicts' columns, every other table alike."""
    from journey_builder.builder import JourneyBuilder
    from journey_builder.core import STORED_ONLY
    from tests.kafka.test_enriched_records import raw_record
    from trailmark import compiled
    from trailmark.bus.base import Message
    from trailmark.runtime import EnrichStage, parse_enriched, raw_source
    from trailmark.settings import JourneySettings, Settings

    if compiled.read_runs is None:
        pytest.skip("trailmark/native is not built here (make native)")
    out = EnrichStage(Settings(), {}).serialized(
        [
            raw_record("a", 3, context={"page": {"url": "https://x.test/p?utm_source=news&utm_medium=email"}}),
            raw_record("a", 2, first=3, type="page", properties={"path": "/pricing", "q": 'a "b"\n'}),
            raw_record("b", 2, userId="u-1", event="Order Completed", context={"consent": [1, 0, 1]}),
            raw_record("c", 1, type="group", groupId="g-1", traits={"name": "Acme", "email": "ceo@acme.io"}),
            raw_record("d", 1, type="identify", traits={"email": "d@acme.io"}, timestamp="2026-12-01T09:00:00Z"),
        ]
    )
    records = [Message("trailmark.enriched", 0, i, o.key, o.value) for i, o in enumerate(out.ok)]
    stores = {}
    for how in ("raw", "columns"):
        store = stores[how] = ServerStorage(clickhouse_url, f"t_{uuid.uuid4().hex[:12]}")
        apply_migrations(store)
        sent: list[str] = []
        for name in ("insert_columns", "insert_json_columns"):
            real = getattr(store, name)
            monkeypatch.setattr(
                store, name, lambda t, c, real=real, name=name, sent=sent: (sent.append(f"{name}:{t}"), real(t, c))
            )
        # as the Kafka runner reads them for a server: without the fields the builder only stores
        ok = parse_enriched(records, skip=STORED_ONLY if how == "raw" else ()).ok
        raw = raw_source(ok)
        assert raw is not None and len(raw) == len(ok) == 9 and raw.slim == (how == "raw")
        JourneyBuilder(store, JourneySettings()).process([o.value for o in ok], *([raw] if how == "raw" else []))
        # (insert_columns sends its columns as a document too)
        assert "insert_json_columns:events" in sent
        assert ("insert_columns:events" in sent) == (how == "columns")
    try:
        for table, order in (
            ("events", "message_id"),
            ("sessions_data", "session_id"),
            ("contacts_data", "contact_id"),
        ):
            rows = {
                how: [
                    {k: v for k, v in r.items() if k != "version"}
                    for r in s.query(f"SELECT * FROM {s.database}.{table} ORDER BY {order}")
                ]
                for how, s in stores.items()
            }
            assert rows["raw"] == rows["columns"] and rows["raw"], table
        events = stores["raw"].query(f"SELECT type, email, original_timestamp FROM {stores['raw'].database}.events")
        assert {r["type"] for r in events} == {"track", "page", "group", "identify"}
        assert [r["email"] for r in events if r["type"] == "group"] == [""]  # the account's, not a person's
    finally:
        for s in stores.values():
            s.execute(f"DROP DATABASE IF EXISTS {s.database} SYNC")
            s.close()


def test_an_event_failing_in_a_batch_read_without_stored_only_fields_is_dead_lettered_whole(
    storage: Storage,
) -> None:
    """The journeys stage, given dicts read without the fields the builder only stores (as the Kafka
    runner reads them for a server), dead-letters an event that fails with every field, as it came,
    and stores the rest of its batch, on a server (rows written as they came) and on chDB (which the
    runner does not read so for, and the builder makes whole)."""
    import asyncio

    from journey_builder.core import STORED_ONLY
    from tests.kafka.test_enriched_records import raw_record
    from trailmark import compiled
    from trailmark.bus.base import Message
    from trailmark.runtime import BuildStage, EnrichStage, parse_enriched
    from trailmark.settings import Settings

    if compiled.read_runs is None:
        pytest.skip("trailmark/native is not built here (make native)")
    page = {"page": {"url": "https://x.test/p?q=1"}}
    out = EnrichStage(Settings(), {}).serialized([raw_record(v, 1, context=page) for v in "abc"])
    bad = orjson.loads(out.ok[1].value)
    bad["rows"][0][bad["fields"].index("timestamp")] = 1767225600000  # of the wrong type: fails alone
    values = [out.ok[0].value, orjson.dumps(bad), out.ok[2].value]
    records = [
        Message("trailmark.enriched", 0, i, o.key, v) for i, (o, v) in enumerate(zip(out.ok, values, strict=True))
    ]
    whole = parse_enriched(records).ok[1].value
    ok = parse_enriched(records, skip=STORED_ONLY).ok
    assert "page_url" not in ok[1].value and "page_url" in whole

    failed = asyncio.run(BuildStage(Settings(), storage, {}).write(ok))

    assert [(f.kind, f.payload) for f in failed] == [("build_failed", whole)]
    stored = storage.query(f"SELECT anonymous_id, page_url FROM {storage.database}.events ORDER BY anonymous_id")
    assert stored == [{"anonymous_id": v, "page_url": "https://x.test/p?q=1"} for v in "ac"]


def test_the_builder_reads_none_of_the_fields_it_only_stores(clickhouse_url: str) -> None:
    """``STORED_ONLY`` is what the journey builder never reads of an event: on dicts without those
    fields (a missing one raises KeyError), every path of a batch runs, an erased visitor dropped,
    events without consent counted on an aggregating site, an alias, an identify, a group call, a
    conversion, and the rows are written as they came."""
    from journey_builder.builder import JourneyBuilder
    from journey_builder.core import STORED_ONLY
    from journey_builder.privacy import ConsentPolicies, ConsentPolicy
    from tests.kafka.test_enriched_records import raw_record
    from trailmark import compiled
    from trailmark.bus.base import Message
    from trailmark.runtime import EnrichStage, parse_enriched, raw_source
    from trailmark.settings import JourneySettings, Settings
    from trailmark.suppression import identifier_hash

    if compiled.read_runs is None:
        pytest.skip("trailmark/native is not built here (make native)")
    store = ServerStorage(clickhouse_url, f"t_{uuid.uuid4().hex[:12]}")
    try:
        apply_migrations(store)
        store.insert("suppressed_identifiers", [{"site_id": "s1", "hash": identifier_hash("s1", "anon:gone")}])
        page = {"page": {"url": "https://x.test/p?utm_source=news&utm_medium=email", "path": "/p"}}
        out = EnrichStage(Settings(), {}).serialized(
            [
                raw_record("a", 2, type="page", context=page),
                raw_record("a", 1, first=2, type="identify", userId="u-1", traits={"email": "a@acme.io"}),
                raw_record("a", 1, first=3, event="Order Completed", properties={"revenue": 10}),
                raw_record("b", 1, type="alias", userId="u-1", previousId="b"),
                raw_record("c", 1, type="group", groupId="g-1", traits={"name": "Acme", "website": "acme.io"}),
                raw_record("d", 2, context={"consent": [0, 0, 1]}),
                raw_record(
                    "e", 2, type="page", context={"page": {"url": "https://x.test/", "referrer": "https://r.test/"}}
                ),
                raw_record("gone", 1),
            ]
        )
        records = [Message("trailmark.enriched", 0, i, o.key, o.value) for i, o in enumerate(out.ok)]
        ok = parse_enriched(records, skip=STORED_ONLY).ok
        raw = raw_source(ok)
        assert raw is not None and raw.slim and all("page_url" not in o.value for o in ok)
        builder = JourneyBuilder(store, JourneySettings(), ConsentPolicies(ConsentPolicy("aggregate")))
        done = builder.process([o.value for o in ok], raw)
        assert (done.skipped_erased, done.aggregated, done.event_count) == (1, 2, 8)
        db = store.database
        rows = store.query(f"SELECT anonymous_id, type, page_url FROM {db}.events ORDER BY anonymous_id, timestamp")
        assert [(r["anonymous_id"], r["type"]) for r in rows] == [
            *[("a", "page")] * 2,
            ("a", "identify"),
            ("a", "track"),
            ("b", "alias"),
            ("c", "group"),
            *[("e", "page")] * 2,
        ]
        assert rows[0]["page_url"] == "https://x.test/p?utm_source=news&utm_medium=email"
        assert store.query(f"SELECT contact_id FROM {db}.contacts_data") == [{"contact_id": "user:u-1"}]
    finally:
        store.execute(f"DROP DATABASE IF EXISTS {store.database} SYNC")
        store.close()
