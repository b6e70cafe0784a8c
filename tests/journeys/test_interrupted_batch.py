"""A batch whose writing stopped between the builder's inserts (a process killed there, or a batch
that failed halfway) is delivered again to a builder with no memory of it (a restart, or another
builder of the group after a rebalance): the result is that of a builder never interrupted.

Derived tables are written before ``events``, so the interrupted batch left sessions and stage
entries whose events are not stored; the reloading builder must count only what has stored
events, or it counts the batch twice, puts its events in a session the batch itself opened and
loses track of the purchase that feeds the Retention stage.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.journeys.conftest import Journey
from trailmark.storage.base import Storage


class Killed(Exception):
    """The process died here (only this test's storage raises it)."""


class DiesBeforeEvents:
    """The real storage, except that one insert into ``events`` never happens."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.armed = False

    def insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        if table == "events" and self.armed:
            self.armed = False
            raise Killed
        self.inner.insert(table, rows)

    def insert_columns(self, table: str, columns: dict[str, list[Any]]) -> None:
        if table == "events" and self.armed:
            self.armed = False
            raise Killed
        self.inner.insert_columns(table, columns)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def batches(j: Journey, anon: str) -> list[list[dict[str, Any]]]:
    return [
        [j.event("page", anon, 0, path="/"), j.event("page", anon, 1, path="/product/1")],
        # the interrupted one: extends session 1 (a purchase), then a campaign opens session 2
        [
            j.event("page", anon, 3, path="/cart"),
            j.event("track", anon, 4, event="Order Completed"),
            j.event("page", anon, 10, path="/", query="?utm_source=news&utm_medium=email"),
            j.event("page", anon, 11, path="/blog"),
        ],
        [j.event("page", anon, 24 * 60, path="/")],  # the next day: Retention (a return after a purchase)
    ]


def journeys(j: Journey, anon: str) -> dict[str, list[dict[str, Any]]]:
    where = f"WHERE anonymous_id = '{anon}'"
    return {
        "sessions": j.sql(
            "SELECT start, end, pageviews, events, entry_page, exit_page, channel, converted,"
            f" conversions FROM {{db}}.sessions {where} ORDER BY start"
        ),
        "touchpoints": j.sql(
            f"SELECT timestamp, kind, event, page_path, channel, stage FROM {{db}}.touchpoints"
            f" {where} ORDER BY timestamp, kind"
        ),
        "stages": j.sql(
            f"SELECT stage, entered_at, rule FROM {{db}}.stage_transitions_data FINAL {where} ORDER BY stage"
        ),
        "events": j.sql(f"SELECT count() AS n, uniqExact(session_id) AS sessions FROM {{db}}.events {where}"),
    }


def test_a_batch_interrupted_before_its_events_is_built_again_as_if_never_interrupted(storage: Storage) -> None:
    reference = Journey(storage)
    for batch in batches(reference, "whole"):
        reference.send(*batch)
    expected = journeys(reference, "whole")
    assert [s["pageviews"] for s in expected["sessions"]] == [3, 2, 1]
    assert any(t["stage"] == "Retention" for t in expected["touchpoints"])

    dying = DiesBeforeEvents(storage)
    first = Journey(dying)  # type: ignore[arg-type]  # a Storage in all but one insert
    one, cut, three = batches(first, "cut")
    first.send(*one)
    dying.armed = True
    with pytest.raises(Killed):
        first.send(*cut)
    assert journeys(first, "cut")["events"] == [{"n": 2, "sessions": 1}], "sessions written, events not"

    after = Journey(storage)  # no memory of the interrupted batch, which comes again
    after.send(*cut)
    after.send(*three)
    assert journeys(after, "cut") == expected
