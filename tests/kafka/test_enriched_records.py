"""The enriched topic's records (trailmark/runtime.py): the enricher writes a run of one visitor's
events as one record, a JSON array, and the journey builder reads those as well as single-event
records (older records, dead-letter replays). The real enrichment stage; no broker is needed to
check the records themselves (tests/kafka/test_stages.py reads them off the real broker)."""

from __future__ import annotations

from typing import Any

import orjson

from trailmark.bus.base import Message
from trailmark.runtime import ENRICHED_RUN_MAX_BYTES, ENRICHED_RUN_MAX_EVENTS, EnrichStage, parse_enriched
from trailmark.settings import Settings

T0 = "2026-12-01T10:00:00+00:00"


def raw_record(visitor: str, n: int, first: int = 0, **fields: Any) -> Message:
    events = [
        {"type": "track", "event": "e", "anonymousId": visitor, "messageId": f"{visitor}-{first + i}", **fields}
        for i in range(n)
    ]
    batch = {
        "v": 1,
        "site_id": "s1",
        "received_at": T0,
        "ip": "81.2.69.142",
        "user_agent": "",
        "body": {"batch": events},
    }
    return Message("trailmark.raw", 0, 0, f"s1:{visitor}".encode(), orjson.dumps(batch))


def test_a_visitors_run_of_events_is_one_record_and_reads_back_the_same() -> None:
    stage = EnrichStage(Settings(), {})
    raw = [raw_record("a", 3), raw_record("a", 2, first=3), raw_record("b", ENRICHED_RUN_MAX_EVENTS + 5)]
    out = stage.serialized(raw)
    assert out.failed == [] and out.dropped == []
    assert out.ok_events == 3 + 2 + ENRICHED_RUN_MAX_EVENTS + 5  # what the runner counts: events, not records
    # a's two requests are consecutive: one record; b's run is split at the caps
    runs = [(o.key, len(orjson.loads(o.value))) for o in out.ok]
    assert runs[0] == (b"s1:a", 5)
    assert {k for k, _ in runs[1:]} == {b"s1:b"} and sum(n for _, n in runs[1:]) == ENRICHED_RUN_MAX_EVENTS + 5
    assert len(runs) > 2 and all(n <= ENRICHED_RUN_MAX_EVENTS for _, n in runs)
    assert all(len(o.value) < ENRICHED_RUN_MAX_BYTES + 4096 for o in out.ok)
    records = [Message("trailmark.enriched", 0, i, o.key, o.value) for i, o in enumerate(out.ok)]
    back = parse_enriched(records)
    assert back.failed == []
    direct = stage.process(raw).ok
    assert [(o.key, o.value["message_id"]) for o in back.ok] == [(o.key, o.value["message_id"]) for o in direct]
    assert [o.value for o in back.ok] == [orjson.loads(orjson.dumps(o.value)) for o in direct]


def test_an_event_no_json_can_hold_is_dead_lettered_alone() -> None:
    # Properties nested 300 deep: orjson reads them (up to 1024 levels) but writes at most 254.
    deep = b'{"d":' * 300 + b'"bottom"' + b"}" * 300
    raw = raw_record("a", 3, properties={"deep": "@"})
    record = raw._replace(value=raw.value.replace(b'"@"', deep, 1))
    out = EnrichStage(Settings(), {}).serialized([record])
    assert [f.kind for f in out.failed] == ["unserializable"] and out.ok_events == 2
    assert [[e["message_id"] for e in orjson.loads(o.value)] for o in out.ok] == [["a-1", "a-2"]]


def test_the_builder_reads_single_events_arrays_and_dead_letters_the_rest() -> None:
    event = {"message_id": "m1", "anonymous_id": "a"}
    records = [
        orjson.dumps(event),  # one event per record: older records, dead-letter replays
        orjson.dumps([{**event, "message_id": "m2"}, 7, {**event, "message_id": "m3"}]),  # an item not an event
        b"[1, 2",  # not JSON
        b'"text"',  # JSON, not an event
    ]
    out = parse_enriched([Message("t", 0, i, b"k", v) for i, v in enumerate(records)])
    assert [o.value["message_id"] for o in out.ok] == ["m1", "m2", "m3"]
    assert [(f.kind, f.reason) for f in out.failed] == [
        ("invalid", "not an event: a JSON int"),
        ("unreadable", out.failed[1].reason),
        ("invalid", "not an event: a JSON str"),
    ]
    assert out.failed[1].reason.startswith("not JSON")
