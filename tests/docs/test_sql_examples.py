"""docs/sql.md stays true: every example query runs on a real server and returns rows (some checked by
hand against tests/docs/dataset.py), and every column of every table and view is documented."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, Server
from tests.docs.dataset import Dataset, post_dataset

DOC = ROOT / "docs" / "sql.md"
EXAMPLE = re.compile(r"<!-- example: ([a-z0-9-]+) -->\n```sql\n(.*?)```", re.S)


def examples() -> dict[str, str]:
    found = EXAMPLE.findall(DOC.read_text(encoding="utf-8"))
    names = [name for name, _ in found]
    assert len(names) == len(set(names)), f"duplicate example names: {names}"
    return dict(found)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Dataset]]:
    server = Server(tmp_path_factory.mktemp("sqldocs") / "data").start()
    try:
        yield server, post_dataset(server)
    finally:
        server.stop()


def run(server: Server, query: str) -> list[dict[str, Any]]:
    r = httpx.post(
        server.url + "/v1/sql",
        json={"query": query},
        headers={"authorization": f"Bearer {server.site['read_key']}"},
        timeout=60,
    )
    assert r.status_code == 200, f"{r.status_code}: {r.text[:2000]}"
    body = r.json()
    assert not body["truncated"]
    rows: list[dict[str, Any]] = body["rows"]
    return rows


def test_the_docs_have_at_least_ten_examples() -> None:
    assert len(examples()) >= 10


@pytest.mark.parametrize("name", sorted(examples()))
def test_example_runs_and_returns_rows(srv: tuple[Server, Dataset], name: str) -> None:
    server, _ = srv
    rows = run(server, examples()[name])
    assert rows, f"example {name!r} returned no rows"


def by(rows: list[dict[str, Any]], key: str) -> dict[Any, dict[str, Any]]:
    return {r[key]: r for r in rows}


def test_hand_computed_values(srv: tuple[Server, Dataset]) -> None:
    server, ds = srv
    ex = examples()

    # first-touch campaigns: Jane (google cpc, later the newsletter) and Frank came in on spring_sale and
    # both signed up; Eve came in on abm_q3 and did not
    camp = by(run(server, ex["conversion-rate-by-campaign"]), "campaign")
    assert set(camp) == {"spring_sale", "abm_q3"}
    assert (camp["spring_sale"]["contacts"], camp["spring_sale"]["converted_contacts"]) == (2, 2)
    assert camp["spring_sale"]["first_source_medium"] == "google / cpc"
    assert (camp["abm_q3"]["contacts"], camp["abm_q3"]["converted_contacts"]) == (1, 0)

    # companies: Jane and Eve at acme.io (Jane's superseded email contact is not counted twice), Bob at globex
    companies = by(run(server, ex["contacts-by-company-domain"]), "company_domain")
    assert companies["acme.io"]["contacts"] == 2
    assert sorted(companies["acme.io"]["emails"]) == ["eve@acme.io", "jane@acme.io"]
    assert sorted(companies["acme.io"]["stages"]) == ["Advocacy", "Decision"]
    assert companies["globex.com"]["contacts"] == 1

    # Jane: first visit on her desktop 72 h ago, signed up on her phone 24 h - 6 min ago: 48.1 h;
    # Frank signed up 4 minutes into his first visit
    ttc = by(run(server, ex["time-to-conversion"]), "contact_id")
    assert ttc["user:u-jane"]["hours_to_convert"] == pytest.approx(48.1)
    assert ttc["user:u-jane"]["sessions_before"] == 2
    assert ttc["user:u-jane"]["converting_channel"] == "Email"
    assert ttc[f"anon:{ds.ids['frank']}"]["hours_to_convert"] == pytest.approx(0.1)

    # 7 sessions land on / and only Dave's bounces; Bob's blog landing did not bounce, Carol's did
    landing = by(run(server, ex["landing-page-bounce-rate"]), "landing_page")
    assert (landing["/"]["sessions"], landing["/"]["bounce_rate_pct"]) == (7, pytest.approx(14.3))
    assert landing["/blog/journey-mapping"]["bounce_rate_pct"] == pytest.approx(50.0)

    # windowFunnel across devices: Jane, Eve, Frank and Dave saw /; Jane and Frank went on to /pricing
    # and signed up (Jane's sign-up was on her other device)
    funnel = run(server, ex["funnel-window-funnel"])[0]
    assert (funnel["viewed_home"], funnel["viewed_pricing"], funnel["signed_up"]) == (4, 2, 2)

    # identity stitching: only Jane has two devices
    devices = run(server, ex["contacts-across-devices"])
    assert [(r["contact_id"], r["devices"], r["sessions"]) for r in devices] == [("user:u-jane", 2, 3)]
    assert devices[0]["channels_in_order"] == ["Paid Search", "Email", "Direct"]

    terms = by(run(server, ex["top-referrers-search-terms"]), "referrer_name")
    assert terms["Bing"]["search_terms"] == ["customer journey analytics"]

    plans = by(run(server, ex["signups-by-plan-json"]), "plan")
    assert (plans["pro"]["signups"], plans["pro"]["seats"], plans["starter"]["seats"]) == (1, 5, 1)

    timeline = run(server, ex["contact-journey-timeline"])
    assert len(timeline) == 10 and {r["anonymous_id"] for r in timeline} == {
        ds.ids["jane-desktop"],
        ds.ids["jane-phone"],
    }


def sections(doc: str) -> list[tuple[set[str], str]]:
    """(table names in the heading, body) for every '### `table` ...' section of the reference."""
    out = []
    for part in re.split(r"^### ", doc, flags=re.M)[1:]:
        heading, _, body = part.partition("\n")
        out.append((set(re.findall(r"`([a-z_]+)`", heading)), body))
    return out


def test_every_table_and_column_is_documented(srv: tuple[Server, Dataset]) -> None:
    server, _ = srv
    doc = DOC.read_text(encoding="utf-8")
    reference = doc.split("## Tables and views", 1)[1].split("## JSON columns", 1)[0]
    documented = sections(reference)
    rows = run(server, "SELECT table, name FROM system.columns WHERE database = 'trailmark' ORDER BY table, position")
    tables: dict[str, list[str]] = {}
    for r in rows:
        tables.setdefault(r["table"], []).append(r["name"])
    assert {
        "events",
        "sessions",
        "touchpoints",
        "contacts",
        "identity_map",
        "dead_letters",
        "schema_migrations",
    } <= set(tables)
    missing = []
    for table, columns in tables.items():
        bodies = [body for names, body in documented if table in names]
        if not bodies:
            missing.append(f"{table}: no '### `{table}`' section")
            continue
        text = "\n".join(bodies)
        missing += [f"{table}.{c}" for c in columns if f"`{c}`" not in text]
    assert not missing, "undocumented in docs/sql.md: " + ", ".join(missing)


def test_examples_are_extracted_from_fenced_blocks() -> None:
    doc = DOC.read_text(encoding="utf-8")
    assert doc.count("<!-- example: ") == len(examples()), "an example marker is not followed by a ```sql block"
    assert Path(DOC).stat().st_size > 10_000
