"""The journey builder holds the process's cyclic GC back while it builds a batch (``gc_paused``)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from journey_builder.builder import gc_paused
from tests.journeys.conftest import Journey


@pytest.fixture(autouse=True)
def gc_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_the_gc_comes_back_when_the_last_block_of_any_thread_ends() -> None:
    entered, leave_first, first_left, leave_second = (threading.Event() for _ in range(4))
    seen: dict[str, bool] = {}

    def first() -> None:
        with gc_paused():
            entered.set()
            leave_first.wait(10)
        first_left.set()

    def second() -> None:
        entered.wait(10)
        with gc_paused():
            seen["inside"] = gc.isenabled()
            leave_first.set()
            first_left.wait(10)
            seen["after the first left"] = gc.isenabled()
            leave_second.wait(10)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    first_left.wait(10)
    leave_second.set()
    for t in threads:
        t.join(10)
    assert seen == {"inside": False, "after the first left": False}
    assert gc.isenabled()


def test_a_gc_that_was_off_stays_off_and_an_error_still_ends_the_pause() -> None:
    gc.disable()
    with gc_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()
    gc.enable()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("a failed batch")
    assert gc.isenabled()


def test_a_batch_is_built_and_stored_with_the_gc_held_back(journey: Journey, monkeypatch: pytest.MonkeyPatch) -> None:
    j = journey
    storage = j.storage
    during: list[tuple[str, bool]] = []
    insert, insert_columns = storage.insert, storage.insert_columns

    def rows(table: str, data: Sequence[Mapping[str, Any]]) -> None:
        during.append((table, gc.isenabled()))
        insert(table, data)

    def columns(table: str, data: Mapping[str, Sequence[Any]]) -> None:
        during.append((table, gc.isenabled()))
        insert_columns(table, data)

    monkeypatch.setattr(storage, "insert", rows)
    monkeypatch.setattr(storage, "insert_columns", columns)
    sent = j.enrich([j.event("page", "a", 0, path="/"), j.event("page", "a", 1, path="/pricing")])
    out = j.builder.process(sent)
    assert ("events", False) in during and ("sessions_data", False) in during
    assert not any(on for _, on in during)
    assert gc.isenabled()
    assert list(out.events) == ["message_id"] and out.event_count == 2  # the others let go of
    assert out.events["message_id"] == [e["message_id"] for e in sent]
    assert j.sql("SELECT count() AS n FROM {db}.events") == [{"n": 2}]

    def broken(table: str, data: Mapping[str, Sequence[Any]]) -> None:
        raise RuntimeError("the events insert failed")

    monkeypatch.setattr(storage, "insert_columns", broken)
    with pytest.raises(RuntimeError):
        j.builder.process(j.enrich([j.event("page", "b", 2, path="/")]))
    assert gc.isenabled()
