"""An erasure interrupted between two of its steps resumes from the last step it recorded and
finishes: nothing of the contact is left, its working copy included; others are untouched. Real
builder and storage (chDB and a ClickHouse server); the stop is a step hook that raises once."""

from __future__ import annotations

import pytest

from journey_builder import privacy
from schemas.times import ch_now
from tests.journeys.conftest import Journey
from tests.privacy.test_core import JANE, every_row, mentions, stitched_jane_and_bob


class Stopped(Exception):
    """The process died here."""


def stop_after(step: int) -> object:
    def hook(number: int) -> None:
        if number == step:
            raise Stopped(f"stopped after step {step}")

    return hook


def test_an_erasure_stopped_between_two_deletes_resumes_and_finishes(journey: Journey) -> None:
    stitched_jane_and_bob(journey)
    store = journey.storage
    bob = {t: [r for r in rs if "bob" in r] for t, rs in every_row(store).items()}
    subject = privacy.resolve_subject(store, "s1", "jane@acme.io")
    assert subject is not None
    eraser = privacy.Eraser(store, subject, privacy.new_request("s1", "jane@acme.io"), settle_s=0)
    request_id = eraser.progress.request_id
    privacy.begin(store, eraser)
    with pytest.raises(Stopped):  # suppressed, then 4 of the tables deleted: the process dies
        eraser.run(sleep=lambda _: None, after_step=stop_after(5))  # type: ignore[arg-type]

    state = privacy.load(store, "s1", request_id)
    assert state is not None and state["status"] == "running" and state["steps_done"] == 5
    half = mentions(every_row(store), JANE)
    assert "events" in half and "erasure_subjects" in half  # rows left, and the subject kept to finish them
    # by now the contact cannot be looked up again in full: the kept subject is what finishes the job
    again = privacy.resolve_subject(store, "s1", "jane@acme.io")
    assert again is None or again.identifiers() != subject.identifiers()

    # the next process: finds the request, goes on after step 5 (it does not start over)
    assert privacy.unfinished(store, ch_now()) == [("s1", request_id)]
    assert privacy.unfinished(store, "2000-01-01 00:00:00.000") == []  # a live process's erasure is left alone
    resumed = privacy.resume(store, "s1", request_id, settle_s=0)
    assert resumed is not None and resumed.progress.steps_done == 5
    assert resumed.subject.identifiers() == subject.identifiers()
    ran: list[int] = []
    resumed.run(sleep=lambda _: None, after_step=ran.append)
    assert ran[0] == 6 and ran[-1] == resumed.progress.steps_total - 1

    state = privacy.load(store, "s1", request_id)
    assert state is not None and state["status"] == "done" and state["steps_done"] == state["steps_total"]
    after = every_row(store)
    assert mentions(after, JANE) == {}  # every table, the working copy too
    assert {t: [r for r in rs if "bob" in r] for t, rs in after.items()} == bob
    assert privacy.unfinished(store, ch_now()) == [] and privacy.resume(store, "s1", request_id) is None


def test_a_done_erasures_working_copy_does_not_outlive_it(journey: Journey) -> None:
    stitched_jane_and_bob(journey)
    store = journey.storage
    subject = privacy.resolve_subject(store, "s1", "u-bob")
    assert subject is not None
    eraser = privacy.Eraser(store, subject, privacy.new_request("s1", "u-bob"), settle_s=0)
    privacy.begin(store, eraser)
    eraser.progress.status = "done"  # a stop between recording "done" and deleting the working copy
    privacy.save(store, eraser.progress)
    assert store.query(f"SELECT count() AS n FROM {store.database}.erasure_subjects")[0]["n"] == 1
    assert privacy.unfinished(store, ch_now()) == []
    assert store.query(f"SELECT count() AS n FROM {store.database}.erasure_subjects")[0]["n"] == 0
