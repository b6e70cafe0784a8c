"""Dead-letter listing, filters, paging and replay on the real engine (the pytest process's chDB) and
the real embedded log; folding an event back into a RawBatch is checked against ``unfold`` itself."""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

import orjson
import pytest

from enrich import Enricher
from schemas import unfold
from trailmark.bus.embedded import EmbeddedBus
from trailmark.deadletters import BadFilter, DeadLetters, Filter, fold, outgoing, parse_time
from trailmark.settings import Settings
from trailmark.storage.base import Storage


def raw_batch(events: list[dict[str, Any]], sent_at: str | None = None, site: str = "s1") -> dict[str, Any]:
    return {
        "v": 1,
        "site_id": site,
        "received_at": "2026-11-02T10:00:00.250Z",
        "ip": "203.0.113.7",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
        "body": {"batch": events, "sentAt": sent_at},
    }


EVENTS = [
    (
        {
            "type": "page",
            "anonymousId": "a1",
            "messageId": "m1",
            "name": "Home",
            "timestamp": "2026-11-02T09:59:58Z",
            "context": {"page": {"url": "https://shop.example/?utm_source=news"}},
            "integrations": {"All": True},
        },
        "2026-11-02T10:00:03Z",
    ),  # client clock 5 s ahead: corrected
    (
        {
            "type": "track",
            "userId": 42,
            "messageId": "m2",
            "event": "Order Completed",
            "properties": {"total": 9.5},
            "originalTimestamp": "2026-11-02T09:00:00.123Z",
            "sentAt": "2026-11-02T09:00:01Z",
            "context": {"ip": "198.51.100.1", "userAgent": "curl/8", "traits": {"email": "j@acme.io"}},
        },
        None,
    ),
    (
        {
            "type": "identify",
            "anonymousId": "a3",
            "messageId": "m3",
            "traits": {"email": "x@y.io"},
            "_metadata": {"bundled": ["x"]},
        },
        None,
    ),  # no client time at all: receivedAt
    (
        {"type": "alias", "previousId": "a4", "userId": "u4", "messageId": "m4", "timestamp": "9999-01-01T00:00:00Z"},
        "2026-11-02T10:00:00Z",
    ),  # far future: receivedAt
    ({"type": "group", "anonymousId": "a5", "groupId": "g5", "messageId": "m5", "traits": {"name": "Acme"}}, None),
]


@pytest.mark.parametrize(("event", "sent_at"), EVENTS)
def test_fold_gives_back_the_same_event_through_unfold(event: dict[str, Any], sent_at: str | None) -> None:
    [raw] = unfold(raw_batch([event], sent_at))  # type: ignore[arg-type]
    [again] = unfold(fold(raw))
    assert again == raw
    enriched = Enricher().enrich(raw, None)  # an enriched event folds back to its raw event too,
    [from_enriched] = unfold(fold(enriched))  # type: ignore[arg-type]
    # but for the IP, which enrichment truncated (also in context.ip): re-enrichment sees the /24
    assert from_enriched == {**raw, "ip": enriched["ip"], "context": enriched["context"]}
    assert {k: v for k, v in enriched["context"].items() if k != "ip"} == {
        k: v for k, v in raw["context"].items() if k != "ip"
    }


def test_time_filters_take_iso_or_relative_times() -> None:
    assert parse_time("2026-11-02T10:00:00+01:00") == "2026-11-02 09:00:00.000"
    assert parse_time("2026-11-02 10:00:00.5") == "2026-11-02 10:00:00.500"
    from datetime import UTC, datetime

    assert parse_time("2h", now=datetime(2026, 11, 2, 12, tzinfo=UTC)) == "2026-11-02 10:00:00.000"
    with pytest.raises(BadFilter):
        parse_time("yesterday")
    with pytest.raises(BadFilter):
        Filter(payload_type="poison").where("db")
    with pytest.raises(BadFilter):
        Filter().where("db", after="not a cursor")


@pytest.fixture
def store(storage: Storage) -> Storage:
    """A fresh migrated database on chDB and on the ClickHouse HTTP endpoint (tests/storage)."""
    return storage


@pytest.fixture
def settings(store: Storage, tmp_path: Any) -> Settings:
    return Settings(data_dir=tmp_path, storage={"database": store.database})


def row(stage: str, kind: str, reason: str, payload: bytes, at: str) -> dict[str, Any]:
    """A dead_letters row as the sink stores one (payload as text, base64 when it is not UTF-8)."""
    try:
        text, encoding = payload.decode(), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(payload).decode(), "base64"
    return {
        "stage": stage,
        "kind": kind,
        "site_id": "s1",
        "reason": reason,
        "payload": text,
        "payload_encoding": encoding,
        "failed_at": f"2026-11-02 {at}:00.000",
        "version": 1,
    }


def seed(store: Storage) -> dict[str, dict[str, Any]]:
    """A dead letter of each payload type, at known times (keyed by payload type)."""
    batch = raw_batch([EVENTS[0][0]], EVENTS[0][1])
    [raw] = unfold(batch)  # type: ignore[arg-type]
    enriched = Enricher().enrich(raw, None)
    rows = {
        "raw_batch": row(
            "enrich", "unreadable", "unreadable raw batch: KeyError: 'type'", orjson.dumps(batch), "09:00"
        ),
        "raw_event": row("enrich", "enrich_failed", "PoisonEvent: enrichment crashed", orjson.dumps(raw), "10:00"),
        "enriched_event": row(
            "journeys", "build_failed", "QueryError: Constraint `c` is VIOLATED", orjson.dumps(enriched), "11:00"
        ),
        "none": row("journeys", "unreadable", "not JSON: unexpected character", b"\xff\xfe{", "12:00"),
    }
    store.insert("dead_letters", list(rows.values()))
    return rows


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_list_filters_and_pages(store: Storage, settings: Settings) -> None:
    seed(store)
    dl = DeadLetters(lambda: store, lambda: None, settings)  # type: ignore[arg-type,return-value]
    page = run(dl.list(Filter(), None, 50))
    assert [(r["stage"], r["kind"], r["payload_type"]) for r in page["rows"]] == [
        ("enrich", "unreadable", "raw_batch"),
        ("enrich", "enrich_failed", "raw_event"),
        ("journeys", "build_failed", "enriched_event"),
        ("journeys", "unreadable", "none"),
    ]
    assert page["total"] == 4 and page["next"] is None
    assert all(len(r["id"]) == 16 and r["replays"] == 0 and r["last_replayed_at"] is None for r in page["rows"])

    def kinds(**kw: Any) -> list[str]:
        return [r["payload_type"] for r in run(dl.list(Filter(**kw), None, 50))["rows"]]

    assert kinds(stage="journeys") == ["enriched_event", "none"]
    assert kinds(payload_type="raw_event") == ["raw_event"]
    assert kinds(kind="unreadable") == ["raw_batch", "none"]  # the failure's kind, as the runner recorded it
    assert kinds(site="s1", kind="build_failed") == ["enriched_event"] and kinds(site="other") == []
    assert kinds(reason="constraint") == ["enriched_event"]  # any case
    assert kinds(since="2026-11-02T10:00:00Z", until="2026-11-02T12:00:00Z") == ["raw_event", "enriched_event"]
    assert kinds(replayed=True) == []

    seen, after = [], None
    while True:  # keyset paging: every row once, in order
        page = run(dl.list(Filter(), after, 1))
        seen += [r["payload_type"] for r in page["rows"]]
        after = page["next"]
        if after is None:
            break
    assert seen == ["raw_batch", "raw_event", "enriched_event", "none"]


def read_log(bus_path: Any, topic: str) -> list[tuple[bytes, bytes]]:
    async def go() -> list[tuple[bytes, bytes]]:
        bus = EmbeddedBus(bus_path)
        await bus.start()
        try:
            consumer = bus.consumer(topic, f"reader-{uuid.uuid4().hex}")
            got = await consumer.poll(1000, 0.5)
            await consumer.close()
            return [(m.key, m.value) for m in got]
        finally:
            await bus.stop()

    result: list[tuple[bytes, bytes]] = asyncio.run(go())
    return result


def test_replay_sends_each_kind_where_its_stage_reads_and_records_it(store: Storage, settings: Settings) -> None:
    rows = seed(store)
    log_path = settings.data_dir / "log" / "events.sqlite3"

    async def replay(again: bool = False, limit: int = 100, **flt: Any) -> dict[str, Any]:
        bus = EmbeddedBus(log_path)
        await bus.start()
        try:
            dl = DeadLetters(lambda: store, bus.producer, settings)
            result: dict[str, Any] = await dl.replay(Filter(**flt), None, limit, again, "r1")
            return result
        finally:
            await bus.stop()

    first = asyncio.run(replay())
    assert (first["selected"], first["replayed"], first["records"], first["skipped"]) == (3, 3, 3, [])
    sent = read_log(log_path, settings.bus.topic_raw)
    assert [k for k, _ in sent] == [b"s1:a1"] * 3  # keyed by site and visitor, as the collector keys
    assert sent[0][1] == rows["raw_batch"]["payload"].encode()  # a raw batch goes back as it was
    raw_event = orjson.loads(rows["raw_event"]["payload"])
    assert unfold(orjson.loads(sent[1][1])) == [raw_event]  # one event, folded: unfold gives it back
    [again] = unfold(orjson.loads(sent[2][1]))  # the enriched event too (its IP as enrichment truncated it)
    assert {**again, "ip": raw_event["ip"]} == raw_event and again["ip"] == "203.0.113.0"
    assert read_log(log_path, settings.bus.topic_enriched) == []  # embedded: no enriched topic is read

    recorded = store.query(
        f"SELECT dead_letter_id, replay_id, topic, records, message_ids FROM "
        f"{settings.storage.database}.dead_letter_replays ORDER BY replayed_at, dead_letter_id"
    )
    assert len(recorded) == 3 and {r["replay_id"] for r in recorded} == {"r1"}
    assert all(r["message_ids"] == ["m1"] and r["topic"] == settings.bus.topic_raw for r in recorded)

    assert asyncio.run(replay())["selected"] == 0  # replayed before: skipped
    unreadable = asyncio.run(replay(payload_type="none"))  # asked for: selected, and nothing can be sent
    assert unreadable["replayed"] == 0 and [s["reason"][:18] for s in unreadable["skipped"]] == ["unreadable payload"]
    dl = DeadLetters(lambda: store, lambda: None, settings)  # type: ignore[arg-type,return-value]
    listed = run(dl.list(Filter(replayed=True), None, 50))["rows"]
    assert len(listed) == 3 and all(r["replays"] == 1 and r["last_replayed_at"] for r in listed)
    shown = run(dl.show(listed[2]["id"]))
    assert shown["payload_type"] == "enriched_event" and orjson.loads(shown["payload"])["message_id"] == "m1"
    assert [r["replay_id"] for r in shown["replays"]] == ["r1"]
    assert run(dl.show("0" * 16)) is None

    again = asyncio.run(replay(again=True, limit=2, stage="enrich"))
    assert (again["selected"], again["replayed"]) == (2, 2) and again["next"] is not None


def test_on_kafka_an_enriched_event_goes_to_the_enriched_topic_as_it_was(store: Storage, settings: Settings) -> None:
    rows = seed(store)
    settings = settings.model_copy(update={"bus": settings.bus.model_copy(update={"kind": "kafka"})})
    enriched = {**rows["enriched_event"], "payload_type": "enriched_event"}
    out = outgoing(enriched, settings)
    assert not isinstance(out, str)
    assert out.topic == settings.bus.topic_enriched and out.message_ids == ["m1"]
    assert orjson.loads(out.records[0][1]) == orjson.loads(enriched["payload"])
    raw = outgoing({**rows["raw_event"], "payload_type": "raw_event"}, settings)
    assert not isinstance(raw, str) and raw.topic == settings.bus.topic_raw
    bad_batch = {**rows["raw_batch"], "payload_type": "raw_batch", "payload": '{"site_id": 1, "body": 5}'}
    wrong = outgoing(bad_batch, settings)
    assert isinstance(wrong, str) and "not a raw_batch" in wrong


def test_a_refused_client_event_goes_back_in_a_raw_batch_of_its_site(store: Storage, settings: Settings) -> None:
    item = {"anonymousId": "c1", "messageId": "mc1", "event": "Signed Up"}  # no type: unfold refused it
    store.insert(
        "dead_letters", [row("enrich", "invalid", "not an event: KeyError: 'type'", orjson.dumps(item), "13:00")]
    )
    dl = DeadLetters(lambda: store, lambda: None, settings)  # type: ignore[arg-type,return-value]
    [listed] = run(dl.list(Filter(), None, 50))["rows"]
    assert listed["payload_type"] == "client_event"
    out = outgoing({**listed, "payload": orjson.dumps(item).decode(), "payload_encoding": "utf-8"}, settings)
    assert not isinstance(out, str) and out.topic == settings.bus.topic_raw and out.message_ids == ["mc1"]
    [(key, value)] = out.records
    batch = orjson.loads(value)
    assert key == b"s1:c1" and batch["site_id"] == "s1" and batch["body"]["batch"] == [item]
    assert batch["received_at"] == "2026-11-02T13:00:00Z"  # when it failed: the request's time is not kept
