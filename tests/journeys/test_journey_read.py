"""The journey read (journey_builder/queries.py) in process, on chDB and on a ClickHouse server: who a
name resolves to, which devices are the contact's, and how many queries one read costs."""

from __future__ import annotations

import re
from typing import Any, cast

import pytest

from journey_builder import interests, queries
from tests.journeys.conftest import IPHONE, Journey
from trailmark.settings import JourneySettings
from trailmark.storage.base import Storage


class CountingStorage:
    """The real storage, counting the queries sent through it."""

    def __init__(self, storage: Storage) -> None:
        self.storage, self.database, self.sent = storage, storage.database, 0

    def query(self, sql: str, params: Any = None, **kwargs: Any) -> Any:
        self.sent += 1
        return self.storage.query(sql, params, **kwargs)


@pytest.fixture
def site(journey: Journey) -> Journey:
    j = journey
    j.send(
        j.event("page", "d1", 0, path="/", query="?utm_source=google&utm_medium=cpc"),
        j.event("page", "d1", 1, path="/pricing"),
        j.event("identify", "d1", 2, user_id="u1", traits={"email": "Ann@Acme.io"}),
        j.event("page", "d2", 60, path="/", ua=IPHONE),
        j.event("identify", "d2", 61, user_id="u1", ua=IPHONE),
        j.event("track", "d2", 62, event="Order Completed", ua=IPHONE, properties={"revenue": 40}),
        j.event("page", "v9", 5, path="/blog"),
    )
    return j


def test_a_contact_by_any_of_its_names(site: Journey) -> None:
    bodies = [queries.journey(site.storage, "s1", name) for name in ("u1", "user:u1", "ann@acme.io", "d2")]
    assert all(b is not None for b in bodies)
    body = cast(dict[str, Any], bodies[0])
    assert all(b == body for b in bodies[1:])
    assert body["contact_id"] == "user:u1" and body["anonymous_ids"] == ["d1", "d2"]
    assert body["contact"]["user_id"] == "u1"
    assert [s["anonymous_id"] for s in body["sessions"]] == ["d1", "d2"]
    assert [s["channel"] for s in body["sessions"]] == ["Paid Search", "Direct"]
    assert [t["event"] for t in body["conversions"]] == ["Order Completed"]
    assert body["touchpoints"] == sorted(body["touchpoints"], key=lambda t: (t["timestamp"], t["touchpoint_id"]))
    assert {s["stage"] for s in body["stage_transitions"]} >= {"Awareness", "Consideration"}
    assert queries.resolve(site.storage, "s1", "ann@acme.io") == ("user:u1", ["d1", "d2"])


def test_a_visitor_without_a_contact_and_a_name_that_is_nobody(site: Journey) -> None:
    for name in ("v9", "anon:v9"):
        body = queries.journey(site.storage, "s1", name, lambda devices: devices)
        assert body is not None
        assert (body["contact_id"], body["anonymous_ids"], body["contact"]) == ("anon:v9", ["v9"], None)
        assert [s["landing_page"] for s in body["sessions"]] == ["/blog"] and body["extra"] == ["v9"]
    assert queries.resolve(site.storage, "s1", "anon:v9") == ("anon:v9", ["v9"])
    assert queries.journey(site.storage, "s1", "nobody") is None
    assert queries.resolve(site.storage, "s1", "nobody") is None


def test_a_device_linked_to_another_contact_since_leaves_the_journey(site: Journey) -> None:
    site.send(site.event("identify", "d2", 120, user_id="u2", ua=IPHONE))
    body = queries.journey(site.storage, "s1", "u1")
    assert body is not None and body["anonymous_ids"] == ["d1"]
    assert [s["anonymous_id"] for s in body["sessions"]] == ["d1"]
    moved = queries.journey(site.storage, "s1", "u2")
    assert moved is not None and moved["anonymous_ids"] == ["d2"]


def test_a_session_written_in_two_batches_reads_as_its_latest_version(site: Journey) -> None:
    """The read takes sessions_data without FINAL and keeps each session's highest version itself:
    a session extended by a later batch, its two versions not merged yet, is one session, as now."""
    db = site.storage.database
    site.storage.execute(f"SYSTEM STOP MERGES {db}.sessions_data")
    try:
        site.send(site.event("page", "d1", 3, path="/features"))  # d1's first session, a batch later
        versions = site.sql("SELECT count() AS n FROM {db}.sessions_data WHERE anonymous_id = 'd1'")
        assert int(versions[0]["n"]) == 2
        body = queries.journey(site.storage, "s1", "u1")
        assert body is not None
        assert [s["anonymous_id"] for s in body["sessions"]] == ["d1", "d2"]
        first = body["sessions"][0]
        assert (first["pageviews"], first["exit_page"], first["channel"]) == (3, "/features", "Paid Search")
        assert "version" not in first
    finally:
        site.storage.execute(f"SYSTEM START MERGES {db}.sessions_data")


def test_one_read_is_two_queries_to_resolve_and_one_per_part(site: Journey) -> None:
    # each chDB query costs CPU before it reads anything: a contact takes one query for its id, one
    # for its devices and their identities (beside its profile), then the four other parts; a
    # visitor (a name that is no contact) the first, then five parts: no stored contact is named
    # anon:<id>. One query with the contact as a scalar subquery of the devices' cost a third more
    # CPU at 10M events.
    for name, sent in (("u1", 7), ("v9", 6), ("anon:v9", 6), ("nobody", 6)):
        counting = CountingStorage(site.storage)
        queries.journey(cast(Storage, counting), "s1", name)
        assert counting.sent == sent, name


# the tables the journey read looks up by key: migration 028 gives them compressed blocks of 4-16 KiB
LOOKUP_TABLES = (
    "sessions_data",
    "touchpoints_data",
    "stage_transitions_data",
    "contacts_data",
    "contact_handles",
    "identities_data",
    "contact_devices",
)


def test_a_journey_decompresses_small_blocks(site: Journey) -> None:
    """The tables are set to write blocks of 4-16 KiB (a read decompresses whole blocks, and with the
    default of 64 KiB to 1 MiB one contact's journey decompressed ~500 of them at 10M events)."""
    db = site.storage.database
    rows = site.storage.query(
        f"SELECT name, create_table_query AS ddl FROM system.tables WHERE database = '{db}'"
        " AND name IN {t:Array(String)}",
        {"t": list(LOOKUP_TABLES)},
    )
    assert {r["name"] for r in rows} == set(LOOKUP_TABLES)
    for r in rows:
        assert "min_compress_block_size = 4096" in r["ddl"] and "max_compress_block_size = 16384" in r["ddl"], r["name"]


class RecordingStorage(CountingStorage):
    """The real storage, keeping the text of each query sent through it."""

    def __init__(self, storage: Storage) -> None:
        super().__init__(storage)
        self.texts: list[str] = []

    def query(self, sql: str, params: Any = None, **kwargs: Any) -> Any:
        self.texts.append(sql)
        return super().query(sql, params, **kwargs)


def test_every_table_a_journey_reads_is_merged_whole_once_at_rest(site: Journey) -> None:
    """Migration 032: each table a journey read looks up (the profile, its devices, its parts and its
    interests, read here as the read API reads them) merges into one part after an hour at rest.
    A journey query that starts reading a table without it fails here."""
    db = site.storage.database
    recording = RecordingStorage(site.storage)
    store = cast(Storage, recording)
    queries.journey(store, "s1", "u1", lambda devices: interests.of_devices(store, "s1", devices, JourneySettings()))
    read = {m for sql in recording.texts for m in re.findall(rf"\b{db}\.(\w+)", sql)}
    assert {"sessions_data", "touchpoints_data", "interest_hours", "contact_handles"} <= read
    rows = site.storage.query(
        "SELECT name, engine, create_table_query AS ddl FROM system.tables WHERE database = {d:String}"
        " AND name IN {t:Array(String)}",
        {"d": db, "t": sorted(read)},
    )
    assert {r["name"] for r in rows} == read
    unset = [
        r["name"]
        for r in rows
        if "MergeTree" not in r["engine"]
        or "min_age_to_force_merge_seconds = 3600" not in r["ddl"]
        or "min_age_to_force_merge_on_partition_only = 1" not in r["ddl"]
    ]
    assert unset == []
