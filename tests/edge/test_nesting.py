"""One nesting limit at the edge (ingest.validate.MAX_DEPTH = 32 levels from the event object):
a deeper event is rejected alone, with a reason, on every way in, and everything accepted is stored
(every later serializer handles it)."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from ingest.validate import MAX_DEPTH
from tests.conftest import Server


def lists(levels: int) -> Any:
    """``levels`` nested lists: lists(1) == []."""
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def deep_body(body: dict[str, Any], levels: int) -> bytes:
    """``body`` as JSON with each "DEEP" string replaced by ``levels`` nested lists (orjson, like any
    careful serializer, refuses to write them)."""
    return orjson.dumps(body).replace(b'"DEEP"', b"[" * levels + b"]" * levels)


def event(anon: str, depth: int | None = None, message_id: bool = True) -> dict[str, Any]:
    """A track event; with ``depth``, nested exactly that deep (event 1, properties 2, lists below)."""
    ev: dict[str, Any] = {"type": "track", "event": "Nested", "anonymousId": anon}
    if message_id:
        ev["messageId"] = str(uuid.uuid4())
    if depth is not None:
        ev["properties"] = {"a": lists(depth - 2)}
    return ev


def count(server: Server, anon: str) -> str:
    return f"SELECT count() FROM trailmark.events WHERE anonymous_id = '{anon}'"


def test_limit_is_32() -> None:
    assert MAX_DEPTH == 32


def test_deep_event_is_rejected_alone_on_the_fast_path(server: Server) -> None:
    # the reproduction: properties.a = 300 nested arrays, in a one-visitor batch
    anon = f"deep-{uuid.uuid4()}"
    deep = {**event(anon), "properties": {"a": "DEEP"}}
    r = server.post("/v1/batch", deep_body({"batch": [event(anon), deep, event(anon)]}, 300))
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 2
    assert [x["index"] for x in r.json()["rejected"]] == [1]
    assert "nested deeper than 32 levels" in r.json()["rejected"][0]["error"]
    server.wait_for(count(server, anon), 2)
    # storage keeps going for later events
    later = f"later-{uuid.uuid4()}"
    assert server.post("/v1/batch", {"batch": [event(later)]}).json()["accepted"] == 1
    server.wait_for(count(server, later), 1)


def test_boundary_on_fast_slow_and_single_paths(server: Server) -> None:
    anon = f"edge-{uuid.uuid4()}"
    other = f"other-{uuid.uuid4()}"
    fast = [event(anon, MAX_DEPTH), event(anon, MAX_DEPTH + 1)]
    r = server.post("/v1/batch", {"batch": fast})
    assert r.json()["accepted"] == 1 and [x["index"] for x in r.json()["rejected"]] == [1], r.text
    # slow paths: missing messageIds, two visitors, and an invalid event next to a deep one
    for batch in (
        [event(anon, MAX_DEPTH, False), event(anon, MAX_DEPTH + 1, False)],
        [event(anon, MAX_DEPTH), event(other, MAX_DEPTH + 1)],
    ):
        r = server.post("/v1/batch", {"batch": batch})
        assert r.json()["accepted"] == 1 and [x["index"] for x in r.json()["rejected"]] == [1], r.text
    r = server.post("/v1/batch", {"batch": [event(anon, MAX_DEPTH), event(anon, 40), {"type": "nope"}]})
    assert r.json()["accepted"] == 1 and [x["index"] for x in r.json()["rejected"]] == [1, 2], r.text
    assert "nested deeper" in r.json()["rejected"][0]["error"]
    # single-event endpoint
    r = server.post("/v1/track", event(anon, MAX_DEPTH + 1))
    assert r.status_code == 200 and r.json()["accepted"] == 0, r.text
    assert "nested deeper" in r.json()["rejected"][0]["error"]
    assert server.post("/v1/track", event(anon, MAX_DEPTH)).json()["accepted"] == 1
    # the accepted 32-level events are stored, nesting intact
    server.wait_for(count(server, anon), 5)
    rows = server.sql(f"SELECT properties FROM trailmark.events WHERE anonymous_id = '{anon}' LIMIT 1")
    props = rows[0]["properties"]
    assert orjson.loads(props) if isinstance(props, str) else props


def test_deep_ignored_field_does_not_reach_the_bus(server: Server) -> None:
    # nesting outside the events (a field the collector ignores) used to be forwarded as raw bytes
    anon = f"junk-{uuid.uuid4()}"
    r = server.post("/v1/batch", deep_body({"batch": [event(anon)], "junk": "DEEP"}, 1000))
    assert r.status_code == 200 and r.json()["accepted"] == 1 and not r.json()["rejected"], r.text
    server.wait_for(count(server, anon), 1)


def test_deep_ignored_event_field_is_rejected(server: Server) -> None:
    anon = f"extra-{uuid.uuid4()}"
    deep = {**event(anon), "integrations": {"x": lists(40)}}
    r = server.post("/v1/batch", {"batch": [event(anon), deep]})
    assert r.json()["accepted"] == 1 and [x["index"] for x in r.json()["rejected"]] == [1], r.text
    r = server.post("/v1/batch", {"batch": [event(anon, message_id=False), {**deep, "messageId": None}]})
    assert r.json()["accepted"] == 1 and [x["index"] for x in r.json()["rejected"]] == [1], r.text
