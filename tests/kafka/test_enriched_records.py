"""The enriched topic's records (trailmark/runtime.py): the enricher writes a run of one visitor's
events as one record (the field names once, each event as a row of values), and the journey builder
reads those as well as single-event records (dead-letter replays) and arrays of events (records
written before runs named their fields). The real enrichment stage; no broker is needed to
check the records themselves (tests/kafka/test_stages.py reads them off the real broker)."""

from __future__ import annotations

import gc
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import JSON_TEXT_FIELDS, json_object, json_text
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
    runs = [(o.key, len(orjson.loads(o.value)["rows"])) for o in out.ok]
    assert runs[0] == (b"s1:a", 5)
    assert {k for k, _ in runs[1:]} == {b"s1:b"} and sum(n for _, n in runs[1:]) == ENRICHED_RUN_MAX_EVENTS + 5
    assert len(runs) > 2 and all(n <= ENRICHED_RUN_MAX_EVENTS for _, n in runs)
    assert all(len(o.value) < ENRICHED_RUN_MAX_BYTES + 4096 for o in out.ok)
    records = [Message("trailmark.enriched", 0, i, o.key, o.value) for i, o in enumerate(out.ok)]
    back = parse_enriched(records)
    assert back.failed == []
    direct = stage.process(raw).ok
    assert [(o.key, o.value["message_id"]) for o in back.ok] == [(o.key, o.value["message_id"]) for o in direct]
    # the JSON-object fields come back as their JSON text (schemas.JSON_TEXT_FIELDS), the rest as they were
    texts = {n for n in JSON_TEXT_FIELDS if n in direct[0].value}
    assert texts >= {"properties", "traits", "context"}
    for got, want in zip(back.ok, direct, strict=True):
        assert all(type(got.value[n]) is str for n in texts)  # type: ignore[literal-required]
        assert {k: orjson.loads(v) if k in texts else v for k, v in got.value.items()} == orjson.loads(
            orjson.dumps(want.value)
        ) | {"enrich_errors": ()}
        # holding no container, the dict is never walked by the cyclic GC (trailmark/runtime.py, _errors_at)
        assert not gc.is_tracked(got.value)


def test_an_events_enrichment_errors_read_back_as_they_were_written() -> None:
    """An empty ``enrich_errors`` reads back as an empty tuple (no container: the event's dict stays
    out of the cyclic GC); errors read back as a list of the same strings, in the same order."""
    stage = EnrichStage(Settings(), {})
    (record,) = stage.serialized([raw_record("a", 3)]).ok
    run = orjson.loads(record.value)
    at = run["fields"].index("enrich_errors")
    run["rows"][1][at] = ["geo: lookup failed", "email: bad"]
    run["rows"][2][at] = "not a list"  # another producer's: left for the builder's checks, as it came
    back = parse_enriched([Message("t", 0, 0, record.key, orjson.dumps(run))])
    assert [o.value["enrich_errors"] for o in back.ok] == [(), ["geo: lookup failed", "email: bad"], "not a list"]
    assert [gc.is_tracked(o.value) for o in back.ok] == [False, True, False]
    # the same record as another producer may write it (a space before it: read whole, not by _run_of)
    whole = parse_enriched([Message("t", 0, 0, record.key, b" " + orjson.dumps(run))])
    assert [o.value for o in whole.ok] == [o.value for o in back.ok]


def test_json_object_fields_travel_as_text_and_read_back_as_objects() -> None:
    raw = raw_record(
        "a", 2, properties={"plan": "pro", "n": [1, 2]}, context={"page": {"path": "/x"}, "consent": [1, False, True]}
    )
    (record,) = EnrichStage(Settings(), {}).serialized([raw]).ok
    run = orjson.loads(record.value)
    row = dict(zip(run["fields"], run["rows"][0], strict=True))
    assert row["properties"] == '{"plan":"pro","n":[1,2]}'
    assert json_object(row["properties"]) == {"plan": "pro", "n": [1, 2]}
    assert json_object(row["context"])["consent"] == [1, False, True]
    assert json_text(row["context"]) is row["context"] and json_text({"a": 1}) == '{"a":1}' and json_text(None) == "{}"
    assert json_object(None) == {} and json_object("[1]") == {} and json_object({"a": 1}) == {"a": 1}
    with pytest.raises(ValueError):  # text that is not JSON fails its event (dead-lettered by the builder's stage)
        json_object("{not json")


def test_an_event_no_json_can_hold_is_dead_lettered_alone() -> None:
    # Properties nested 300 deep: orjson reads them (up to 1024 levels) but writes at most 254.
    deep = b'{"d":' * 300 + b'"bottom"' + b"}" * 300
    raw = raw_record("a", 3, properties={"deep": "@"})
    record = raw._replace(value=raw.value.replace(b'"@"', deep, 1))
    out = EnrichStage(Settings(), {}).serialized([record])
    assert [f.kind for f in out.failed] == ["unserializable"] and out.ok_events == 2
    back = parse_enriched([Message("t", 0, i, o.key, o.value) for i, o in enumerate(out.ok)])
    assert len(out.ok) == 1 and [e.value["message_id"] for e in back.ok] == ["a-1", "a-2"]


def test_a_run_names_its_fields_once_and_is_about_half_the_bytes_of_a_list_of_objects() -> None:
    out = EnrichStage(Settings(), {}).serialized([raw_record("a", 50)])
    (record,) = out.ok
    run = orjson.loads(record.value)
    assert set(run) == {"fields", "rows"} and len(run["rows"]) == 50
    assert all(len(row) == len(run["fields"]) for row in run["rows"])
    objects = orjson.dumps([dict(zip(run["fields"], row, strict=True)) for row in run["rows"]])
    assert len(record.value) < 0.7 * len(objects)


def test_the_builder_reads_runs_single_events_arrays_and_dead_letters_the_rest() -> None:
    event = {"message_id": "m1", "anonymous_id": "a"}
    fields = ["message_id", "anonymous_id"]
    records = [
        orjson.dumps(event),  # one event per record: dead-letter replays
        orjson.dumps([{**event, "message_id": "m2"}, 7, {**event, "message_id": "m3"}]),  # an item not an event
        b"[1, 2",  # not JSON
        b'"text"',  # JSON, not an event
        # a run: a row of the wrong width or not a list is dead-lettered alone, the others are read
        orjson.dumps({"fields": fields, "rows": [["m4", "a"], ["m5"], "m6", ["m7", "b"]]}),
        orjson.dumps({"fields": ["message_id", "message_id"], "rows": [["m8", "m9"]]}),  # a name twice
        orjson.dumps({"fields": "message_id", "rows": []}),  # names not a list
        orjson.dumps({"fields": fields, "rows": {"m10": "a"}}),  # rows not a list
    ]
    out = parse_enriched([Message("t", 0, i, b"k", v) for i, v in enumerate(records)])
    assert [o.value["message_id"] for o in out.ok] == ["m1", "m2", "m3", "m4", "m7"]
    assert out.ok[-1].value == {"message_id": "m7", "anonymous_id": "b"}
    assert [(f.kind, f.reason) for f in out.failed] == [
        ("invalid", "not an event: a JSON int"),
        ("unreadable", out.failed[1].reason),
        ("invalid", "not an event: a JSON str"),
        ("invalid", "not a row of 2 fields"),
        ("invalid", "not a row of 2 fields"),
        ("invalid", "not a run of events: fields or rows malformed"),
        ("invalid", "not a run of events: fields or rows malformed"),
        ("invalid", "not a run of events: fields or rows malformed"),
    ]
    assert out.failed[1].reason.startswith("not JSON")
    assert [f.payload for f in out.failed[3:5]] == [["m5"], "m6"]


# any text, with what separates a run's names from its rows (',"rows":') or closes the record
_text = st.lists(st.sampled_from(["a", "é", '"', "\\", ",", ":", "[", "]", "{", "}", ',"rows":', " "]), max_size=6).map(
    "".join
)
_value = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    _text,
    st.lists(_text, max_size=2),
    st.dictionaries(_text, _text, max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(
    names=st.lists(_text, max_size=4),
    rows=st.lists(st.one_of(st.lists(_value, max_size=5), _value), max_size=4),
    tail=st.sampled_from(["", " ", ',"message_id":"x"', ',"rows":[["z"]]', ',"fields":["q"]']),
)
def test_a_run_reads_as_the_same_record_read_whole(names: list[str], rows: list[Any], tail: str) -> None:
    """Runs are read with their names once per distinct list (trailmark/runtime.py, ``_run_of``): any
    record reads as it does when read whole (a leading space takes the other path), whatever text
    its names hold, and with a key after the rows, a second "rows" or a second "fields"."""
    record = orjson.dumps({"fields": names, "rows": rows})[:-1] + tail.encode() + b"}"
    fast = parse_enriched([Message("t", 0, 0, b"k", record)])
    whole = parse_enriched([Message("t", 0, 0, b"k", b" " + record)])
    assert [o.value for o in fast.ok] == [o.value for o in whole.ok]
    assert [(f.kind, f.reason.split(":")[0]) for f in fast.failed] == [
        (f.kind, f.reason.split(":")[0]) for f in whole.failed
    ]  # (orjson's message for unreadable text gives positions, one further with the space)
    assert [f.payload.strip() if type(f.payload) is bytes else f.payload for f in fast.failed] == [
        f.payload.strip() if type(f.payload) is bytes else f.payload for f in whole.failed
    ]


def test_a_runs_names_are_read_once_per_list_and_the_lists_kept_are_bounded() -> None:
    from trailmark import runtime

    same = [orjson.dumps({"fields": ["message_id", "anonymous_id"], "rows": [[f"m{i}", "a"]]}) for i in range(2)]
    many = [orjson.dumps({"fields": [f"f{i}"], "rows": [[i]]}) for i in range(3 * runtime._RUN_NAMES_MAX)]
    wide = orjson.dumps({"fields": [f"x{i:05}" for i in range(1000)], "rows": [list(range(1000))]})
    out = parse_enriched([Message("t", 0, i, b"k", v) for i, v in enumerate([*same, *many, wide])])
    assert len(out.ok) == 3 + 3 * runtime._RUN_NAMES_MAX and not out.failed
    first, second = (list(o.value) for o in out.ok[:2])
    assert all(a is b for a, b in zip(first, second, strict=True))  # one set of key objects for both events
    assert out.ok[-1].value["x00999"] == 999
    assert 0 < len(runtime._RUN_NAMES) <= runtime._RUN_NAMES_MAX
    assert all(len(head) <= runtime._RUN_HEAD_MAX_BYTES for head in runtime._RUN_NAMES)
