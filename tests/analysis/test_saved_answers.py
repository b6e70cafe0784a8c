"""Kept answers (journey_builder/saved.py, table saved_answers): /v1/moments served from a kept
computation while it is young, computed again in the background once it is old, shared by every
reader of the data, computed now on request, and deleted with an erasure of one of the site's
contacts. On chDB and on the ClickHouse HTTP endpoint (the journey fixture)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from journey_builder import moments, privacy
from journey_builder.personas import Personas
from journey_builder.saved import SavedAnswers
from tests.analysis.streams import SITE, send
from tests.journeys.conftest import Journey
from trailmark.settings import AnalysisSettings

CONF = AnalysisSettings()
PERSONAS = Personas.load()
T0 = datetime.now(UTC).replace(microsecond=0)  # kept rows expire a day after they were computed


def at(seconds: float) -> str:
    """computed_at of an answer computed ``seconds`` after T0."""
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _webinar(journey: Journey, n: int) -> None:
    """Visitors w1..wn: /, then /webinar; the odd ones sign up."""
    for i in range(1, n + 1):
        e = journey.event
        events = [e("page", f"w{i}", 10 * i, path="/"), e("page", f"w{i}", 10 * i + 1, path="/webinar")]
        if i % 2:
            events.append(e("track", f"w{i}", 10 * i + 2, event="Signed Up"))
        send(journey, *events)


def _others(journey: Journey, names: range) -> None:
    """Visitors o<i>: / only, never sign up."""
    for i in names:
        send(journey, journey.event("page", f"o{i}", 500 + i, path="/"))


def _webinar_counts(out: dict[str, Any]) -> tuple[int, int, int, int]:
    m = next(m for s in out["stages"] if s["stage"] == "Awareness" for m in s["moments"] if m["name"] == "/webinar")
    return m["with"], m["with_converted"], m["without"], m["without_converted"]


def _ask(journey: Journey, saved: SavedAnswers, fresh: bool = False, **kw: Any) -> dict[str, Any]:
    return moments.moments(
        journey.storage, SITE, PERSONAS, CONF, conversions=["Signed Up"], min_support=1, saved=saved, fresh=fresh, **kw
    )


def test_a_kept_answer_is_served_until_old_then_computed_again_in_the_background(journey: Journey) -> None:
    clock = Clock()
    saved = SavedAnswers("moments", 300, now=clock)
    _webinar(journey, 3)
    _others(journey, range(2))
    first = _ask(journey, saved)
    assert _webinar_counts(first) == (3, 2, 2, 0) and first["computed_at"] == at(0)

    _others(journey, range(2, 5))  # three more contacts without /webinar
    clock.now = T0 + timedelta(seconds=299)
    young = _ask(journey, saved)
    assert young == first and saved.refresher is None  # kept, nothing recomputed

    clock.now = T0 + timedelta(seconds=300)
    old = _ask(journey, saved)
    assert old == first  # served once more while it is computed again
    assert saved.refresher is not None
    saved.refresher.join(60)
    again = _ask(journey, saved)
    assert _webinar_counts(again) == (3, 2, 5, 0) and again["computed_at"] == at(300)


def test_readers_share_kept_answers_and_fresh_computes_now(journey: Journey) -> None:
    clock = Clock()
    one, other = SavedAnswers("moments", 300, now=clock), SavedAnswers("moments", 300, now=clock)
    _webinar(journey, 3)
    _others(journey, range(2))
    kept = _ask(journey, one)
    _others(journey, range(2, 4))
    assert _ask(journey, other) == kept  # another reader process finds it in ClickHouse

    clock.now = T0 + timedelta(seconds=10)
    now = _ask(journey, other, fresh=True)
    assert _webinar_counts(now) == (3, 2, 4, 0) and now["computed_at"] == at(10)
    assert _ask(journey, one) == now  # the newest computation is the one kept

    # another question (support, conversions, persona) is asked anew, not answered from this one
    assert _webinar_counts(_ask(journey, one, limit=5)) == (3, 2, 4, 0)  # limit is applied to the kept answer
    _others(journey, range(4, 5))
    assert _webinar_counts(_ask(journey, one)) == (3, 2, 4, 0)
    by_persona = _ask(journey, one, persona="Other")
    assert by_persona["persona"] == "Other" and _webinar_counts(by_persona) == (3, 2, 5, 0)
    unknown = pytest.raises(Exception, match="unknown persona")
    with unknown:
        _ask(journey, one, persona="Nobody")


def test_max_age_zero_computes_every_time_and_a_failed_refresh_keeps_the_old_answer(journey: Journey) -> None:
    _webinar(journey, 3)
    _others(journey, range(2))
    live = SavedAnswers("moments", 0)
    assert _webinar_counts(_ask(journey, live)) == (3, 2, 2, 0)
    _others(journey, range(2, 3))
    assert _webinar_counts(_ask(journey, live)) == (3, 2, 3, 0)
    assert journey.storage.query(f"SELECT count() AS n FROM {journey.storage.database}.saved_answers")[0]["n"] in (
        0,
        "0",
    )

    clock = Clock()
    saved = SavedAnswers("failing", 60, now=clock)
    calls: list[int] = []

    def compute() -> dict[str, Any]:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("storage went away")
        return {"n": 1}

    assert saved.answer(journey.storage, SITE, {"q": 1}, compute) == ({"n": 1}, at(0))
    clock.now = T0 + timedelta(minutes=5)
    assert saved.answer(journey.storage, SITE, {"q": 1}, compute)[0] == {"n": 1}
    assert saved.refresher is not None
    saved.refresher.join(60)
    assert len(calls) == 2
    assert saved.answer(journey.storage, SITE, {"q": 1}, compute)[0] == {"n": 1}  # still the old answer
    saved.refresher.join(60)
    assert len(calls) == 3  # and it is tried again, once per read that finds it old


def test_one_background_computation_at_a_time(journey: Journey) -> None:
    clock = Clock()
    saved = SavedAnswers("slow", 60, now=clock)
    release = threading.Event()
    started: list[int] = []

    def compute(q: int) -> dict[str, Any]:
        started.append(q)
        if clock.now > T0:
            assert release.wait(60)
        return {"q": q}

    for q in range(3):
        saved.answer(journey.storage, SITE, {"q": q}, lambda q=q: compute(q))
    clock.now = T0 + timedelta(minutes=5)
    for q in range(3):  # three old answers: one is computed again, the others are served as they are
        assert saved.answer(journey.storage, SITE, {"q": q}, lambda q=q: compute(q))[0] == {"q": q}
    assert started == [0, 1, 2, 0]
    release.set()
    assert saved.refresher is not None
    saved.refresher.join(60)


def test_an_erasure_deletes_the_sites_kept_answers(journey: Journey) -> None:
    saved = SavedAnswers("moments", 300)
    send(journey, journey.event("identify", "jane-phone", 0, user_id="jane", traits={"email": "jane@acme.io"}))
    _webinar(journey, 2)
    _ask(journey, saved)
    send(journey, journey.event("page", "x", 0, path="/"), site="s2")
    saved.answer(journey.storage, "s2", {"q": 1}, lambda: {"n": 1})
    store = journey.storage

    def kept() -> set[str]:
        return {r["site_id"] for r in store.query(f"SELECT site_id FROM {store.database}.saved_answers")}

    assert kept() == {SITE, "s2"}
    subject = privacy.resolve_subject(store, SITE, "jane@acme.io")
    assert subject is not None
    eraser = privacy.Eraser(store, subject, privacy.new_request(SITE, "jane@acme.io"), settle_s=0)
    privacy.begin(store, eraser)
    eraser.run(sleep=lambda _: None)
    assert kept() == {"s2"}


def test_an_answer_kept_in_another_format_is_not_read(journey: Journey, monkeypatch: pytest.MonkeyPatch) -> None:
    saved = SavedAnswers("moments", 300)
    _webinar(journey, 3)
    _others(journey, range(2))
    assert _webinar_counts(_ask(journey, saved)) == (3, 2, 2, 0)
    _others(journey, range(2, 3))
    assert _webinar_counts(_ask(journey, saved)) == (3, 2, 2, 0)  # kept
    monkeypatch.setattr(moments, "SAVED_FORMAT", moments.SAVED_FORMAT + 1)  # an upgrade changed its shape
    assert _webinar_counts(_ask(journey, saved)) == (3, 2, 3, 0)  # computed anew, not read in the old shape


def test_each_site_has_its_own_kept_answers(journey: Journey) -> None:
    """The same question asked with another site's key is that site's answer, never this one's."""
    saved = SavedAnswers("moments", 300)
    _webinar(journey, 3)
    _others(journey, range(2))
    assert _webinar_counts(_ask(journey, saved)) == (3, 2, 2, 0)
    e = journey.event
    for i in range(1, 4):  # s2: three visitors, all watch /webinar, one without: the other way round
        send(journey, e("page", f"t{i}", i, path="/"), e("page", f"t{i}", i + 1, path="/webinar"), site="s2")
    send(journey, e("page", "t4", 9, path="/"), e("track", "t4", 10, event="Signed Up"), site="s2")
    other = moments.moments(
        journey.storage, "s2", PERSONAS, CONF, conversions=["Signed Up"], min_support=1, saved=saved
    )
    assert _webinar_counts(other) == (3, 0, 1, 1)
    assert _webinar_counts(_ask(journey, saved)) == (3, 2, 2, 0)  # and s1's stays its own
