"""NPS and CSAT answers (the events named by journeys.analysis.nps_event / csat_event) are
touchpoints of kind ``feedback``, with the stage the visitor is in; other tracked events are not."""

from __future__ import annotations

from tests.journeys.conftest import Journey
from trailmark.storage.base import Storage


def test_nps_and_csat_answers_are_feedback_touchpoints(storage: Storage) -> None:
    j = Journey(storage)
    j.send(
        j.event("page", "fb", 0, path="/"),
        j.event("track", "fb", 1, event="NPS Answered", properties={"score": 9}),
        j.event("track", "fb", 2, event="CSAT Answered", properties={"score": 4}),
        j.event("track", "fb", 3, event="Video Played"),
    )
    rows = j.sql("SELECT kind, event, stage FROM {db}.touchpoints ORDER BY timestamp")
    assert rows == [
        {"kind": "session_start", "event": "", "stage": "Awareness"},
        {"kind": "feedback", "event": "NPS Answered", "stage": "Awareness"},
        {"kind": "feedback", "event": "CSAT Answered", "stage": "Awareness"},
    ]


def test_the_feedback_event_names_are_settings(storage: Storage) -> None:
    from trailmark.settings import AnalysisSettings

    j = Journey(storage, analysis=AnalysisSettings(nps_event="Survey Done"))
    j.send(j.event("track", "fb2", 0, event="Survey Done"), j.event("track", "fb2", 1, event="NPS Answered"))
    rows = j.sql("SELECT kind, event FROM {db}.touchpoints WHERE kind = 'feedback'")
    assert rows == [{"kind": "feedback", "event": "Survey Done"}]
