"""The summaries the journey-method reads use (migrations 020 device_days, 021 track_events): filled by
their materialized views as events are stored and, on an upgrade, by their backfill; keyed by device,
so a late identify, events arriving out of order and an erasure give the answers the events give.

Streams: tests/analysis/streams.py (T0 = Monday 2026-11-02 09:00 UTC, weeks start on Monday)."""

from __future__ import annotations

from datetime import date
from typing import Any

from journey_builder import cohorts, kpis, moments, privacy
from journey_builder.personas import Personas
from tests.analysis.streams import DAY, SITE, feed, send
from tests.journeys.conftest import Journey
from trailmark.settings import AnalysisSettings
from trailmark.storage.base import migrations, split_statements

CONF = AnalysisSettings()
PERSONAS = Personas.load()
LATER = date(2026, 12, 31)  # every period of the streams is over


def _answers(j: Journey) -> dict[str, Any]:
    return {
        "retention": cohorts.retention(j.storage, SITE, PERSONAS, CONF, periods=4, by="channel", today=LATER),
        "bought": cohorts.retention(
            j.storage, SITE, PERSONAS, CONF, periods=3, start_event="/cart", return_event="Order Completed", today=LATER
        ),
        "kpis": kpis.kpis(j.storage, SITE, PERSONAS, CONF, weeks=4, until="2026-11-23"),
        "moments": moments.moments(j.storage, SITE, PERSONAS, CONF, conversions=["Order Completed"], min_support=1),
    }


def _matrix(out: dict[str, Any]) -> dict[tuple[str, str], tuple[int, list[int | None]]]:
    return {(r["cohort"], r["group"]): (r["size"], r["retained"]) for r in out["rows"]}


def _moment(out: dict[str, Any], stage: str, name: str) -> tuple[int, int] | None:
    for s in out["stages"]:
        for m in s["moments"] if s["stage"] == stage else []:
            if m["name"] == name:
                return m["with"], m["with_converted"]
    return None


def _backfills() -> list[str]:
    return [
        s
        for name, sql in migrations()
        if name.startswith(("020_", "021_"))
        for s in split_statements(sql, "{db}")
        if s.startswith("INSERT INTO ")
    ]


def test_the_backfill_gives_an_upgraded_install_the_same_answers_and_may_run_twice(journey: Journey) -> None:
    site = feed(journey)
    fresh = _answers(site)
    assert _matrix(fresh["retention"])[("2026-11-02", "Paid Search")] == (1, [1, 1, 0, 1])  # as the events say
    summaries = ("device_days", "track_events")
    for table in summaries:  # an install from before migration 020: events, and no summary rows
        site.sql(f"TRUNCATE TABLE {{db}}.{table}")
    empty = _answers(site)
    assert empty["retention"]["rows"] == [] and empty["kpis"]["totals"]["purchases"] == 0  # the reads use them
    assert len(_backfills()) == 2
    for _ in range(2):  # the migration's INSERT ... SELECT; a second run (or an overlap) counts nothing twice
        for statement in _backfills():
            site.storage.execute(statement.replace("{db}", site.storage.database))
        assert _answers(site) == fresh


def test_a_late_identify_merges_two_devices_histories(journey: Journey) -> None:
    e = journey.event
    send(journey, e("page", "phone", 0, path="/"), e("page", "phone", 1, path="/webinar"))  # week 0, anonymous
    send(journey, e("page", "other", 2, path="/"))  # a visitor who never buys nor watches
    send(
        journey,
        e("page", "laptop", 8 * DAY, path="/"),
        e("identify", "laptop", 8 * DAY + 1, user_id="u1"),
        e("track", "laptop", 8 * DAY + 2, event="Order Completed", properties={"revenue": 30}),
    )
    before = cohorts.retention(journey.storage, SITE, PERSONAS, CONF, periods=3, today=LATER)
    assert _matrix(before) == {("2026-11-02", ""): (2, [2, 0, 0]), ("2026-11-09", ""): (1, [1, 0, 0])}
    got = moments.moments(journey.storage, SITE, PERSONAS, CONF, conversions=["Order Completed"], min_support=1)
    assert _moment(got, "Awareness", "/webinar") == (1, 0)  # the phone's contact never bought

    send(journey, e("identify", "phone", 9 * DAY, user_id="u1"))  # the phone turns out to be u1's
    after = cohorts.retention(journey.storage, SITE, PERSONAS, CONF, periods=3, today=LATER)
    # u1 is one contact now: first seen in week 0 (the phone), back in week 1 (the laptop, then the phone)
    assert _matrix(after) == {("2026-11-02", ""): (2, [2, 1, 0])}
    got = moments.moments(journey.storage, SITE, PERSONAS, CONF, conversions=["Order Completed"], min_support=1)
    assert _moment(got, "Awareness", "/webinar") == (1, 1)  # watched on the phone, bought on the laptop
    assert kpis.kpis(journey.storage, SITE, PERSONAS, CONF, weeks=4, until="2026-11-23")["totals"]["buyers"] == 1


def test_events_arriving_out_of_order(journey: Journey) -> None:
    e = journey.event
    # the second week's visit is stored first; the first week's visit and purchase arrive a batch later
    send(
        journey,
        e("page", "v", 14 * DAY, path="/cart"),
        e("track", "v", 14 * DAY + 1, event="Order Completed", properties={"revenue": 20}),
    )
    assert _matrix(cohorts.retention(journey.storage, SITE, PERSONAS, CONF, periods=3, today=LATER)) == {
        ("2026-11-16", ""): (1, [1, 0, 0])
    }
    send(
        journey,
        e("page", "v", 0, path="/cart"),
        e("track", "v", 1, event="Order Completed", properties={"revenue": 10}),
    )
    assert _matrix(cohorts.retention(journey.storage, SITE, PERSONAS, CONF, periods=3, today=LATER)) == {
        ("2026-11-02", ""): (1, [1, 0, 1])
    }
    bought = cohorts.retention(
        journey.storage, SITE, PERSONAS, CONF, periods=3, start_event="Order Completed", today=LATER
    )
    assert _matrix(bought) == {("2026-11-02", ""): (1, [1, 0, 1])}  # the first purchase is the late one
    totals = kpis.kpis(journey.storage, SITE, PERSONAS, CONF, weeks=4, until="2026-11-23")["totals"]
    assert (totals["purchases"], totals["revenue"], totals["repeat_buyers"]) == (2, 30.0, 1)


def test_an_erased_contact_leaves_the_summaries(journey: Journey) -> None:
    site = feed(journey)
    before = _answers(site)
    assert before["kpis"]["totals"]["revenue"] == 200.0
    subject = privacy.resolve_subject(site.storage, SITE, "jane@acme.io")  # a
    assert subject is not None
    eraser = privacy.Eraser(site.storage, subject, privacy.new_request(SITE, "jane@acme.io"), settle_s=0)
    privacy.begin(site.storage, eraser)
    eraser.run(sleep=lambda _: None)
    for table in ("device_days", "track_events"):
        assert site.sql(f"SELECT count() AS n FROM {{db}}.{table} WHERE anonymous_id = 'a'") == [{"n": 0}]
        assert site.sql(f"SELECT count() AS n FROM {{db}}.{table} WHERE anonymous_id = 'c'")[0]["n"] > 0
    after = _answers(site)
    # a (Paid Search, bought 100 in week 1) is gone; b, c and d are as they were
    assert ("2026-11-02", "Paid Search") not in _matrix(after["retention"])
    assert _matrix(after["retention"])[("2026-11-09", "Organic Social")] == (1, [1, 1, 0, 0])
    assert after["kpis"]["totals"]["revenue"] == 100.0
