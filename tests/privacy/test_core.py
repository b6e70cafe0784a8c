"""Erasure, suppression and export on both storage backends (chDB, and a ClickHouse server through
clickhouse-connect), with the real Enricher and JourneyBuilder writing the rows."""

from __future__ import annotations

from typing import Any

import orjson

from journey_builder import privacy
from tests.journeys.conftest import Journey
from trailmark.storage.base import Storage

JANE_DEVICES = ("jane-laptop", "jane-phone", "jane-tablet")
JANE = ("u-jane", "jane@acme.io", *JANE_DEVICES)


def every_row(storage: Storage) -> dict[str, list[str]]:
    """Each table of the database (views left out: they read these) as rows of JSON text."""
    db = storage.database
    tables = [
        r["name"]
        for r in storage.query(
            "SELECT name FROM system.tables WHERE database = {db:String} AND engine NOT LIKE '%View'", {"db": db}
        )
    ]
    return {t: [orjson.dumps(r).decode() for r in storage.query(f"SELECT * FROM {db}.{t}")] for t in tables}


def mentions(rows: dict[str, list[str]], needles: tuple[str, ...]) -> dict[str, list[str]]:
    return {
        t: [r for r in rs if any(n in r for n in needles)]
        for t, rs in rows.items()
        if any(n in r for r in rs for n in needles)
    }


def stitched_jane_and_bob(journey: Journey) -> None:
    e = journey.event
    journey.send(
        e("page", "jane-laptop", 0, path="/pricing", query="?utm_source=news&utm_medium=email"),
        e("identify", "jane-laptop", 1, user_id="u-jane", traits={"email": "jane@acme.io", "plan": "pro"}),
        {**e("group", "jane-laptop", 2, user_id="u-jane", traits={"name": "Acme"}), "groupId": "acme"},
        e("page", "jane-phone", 10, path="/"),
        e("identify", "jane-phone", 11, user_id="u-jane"),
        e("page", "jane-tablet", 20, path="/docs"),
        e("identify", "jane-tablet", 21, traits={"email": "jane@acme.io"}),
        e("track", "jane-tablet", 22, event="Order Completed", properties={"total": 42}),
        e("page", "bob-1", 5, path="/"),
        e("identify", "bob-1", 6, user_id="u-bob", traits={"email": "bob@globex.com"}),
        e("track", "bob-1", 7, event="Signed Up", properties={"plan": "free"}),
    )
    # a dead letter that carries one of Jane's events (as the journey runner stores them)
    payload = orjson.dumps({"site_id": "s1", "message_id": "m-dead", "anonymous_id": "jane-phone", "type": "track"})
    journey.storage.insert(
        "dead_letters",
        [
            {
                "stage": "journeys",
                "reason": "test",
                "payload": payload.decode(),
                "payload_encoding": "utf-8",
                "failed_at": "2026-11-02 09:30:00.000",
                "version": 1,
                "site_id": "s1",
                "kind": "build_failed",
            }
        ],
    )


def erase(storage: Storage, contact: str) -> privacy.Eraser:
    subject = privacy.resolve_subject(storage, "s1", contact)
    assert subject is not None
    eraser = privacy.Eraser(storage, subject, privacy.new_request("s1", contact), settle_s=0)
    privacy.begin(storage, eraser)
    eraser.run(sleep=lambda _: None)
    return eraser


def test_erasing_a_stitched_contact_leaves_nothing_of_its_identifiers(journey: Journey) -> None:
    stitched_jane_and_bob(journey)
    store = journey.storage
    before = every_row(store)
    assert mentions(before, JANE).keys() >= {
        "events",
        "sessions_data",
        "identities_data",
        "contacts_data",
        "contact_handles",
        "contact_devices",
        "shared_devices",
        "account_links_data",
        "touchpoints_data",
        "stage_transitions_data",
        "dead_letters",
    }
    bob = {t: [r for r in rs if "bob" in r] for t, rs in before.items()}

    subject = privacy.resolve_subject(store, "s1", "jane@acme.io")
    assert subject is not None and subject.anonymous_ids == set(JANE_DEVICES)
    eraser = erase(store, "jane@acme.io")

    after = every_row(store)
    assert mentions(after, JANE) == {}
    assert {t: [r for r in rs if "bob" in r] for t, rs in after.items()} == bob  # untouched
    state = privacy.load(store, "s1", eraser.progress.request_id)
    assert state is not None and state["status"] == "done" and state["steps_done"] == state["steps_total"]
    # 3 devices, the user id and the email (the contact id is the typed user id); hashes only
    assert len(after["suppressed_identifiers"]) == len(subject.identifiers()) == 5
    # the group call's account is a company, not Jane: it stays, her link to it does not
    assert [r["group_id"] for r in store.query(f"SELECT group_id FROM {store.database}.accounts_data")]


def test_late_and_replayed_events_of_erased_identifiers_are_dropped(journey: Journey) -> None:
    stitched_jane_and_bob(journey)
    erase(journey.storage, "u-jane")
    e = journey.event
    out = journey.builder.process(
        journey.enrich(
            [
                e("page", "jane-phone", 30),  # an erased device
                e("identify", "new-device", 31, user_id="u-jane"),  # an erased user id on a new device
                e("identify", "other-device", 32, traits={"email": "JANE@acme.io"}),  # an erased email
                e("page", "bob-1", 33),  # not erased
            ]
        )
    )
    assert out.skipped_erased == 3 and out.event_count == 1
    assert mentions(every_row(journey.storage), JANE) == {}


def test_export_round_trips_the_stored_events(journey: Journey) -> None:
    stitched_jane_and_bob(journey)
    store = journey.storage
    subject = privacy.resolve_subject(store, "s1", "u-jane")
    assert subject is not None
    doc: dict[str, Any] = orjson.loads(b"".join(privacy.export_chunks(store, subject, page_rows=2)))  # several pages
    stored = [
        privacy._parsed(r)
        for r in store.query(
            f"SELECT * FROM {store.database}.events WHERE anonymous_id LIKE 'jane-%' ORDER BY timestamp, message_id"
        )
    ]
    assert len(stored) == 8 and doc["events"] == stored
    assert [c["contact_id"] for c in doc["contacts"]] == ["user:u-jane"]
    assert doc["contacts"][0]["traits"]["plan"] == "pro"
    assert {i["anonymous_id"] for i in doc["identities"]} == set(JANE_DEVICES)
    assert len(doc["sessions"]) == 3 and doc["accounts"] and doc["stage_transitions"]
    assert all(s["anonymous_id"].startswith("jane-") for s in doc["sessions"])


def test_a_raw_batch_in_the_log_loses_only_the_erased_events() -> None:
    subject = privacy.Subject("s1", "user:u-jane", {"user:u-jane"}, {"jane-laptop"}, {"u-jane"}, {"jane@acme.io"})
    scrub = privacy.RecordScrubber(subject)
    batch = {
        "site_id": "s1",
        "body": {
            "batch": [
                {"type": "page", "anonymousId": "shared"},
                {"type": "identify", "anonymousId": "shared", "traits": {"email": "Jane@Acme.io"}},
            ]
        },
    }
    kept = scrub(orjson.dumps(batch))
    assert kept is not None and orjson.loads(kept)["body"]["batch"] == [{"type": "page", "anonymousId": "shared"}]
    assert scrub(orjson.dumps({"site_id": "s1", "body": {"batch": [{"anonymousId": "jane-laptop"}]}})) is None
    assert scrub(orjson.dumps({"site_id": "s2", "body": {"batch": [{"anonymousId": "jane-laptop"}]}})) is not None
    dead = orjson.dumps({"stage": "journeys", "payload": orjson.dumps({"user_id": "u-jane"}).decode()})
    assert scrub(dead) is None
    unrelated = orjson.dumps({"stage": "journeys", "payload": orjson.dumps({"user_id": "u-jane2"}).decode()})
    assert scrub(unrelated) == unrelated


def test_consent_is_stored_with_each_event_and_the_contact(journey: Journey) -> None:
    e = journey.event

    def with_consent(ev: dict[str, Any], consent: object) -> dict[str, Any]:
        ev["context"]["consent"] = consent
        return ev

    journey.send(
        with_consent(e("page", "c-1", 0), [None, True, False]),  # no choice yet, GPC on, cookieless
        with_consent(e("identify", "c-1", 1, user_id="u-c"), [1, False, True]),  # opted in
        with_consent(e("page", "seg-1", 2), {"categoryPreferences": {"Analytics": True, "Advertising": False}}),
        with_consent(e("page", "seg-2", 3), {"categoryPreferences": {"Analytics": False}}),
        e("page", "server-1", 4),  # a server-side SDK: no consent at all
    )
    rows = journey.sql(
        "SELECT anonymous_id, type, consent, consent_dnt, consent_cookieless, consent_categories"
        " FROM {db}.events ORDER BY timestamp"
    )
    assert [
        (r["anonymous_id"], r["consent"], r["consent_dnt"], r["consent_cookieless"], r["consent_categories"])
        for r in rows
    ] == [
        ("c-1", "none", True, True, []),
        ("c-1", "granted", False, False, []),
        ("seg-1", "granted", False, False, ["Analytics"]),
        ("seg-2", "denied", False, False, []),
        ("server-1", "", False, False, []),
    ]
    [contact] = journey.sql("SELECT consent, consent_dnt, consent_at FROM {db}.contacts")
    assert contact["consent"] == "granted" and not contact["consent_dnt"]
    assert contact["consent_at"].startswith("2026-11-02 09:01:00")
    # /v1/sql users filter on it like any column
    granted = journey.sql("SELECT count() AS n FROM {db}.events WHERE consent = 'granted' AND NOT consent_dnt")
    assert granted[0]["n"] == 2


def test_rows_older_than_the_sites_retention_disappear_at_the_next_merge(journey: Journey) -> None:
    e = journey.event
    old, recent = -400 * 1440, 0  # 400 days before T0, and T0 (a few weeks ago at most)
    journey.send(
        e("page", "r-1", old, path="/shoes/old"),  # the section is an interest (interest_hours)
        e("track", "r-1", old + 1, event="Order Completed"),
        e("page", "r-2", recent, path="/shoes/new"),
        e("track", "r-2", recent + 1, event="Order Completed"),
    )
    store, db = journey.storage, journey.storage.database

    def merged_counts() -> dict[str, int]:
        out = {}
        for table in privacy.RETENTION_TABLES:
            store.execute(f"OPTIMIZE TABLE {db}.{table} FINAL")
            out[table] = int(store.query(f"SELECT count() AS n FROM {db}.{table}")[0]["n"])
        return out

    kept = merged_counts()
    assert kept["events"] == 4 and kept["sessions_data"] == 2 and kept["stage_transitions_data"] > 0
    assert privacy.apply_retention(store, {}, 0) == []  # unchanged settings: nothing to do
    assert merged_counts() == kept  # no retention: kept for good

    assert privacy.apply_retention(store, {"s1": 200, "other": 7}, 0) == list(privacy.RETENTION_TABLES)
    assert privacy.apply_retention(store, {"s1": 200, "other": 7}, 0) == []  # applied once
    after = merged_counts()
    assert after["events"] == 2 and after["sessions_data"] == 1
    assert (kept["interest_hours"], after["interest_hours"]) == (2, 1)  # the summaries follow too
    assert all(0 < after[t] < kept[t] for t in privacy.RETENTION_TABLES)
    assert {r["anonymous_id"] for r in store.query(f"SELECT anonymous_id FROM {db}.events")} == {"r-2"}
    # rows written from now on carry the site's retention
    journey.send(e("page", "r-3", recent + 2))
    written = store.query(f"SELECT retention_days FROM {db}.events WHERE anonymous_id = 'r-3'")
    assert written == [{"retention_days": 200}]
