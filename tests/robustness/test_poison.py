"""No record stops the pipeline: events no serializer can write, and dead letters storage refuses.

The records go straight into the server's embedded log, past the collector's checks, as events
from an older version or another producer would (issue 9: one event 300 arrays deep made the
builder's serializer fail, then the dead-letter path the same way; the stage crash-looped, later
events were never stored and /readyz stayed ready).
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import Server
from tests.robustness.helpers import (
    DEAD_LETTER,
    KEEP_LOG,
    RAW,
    append,
    dead_letters_on_log,
    json_with,
    metric,
    offline_query,
    raw_record,
    readyz,
    wait_consumed,
)


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "data", env=KEEP_LOG).start()
    yield server
    server.stop()


def no_restarts(server: Server) -> None:
    status, body = readyz(server)
    assert status == 200, body
    assert metric(server, "trailmark_stage_restarts_total") == 0, server.tail()


def test_an_event_300_arrays_deep_is_dead_lettered_and_later_events_are_stored(srv: Server) -> None:
    sid, anon, mid = srv.site["site_id"], f"deep-{uuid.uuid4()}", str(uuid.uuid4())
    deep = "[" * 300 + "]" * 300
    body = json_with(
        {
            "batch": [
                {"type": "track", "event": "Deep", "anonymousId": anon, "messageId": mid, "properties": {"a": "@deep@"}}
            ]
        },
        deep=deep,
    )
    append(srv, RAW, [(f"{sid}:{anon}".encode(), raw_record(sid, body))])
    later = f"later-{uuid.uuid4()}"
    r = srv.post("/v1/batch", {"batch": [{"type": "track", "event": "Later", "anonymousId": later}]})
    assert r.status_code == 200, r.text

    srv.wait_for(f"SELECT count() FROM trailmark.events WHERE anonymous_id = '{later}'", 1)
    # a batch's dead letters are sent once its events are written: they may follow a moment later
    deadline = time.time() + 20
    while not (rows := [d for d in dead_letters_on_log(srv) if mid in d["payload"]]):
        assert time.time() < deadline, srv.tail()
        time.sleep(0.1)
    assert [r["stage"] for r in rows] == ["journeys"], rows
    assert "Recursion limit" in rows[0]["reason"] and "repr" in rows[0]["reason"], rows
    assert rows[0]["payload"].count("[") >= 300, "the payload keeps the event's content"
    assert srv.sql(f"SELECT count() AS n FROM trailmark.events WHERE message_id = '{mid}'") == [{"n": 0}]
    no_restarts(srv)
    # counted as what it is (issue 10, defect 5: dead letters were counted as ok)
    stage = "enrich+journeys"
    assert metric(srv, "trailmark_stage_records_total", stage=stage, outcome="dead_letter") == 1
    assert metric(srv, "trailmark_stage_records_total", stage=stage, outcome="ok") == 1  # the later event
    wait_consumed(srv, DEAD_LETTER, "trailmark-dead-letters")
    srv.stop()
    stored = offline_query(
        srv, f"SELECT stage, reason FROM trailmark.dead_letters WHERE position(payload, '{mid}') > 0"
    )
    assert [r["stage"] for r in stored] == ["journeys"], stored


def dead(raw: dict[str, str] | None = None, **fields: Any) -> bytes:
    """A dead-letter record; ``fields`` override the well-formed defaults, ``raw`` as in json_with."""
    return json_with(
        {
            "stage": "enrich",
            "reason": "r",
            "payload": "p",
            "payload_encoding": "utf-8",
            "failed_at": "2026-11-02T10:00:00.000+00:00",
            "version": 1,
            **fields,
        },
        **(raw or {}),
    )


def test_the_dead_letter_sink_stores_whatever_reaches_its_topic(srv: Server) -> None:
    mark = uuid.uuid4().hex[:12]
    garbage = b"\xff\xfe not a dead letter " + mark.encode()
    deep = "[" * 300 + "]" * 300
    records = [
        garbage,  # neither UTF-8 nor JSON: kept whole, base64
        orjson.dumps([f"{mark}-list"]),  # JSON, but not an object
        dead(reason=f"{mark}-time", failed_at="yesterday"),  # a time ClickHouse cannot parse: a minimal row
        dead(stage=["x"], reason=None, payload={"k": f"{mark}-types"}, version="@big@", raw={"big": str(2**70)}),
        dead(reason=f"{mark}-deep", payload="@deep@", raw={"deep": deep}),  # 300 levels: JSON can read it, not write it
        dead(reason=f"{mark}-normal"),  # and the ones after them still arrive
    ]
    append(srv, DEAD_LETTER, [(b"", r) for r in records])
    wait_consumed(srv, DEAD_LETTER, "trailmark-dead-letters")
    no_restarts(srv)
    srv.stop()
    rows = offline_query(
        srv,
        "SELECT stage, reason, payload, payload_encoding, version FROM trailmark.dead_letters"
        f" WHERE position(reason, '{mark}') > 0 OR position(payload, '{mark}') > 0"
        f" OR payload = '{base64.b64encode(garbage).decode()}' ORDER BY reason",
    )
    by = {
        next(
            (k for k in ("list", "time", "types", "deep", "normal") if f"{mark}-{k}" in r["reason"] + r["payload"]),
            "garbage",
        ): r
        for r in rows
    }
    assert set(by) == {"garbage", "list", "time", "types", "deep", "normal"}, rows
    assert (by["garbage"]["stage"], by["garbage"]["payload_encoding"]) == ("unknown", "base64")
    assert base64.b64decode(by["garbage"]["payload"]) == garbage
    assert by["garbage"]["reason"].startswith("unreadable dead letter: not JSON")
    assert by["list"]["stage"] == "unknown" and by["list"]["payload"] == f'["{mark}-list"]'
    assert "minimal row" in by["time"]["reason"] and by["time"]["payload_encoding"] == "base64"
    assert b"yesterday" in base64.b64decode(by["time"]["payload"]), "the refused row is kept whole"
    assert by["types"]["stage"] == '["x"]' and by["types"]["version"] == 0
    assert orjson.loads(by["types"]["payload"]) == {"k": f"{mark}-types"}
    assert by["deep"]["payload"].count("[") == 300
    assert (by["normal"]["stage"], by["normal"]["payload"], by["normal"]["version"]) == ("enrich", "p", 1)


def test_traits_no_serializer_can_write_fail_their_event_not_the_contacts_later_ones(srv: Server) -> None:
    sid, user, anon = srv.site["site_id"], f"u-{uuid.uuid4()}", f"a-{uuid.uuid4()}"
    bad, later = str(uuid.uuid4()), [str(uuid.uuid4()), str(uuid.uuid4())]
    body = json_with(
        {
            "batch": [
                {
                    "type": "identify",
                    "anonymousId": anon,
                    "userId": user,
                    "messageId": bad,
                    "traits": {"deep": "@deep@"},
                }
            ]
        },
        deep="[" * 300 + "]" * 300,
    )
    append(srv, RAW, [(f"{sid}:{anon}".encode(), raw_record(sid, body))])
    deadline = time.time() + 20
    while not any(bad in d["payload"] for d in dead_letters_on_log(srv)):
        assert time.time() < deadline, srv.tail()
        time.sleep(0.1)
    events = [
        {"type": "identify", "anonymousId": anon, "userId": user, "messageId": later[0], "traits": {"plan": "pro"}},
        {"type": "track", "event": "Later", "anonymousId": anon, "userId": user, "messageId": later[1]},
    ]
    assert srv.post("/v1/batch", {"batch": events}).status_code == 200
    srv.wait_for(f"SELECT count() FROM trailmark.events WHERE message_id IN ('{later[0]}', '{later[1]}')", 2)
    assert [d for d in dead_letters_on_log(srv) if later[0] in d["payload"] or later[1] in d["payload"]] == []
    no_restarts(srv)
