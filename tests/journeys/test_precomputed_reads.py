"""Funnels and attribution read from the tables materialized views keep (session_touches, step_events:
migrations 017, 018) give what the stored events and the identity graph say, whatever was linked or
merged after the rows were written: compared with a reference computed from the public views (the
funnel with ClickHouse's windowFunnel over `events` grouped by each device's current contact, the
attribution with journey_builder.attribution.weights in Python), on a stream where devices are
identified late, email contacts merge into users and visitors never identify. An install that had
events before these migrations gets the tables filled when it upgrades; erasure and retention reach
them too."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from typing import Any

import pytest

from journey_builder import analytics, privacy
from journey_builder.attribution import MODELS, Model
from tests.journeys.conftest import Journey
from tests.journeys.references import reference_credits
from trailmark.storage.base import Storage, apply_migrations, migrations, split_statements

SITE = "s1"
CAMPAIGNS = [
    ("", ""),
    ("?utm_source=google&utm_medium=cpc&utm_campaign=brand", ""),
    ("?utm_source=newsletter&utm_medium=email&utm_campaign=nov", ""),
    ("", "https://www.facebook.com/"),
    ("", "https://news.example.net/post"),
]
PAGES = ["/", "/pricing", "/signup", "/docs"]
FUNNELS = [["/", "/pricing", "/signup", "Signed Up"], ["/pricing", "Order Completed"], ["/docs"]]
NEW_TABLES = ("session_touches", "step_events")


def stream(seed: int = 5) -> list[list[dict[str, Any]]]:
    """Batches of events: 30 visitors over a few days (within the collector's 7 days of clock skew);
    some identify at once, some only in a later batch (after converting), some by email on one
    device and as a user with that email on another (the email contact merges into the user), some
    never."""
    rng = random.Random(seed)
    first: list[dict[str, Any]] = []
    later: list[dict[str, Any]] = []
    for n in range(30):
        anon = f"d{n}"
        t = rng.uniform(-1440, 2 * 1440)
        for _ in range(rng.choice([1, 2, 3])):
            query, referrer = rng.choice(CAMPAIGNS)
            for i in range(rng.choice([1, 2, 4])):
                path = rng.choice(PAGES)
                first.append(
                    Journey.event(
                        "page", anon, t, path=path, query=query if i == 0 else "", referrer=referrer if i == 0 else ""
                    )
                )
                t += rng.uniform(0.5, 30)
                if path == "/signup" and rng.random() < 0.6:
                    first.append(Journey.event("track", anon, t, event="Signed Up"))
                if rng.random() < 0.2:
                    first.append(Journey.event("track", anon, t + 0.1, event="Order Completed"))
            t += rng.uniform(60, 1440)
        who = n % 5
        user, email = f"u{n // 2}", f"p{n // 2}@corp.example"
        if who == 1:  # identified at once
            first.append(Journey.event("identify", anon, t, user_id=user))
        elif who == 2:  # identified only afterwards, in a later batch, as the previous visitor's user
            later.append(Journey.event("identify", anon, t + 600, user_id=f"u{(n - 1) // 2}"))
        elif who == 3:  # known by email, then the same email signs up as a user on another device
            first.append(Journey.event("identify", anon, t, traits={"email": email}))
            phone = f"{anon}-phone"
            later.append(Journey.event("identify", phone, t + 600, user_id=f"w{n}", traits={"email": email}))
            later.append(Journey.event("page", phone, t + 601, path="/pricing", query=CAMPAIGNS[1][0]))
            later.append(Journey.event("track", phone, t + 602, event="Order Completed"))
    return [sorted(first, key=lambda e: e["timestamp"]), later]


def feed(j: Journey, batches: list[list[dict[str, Any]]]) -> None:
    for batch in batches:
        for i in range(0, len(batch), 40):
            j.send(*batch[i : i + 40])


def reference_funnel(
    store: Storage, steps: list[str], window_s: int, by: str | None = None, since: str | None = None
) -> dict[str, Any]:
    """windowFunnel over `events`, per current contact (identity_map), as the read API did before 017."""
    db = store.database
    p: dict[str, Any] = {"s": SITE, "w": window_s, "since": since or "1970-01-01"}
    conds = []
    for i, step in enumerate(steps):
        p[f"x{i}"] = step
        conds.append(
            f"(e.type IN ('page', 'screen') AND e.page_path = {{x{i}:String}})"
            if step.startswith("/")
            else f"(e.type = 'track' AND e.event = {{x{i}:String}})"
        )
    rows = store.query(
        f"SELECT channel, level, count() AS n FROM (SELECT if(m.contact_id = '', concat('anon:', e.anonymous_id),"
        f" m.contact_id) AS contact_id, argMinIf(e.channel, e.timestamp, e.channel NOT IN ('', 'Internal')) AS channel,"
        f" windowFunnel({{w:UInt64}})(toDateTime(e.timestamp), {', '.join(conds)}) AS level FROM {db}.events AS e"
        f" LEFT JOIN {db}.identity_map AS m ON m.site_id = e.site_id AND m.anonymous_id = e.anonymous_id"
        f" WHERE e.site_id = {{s:String}} AND NOT e.is_bot"
        " AND e.timestamp >= parseDateTime64BestEffort({since:String}, 3)"
        f" GROUP BY contact_id) WHERE level > 0 GROUP BY channel, level",
        p,
    )
    totals = [0] * len(steps)
    per: dict[str, list[int]] = defaultdict(lambda: [0] * len(steps))
    for r in rows:
        for i in range(int(r["level"])):
            totals[i] += int(r["n"])
            per[r["channel"] or "Direct"][i] += int(r["n"])
    return {"counts": totals, "by": dict(per) if by else {}}


def reads(store: Storage) -> dict[str, Any]:
    """Every funnel and attribution answer the tests compare (plain data, comparable with ==)."""
    out: dict[str, Any] = {}
    for steps in FUNNELS:
        for by in (None, "channel"):
            out[f"funnel {steps} {by}"] = analytics.funnel(store, SITE, steps, 3 * 86400, by=by)
    for model in MODELS:
        for conversion in ("Order Completed", "Signed Up"):
            got = analytics.attribution(store, SITE, conversion, model, "channel", 30, 7.0, details=True)
            # rounded: sums in another order may differ in the last digits
            got["rows"] = {r["key"]: round(r["credit"], 4) for r in got["rows"]}
            got["conversions"] = sorted(
                (c["contact_id"], c["message_id"], sorted((k, round(v, 4)) for k, v in c["credits"].items()))
                for c in got["conversions"]
            )
            out[f"attribution {model} {conversion}"] = got
    return out


@pytest.fixture
def site(journey: Journey) -> Journey:
    feed(journey, stream())
    return journey


def test_the_stream_links_and_merges_devices(site: Journey) -> None:
    rows = site.sql("SELECT anonymous_id, contact_id FROM {db}.identity_map WHERE site_id = 's1'")
    contacts = {r["anonymous_id"]: r["contact_id"] for r in rows}
    assert contacts["d3"] == contacts["d3-phone"] == "user:w3"  # the email contact merged into the user
    assert contacts["d2"] == contacts["d1"] == "user:u0"  # d2 identified afterwards, onto d1's user
    per_contact = defaultdict(set)
    for device, contact in contacts.items():
        per_contact[contact].add(device)
    assert sum(len(d) > 1 for d in per_contact.values()) >= 5


@pytest.mark.parametrize("steps", FUNNELS)
def test_funnels_equal_window_funnel_over_events_by_current_contact(site: Journey, steps: list[str]) -> None:
    for window in (600, 3 * 86400):
        for by in (None, "channel"):
            got = analytics.funnel(site.storage, SITE, steps, window, by=by)
            want = reference_funnel(site.storage, steps, window, by)
            assert [s["count"] for s in got["steps"]] == want["counts"], (window, by)
            assert got["by"] == want["by"]
    since = "2026-11-03T12:00:00Z"
    got = analytics.funnel(site.storage, SITE, steps, 86400, since=since)
    assert [s["count"] for s in got["steps"]] == reference_funnel(site.storage, steps, 86400, since=since)["counts"]
    assert got["steps"][0]["count"] > 0


@pytest.mark.parametrize("model", MODELS)
def test_credits_equal_the_reference_across_late_and_merged_identities(site: Journey, model: Model) -> None:
    for conversion in ("Order Completed", "Signed Up"):
        got = analytics.attribution(site.storage, SITE, conversion, model, "channel", 30, 7.0, details=True)
        want = reference_credits(site.storage, SITE, conversion, model, 30)
        assert {r["key"]: r["credit"] for r in got["rows"]} == pytest.approx(want)
        n = site.sql(f"SELECT count() AS n FROM {{db}}.events WHERE event = '{conversion}'")[0]["n"]
        assert got["total_conversions"] == len(got["conversions"]) == n > 0


def test_each_conversion_is_listed_under_its_devices_current_contact(site: Journey) -> None:
    """The details name each conversion's contact as identity_map does: identified devices alone on
    their contact (grouped by device, not by contact, in the read) and merged ones alike."""
    e = site.event
    site.send(e("page", "alone", 10, path="/pricing"), e("identify", "alone", 11, user_id="solo"))
    site.send(e("track", "alone", 12, event="Order Completed"))
    current = {
        r["anonymous_id"]: r["contact_id"]
        for r in site.sql("SELECT anonymous_id, contact_id FROM {db}.identity_map WHERE site_id = 's1'")
    }
    events = site.sql("SELECT message_id, anonymous_id FROM {db}.events WHERE event = 'Order Completed'")
    want = {ev["message_id"]: current.get(ev["anonymous_id"]) or f"anon:{ev['anonymous_id']}" for ev in events}
    got = analytics.attribution(site.storage, SITE, "Order Completed", "linear", "channel", 30, 7.0, details=True)
    assert {c["message_id"]: c["contact_id"] for c in got["conversions"]} == want
    assert "user:solo" in want.values()  # an identified device alone on its contact converted


def test_a_late_identify_moves_a_devices_history_to_its_contact(journey: Journey) -> None:
    e = journey.event
    # the laptop arrives from an ad and reaches /pricing; the phone, unknown, reads the newsletter,
    # reaches /signup and buys: two contacts, neither past step 2, the ad credited nothing
    journey.send(
        e("page", "laptop", 0, query=CAMPAIGNS[1][0]),
        e("page", "laptop", 1, path="/pricing"),
        e("identify", "laptop", 2, user_id="u1"),
    )
    journey.send(
        e("page", "phone", 60, path="/signup", query=CAMPAIGNS[2][0]), e("track", "phone", 61, event="Order Completed")
    )
    steps = ["/", "/pricing", "/signup"]
    before = analytics.funnel(journey.storage, SITE, steps, 86400)
    assert [s["count"] for s in before["steps"]] == [1, 1, 0]
    lin = analytics.attribution(journey.storage, SITE, "Order Completed", "linear", "channel", 30, 7.0)
    assert {r["key"]: r["credit"] for r in lin["rows"]} == {"Email": 1.0}
    # the phone identifies as u1 afterwards: one contact, all three steps, the ad's touch counts
    journey.send(e("identify", "phone", 90, user_id="u1"))
    after = analytics.funnel(journey.storage, SITE, steps, 86400)
    assert [s["count"] for s in after["steps"]] == [1, 1, 1]
    lin = analytics.attribution(journey.storage, SITE, "Order Completed", "linear", "channel", 30, 7.0)
    assert {r["key"]: r["credit"] for r in lin["rows"]} == {"Paid Search": 0.5, "Email": 0.5}


def test_two_merged_contacts_count_once(journey: Journey) -> None:
    e = journey.event
    journey.send(e("page", "x", 0, path="/"), e("identify", "x", 1, traits={"email": "bo@corp.example"}))
    journey.send(e("page", "y", 5, path="/pricing"), e("identify", "y", 6, user_id="u7"))
    steps = ["/", "/pricing"]
    assert [s["count"] for s in analytics.funnel(journey.storage, SITE, steps, 86400)["steps"]] == [1, 0]
    # u7 signs in with bo's email: the email contact's device moves to user:u7
    journey.send(e("identify", "y", 7, user_id="u7", traits={"email": "bo@corp.example"}))
    assert [s["count"] for s in analytics.funnel(journey.storage, SITE, steps, 86400)["steps"]] == [1, 1]


# (table, stored hash column, the id it hashes): migration 026
HASHES = (
    ("step_events", "device", "anonymous_id"),
    ("session_touches", "device", "anonymous_id"),
    ("session_touches", "session", "session_id"),
)


def _old_install(store: Storage) -> None:
    """The schema as an install had it before migrations 017 and 018 (and 026 and 030, which change
    their tables), with the later tables the journey builder of today writes (no schema_migrations
    rows: every file runs again at the upgrade, as every migration is idempotent)."""
    for name, sql in migrations():
        if not name.startswith(("017", "018", "026", "030")):
            for statement in split_statements(sql, store.database):
                store.execute(statement)


def test_an_install_with_events_gets_the_tables_filled_when_it_upgrades(storage: Storage) -> None:
    batches = stream(seed=11)
    fresh = Journey(storage)
    feed(fresh, batches)
    want = reads(storage)
    rows = {t: sorted(map(str, storage.query(f"SELECT * FROM {storage.database}.{t}"))) for t in NEW_TABLES}
    fresh_db = storage.database
    storage.database = f"t_{uuid.uuid4().hex[:12]}"
    try:
        _old_install(storage)
        old = Journey(storage)
        feed(old, batches)  # the same events, written with no view to fill the new tables
        assert "step_events" not in {r["name"] for r in storage.query(f"SHOW TABLES FROM {storage.database}")}
        applied = apply_migrations(storage)
        upgrade = {"017_session_touches.sql", "018_step_events.sql", "026_read_hashes.sql", "030_merge_selector.sql"}
        assert upgrade <= set(applied)
        assert {t: sorted(map(str, storage.query(f"SELECT * FROM {storage.database}.{t}"))) for t in NEW_TABLES} == rows
        assert reads(storage) == want
        # the views keep the tables current from then on
        old.send(
            old.event("page", "late", 30000, path="/pricing"), old.event("track", "late", 30001, event="Signed Up")
        )
        n = storage.query(f"SELECT count() AS n FROM {storage.database}.step_events WHERE anonymous_id = 'late'")
        assert n[0]["n"] == 3  # the view, the track and the arrival (Direct)
        # the stored hashes (026) the reads group by: on the backfilled rows and the view's new ones
        for table, column, of in HASHES:
            got = storage.query(
                f"SELECT count() AS n, countIf({column} = cityHash64({of})) AS ok FROM {storage.database}.{table}"
            )[0]
            assert got["n"] > 0 and got["ok"] == got["n"], (table, column)
    finally:
        storage.execute(f"DROP DATABASE IF EXISTS {storage.database} SYNC")
        storage.database = fresh_db


def test_a_backfill_run_twice_changes_no_answer(site: Journey) -> None:
    store = site.storage
    want = reads(store)
    for table in NEW_TABLES:  # so the copies stay apart while the reads run (a merge would join them)
        store.execute(f"SYSTEM STOP MERGES {store.database}.{table}")
    for name, sql in migrations():
        if name in ("017_session_touches.sql", "018_step_events.sql"):
            backfill = [s for s in split_statements(sql, store.database) if s.startswith("INSERT INTO")]
            assert len(backfill) == 1
            store.execute(backfill[0])  # as if a builder had written while the migration ran
    stored = store.query(f"SELECT count() AS n FROM {store.database}.step_events WHERE kind = 'track'")[0]["n"]
    assert stored > int(site.sql("SELECT count() AS n FROM {db}.events WHERE type = 'track'")[0]["n"])
    assert reads(store) == want
    for table in NEW_TABLES:
        store.execute(f"SYSTEM START MERGES {store.database}.{table}")


def test_an_erased_contact_leaves_no_row_in_the_read_tables(site: Journey) -> None:
    store, db = site.storage, site.storage.database
    devices = {"d3", "d3-phone"}
    for table in NEW_TABLES:
        n = store.query(
            f"SELECT count() AS n FROM {db}.{table} WHERE anonymous_id IN {{a:Array(String)}}", {"a": sorted(devices)}
        )
        assert n[0]["n"] > 0, table
    subject = privacy.resolve_subject(store, SITE, "user:w3")
    assert subject is not None and subject.anonymous_ids == devices
    eraser = privacy.Eraser(store, subject, privacy.new_request(SITE, "user:w3"), settle_s=0)
    privacy.begin(store, eraser)
    eraser.run(sleep=lambda _: None)
    assert eraser.progress.status == "done"
    for table in NEW_TABLES:
        n = store.query(
            f"SELECT count() AS n FROM {db}.{table} WHERE anonymous_id IN {{a:Array(String)}}", {"a": sorted(devices)}
        )
        assert n[0]["n"] == 0, table
    # and the reads agree with what is left of the events
    got = analytics.attribution(store, SITE, "Order Completed", "linear", "channel", 30, 7.0)
    assert {r["key"]: r["credit"] for r in got["rows"]} == pytest.approx(
        reference_credits(store, SITE, "Order Completed", "linear", 30)
    )


def test_rows_past_the_sites_retention_leave_the_reads(journey: Journey) -> None:
    e = journey.event
    old, recent = -400 * 1440, 0
    journey.send(e("page", "r-1", old, path="/pricing"), e("track", "r-1", old + 1, event="Order Completed"))
    journey.send(e("page", "r-2", recent, path="/pricing"), e("track", "r-2", recent + 1, event="Order Completed"))
    store, db = journey.storage, journey.storage.database
    assert analytics.attribution(store, SITE, "Order Completed", "linear", "channel", 30, 7.0)["total_conversions"] == 2
    assert set(NEW_TABLES) <= set(privacy.apply_retention(store, {SITE: 200}, 0))
    for table in privacy.RETENTION_TABLES:
        store.execute(f"OPTIMIZE TABLE {db}.{table} FINAL")
    assert analytics.attribution(store, SITE, "Order Completed", "linear", "channel", 30, 7.0)["total_conversions"] == 1
    assert analytics.funnel(store, SITE, ["/pricing", "Order Completed"], 3600)["steps"][1]["count"] == 1
    assert {r["anonymous_id"] for r in store.query(f"SELECT anonymous_id FROM {db}.session_touches")} == {"r-2"}
