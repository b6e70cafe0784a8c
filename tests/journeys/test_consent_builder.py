"""The journey builder applies each site's rule for events without analytics consent (issue 13):
on an ``aggregate`` site such an event leaves no event, session, identity or contact, only a count
in ``consent_aggregates``; on a ``drop`` site nothing; on a ``full`` site (the default) it is stored
like any event. Consented events of the same batch are stored as usual. On chDB and a ClickHouse
server."""

from __future__ import annotations

from typing import Any

from journey_builder.builder import JourneyBuilder
from journey_builder.privacy import ConsentPolicies, ConsentPolicy
from tests.journeys.conftest import Journey
from trailmark.settings import JourneySettings
from trailmark.storage.base import Storage

DENIED = [0, False, True]  # trailmark.js: opted out
GRANTED = [1, False, True]


def stream(j: Journey, anon: str, consent: list[Any]) -> list[dict[str, Any]]:
    events = [
        j.event("page", anon, 0, path="/pricing"),
        j.event("page", anon, 1, path="/docs"),
        j.event("identify", anon, 2, user_id=f"u-{anon}", traits={"email": f"{anon}@example.com"}),
    ]
    for e in events:
        e["context"]["consent"] = consent
    return events


def build(storage: Storage, mode: str) -> Journey:
    j = Journey(storage)
    policies = ConsentPolicies(sites={"s1": ConsentPolicy(mode)})  # type: ignore[arg-type]
    j.builder = JourneyBuilder(storage, JourneySettings(), policies)
    j.send(*stream(j, "refuser", DENIED), *stream(j, "granter", GRANTED))
    return j


def stored_visitors(j: Journey) -> dict[str, set[str]]:
    tables = ("events", "sessions_data", "touchpoints_data", "identities_data")
    return {t: {r["a"] for r in j.sql(f"SELECT DISTINCT anonymous_id AS a FROM {{db}}.{t}")} for t in tables}


def test_an_aggregate_site_keeps_only_counts_of_events_without_consent(storage: Storage) -> None:
    j = build(storage, "aggregate")
    assert stored_visitors(j) == dict.fromkeys(
        ("events", "sessions_data", "touchpoints_data", "identities_data"), {"granter"}
    )
    assert [r["contact_id"] for r in j.sql("SELECT contact_id FROM {db}.contacts")] == ["user:u-granter"]
    rows = j.sql(
        "SELECT type, page_path, sum(events) AS n FROM {db}.consent_aggregates"
        " GROUP BY type, page_path ORDER BY type, page_path"
    )
    assert rows == [
        {"type": "identify", "page_path": "/", "n": 1},
        {"type": "page", "page_path": "/docs", "n": 1},
        {"type": "page", "page_path": "/pricing", "n": 1},
    ]


def test_a_drop_site_keeps_nothing_of_them_and_a_full_site_everything(storage: Storage) -> None:
    j = build(storage, "drop")
    assert stored_visitors(j)["events"] == {"granter"}
    assert j.sql("SELECT count() AS n FROM {db}.consent_aggregates") == [{"n": 0}]
    assert j.builder.process([]).skipped_no_consent == 0

    full = Journey(storage)  # default rule: every event kept in full, its consent columns say so
    full.send(*stream(full, "another", DENIED))
    rows = full.sql("SELECT DISTINCT consent FROM {db}.events WHERE anonymous_id = 'another'")
    assert rows == [{"consent": "denied"}]


def test_the_builder_reports_what_it_skipped(storage: Storage) -> None:
    j = Journey(storage)
    j.builder = JourneyBuilder(storage, JourneySettings(), ConsentPolicies(sites={"s1": ConsentPolicy("drop")}))
    out = j.builder.process(j.enrich(stream(j, "r2", DENIED) + stream(j, "g2", GRANTED)))
    assert (out.skipped_no_consent, out.aggregated, out.event_count) == (3, 0, 3)
    j.builder = JourneyBuilder(storage, JourneySettings(), ConsentPolicies(sites={"s1": ConsentPolicy("aggregate")}))
    out = j.builder.process(j.enrich(stream(j, "r3", DENIED)))
    assert (out.skipped_no_consent, out.aggregated, out.event_count) == (0, 3, 0)
