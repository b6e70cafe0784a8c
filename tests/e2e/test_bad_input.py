"""Every bad input gets the documented 4xx, never a 5xx, and loses nothing else in its batch."""

from __future__ import annotations

import gzip
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from tests.conftest import Server


def good(anon: str) -> dict[str, Any]:
    return {"type": "track", "event": "Good", "anonymousId": anon, "messageId": str(uuid.uuid4())}


def test_not_json_is_400(server: Server) -> None:
    r = server.post("/v1/batch", b"{not json")
    assert r.status_code == 400 and "JSON" in r.json()["error"]


def test_invalid_utf8_is_400(server: Server) -> None:
    r = server.post("/v1/batch", b'{"batch": [{"type": "track", "event": "\xff\xfe", "anonymousId": "x"}]}')
    assert r.status_code == 400


def test_body_not_an_object_or_batch_not_a_list_is_400(server: Server) -> None:
    assert server.post("/v1/batch", [1, 2]).status_code == 400
    assert server.post("/v1/batch", {"batch": "nope"}).status_code == 400


def test_missing_unknown_read_and_admin_keys_cannot_write(server: Server) -> None:
    body = orjson.dumps({"batch": [good("k")]})
    assert httpx.post(server.url + "/v1/batch", content=body).status_code == 401
    assert server.post("/v1/batch", {"batch": [good("k")]}, key="wk_unknown").status_code == 401
    for kind in ("read_key", "admin_key"):
        r = server.post("/v1/batch", {"batch": [good("k")]}, key=server.site[kind])
        assert r.status_code == 403 and "cannot write" in r.json()["message"], r.text


def test_read_endpoints_refuse_write_keys_and_no_keys(server: Server) -> None:
    wk = server.site["write_key"]
    assert httpx.get(server.url + "/v1/journeys/x").status_code == 401
    r = httpx.get(server.url + "/v1/journeys/x", headers={"authorization": f"Bearer {wk}"})
    assert r.status_code == 403
    r = httpx.post(server.url + "/v1/sql", json={"query": "SELECT 1"}, headers={"authorization": f"Bearer {wk}"})
    assert r.status_code == 403


def test_sql_refuses_anything_but_a_select(server: Server) -> None:
    rk = server.site["read_key"]
    for q in [
        "INSERT INTO trailmark.events (message_id) VALUES ('x')",
        "DROP TABLE trailmark.events",
        "CREATE TABLE trailmark.t (a Int8) ENGINE = Memory",
        "SET readonly = 0",
    ]:
        r = httpx.post(server.url + "/v1/sql", json={"query": q}, headers={"authorization": f"Bearer {rk}"})
        assert r.status_code == 400, (q, r.text)
        assert "only select" in r.text.lower(), r.text
    assert server.sql("SELECT 1 AS one") == [{"one": 1}]


def test_wrong_types_reject_only_that_event(server: Server) -> None:
    anon = f"a-{uuid.uuid4()}"
    events: list[Any] = [
        good(anon),
        {"type": "track", "event": {"not": "a string"}, "anonymousId": anon},
        {"type": "launch", "anonymousId": anon},
        {"type": "track", "event": "NoIds"},
        {"type": "track", "event": "BadTime", "anonymousId": anon, "timestamp": "yesterday"},
        {"type": "track", "event": "BadProps", "anonymousId": anon, "properties": [1, 2]},
        "a string, not an event",
        good(anon),
    ]
    r = server.post("/v1/batch", {"batch": events, "sentAt": datetime.now(UTC).isoformat()})
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 2
    assert [x["index"] for x in body["rejected"]] == [1, 2, 3, 4, 5, 6]
    assert all(x["error"] for x in body["rejected"])
    server.wait_for(f"SELECT count() FROM trailmark.events WHERE anonymous_id = '{anon}'", 2)


def test_oversize_body_is_413(server: Server) -> None:
    big = {"batch": [{**good("big"), "properties": {"blob": "x" * 600_000}}]}
    assert server.post("/v1/batch", big).status_code == 413


def test_mixed_visitors_and_missing_message_ids_are_accepted(server: Server) -> None:
    a, b = f"a-{uuid.uuid4()}", f"b-{uuid.uuid4()}"
    events = [good(a), {"type": "track", "event": "NoId", "anonymousId": b}, good(b), {"type": "bad"}]
    r = server.post("/v1/batch", {"batch": events})
    assert r.status_code == 200
    assert r.json()["accepted"] == 3 and [x["index"] for x in r.json()["rejected"]] == [3]
    server.wait_for(f"SELECT count() FROM trailmark.events WHERE anonymous_id IN ('{a}', '{b}')", 3)


def test_ten_thousand_events_in_one_batch_is_413(server: Server) -> None:
    events = [{"type": "track", "event": "e", "anonymousId": "a"} for _ in range(10_000)]
    r = server.post("/v1/batch", {"batch": events})
    assert r.status_code == 413 and "events" in r.json()["error"]


def test_deep_nesting_is_400(server: Server) -> None:
    deep = "[" * 5000 + "]" * 5000
    body = (
        '{"batch": [{"type": "track", "event": "deep", "anonymousId": "a", "properties": {"x": ' + deep + "}}]}"
    ).encode()
    r = server.post("/v1/batch", body)
    assert r.status_code == 400


def test_gzip_bodies_are_accepted_and_gzip_bombs_are_413(server: Server) -> None:
    anon = f"a-{uuid.uuid4()}"
    body = gzip.compress(orjson.dumps({"batch": [good(anon)]}))
    r = server.post("/v1/batch", body, headers={"content-encoding": "gzip"})
    assert r.status_code == 200 and r.json()["accepted"] == 1
    bomb = gzip.compress(orjson.dumps({"batch": [], "pad": "0" * 5_000_000}))
    assert server.post("/v1/batch", bomb, headers={"content-encoding": "gzip"}).status_code == 413
    assert server.post("/v1/batch", b"not gzip", headers={"content-encoding": "gzip"}).status_code == 400


def test_tracker_script_and_pixel(server: Server) -> None:
    r = httpx.get(server.url + "/t.js")
    assert r.status_code in (200, 404)
    if r.status_code == 200:
        etag = r.headers["etag"]
        assert httpx.get(server.url + "/t.js", headers={"if-none-match": etag}).status_code == 304
    anon = f"px-{uuid.uuid4()}"
    r = httpx.get(
        server.url + "/v1/p.gif",
        params={"key": server.site["write_key"], "aid": anon, "url": "https://shop.example.com/mail"},
        headers={
            "user-agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
            "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
        },
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
    server.wait_for(f"SELECT page_path FROM trailmark.events WHERE anonymous_id = '{anon}'", "/mail")
