"""Retention and personas, computed by hand on tests/analysis/streams.py."""

from __future__ import annotations

from datetime import date

import pytest

from journey_builder import cohorts
from journey_builder.analytics import BadQuery
from journey_builder.personas import Personas
from tests.analysis.streams import SITE, feed
from tests.journeys.conftest import Journey
from trailmark.settings import AnalysisSettings

CONF = AnalysisSettings()
PERSONAS = Personas.load()


@pytest.fixture
def site(journey: Journey) -> Journey:
    return feed(journey)


def _matrix(out: dict) -> dict[tuple[str, str], tuple[int, list[int | None]]]:
    return {(r["cohort"], r["group"]): (r["size"], r["retained"]) for r in out["rows"]}


def test_weekly_retention_triangle(site: Journey) -> None:
    out = cohorts.retention(site.storage, SITE, PERSONAS, CONF, periods=4, today=date(2026, 11, 25))
    # Nov 2: a, b and d; a back in weeks 1 and 3. Nov 9: c, back in week 2; its week 3 (Nov 30) has not come.
    assert _matrix(out) == {
        ("2026-11-02", ""): (3, [3, 1, 0, 1]),
        ("2026-11-09", ""): (1, [1, 1, 0, None]),
    }
    assert out["rows"][0]["rate"] == [1.0, 0.3333, 0.0, 0.3333]


def test_retention_by_channel_and_persona_and_events(site: Journey) -> None:
    by = cohorts.retention(site.storage, SITE, PERSONAS, CONF, periods=2, by="channel", today=date(2026, 12, 31))
    assert _matrix(by) == {
        ("2026-11-02", "Paid Search"): (1, [1, 1]),
        ("2026-11-02", "Direct"): (2, [2, 0]),  # b and d
        ("2026-11-09", "Organic Social"): (1, [1, 1]),
    }
    per = cohorts.retention(site.storage, SITE, PERSONAS, CONF, periods=2, by="persona", today=date(2026, 12, 31))
    assert {(k[1], v[0]) for k, v in _matrix(per).items()} == {
        ("Business buyer", 1),
        ("Mobile browser", 1),
        ("Other", 1),
        ("Repeat customer", 1),
    }
    # buyers only: a bought in week 1 (cohort Nov 9), c in week 1 and week 2 (cohort Nov 9)
    buys = cohorts.retention(
        site.storage,
        SITE,
        PERSONAS,
        CONF,
        periods=3,
        start_event="Order Completed",
        return_event="Order Completed",
        today=date(2026, 12, 31),
    )
    assert _matrix(buys) == {("2026-11-09", ""): (2, [2, 1, 0])}
    only = cohorts.retention(
        site.storage, SITE, PERSONAS, CONF, periods=2, persona="Repeat customer", today=date(2026, 12, 31)
    )
    assert _matrix(only) == {("2026-11-09", ""): (1, [1, 1])}
    monthly = cohorts.retention(site.storage, SITE, PERSONAS, CONF, cohort="month", periods=2, today=date(2026, 12, 31))
    assert _matrix(monthly) == {("2026-11-01", ""): (4, [4, 0])}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cohort": "day"}, "cohort"),
        ({"periods": 0}, "periods"),
        ({"periods": 53}, "periods"),
        ({"by": "campaign"}, "by"),
        ({"persona": "Nobody"}, "unknown persona"),
        ({"start_event": "x" * 201}, "200 characters"),
    ],
)
def test_retention_refuses_bad_parameters(site: Journey, kwargs: dict, message: str) -> None:
    with pytest.raises(BadQuery, match=message):
        cohorts.retention(site.storage, SITE, PERSONAS, CONF, **kwargs)
