"""The whole embedded pipeline in a real ``trailmark up`` process: HTTP in, journeys and SQL out."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server

NOW = datetime.now(UTC).replace(microsecond=0)


def ts(minutes: float) -> str:
    return (NOW + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def page(anon: str, path: str, minutes: float, query: str = "", referrer: str = "", **extra: Any) -> dict[str, Any]:
    return {
        "type": "page",
        "messageId": str(uuid.uuid4()),
        "anonymousId": anon,
        "timestamp": ts(minutes),
        "context": {
            "page": {"url": f"https://shop.example.com{path}{query}", "path": path, "referrer": referrer, "title": path}
        },
        **extra,
    }


def track(anon: str, name: str, minutes: float, **extra: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": name,
        "messageId": str(uuid.uuid4()),
        "anonymousId": anon,
        "timestamp": ts(minutes),
        "properties": {"plan": "pro"},
        **extra,
    }


def batch(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {"batch": events, "sentAt": datetime.now(UTC).isoformat()}


def test_two_visitors_become_sessions_touchpoints_and_identities(server: Server) -> None:
    a, b, user = f"a-{uuid.uuid4()}", f"b-{uuid.uuid4()}", f"u-{uuid.uuid4()}"
    events = [
        page(a, "/", -120, "?utm_source=google&utm_medium=cpc&utm_campaign=spring", "https://www.google.com/"),
        page(a, "/pricing", -118),
        track(a, "Signed Up", -117),
        {
            "type": "identify",
            "messageId": str(uuid.uuid4()),
            "anonymousId": a,
            "userId": user,
            "traits": {"email": "Jane.Doe@Example.org", "name": "Jane Doe"},
            "timestamp": ts(-116),
        },
        page(b, "/", -100, referrer="https://www.facebook.com/"),
        page(b, "/blog", -99),
        page(b, "/blog/2", -50),  # 49 minutes idle: a new session
    ]
    r = server.post("/v1/batch", batch(events))
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True, "accepted": 7, "rejected": []}
    server.wait_for(f"SELECT count() FROM trailmark.events WHERE anonymous_id IN ('{a}', '{b}')", 7)

    j = server.read(f"/v1/journeys/{user}")
    assert j.status_code == 200, j.text
    body = j.json()
    assert body["contact_id"] == f"user:{user}"
    assert body["anonymous_ids"] == [a]
    assert [(i["anonymous_id"], i["user_id"], i["email"]) for i in body["identities"]] == [
        (a, user, "jane.doe@example.org")
    ]
    assert len(body["sessions"]) == 1
    s = body["sessions"][0]
    assert (s["channel"], s["source"], s["medium"], s["campaign"]) == ("Paid Search", "google", "cpc", "spring")
    assert (s["landing_page"], s["pageviews"], s["events"], s["converted"]) == ("/", 2, 4, True)
    kinds = [t["kind"] for t in body["touchpoints"]]
    assert kinds == ["session_start", "conversion", "identify"]
    assert [t["timestamp"] for t in body["touchpoints"]] == sorted(t["timestamp"] for t in body["touchpoints"])
    assert body["contact"]["email"] == "jane.doe@example.org"

    jb = server.read(f"/v1/journeys/{b}").json()
    assert jb["contact_id"] == f"anon:{b}"
    assert [(x["landing_page"], x["pageviews"]) for x in jb["sessions"]] == [("/", 2), ("/blog/2", 1)]
    assert jb["sessions"][0]["channel"] == "Organic Social"
    # the email works as a contact handle too, and SQL sees the stitched contact
    assert server.read("/v1/journeys/jane.doe@example.org").json()["contact_id"] == f"user:{user}"
    rows = server.sql(
        f"SELECT contact_id, count() AS n FROM trailmark.sessions WHERE anonymous_id = '{a}' GROUP BY contact_id"
    )
    assert rows == [{"contact_id": f"user:{user}", "n": 1}]


def test_earlier_anonymous_sessions_join_the_contact_when_it_identifies(server: Server) -> None:
    a, user = f"a-{uuid.uuid4()}", f"u-{uuid.uuid4()}"
    assert server.post("/v1/batch", batch([page(a, "/", -300), page(a, "/docs", -200)])).status_code == 200
    server.wait_for(f"SELECT count() FROM trailmark.sessions WHERE anonymous_id = '{a}'", 2)
    assert server.sql(f"SELECT DISTINCT contact_id FROM trailmark.sessions WHERE anonymous_id = '{a}'") == [
        {"contact_id": f"anon:{a}"}
    ]
    ident = {"type": "identify", "messageId": str(uuid.uuid4()), "anonymousId": a, "userId": user, "timestamp": ts(-10)}
    assert server.post("/v1/identify", ident).status_code == 200
    server.wait_for(f"SELECT count() FROM trailmark.sessions WHERE contact_id = 'user:{user}'", 3)
    assert len(server.read(f"/v1/journeys/{user}").json()["sessions"]) == 3


def test_an_event_sent_twice_is_stored_once(server: Server) -> None:
    a = f"a-{uuid.uuid4()}"
    events = [page(a, "/", -5), track(a, "Clicked", -4)]
    for _ in range(3):
        assert server.post("/v1/batch", batch(events)).json()["accepted"] == 2
    marker = page(a, "/after", -1)
    server.post("/v1/batch", batch([marker]))
    server.wait_for(f"SELECT count() FROM trailmark.events WHERE message_id = '{marker['messageId']}'", 1)
    rows = server.sql(
        f"SELECT message_id, count() AS n FROM trailmark.events WHERE anonymous_id = '{a}'"
        " GROUP BY message_id ORDER BY message_id"
    )
    assert sorted(r["n"] for r in rows) == [1, 1, 1]


def test_kill_9_after_acknowledgement_loses_nothing(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data").start()
    sent: list[str] = []
    try:
        for i in range(20):
            events = [track(f"v-{i}-{j % 5}", "Tick", -30 + j / 10) for j in range(50)]
            r = srv.post("/v1/batch", batch(events))
            assert r.status_code == 200 and r.json()["accepted"] == 50
            sent += [e["messageId"] for e in events]
        srv.kill()  # straight after the last 200, before the pipeline has caught up
        srv.start()
        rows = srv.wait_for("SELECT count() FROM trailmark.events", len(sent), timeout=60)
        assert rows[0]["count()"] == 1000
        distinct = srv.sql("SELECT uniqExact(message_id) AS n FROM trailmark.events")[0]["n"]
        assert distinct == 1000
        missing = set(sent) - {r["message_id"] for r in srv.sql("SELECT message_id FROM trailmark.events")}
        assert not missing
    finally:
        srv.stop()


def test_keys_file_is_private_and_reused(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data").start()
    first = srv.site
    srv.stop()
    assert (tmp_path / "data" / "keys.json").stat().st_mode & 0o777 == 0o600
    srv.start()
    try:
        assert srv.site == first
        assert first["site_id"] == "default" and first["origins"] == ["*"]
    finally:
        srv.stop()


@pytest.mark.parametrize("path", ["/v1/track", "/v1/page", "/v1/identify", "/v1/screen", "/v1/group"])
def test_single_event_endpoints(server: Server, path: str) -> None:
    a = f"a-{uuid.uuid4()}"
    body: dict[str, Any] = {
        "anonymousId": a,
        "event": "Thing",
        "name": "Home",
        "userId": f"u-{a}",
        "groupId": "g1",
        "messageId": str(uuid.uuid4()),
    }
    r = server.post(path, body)
    assert r.status_code == 200 and r.json() == {"success": True, "accepted": 1, "rejected": []}, r.text
    kind = path.rsplit("/", 1)[1]
    server.wait_for(f"SELECT type FROM trailmark.events WHERE anonymous_id = '{a}'", kind)


def test_write_key_in_body_works_for_beacons(server: Server) -> None:
    a = f"a-{uuid.uuid4()}"
    body = {**batch([page(a, "/", -1)]), "writeKey": server.site["write_key"]}
    import httpx

    r = httpx.post(
        server.url + "/v1/batch", content=__import__("orjson").dumps(body), headers={"content-type": "text/plain"}
    )
    assert r.status_code == 200 and r.json()["accepted"] == 1


def test_clock_skew_is_corrected_from_sent_at(server: Server) -> None:
    a = f"a-{uuid.uuid4()}"
    # the client's clock is 2 hours fast: its timestamp and sentAt are both 2 h ahead
    fast = datetime.now(UTC) + timedelta(hours=2)
    ev = {
        "type": "track",
        "event": "Skewed",
        "anonymousId": a,
        "messageId": str(uuid.uuid4()),
        "timestamp": (fast - timedelta(seconds=30)).isoformat(),
    }
    server.post("/v1/batch", {"batch": [ev], "sentAt": fast.isoformat()})
    rows = server.wait_for(f"SELECT count() FROM trailmark.events WHERE anonymous_id = '{a}'", 1)
    assert rows
    row = server.sql(
        f"SELECT dateDiff('second', timestamp, received_at) AS lag,"
        f" dateDiff('second', original_timestamp, timestamp) AS shift FROM trailmark.events"
        f" WHERE anonymous_id = '{a}'"
    )[0]
    assert 28 <= row["lag"] <= 32
    assert -7205 <= row["shift"] <= -7195
