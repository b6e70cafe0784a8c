"""/v1/sql as an attacker with a read key would use it, and as a data team would: through a real
``trailmark up`` with two sites (tests/sql/conftest.py), on the real ClickHouse engine (chDB)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT
from tests.sql.conftest import TwoSites, page

pytestmark = pytest.mark.slow

ATTACKS = [
    # the host's files, environment and code
    ("SELECT * FROM file('keys.json', 'RawBLOB')", "table function file()"),
    ("SELECT * FROM file('/proc/self/environ', 'RawBLOB')", "table function file()"),
    ("SELECT file('/etc/passwd') AS x", "function file()"),
    ("INSERT INTO FUNCTION file('x.pth', 'RawBLOB') SELECT 'import os'", "only SELECT"),
    ("SELECT 1 INTO OUTFILE '/tmp/trailmark-outfile'", "INTO OUTFILE"),
    ("SELECT 1 FORMAT TSV", "FORMAT"),
    # the network and other servers (SSRF)
    ("SELECT * FROM url('http://127.0.0.1:1/', 'RawBLOB')", "table function url()"),
    ("SELECT * FROM remote('127.0.0.1:9000', system.one)", "table function remote()"),
    ("SELECT * FROM s3('http://127.0.0.1:1/b/k', 'CSV')", "table function s3()"),
    ("SELECT * FROM mysql('127.0.0.1:3306', 'd', 't', 'u', 'p')", "table function mysql()"),
    ("SELECT * FROM postgresql('127.0.0.1:5432', 'd', 't', 'u', 'p')", "table function postgresql()"),
    ("SELECT * FROM jdbc('jdbc:x', 't')", "table function jdbc()"),
    # other tables by a side door
    ("SELECT * FROM merge('trailmark', '.*')", "table function merge()"),
    ("SELECT * FROM view(SELECT * FROM trailmark.events)", "table function view()"),
    ("SELECT * FROM system.processes", "system.processes"),
    ("SELECT * FROM information_schema.tables", "information_schema.tables"),
    ("SELECT * FROM trailmark.schema_migrations", "schema_migrations"),
    ("SELECT 'x' IN system.users AS y", "system.users"),
    ("SELECT joinGet('trailmark.events', 'site_id', 1) AS y", "joinGet()"),
    ("SELECT dictGet('d', 'a', 1) AS y", "dictGet()"),
    ("SELECT sleepEachRow(1) FROM numbers(100)", "sleepEachRow()"),
    # session state and other requests
    ("SET max_rows_to_read = 1", "only SELECT"),
    ("SELECT 1 SETTINGS readonly = 0", "readonly"),
    ("SELECT 1 SETTINGS max_threads = 64", "max_threads"),
    ("KILL QUERY WHERE 1", "only SELECT"),
    ("CREATE TEMPORARY TABLE t (x UInt8)", "only SELECT"),
    ("SELECT 1; SELECT 2", "Multi-statements"),
    ("DROP TABLE trailmark.events", "only SELECT"),
    ("SHOW TABLES", "only SELECT"),
]


@pytest.mark.parametrize(("query", "reason"), ATTACKS, ids=[a[0][:40] for a in ATTACKS])
def test_attacks_get_a_clear_400(two_sites: TwoSites, query: str, reason: str) -> None:
    r = two_sites.sql(query)
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert detail.startswith("query refused: ") and reason in detail, detail


def test_identifier_parameters_are_checked_as_tables(two_sites: TwoSites) -> None:
    r = two_sites.sql("SELECT * FROM {t:Identifier}", params={"t": "system.processes"})
    assert r.status_code == 400 and "system.processes" in r.json()["detail"]
    rows = two_sites.rows(
        "SELECT count() AS n FROM {t:Identifier} WHERE page_path = {p:String}", params={"t": "events", "p": "/a1"}
    )
    assert rows == [{"n": 1}]


def test_each_read_key_sees_only_its_own_site(two_sites: TwoSites) -> None:
    a, b = two_sites.a, two_sites.b
    assert two_sites.rows("SELECT count() AS n FROM trailmark.events", a) == [{"n": 3}]
    assert two_sites.rows("SELECT count() AS n FROM events", b) == [{"n": 1}]
    tables = [
        r["table"] for r in two_sites.rows("SELECT table FROM system.columns WHERE name = 'site_id' ORDER BY table", a)
    ]
    assert {"events", "sessions", "sessions_data", "touchpoints", "contacts", "identity_map"} <= set(tables)
    for site, other in ((a, b), (b, a)):
        union = " UNION ALL ".join(
            f"SELECT '{t}' AS t, countIf(site_id = {{other:String}}) AS foreign,"
            f" countIf(site_id = {{own:String}}) AS own FROM trailmark.{t}"
            for t in tables
        )
        rows = two_sites.rows(union, site, params={"own": site["site_id"], "other": other["site_id"]})
        assert {r["t"] for r in rows} == set(tables)
        assert all(r["foreign"] == 0 for r in rows), rows
        assert {r["t"]: r["own"] for r in rows}["events"] == (3 if site is a else 1)
    # a join or a subquery cannot reach around the filter either
    joined = two_sites.rows(
        "SELECT count() AS n FROM trailmark.events AS e JOIN trailmark.sessions AS s"
        " ON e.session_id = s.session_id WHERE e.site_id != {own:String}",
        a,
        params={"own": a["site_id"]},
    )
    assert joined == [{"n": 0}]
    only_trailmark = two_sites.rows("SELECT DISTINCT database FROM system.tables", a)
    assert only_trailmark == [{"database": "trailmark"}]


def test_what_a_data_team_writes_still_works(two_sites: TwoSites) -> None:
    rows = two_sites.rows(
        "SELECT * FROM (WITH p AS (SELECT page_path AS path, count() AS n FROM events GROUP BY path)"
        " SELECT path, n FROM p WHERE path IN (SELECT page_path FROM trailmark.events WHERE anonymous_id = {v:String})"
        " UNION ALL SELECT 'total', toUInt64(sum(number)) FROM numbers(4)) ORDER BY path",
        params={"v": "alpha-2"},
    )
    assert rows == [{"path": "/a2", "n": 1}, {"path": "/a3", "n": 1}, {"path": "total", "n": 6}]
    assert two_sites.rows("SELECT count() AS n FROM generateSeries(1, 10)") == [{"n": 10}]


def test_no_state_survives_a_request(two_sites: TwoSites) -> None:
    assert two_sites.sql("SELECT 41 AS x; SELECT 1").status_code == 400
    assert two_sites.sql("SET max_rows_to_read = 1").status_code == 400
    assert two_sites.sql("CREATE TEMPORARY TABLE leak (x UInt8)").status_code == 400
    assert two_sites.rows("SELECT 42 AS x") == [{"x": 42}]  # nothing of the refused ones prepended
    r = two_sites.sql("SELECT * FROM leak")
    assert r.status_code == 400
    # the other site's journey reads are untouched
    journey = httpx.get(
        two_sites.server.url + "/v1/journeys/beta-1",
        timeout=30,
        headers={"authorization": f"Bearer {two_sites.b['read_key']}"},
    )
    assert journey.status_code == 200, journey.text
    # and a site cannot read the other site's journey by id
    foreign = httpx.get(
        two_sites.server.url + "/v1/journeys/beta-1",
        timeout=30,
        headers={"authorization": f"Bearer {two_sites.a['read_key']}"},
    )
    assert foreign.status_code == 404


def test_limits_are_enforced(two_sites: TwoSites) -> None:
    started = time.monotonic()
    r = two_sites.sql("SELECT sum(number) FROM numbers(1e12)")
    assert r.status_code == 400 and "TIMEOUT_EXCEEDED" in r.json()["detail"], r.text
    assert time.monotonic() - started < 15
    r = two_sites.sql("SELECT length(groupArray(number)) FROM numbers(1e10)")
    assert r.status_code == 400 and "MEMORY_LIMIT_EXCEEDED" in r.json()["detail"], r.text
    big = two_sites.sql("SELECT number FROM numbers(5000)").json()
    assert big["count"] == 1000 and big["truncated"] is True and len(big["rows"]) == 1000
    small = two_sites.sql("SELECT number FROM numbers(10)").json()
    assert small["count"] == 10 and small["truncated"] is False


def test_errors_do_not_echo_generated_sql(two_sites: TwoSites) -> None:
    r = two_sites.sql("SELECT no_such_column FROM trailmark.events")
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert "no_such_column" in detail and "site_id =" not in detail and "In scope" not in detail
    r = httpx.get(
        two_sites.server.url + "/v1/journeys",
        params={"from": "not a date"},
        timeout=30,
        headers={"authorization": f"Bearer {two_sites.a['read_key']}"},
    )
    assert r.status_code == 400
    assert "SELECT" not in r.text and "FROM" not in r.text


def test_paging_beyond_the_bound_is_refused(two_sites: TwoSites) -> None:
    for offset in ("4294967296", "18446744073709551616", "-1"):
        r = httpx.get(
            two_sites.server.url + "/v1/journeys",
            params={"offset": offset},
            timeout=30,
            headers={"authorization": f"Bearer {two_sites.a['read_key']}"},
        )
        assert r.status_code == 400, (offset, r.text)


def _timed(fn: Any) -> tuple[float, Any]:
    started = time.monotonic()
    result = fn()
    return time.monotonic() - started, result


def test_heavy_sql_never_starves_the_collector_or_journey_reads(two_sites: TwoSites) -> None:
    server = two_sites.server
    results: list[int] = []

    def heavy(site: dict[str, Any]) -> None:
        results.append(two_sites.sql("SELECT sum(number) FROM numbers(1e12)", site).status_code)

    threads = [threading.Thread(target=heavy, args=(two_sites.a if i % 2 else two_sites.b,)) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.5)  # the admitted ones are running now
    anon = f"during-{uuid.uuid4().hex[:8]}"
    for _ in range(5):
        took, r = _timed(
            lambda: httpx.post(
                server.url + "/v1/batch",
                auth=(two_sites.a["write_key"], ""),
                json={"batch": [page(anon, "/busy")]},
                timeout=30,
            )
        )
        assert r.status_code == 200 and took < 2, (took, r.text)
        took, r = _timed(
            lambda: httpx.get(
                server.url + "/v1/journeys/alpha-1",
                timeout=30,
                headers={"authorization": f"Bearer {two_sites.a['read_key']}"},
            )
        )
        assert r.status_code == 200 and took < 2, (took, r.text)
        assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
    for t in threads:
        t.join()
    # at most one running query per key and two for the server: the rest were told to come back later
    assert sorted(results) == [400, 400, 429, 429, 429, 429], results


def test_a_dropped_client_cancels_its_query(two_sites: TwoSites) -> None:
    with pytest.raises(httpx.ReadTimeout):
        two_sites.sql("SELECT sum(number) FROM numbers(1e12)", timeout=1)
    dropped = time.monotonic()
    # The server allows two queries at once in two SQL threads; if the dropped query still ran, it
    # would hold one of them (and the key's one slot) until its 6 s limit.
    answers: list[int] = []

    def quick(site: dict[str, Any]) -> None:
        answers.append(two_sites.sql("SELECT count() AS n FROM numbers(10)", site).status_code)

    time.sleep(0.6)  # the server notices the drop within its 0.25 s poll
    threads = [threading.Thread(target=quick, args=(s,)) for s in (two_sites.a, two_sites.b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [200, 200]
    assert time.monotonic() - dropped < 3


def test_trailmark_sql_prints_values_as_data(two_sites: TwoSites) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "trailmark.cli",
            "sql",
            "SELECT '[bold red]x[/bold red]' AS v",
            "--url",
            two_sites.server.url,
            "--key",
            two_sites.a["read_key"],
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "[bold red]x[/bold red]" in out.stdout
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "trailmark.cli",
            "sql",
            "SELECT * FROM file('[red]boom[/red]')",
            "--url",
            two_sites.server.url,
            "--key",
            two_sites.a["read_key"],
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert refused.returncode == 1 and "query refused" in refused.stdout
