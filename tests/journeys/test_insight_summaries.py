"""The summaries the journey-method reads use (migrations 020 device_days, 021 track_events, 025
device_stages): filled by their materialized views as events and stage rows are stored and, on an
upgrade, by their backfill; keyed by device, so a late identify, events arriving out of order and an
erasure give the answers the events give.

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
        "moments": moments.moments(j.storage, SITE, PERSONAS, CONF, conversions=["Order Completed"], min_support=1)
        | {"computed_at": ""},  # the time of the computation: not part of the comparison
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
        if name.startswith(("020_", "021_", "025_"))
        for s in split_statements(sql, "{db}")
        if s.startswith("INSERT INTO ")
    ]


def test_the_backfill_gives_an_upgraded_install_the_same_answers_and_may_run_twice(journey: Journey) -> None:
    site = feed(journey)
    fresh = _answers(site)
    assert _matrix(fresh["retention"])[("2026-11-02", "Paid Search")] == (1, [1, 1, 0, 1])  # as the events say
    summaries = ("device_days", "track_events", "device_stages")
    for table in summaries:  # an install from before migration 020: events, and no summary rows
        site.sql(f"TRUNCATE TABLE {{db}}.{table}")
    empty = _answers(site)
    assert empty["retention"]["rows"] == [] and empty["kpis"]["totals"]["purchases"] == 0  # the reads use them
    assert all(s["entered"] == 0 for s in empty["kpis"]["stages"]) and empty["moments"]["stages"] == []
    assert len(_backfills()) == 3
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
    for table in ("device_days", "track_events", "device_stages"):
        assert site.sql(f"SELECT count() AS n FROM {{db}}.{table} WHERE anonymous_id = 'a'") == [{"n": 0}]
        assert site.sql(f"SELECT count() AS n FROM {{db}}.{table} WHERE anonymous_id = 'c'")[0]["n"] > 0
    after = _answers(site)
    # a (Paid Search, bought 100 in week 1) is gone; b, c and d are as they were
    assert ("2026-11-02", "Paid Search") not in _matrix(after["retention"])
    assert _matrix(after["retention"])[("2026-11-09", "Organic Social")] == (1, [1, 1, 0, 0])
    assert after["kpis"]["totals"]["revenue"] == 100.0


def _flow(out: dict[str, Any]) -> dict[str, tuple[int, int, float | None]]:
    return {
        s["stage"]: (s["entered"], s["moved_on"], s["median_hours_in_stage"]) for s in out["stages"] if s["entered"]
    }


def test_stage_kpis_follow_a_merge_of_two_devices_stage_histories(journey: Journey) -> None:
    """device_stages (migration 025) holds each device's entries; a contact's history is resolved when
    read, so two devices merged by a late identify are one history from then on."""
    e = journey.event
    send(journey, e("page", "phone", 0, path="/"), e("page", "phone", 5, path="/pricing"))  # Awareness, Consideration
    send(
        journey, e("page", "laptop", 2 * DAY, path="/"), e("page", "laptop", 2 * DAY + 10, path="/cart")
    )  # A, Decision
    send(journey, e("identify", "laptop", 2 * DAY + 20, user_id="u1"))
    rows = journey.sql("SELECT anonymous_id, count() AS n FROM {db}.device_stages GROUP BY anonymous_id ORDER BY 1")
    assert [r["anonymous_id"] for r in rows] == ["laptop", "phone"]  # per device, whatever the contact
    before = kpis.kpis(journey.storage, SITE, PERSONAS, CONF, weeks=4, until="2026-11-23")
    # two contacts: the phone moved on after 5 minutes, the laptop after 10 (to Decision, skipping a stage)
    assert _flow(before) == {
        "Awareness": (2, 2, round(7.5 / 60, 3)),
        "Consideration": (1, 0, None),
        "Decision": (1, 0, None),
    }
    send(journey, e("identify", "phone", 3 * DAY, user_id="u1"))  # the phone turns out to be u1's
    after = kpis.kpis(journey.storage, SITE, PERSONAS, CONF, weeks=4, until="2026-11-23")
    # one contact: Awareness at 0 (the phone), Consideration at 5 min, Decision at 2 days 10 min
    assert _flow(after) == {
        "Awareness": (1, 1, round(5 / 60, 3)),
        "Consideration": (1, 1, round((2 * DAY + 10 - 5) / 60, 3)),
        "Decision": (1, 0, None),
    }
    got = moments.moments(journey.storage, SITE, PERSONAS, CONF, conversions=["Order Completed"], min_support=1)
    assert [s["stage"] for s in got["stages"]] == []  # nobody converted: no contact without a moment converts


def test_an_earlier_stage_row_for_a_device_moves_its_entry(journey: Journey) -> None:
    """A stage row written later with an earlier time (another builder's, a replay) is the entry: the
    summary keeps each stage's earliest time, as the reads of stage_transitions_data did."""
    e = journey.event
    send(journey, e("page", "v", DAY, path="/"), e("page", "v", DAY + 60, path="/pricing"))
    out = kpis.kpis(journey.storage, SITE, PERSONAS, CONF, weeks=4, until="2026-11-23")
    assert _flow(out) == {"Awareness": (1, 1, 1.0), "Consideration": (1, 0, None)}  # moved on after an hour
    journey.storage.execute(
        f"INSERT INTO {journey.storage.database}.stage_transitions_data (site_id, anonymous_id, stage, entered_at,"
        " rule, message_id) VALUES ('s1', 'v', 'Consideration', '2026-11-02 09:30:00', 'pricing', 'm-late')"
    )
    out = kpis.kpis(journey.storage, SITE, PERSONAS, CONF, weeks=4, until="2026-11-23")
    # Consideration at 09:30 on day 0, before Awareness (day 1): Awareness has no later stage any more
    assert _flow(out) == {"Awareness": (1, 0, None), "Consideration": (1, 0, None)}


def test_a_stage_entry_past_the_sites_retention_leaves_device_stages(journey: Journey) -> None:
    """Each stage's time expires with the stage row it came from (a column TTL), the device's row with
    its last one: the summary says what stage_transitions_data still holds."""
    e = journey.event
    journey.send(e("page", "v", -400 * DAY, path="/"))  # Awareness, 400 days before T0
    journey.send(e("page", "v", 0, path="/pricing"))  # Consideration at T0
    journey.send(e("page", "w", -400 * DAY, path="/"))  # nothing since
    store, db = journey.storage, journey.storage.database
    store.execute(f"OPTIMIZE TABLE {db}.device_stages FINAL")  # v's entries in one row, as merges leave them
    assert store.query(f"SELECT count() AS n FROM {db}.device_stages WHERE anonymous_id = 'v'") == [{"n": 1}]
    assert "device_stages" in privacy.apply_retention(store, {SITE: 200}, 0)
    for table in privacy.RETENTION_TABLES:
        store.execute(f"OPTIMIZE TABLE {db}.{table} FINAL")
    kept = store.query(f"SELECT anonymous_id, stage FROM {db}.stage_transitions_data ORDER BY anonymous_id, stage")
    assert [(r["anonymous_id"], r["stage"]) for r in kept] == [("v", "Consideration")]
    rows = store.query(
        f"SELECT anonymous_id, awareness_at < '2200-01-01' AS aware, consideration_at < '2200-01-01' AS considered"
        f" FROM {db}.device_stages FINAL"
    )
    assert rows == [{"anonymous_id": "v", "aware": 0, "considered": 1}]
    out = kpis.kpis(store, SITE, PERSONAS, CONF, weeks=4, until="2026-11-23")
    assert _flow(out) == {"Consideration": (1, 0, None)}
