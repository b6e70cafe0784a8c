"""An enriched event whose fields are not of the contract's types (another producer's record on the
enriched topic, an edited dead-letter replay) fails alone: the journeys stage dead-letters it with
the reason and stores the rest of its batch, whichever form the core runs in (compiled by mypyc, it
checks the declared types of what it reads; as Python the event fails further on). Not here: a
number or null where text is expected (``user_id`` 42, ``type`` None), which the compiled core
dead-letters and the Python form may store (the insert casts it when it is alone in its batch)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.journeys.conftest import Journey
from trailmark.results import Ok
from trailmark.runtime import BuildStage
from trailmark.settings import Settings
from trailmark.storage.base import Storage


@pytest.mark.parametrize(
    ("field", "value"),
    [("timestamp", 1767225600000), ("anonymous_id", ["a", "list"])],
)
def test_an_event_of_wrong_types_is_dead_lettered_alone_and_its_batch_is_stored(
    storage: Storage, field: str, value: Any
) -> None:
    j = Journey(storage)
    first, bad, last = j.enrich([j.event("page", "a", 0), j.event("page", "b", 1), j.event("page", "c", 2)])
    bad[field] = value  # type: ignore[literal-required]
    stage = BuildStage(Settings(), storage, {})

    failed = asyncio.run(stage.write([Ok(b"s1:x", e) for e in (first, bad, last)]))

    assert [(f.kind, f.payload) for f in failed] == [("build_failed", bad)]
    assert failed[0].reason  # says what went wrong
    stored = j.sql("SELECT anonymous_id FROM {db}.events ORDER BY anonymous_id")
    assert stored == [{"anonymous_id": "a"}, {"anonymous_id": "c"}]
    sessions = j.sql("SELECT anonymous_id FROM {db}.sessions ORDER BY anonymous_id")
    assert sessions == [{"anonymous_id": "a"}, {"anonymous_id": "c"}]
