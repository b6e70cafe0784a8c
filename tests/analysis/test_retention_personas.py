"""Retention and personas, computed by hand on tests/analysis/streams.py."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from journey_builder import cohorts
from journey_builder import personas as personas_mod
from journey_builder.analytics import BadQuery
from journey_builder.personas import Personas
from tests.analysis.streams import SITE, feed
from tests.journeys.conftest import Journey
from trailmark.errors import ConfigError
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


def test_personas_side_by_side(site: Journey) -> None:
    out = personas_mod.compare(site.storage, SITE, PERSONAS, CONF, [], ["Order Completed"])
    got = {p["name"]: p for p in out["personas"]}
    assert list(got) == ["Business buyer", "Repeat customer", "Mobile browser", "Other"]
    buyer = got["Business buyer"]  # a: work email + /pricing; bought 7 days and 1 minute after arriving
    assert (buyer["contacts"], buyer["converted"], buyer["conversion_rate"]) == (1, 1, 1.0)
    assert buyer["median_hours_to_convert"] == round(7 * 24 + 1 / 60, 3)
    assert (buyer["stages"], buyer["channels"]) == ({"Retention": 1}, {"Paid Search": 1})
    repeat = got["Repeat customer"]  # c: two purchases
    assert (repeat["median_hours_to_convert"], repeat["channels"]) == (round(1 / 60, 3), {"Organic Social": 1})
    mobile = got["Mobile browser"]  # b: an iPhone, no purchase
    assert (mobile["contacts"], mobile["conversion_rate"], mobile["median_hours_to_convert"]) == (1, 0.0, None)
    assert got["Other"]["stages"] == {"Awareness": 1}
    two = personas_mod.compare(site.storage, SITE, PERSONAS, CONF, ["Other", "Business buyer"], ["Order Completed"])
    assert [p["name"] for p in two["personas"]] == ["Other", "Business buyer"]
    with pytest.raises(BadQuery, match="at most three"):
        personas_mod.compare(site.storage, SITE, PERSONAS, CONF, PERSONAS.names, ["Order Completed"])


def test_rule_values_are_parameters_never_sql(site: Journey) -> None:
    hostile = Personas.parse(
        {
            "persona": [
                {"name": "x') OR 1=1 --", "rules": [{"country": ["GB' OR 1=1 --"], "traits": {"plan') --": "pro'"}}]},
                {"name": "Pro plan", "rules": [{"traits": {"plan": "pro"}}]},
            ]
        }
    )
    got = {
        p["name"]: p["contacts"] for p in personas_mod.compare(site.storage, SITE, hostile, CONF, [], [])["personas"]
    }
    assert got == {"x') OR 1=1 --": 0, "Pro plan": 1, "Other": 3}  # only a has plan = "pro"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"personas": []}, "unknown key"),
        ({"persona": [{"name": "A", "rules": [{"colour": ["red"]}]}]}, "unknown condition"),
        ({"persona": [{"name": "A", "rules": [{"country": "DE"}]}]}, "list of 1 to"),
        ({"persona": [{"name": "A", "rules": [{"free_mail": "yes"}]}]}, "true or false"),
        ({"persona": [{"name": "A", "rules": [{"min_purchases": -1}]}]}, "whole number"),
        ({"persona": [{"name": "A", "rules": [{"traits": {"plan": 1.5}}]}]}, "string, whole number"),
        ({"persona": [{"name": "A", "rules": [{}]}]}, "at least one condition"),
        ({"persona": [{"name": "A", "rules": []}]}, "rules is a list"),
        ({"persona": [{"name": "A", "rules": [{"min_sessions": 1}]}] * 2}, "unique name"),
        ({"default": "A", "persona": [{"name": "A", "rules": [{"min_sessions": 1}]}]}, "default"),
        ({"persona": [{"name": f"P{i}", "rules": [{"min_sessions": 1}]} for i in range(21)]}, "at most 20"),
    ],
)
def test_personas_file_is_checked(doc: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Personas.parse(doc)


def test_personas_file_from_settings(tmp_path: Path) -> None:
    f = tmp_path / "personas.toml"
    f.write_text('default = "Everyone"\n[[persona]]\nname = "DE"\nrules = [{ country = ["DE"] }]\n')
    assert personas_mod.load(AnalysisSettings(personas_file=f)).names == ["DE", "Everyone"]
    f.write_text("[[persona]\n")
    with pytest.raises(ConfigError, match="personas file"):
        personas_mod.load(AnalysisSettings(personas_file=f))
