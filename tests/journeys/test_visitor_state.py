"""A returning visitor the builder does not hold in memory (a restart, a rebalance, the in-memory
cache let it go) is reloaded from its ``visitor_state`` row (migration 024) by primary key, without
reading ``events``; a row whose batch's events were not stored is not used; and a batch retried
after ClickHouse was unavailable counts once. Each result is compared with a builder that never
stopped, on chDB and on the ClickHouse server path."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.journeys.conftest import Journey
from tests.journeys.test_interrupted_batch import DiesBeforeEvents, Killed, batches, journeys
from trailmark.storage.base import Storage, StorageUnavailable

READS_EVENTS = re.compile(r"\.events\b")


class Recording:
    """The real storage, remembering the SQL of every read."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.reads: list[str] = []

    def query(self, sql: str, params: Any = None, **kw: Any) -> list[dict[str, Any]]:
        self.reads.append(sql)
        return self.inner.query(sql, params, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class UnavailableOnce:
    """The real storage, except that the next insert into ``events`` once armed finds ClickHouse down."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.armed = False

    def insert_columns(self, table: str, columns: dict[str, list[Any]]) -> None:
        if table == "events" and self.armed:
            self.armed = False
            raise StorageUnavailable("connection refused")
        self.inner.insert_columns(table, columns)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def reference(storage: Storage) -> dict[str, list[dict[str, Any]]]:
    j = Journey(storage)
    for batch in batches(j, "whole"):
        j.send(*batch)
    return journeys(j, "whole")


def test_each_batch_on_a_new_builder_gives_the_journey_of_one_builder_and_never_reads_events(
    storage: Storage,
) -> None:
    expected = reference(storage)
    j = Journey(storage)
    reads: list[str] = []
    for i, batch in enumerate(batches(j, "hop")):
        recording = Recording(storage)
        builder = Journey(recording)  # type: ignore[arg-type]  # a Storage that records reads
        builder.builder.cautious = 0  # its duplicate check reads events after a start (tested below)
        builder.send(*batch)
        if i:  # a returning visitor with nothing in memory
            reads += recording.reads
    assert journeys(j, "hop") == expected
    assert reads, "the reloads were recorded"
    assert not [sql for sql in reads if READS_EVENTS.search(sql)], "state came from visitor_state, not events"
    states = j.sql("SELECT sessions, stages FROM {db}.visitor_state FINAL WHERE anonymous_id = 'hop'")
    assert states == [{"sessions": 3, "stages": sorted({s["stage"] for s in expected["stages"]} | {"Purchase"})}]


def test_new_visitors_are_not_looked_up_in_visitor_state_and_a_returning_one_is(storage: Storage) -> None:
    """Visitors with no stored events have no state row: a batch of them does not look for one
    (a query less per batch of a live site's new visitors); a returning visitor not in memory
    gets its row, and its journey goes on from it."""
    recording = Recording(storage)
    j = Journey(recording)  # type: ignore[arg-type]  # a Storage that records reads
    j.builder.cautious = 0  # past the first batches after a start, whose duplicate check reads events
    j.send(j.event("page", "new-a", 0), j.event("page", "new-b", 1), j.event("page", "new-a", 2))
    assert recording.reads, "the duplicate check was recorded"
    assert not [sql for sql in recording.reads if "visitor_state" in sql], recording.reads
    back = Recording(storage)
    again = Journey(back)  # type: ignore[arg-type]  # a restarted builder: nothing in memory
    again.builder.cautious = 0
    again.send(j.event("page", "new-a", 4), j.event("page", "never-seen", 4))
    assert len([sql for sql in back.reads if "visitor_state" in sql]) == 1, back.reads
    assert not [sql for sql in back.reads if READS_EVENTS.search(sql)], "state came from visitor_state, not events"
    rows = j.sql(
        "SELECT anonymous_id, uniqExact(session_id) AS sessions, count() AS n FROM {db}.events"
        " WHERE anonymous_id IN ('new-a', 'never-seen') GROUP BY anonymous_id ORDER BY anonymous_id"
    )
    assert rows == [
        {"anonymous_id": "never-seen", "sessions": 1, "n": 1},
        {"anonymous_id": "new-a", "sessions": 1, "n": 3},
    ]


def test_a_state_whose_batch_was_not_stored_is_not_used(storage: Storage) -> None:
    expected = reference(storage)
    dying = DiesBeforeEvents(storage)
    first = Journey(dying)  # type: ignore[arg-type]
    one, cut, three = batches(first, "cut")
    first.send(*one)
    dying.armed = True
    with pytest.raises(Killed):
        first.send(*cut)
    # the interrupted batch wrote its visitor_state row (before events): the next builder meets it
    rows = first.sql("SELECT max(sessions) AS sessions FROM {db}.visitor_state WHERE anonymous_id = 'cut'")
    assert rows == [{"sessions": 2}]
    recording = Recording(storage)
    after = Journey(recording)  # type: ignore[arg-type]
    after.builder.cautious = 0  # so a read of events is the state's rebuild, not the duplicate check
    after.send(*cut)
    assert [sql for sql in recording.reads if READS_EVENTS.search(sql)], "rebuilt from the stored events"
    after.send(*three)
    assert journeys(after, "cut") == expected


def test_a_batch_retried_after_clickhouse_was_unavailable_counts_once(storage: Storage) -> None:
    expected = reference(storage)
    flaky = UnavailableOnce(storage)
    j = Journey(flaky)  # type: ignore[arg-type]
    one, two, three = batches(j, "flaky")
    j.send(*one)
    flaky.armed = True
    with pytest.raises(StorageUnavailable):
        j.send(*two)  # the runner retries the same batch on the same builder
    j.send(*two)
    j.send(*three)
    assert journeys(j, "flaky") == expected


def test_events_whose_keys_the_view_missed_are_not_stored_twice_after_a_restart(storage: Storage) -> None:
    # an events insert cut short after its rows, before event_keys_mv's: the keys are missing
    j = Journey(storage)
    events = j.enrich([j.event("page", "cut-view", 0), j.event("track", "cut-view", 1, event="Signed Up")])
    j.builder.process(events)
    j.sql("ALTER TABLE {db}.event_keys DELETE WHERE anonymous_id = 'cut-view' SETTINGS mutations_sync = 2")
    assert j.sql("SELECT count() AS n FROM {db}.event_keys WHERE anonymous_id = 'cut-view'") == [{"n": 0}]
    Journey(storage).builder.process(events)  # restarted: the records after the last commit come again
    count = "SELECT count() AS n FROM {db}.events WHERE anonymous_id = 'cut-view'"
    assert j.sql(count) == [{"n": 2}]
    assert j.sql("SELECT count() AS n FROM {db}.event_keys WHERE anonymous_id = 'cut-view'") == [{"n": 2}]
    # past its first batches a builder trusts event_keys: without the repair these would be stored again
    j.sql("ALTER TABLE {db}.event_keys DELETE WHERE anonymous_id = 'cut-view' SETTINGS mutations_sync = 2")
    trusting = Journey(storage)
    trusting.builder.cautious = 0
    trusting.builder.process(events)
    assert j.sql(count) == [{"n": 4}]


def test_keys_with_quotes_backslashes_and_non_ascii_are_found_again(storage: Storage) -> None:
    """A batch's keys travel as one JSON text (journey_builder/repository.py ``key_set``): ids made of
    the characters that break quoting (quotes, backslashes, control characters, non-ASCII, a JSON
    look-alike) must still match what is stored, so a redelivered batch is skipped whole and a new
    builder reloads those visitors instead of opening new sessions."""
    odd = ["a'b", 'c"d', "e\\f", "g\nh\ti", "ünï-çødé 🙂", '["x", "y"]', "\\u0000'\""]
    j = Journey(storage)
    sent = []
    for i, anon in enumerate(odd):
        ev = j.event("page", anon, i, path=f"/p{i}")
        ev["messageId"] = f"{anon}#{i}"
        sent.append(ev)
    enriched = j.enrich(sent)
    assert j.builder.process(enriched).skipped_duplicates == 0
    again = Journey(storage)  # nothing in memory: keys and state are read back by these ids
    assert again.builder.process(j.enrich(sent)).skipped_duplicates == len(odd)
    later = [again.event("page", anon, i + 5, path="/later") for i, anon in enumerate(odd)]
    again.builder.process(again.enrich(later))
    rows = again.sql("SELECT anonymous_id, uniqExact(session_id) AS n FROM {db}.sessions_data GROUP BY anonymous_id")
    assert {r["anonymous_id"]: r["n"] for r in rows} == dict.fromkeys(odd, 1)
    assert again.sql("SELECT count() AS n FROM {db}.events")[0]["n"] == 2 * len(odd)


def test_a_batch_whose_key_sets_pass_a_servers_http_limits_is_stored_and_found_again(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's visitors and messageIds travel as JSON text parameters of about 1 MB for 20k events.
    A ClickHouse server takes at most 128 KiB in a form field (clickhouse-connect's place for long
    parameters) and 1 MiB in the URL, as the test endpoint does; the server backend sends such a
    parameter as external data instead. Here 2,000 visitors with long ids make key sets of ~500 KB:
    the batch is stored, and a redelivery through a builder with nothing in memory is found whole
    and skipped."""
    n = 2000
    pad = "v" * 200
    j = Journey(storage)
    sent = []
    for i in range(n):
        ev = j.event("page", f"{pad}-{i}", i % 30, path=f"/p{i % 7}")
        ev["messageId"] = f"{pad}-m{i}"
        sent.append(ev)
    enriched = j.enrich(sent)
    assert j.builder.process(enriched).skipped_duplicates == 0
    again = Journey(storage)
    assert again.builder.process(j.enrich(sent)).skipped_duplicates == n
    assert again.sql("SELECT count() AS n FROM {db}.events")[0]["n"] == n
    later = [again.event("page", f"{pad}-{i}", i % 30 + 5, path="/later") for i in range(n)]
    again.builder.process(again.enrich(later))
    rows = again.sql("SELECT uniqExact(session_id) AS s, uniqExact(anonymous_id) AS v FROM {db}.sessions_data")
    assert rows == [{"s": n, "v": n}], "returning visitors were reloaded, not given new sessions"
