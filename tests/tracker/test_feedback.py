"""``trailmark('feedback', 'nps' | 'csat', score, [comment])`` in a real browser: the answers reach
the collector as the documented events (``NPS Answered`` / ``CSAT Answered``, ``properties.score``
and ``comment``), become ``feedback`` touchpoints of the visitor's journey and count in /v1/kpis."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.conftest import Server
from tests.tracker.conftest import Tab, of, until

pytestmark = pytest.mark.browser


def _read(collector: Server, path: str) -> dict[str, Any]:
    r = collector.read(path)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_feedback_answers_become_touchpoints_and_scores(collector: Server, tab: Tab) -> None:
    tab.goto("basic.html")
    aid = tab.aid
    of(collector, aid, 1, "type = 'page'")  # the session starts with the page view
    # a score typed into a form comes as text: sent as a number; a score that is no number, as null
    tab.js("trailmark('feedback', 'nps', 9, 'Quick answers'); trailmark('feedback', 'csat', '4')")
    tab.js("trailmark('feedback', 'NPS', 'n/a')")
    answers = of(collector, aid, 3, "event IN ('NPS Answered', 'CSAT Answered')")
    # two calls in one tick can share a millisecond: compared without their order
    got = sorted((a["event"], orjson.dumps(a["properties"], option=orjson.OPT_SORT_KEYS)) for a in answers)
    assert got == sorted(
        (event, orjson.dumps(props, option=orjson.OPT_SORT_KEYS))
        for event, props in (
            ("NPS Answered", {"score": 9, "comment": "Quick answers"}),
            ("CSAT Answered", {"score": 4}),
            ("NPS Answered", {"score": None}),
        )
    )
    journey = until(
        lambda: (lambda j: j if len([t for t in j["touchpoints"] if t["kind"] == "feedback"]) == 3 else None)(
            _read(collector, f"/v1/journeys/{aid}")
        ),
        what="three feedback touchpoints",
    )
    feedback = [(t["event"], t["stage"], t["page_path"]) for t in journey["touchpoints"] if t["kind"] == "feedback"]
    assert sorted(feedback) == [
        ("CSAT Answered", "Awareness", "/basic.html"),
        ("NPS Answered", "Awareness", "/basic.html"),
        ("NPS Answered", "Awareness", "/basic.html"),
    ]
    scores = _read(collector, "/v1/kpis?weeks=1")["feedback"]
    # the module's collector may hold other tests' answers: none of them sends feedback
    assert (scores["nps"]["answers"], scores["nps"]["promoters"], scores["nps"]["nps"]) == (1, 1, 100.0)
    assert (scores["csat"]["answers"], scores["csat"]["satisfied"], scores["csat"]["csat"]) == (1, 1, 100.0)


def test_feedback_is_not_sent_after_opt_out(collector: Server, tab: Tab) -> None:
    tab.goto("basic.html")
    aid = tab.aid
    tab.js("trailmark('optOut'); trailmark('feedback', 'nps', 10)")
    tab.js("trailmark('optIn'); trailmark('feedback', 'csat', 5)")
    [answer] = of(collector, aid, 1, "event IN ('NPS Answered', 'CSAT Answered')")
    assert (answer["event"], answer["properties"]) == ("CSAT Answered", {"score": 5})
