"""The wire contract the SDKs rely on, checked over HTTP against the real server: the routes each
SDK posts to, the write key where each SDK puts it, CORS on every answer (never with credentials),
a preflight that allows the SDKs' headers, ``code``/``message`` errors and ``success`` answers."""

from __future__ import annotations

import base64
import gzip
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from tests.clients.conftest import by_message_id, parse_time, run_id, stored, wait_stored
from tests.conftest import Server

ORIGIN = "https://shop.example"


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def test_short_segment_paths_store_one_event_each(server: Server) -> None:
    rid = run_id()
    key = server.site["write_key"]
    calls = {
        "t": {"type": "track", "event": "Clicked"},
        "p": {"type": "page", "name": "Home"},
        "i": {"type": "identify", "userId": f"u-{rid}", "traits": {"email": f"{rid}@acme.io"}},
        "g": {"type": "group", "groupId": f"g-{rid}", "traits": {"name": "Acme Inc"}},
        "a": {"type": "alias", "userId": f"u-{rid}", "previousId": f"a-{rid}"},
        "s": {"type": "screen", "name": "Settings"},
    }
    ids = []
    for path, ev in calls.items():
        mid = str(uuid.uuid4())
        ids.append(mid)
        body = {**ev, "anonymousId": f"a-{rid}", "messageId": mid, "writeKey": key}
        r = httpx.post(
            f"{server.url}/v1/{path}",
            content=orjson.dumps(body),
            headers={"content-type": "text/plain", "origin": ORIGIN},
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"success": True, "accepted": 1, "rejected": []}
        assert r.headers["access-control-allow-origin"] == ORIGIN
        assert "access-control-allow-credentials" not in r.headers
    batch = [
        {"type": "track", "event": "Batched", "anonymousId": f"a-{rid}", "messageId": str(uuid.uuid4())}
        for _ in range(3)
    ]
    r = httpx.post(
        f"{server.url}/v1/b",
        content=orjson.dumps({"batch": batch, "writeKey": key}),
        headers={"content-type": "text/plain", "authorization": basic(key)},
    )
    assert r.status_code == 200 and r.json()["accepted"] == 3, r.text
    ids += [e["messageId"] for e in batch]
    rows = wait_stored(server, f"anonymous_id = 'a-{rid}'", len(ids))
    assert by_message_id(rows) == dict.fromkeys(ids, 1)
    assert sorted(r["type"] for r in rows) == sorted([e["type"] for e in calls.values()] + ["track"] * 3)


def test_rudderstack_beacon_route_takes_the_key_from_the_query(server: Server) -> None:
    rid = run_id()
    mid = str(uuid.uuid4())
    body = {
        "batch": [{"type": "track", "event": "Beaconed", "anonymousId": f"a-{rid}", "messageId": mid}],
        "sentAt": datetime.now(UTC).isoformat(),
    }
    r = httpx.post(
        f"{server.url}/beacon/v1/batch?writeKey={server.site['write_key']}",
        content=orjson.dumps(body),
        headers={"content-type": "text/plain;charset=UTF-8", "origin": ORIGIN},
    )
    assert r.status_code == 200 and r.json()["success"] is True, r.text
    assert by_message_id(wait_stored(server, f"anonymous_id = 'a-{rid}'", 1)) == {mid: 1}
    bad = httpx.post(
        f"{server.url}/beacon/v1/batch?writeKey=wk_nope", content=orjson.dumps(body), headers={"origin": ORIGIN}
    )
    assert bad.status_code == 401 and bad.headers["access-control-allow-origin"] == ORIGIN


@pytest.mark.parametrize("method, path, body, status, code", [
    ("POST", "/v1/batch", b'{"batch": []}', 401, "unauthorized"),  # no key
    ("POST", "/v1/t", b'{"type": "track", "writeKey": "wk_wrong"}', 401, "unauthorized"),
    ("GET", "/v1/batch", b"", 405, "method_not_allowed"),
    ("GET", "/v1/t", b"", 405, "method_not_allowed"),
    ("PUT", "/beacon/v1/batch", b"", 405, "method_not_allowed"),
    ("POST", "/beacon/v1/nothing", b"{}", 404, "not_found"),
    ("POST", "/v1/batch", b"{not json", 400, "invalid_request"),
])  # fmt: skip
def test_every_error_has_code_message_and_cors_without_credentials(
    server: Server, method: str, path: str, body: bytes, status: int, code: str
) -> None:
    headers = {"origin": ORIGIN, "content-type": "text/plain"}
    if status == 400:
        headers["authorization"] = basic(server.site["write_key"])
    r = httpx.request(method, server.url + path, content=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["code"] == code and r.json()["message"], r.text
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "access-control-allow-credentials" not in r.headers
    if status == 405:
        assert "POST" in r.headers["allow"]


def test_too_large_answers_413_with_cors(server: Server) -> None:
    key = server.site["write_key"]
    big = b'{"batch": [], "pad": "' + b"x" * 600_000 + b'"}'
    r = httpx.post(server.url + "/v1/batch", content=big, headers={"origin": ORIGIN, "authorization": basic(key)})
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
    assert r.headers["access-control-allow-origin"] == ORIGIN


def test_preflight_allows_the_sdk_headers_and_is_cached(server: Server) -> None:
    asked = "anonymousid, authorization, content-type, sentat, x-retry-count, rsa-request-retry-attempt"
    for path in ("/v1/batch", "/v1/t", "/v1/track", "/beacon/v1/batch"):
        r = httpx.options(server.url + path, headers={"origin": ORIGIN, "access-control-request-method": "POST",
                                                      "access-control-request-headers": asked})  # fmt: skip
        assert r.status_code == 204, path
        assert r.headers["access-control-allow-origin"] == ORIGIN
        assert r.headers["access-control-allow-headers"] == asked
        assert "POST" in r.headers["access-control-allow-methods"]
        assert int(r.headers["access-control-max-age"]) >= 3600
        assert "access-control-allow-credentials" not in r.headers
    # a header list that is not a list of header names is not echoed
    r = httpx.options(server.url + "/v1/batch", headers={"origin": ORIGIN, "access-control-request-headers": "a\tb;c"})
    assert "access-control-allow-headers" not in r.headers


def test_client_time_from_original_timestamp_and_every_field_kept(server: Server) -> None:
    rid = run_id()
    mid = str(uuid.uuid4())
    now = datetime.now(UTC)
    skewed = now - timedelta(hours=3)  # a client clock three hours behind, holding the event 2 s
    ev = {
        "type": "track",
        "event": "Held",
        "anonymousId": f"a-{rid}",
        "messageId": mid,
        "originalTimestamp": skewed.isoformat(),
        "sentAt": (skewed + timedelta(seconds=2)).isoformat(),
        "integrations": {"All": True},
        "channel": "server",
        "newField": {"x": 1},
        "context": {
            "library": {"name": "x", "version": "1"},
            "campaign": {"source": "s"},
            "device": {"id": "d"},
            "app": {"name": "a"},
            "os": {"name": "o"},
            "locale": "de-DE",
            "timezone": "Europe/Berlin",
            "screen": {"width": 3},
            "traits": {"plan": "pro"},
        },
    }
    r = server.post("/v1/batch", {"batch": [ev]})
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    row = wait_stored(server, f"message_id = '{mid}'", 1)[0]
    # corrected: receivedAt - (sentAt - originalTimestamp) = about now - 2 s
    assert abs(parse_time(row["timestamp"]) - (now - timedelta(seconds=2))) < timedelta(seconds=1)
    assert abs(parse_time(row["original_timestamp"]) - skewed) < timedelta(milliseconds=2)
    assert row["extra"] == {"integrations": {"All": True}, "channel": "server", "newField": {"x": 1}}
    assert row["context"] == ev["context"]


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose one site accepts browser events only from https://shop.example."""
    data = tmp_path_factory.mktemp("locked") / "data"
    data.mkdir(parents=True)
    site = {"site_id": "default", "write_key": "wk_locked_" + uuid.uuid4().hex, "read_key": "rk_locked_" +
            uuid.uuid4().hex, "origins": [ORIGIN]}  # fmt: skip
    Path(data / "keys.json").write_bytes(orjson.dumps({"sites": [site]}))
    (data / "keys.json").chmod(0o600)
    srv = Server(data).start()
    yield srv
    srv.stop()


def test_a_refused_origin_reads_403_and_nothing_is_stored(locked: Server) -> None:
    rid = run_id()
    mid = str(uuid.uuid4())
    key = locked.site["write_key"]
    body = orjson.dumps({"batch": [{"type": "track", "event": "X", "anonymousId": f"a-{rid}", "messageId": mid}]})
    evil = "https://evil.example"
    pre = httpx.options(locked.url + "/v1/batch", headers={"origin": evil, "access-control-request-headers":
                                                            "authorization, content-type"})  # fmt: skip
    assert pre.status_code == 204 and "access-control-allow-credentials" not in pre.headers
    r = httpx.post(locked.url + "/v1/batch", content=body, headers={"origin": evil, "authorization": basic(key)})
    # readable (so an SDK stops instead of retrying a network error), never with credentials
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert r.headers["access-control-allow-origin"] == evil
    assert "access-control-allow-credentials" not in r.headers
    ok = httpx.post(
        locked.url + "/v1/batch",
        content=gzip.compress(body),
        headers={"origin": ORIGIN, "authorization": basic(key), "content-encoding": "gzip"},
    )
    assert ok.status_code == 200 and ok.json()["success"] is True, ok.text
    locked.wait_for(f"SELECT count() FROM trailmark.events WHERE anonymous_id = 'a-{rid}'", 1)
    assert [r["message_id"] for r in stored(locked, f"anonymous_id = 'a-{rid}'")] == [mid]
