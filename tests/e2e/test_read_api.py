"""The journey read endpoints over HTTP: auth, parameters, shapes and a few counts, on a ``trailmark up``
with chDB and on one with a ClickHouse server (``TRAILMARK_CLICKHOUSE_URL``: ``CLICKHOUSE_URL`` or the
chDB-backed endpoint of tests/chserver)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.chserver import clickhouse_endpoint, clickhouse_url  # noqa: F401  (fixtures)
from tests.conftest import Server


@pytest.fixture(scope="module", params=["chdb", "server"])
def server(
    request: pytest.FixtureRequest,
    server: Server,
    tmp_path_factory: pytest.TempPathFactory,
    clickhouse_url: str,  # noqa: F811
) -> Iterator[Server]:
    """The shared chDB server, or a ``trailmark up`` of this module's own on a ClickHouse server."""
    if request.param == "chdb":
        yield server
        return
    srv = Server(
        tmp_path_factory.mktemp("on-clickhouse") / "data", env={"TRAILMARK_CLICKHOUSE_URL": clickhouse_url}
    ).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def shop(server: Server) -> dict[str, str]:
    """Two visitors on a fresh campaign name, so counts in the shared server are ours alone."""
    tag = uuid.uuid4().hex[:8]
    now = datetime.now(UTC) - timedelta(hours=3)

    def ev(anon: str, minutes: int, path: str, **extra: Any) -> dict[str, Any]:
        query = f"?utm_source=google&utm_medium=cpc&utm_campaign=c-{tag}" if minutes == 0 else ""
        return {
            "type": "page",
            "messageId": str(uuid.uuid4()),
            "anonymousId": anon,
            "timestamp": (now + timedelta(minutes=minutes)).isoformat(),
            "context": {"page": {"url": f"https://shop.example.com{path}{query}", "path": path}},
            **extra,
        }

    a, b = f"fa-{tag}", f"fb-{tag}"
    batch = [
        ev(a, 0, f"/land-{tag}"),
        ev(a, 1, f"/pricing-{tag}"),
        {**ev(a, 2, f"/pricing-{tag}"), "type": "track", "event": f"Bought-{tag}"},
        {**ev(a, 3, f"/pricing-{tag}"), "type": "track", "event": "Order Completed"},
        ev(b, 0, f"/land-{tag}"),
    ]
    assert server.post("/v1/batch", {"batch": batch, "sentAt": datetime.now(UTC).isoformat()}).status_code == 200
    server.wait_for(f"SELECT count() FROM trailmark.sessions WHERE campaign = 'c-{tag}'", 2)
    return {"tag": tag, "a": a, "b": b}


def test_funnel_over_http(server: Server, shop: dict[str, str]) -> None:
    t = shop["tag"]
    r = server.read(
        "/v1/funnel", params={"steps": f"/land-{t},/pricing-{t},Bought-{t}", "window": 3600, "by": "channel"}
    )
    assert r.status_code == 200, r.text
    assert [s["count"] for s in r.json()["steps"]] == [2, 1, 1]
    assert r.json()["by"]["Paid Search"] == [2, 1, 1]


def test_attribution_over_http(server: Server, shop: dict[str, str]) -> None:
    r = server.read(
        "/v1/attribution", params={"conversion": f"Bought-{shop['tag']}", "model": "linear", "by": "campaign"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["total_conversions"] == 1
    assert r.json()["rows"] == [{"key": f"c-{shop['tag']}", "credit": 1.0, "share": 1.0}]
    bad = server.read("/v1/attribution", params={"conversion": "x", "model": "shapley"})
    assert bad.status_code == 400 and "model" in bad.json()["detail"]


def test_paths_journeys_stages_pain_points_over_http(server: Server, shop: dict[str, str]) -> None:
    t = shop["tag"]
    paths = server.read("/v1/paths", params={"from": f"/land-{t}", "depth": 3}).json()
    assert {"path": [f"/land-{t}", f"/pricing-{t}", f"Bought-{t}"], "count": 1} in paths["paths"]
    listed = server.read("/v1/journeys", params={"campaign": f"c-{t}"}).json()
    assert sorted(c["contact_id"] for c in listed["contacts"]) == [f"anon:{shop['a']}", f"anon:{shop['b']}"]
    converted = server.read("/v1/journeys", params={"campaign": f"c-{t}", "converted": "false"}).json()
    assert [c["contact_id"] for c in converted["contacts"]] == [f"anon:{shop['b']}"]
    stages = server.read("/v1/stages").json()
    assert [s["stage"] for s in stages["stages"]] == ["Awareness", "Consideration", "Decision", "Retention", "Advocacy"]
    assert server.read("/v1/pain-points").status_code == 200
    assert server.read("/v1/funnel", params={"steps": ""}).status_code == 400


@pytest.mark.parametrize(
    "path", ["/v1/journeys", "/v1/stages", "/v1/funnel?steps=/", "/v1/paths", "/v1/attribution", "/v1/pain-points"]
)
def test_reads_need_a_read_key(server: Server, path: str) -> None:
    assert httpx.get(server.url + path).status_code == 401
    wk = server.site["write_key"]
    assert httpx.get(server.url + path, headers={"authorization": f"Bearer {wk}"}).status_code == 403


def test_openapi_lists_the_read_endpoints(server: Server) -> None:
    spec = httpx.get(server.url + "/openapi.json").json()
    for path in [
        "/v1/journeys/{contact}",
        "/v1/journeys",
        "/v1/funnel",
        "/v1/paths",
        "/v1/attribution",
        "/v1/stages",
        "/v1/pain-points",
        "/v1/sql",
        "/v1/batch",
    ]:
        assert path in spec["paths"], path


def test_trailmark_sql_runs_through_the_server(server: Server) -> None:
    import subprocess
    import sys

    import orjson

    base = [sys.executable, "-m", "trailmark.cli", "sql", "--url", server.url, "--key", server.site["read_key"]]
    out = subprocess.run(
        [*base, "SELECT 41 + 1 AS answer", "--format", "json"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert orjson.loads(out) == [{"answer": 42}]
    csv_out = subprocess.run(
        [*base, "SELECT 'a' AS x UNION ALL SELECT 'b'", "--format", "csv"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert sorted(csv_out.split()) == ["a", "b", "x"]
    table = subprocess.run([*base, "SELECT 7 AS seven"], capture_output=True, text=True, timeout=60, check=True)
    assert "seven" in table.stdout and "1 row(s)" in table.stdout
    bad = subprocess.run([*base, "DROP TABLE trailmark.events"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "only select" in (bad.stdout + bad.stderr).lower()
