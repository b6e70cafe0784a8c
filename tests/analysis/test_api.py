"""/v1/retention, /v1/personas, /v1/kpis and /v1/moments through a real ``trailmark up``: answers
computed by hand, 400s for bad parameters, the write key refused, every route in OpenAPI."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server


def _monday_two_weeks_ago() -> datetime:
    now = datetime.now(UTC)
    this_monday = datetime(now.year, now.month, now.day, tzinfo=UTC) - timedelta(days=now.weekday())
    return this_monday - timedelta(weeks=2)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, datetime]]:
    """x1: week 0 and week 1 (NPS 9 there), /webinar; x2: week 0, /webinar, buys for 50; x3: week 1."""
    server = Server(tmp_path_factory.mktemp("insights") / "data").start()
    w0 = _monday_two_weeks_ago()

    def ev(kind: str, anon: str, at: datetime, **kw: Any) -> dict[str, Any]:
        path = kw.pop("path", "/")
        return {
            "type": kind,
            "messageId": str(uuid.uuid4()),
            "anonymousId": anon,
            "timestamp": at.isoformat(),
            "context": {"page": {"url": f"https://shop.example.com{path}", "path": path}},
            **kw,
        }

    h = timedelta(hours=1)
    batches = [
        [ev("page", "x1", w0 + h), ev("page", "x1", w0 + h + timedelta(minutes=1), path="/webinar")],
        [
            ev("page", "x1", w0 + timedelta(days=7) + h),
            ev("track", "x1", w0 + timedelta(days=7) + 2 * h, event="NPS Answered", properties={"score": 9}),
        ],
        [
            ev("page", "x2", w0 + 2 * h),
            ev("page", "x2", w0 + 2 * h + timedelta(minutes=1), path="/webinar"),
            ev("track", "x2", w0 + 2 * h + timedelta(minutes=2), event="Order Completed", properties={"revenue": 50}),
        ],
        [ev("page", "x3", w0 + timedelta(days=8))],
    ]
    try:
        for batch in batches:
            assert server.post("/v1/batch", {"batch": batch}).status_code == 200
        server.wait_for("SELECT count() FROM trailmark.events", 8)
        server.wait_for("SELECT count() FROM trailmark.stage_transitions WHERE stage = 'Awareness'", 3)
        yield server, w0
    finally:
        server.stop()


def _ok(server: Server, path: str) -> dict[str, Any]:
    r = server.read(path)
    assert r.status_code == 200, r.text + server.tail(3000)
    body: dict[str, Any] = r.json()
    return body


def test_retention_matrix(srv: tuple[Server, datetime]) -> None:
    server, w0 = srv
    out = _ok(server, "/v1/retention?cohort=week&periods=3")
    rows = {r["cohort"]: (r["size"], r["retained"]) for r in out["rows"]}
    # week 2 of the second cohort is next week: not over yet
    assert rows == {str(w0.date()): (2, [2, 1, 0]), str((w0 + timedelta(days=7)).date()): (1, [1, 0, None])}
    by = _ok(server, "/v1/retention?periods=2&by=persona&return_event=/webinar")
    assert {(r["group"], r["size"], tuple(r["retained"])) for r in by["rows"]} == {
        ("Other", 2, (2, 0)),
        ("Other", 1, (0, 0)),
    }


def test_kpis_moments_and_personas(srv: tuple[Server, datetime]) -> None:
    server, _ = srv
    k = _ok(server, "/v1/kpis?weeks=3")
    assert (k["totals"]["purchases"], k["totals"]["revenue"], k["totals"]["buyers"]) == (1, 50.0, 1)
    aware = next(s for s in k["stages"] if s["stage"] == "Awareness")
    assert aware["entered"] == 3 and [w["entered"] for w in aware["trend"]] == [2, 1, 0]
    assert (k["feedback"]["nps"]["answers"], k["feedback"]["nps"]["nps"]) == (1, 100.0)
    assert k["feedback"]["nps"]["by_persona"] == [
        {"persona": "Other", "answers": 1, "promoters": 1, "passives": 0, "detractors": 0, "nps": 100.0, "mean": 9.0}
        | {"stage": None, "channel": None, "satisfied": None, "csat": None}
    ]
    m = _ok(server, "/v1/moments?conversion=Order%20Completed&min_support=1")
    aware_m = {x["name"]: x for s in m["stages"] if s["stage"] == "Awareness" for x in s["moments"]}
    w = aware_m["/webinar"]  # x1 and x2 watched, x2 bought; x3 did not watch, did not buy
    assert (w["with"], w["with_converted"], w["without"], w["without_converted"]) == (2, 1, 1, 0)
    # kept (saved_answers) and served again as it was computed; fresh=true computes it now
    assert _ok(server, "/v1/moments?conversion=Order%20Completed&min_support=1") == m
    now = _ok(server, "/v1/moments?conversion=Order%20Completed&min_support=1&fresh=true")
    assert now["computed_at"] > m["computed_at"] and now["stages"] == m["stages"]
    p = _ok(server, "/v1/personas?compare=Other,Business%20buyer&conversion=Order%20Completed")
    assert [(x["name"], x["contacts"], x["converted"]) for x in p["personas"]] == [
        ("Other", 3, 1),
        ("Business buyer", 0, 0),
    ]
    assert _ok(server, "/v1/kpis?weeks=3&persona=Business%20buyer")["totals"]["purchases"] == 0


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/v1/retention?periods=0", "periods"),
        ("/v1/retention?periods=53", "periods"),
        ("/v1/retention?cohort=day", "cohort"),
        ("/v1/retention?by=campaign", "by"),
        ("/v1/retention?persona=Nobody", "unknown persona"),
        ("/v1/kpis?weeks=0", "weeks"),
        ("/v1/kpis?to=yesterday", "to: an ISO date"),
        ("/v1/moments?limit=0", "limit"),
        ("/v1/moments?min_support=0", "min_support"),
        ("/v1/moments?fresh=maybe", "fresh"),
        ("/v1/moments?conversion=" + "x" * 2001, "conversion"),
        ("/v1/personas?compare=A,B,C,D", "compare"),
        ("/v1/personas?compare=Nobody", "unknown persona"),
    ],
)
def test_bad_parameters_are_400_with_the_reason(srv: tuple[Server, datetime], path: str, says: str) -> None:
    r = srv[0].read(path)
    assert r.status_code == 400, r.text
    assert says in r.text


def test_write_key_refused_and_openapi(srv: tuple[Server, datetime]) -> None:
    server, _ = srv
    import httpx

    r = httpx.get(server.url + "/v1/kpis", headers={"authorization": f"Bearer {server.site['write_key']}"})
    assert r.status_code == 403
    spec = httpx.get(server.url + "/openapi.json").json()
    for path, model in [
        ("/v1/retention", "Retention"),
        ("/v1/personas", "PersonaList"),
        ("/v1/kpis", "Kpis"),
        ("/v1/moments", "Moments"),
    ]:
        ok = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok["$ref"].endswith("/" + model)
    assert "lift" in spec["components"]["schemas"]["Moment"]["properties"]
    assert "from" in spec["components"]["schemas"]["Kpis"]["properties"]


def test_the_personas_file_setting_reaches_the_server_and_a_bad_one_stops_it(tmp_path: Path) -> None:
    good = tmp_path / "personas.toml"
    good.write_text('default = "Everyone else"\n[[persona]]\nname = "Germans"\nrules = [{ country = ["DE"] }]\n')
    server = Server(tmp_path / "good" / "data", env={"TRAILMARK_JOURNEYS__ANALYSIS__PERSONAS_FILE": str(good)})
    server.start()
    try:
        assert [p["name"] for p in _ok(server, "/v1/personas")["personas"]] == ["Germans", "Everyone else"]
    finally:
        server.stop()
    bad = tmp_path / "bad.toml"
    bad.write_text('[[persona]]\nname = "X"\nrules = [{ colour = ["red"] }]\n')
    broken = Server(tmp_path / "bad" / "data", env={"TRAILMARK_JOURNEYS__ANALYSIS__PERSONAS_FILE": str(bad)})
    with pytest.raises(RuntimeError):
        broken.start(timeout=30)
    broken.stop()
    assert not broken.alive
    assert "unknown condition" in broken.tail()
