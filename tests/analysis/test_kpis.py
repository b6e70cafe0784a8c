"""Stage KPIs and feedback, computed by hand on tests/analysis/streams.py.

Stage entries (stages.toml): a: Awareness and Consideration (/pricing) on day 0, Decision (/cart) on
day 7, Retention (back after its purchase) on day 21. b, d: Awareness on days 1 and 2. c: Awareness on
day 8, Consideration (second session) and Retention (back after buying) both on day 15.
"""

from __future__ import annotations

from datetime import date

import pytest

from journey_builder import cohorts, kpis, moments
from journey_builder.analytics import BadQuery
from journey_builder.insights import limits
from journey_builder.personas import Personas
from tests.analysis.streams import DAY, SITE, feed, send
from tests.journeys.conftest import Journey
from trailmark.settings import AnalysisSettings
from trailmark.storage.base import QueryError

CONF = AnalysisSettings()
PERSONAS = Personas.load()
H = 3600.0


@pytest.fixture
def site(journey: Journey) -> Journey:
    return feed(journey)


def _stage(k: dict, name: str) -> dict:
    return next(s for s in k["stages"] if s["stage"] == name)


def test_stage_flow_time_in_stage_and_money(site: Journey) -> None:
    k = kpis.kpis(site.storage, SITE, PERSONAS, CONF, weeks=4, until="2026-11-23")
    assert k["weeks"] == ["2026-11-02", "2026-11-09", "2026-11-16", "2026-11-23"]
    aw = _stage(k, "Awareness")
    assert (aw["entered"], aw["moved_on"], aw["drop_off"], aw["conversion_rate"]) == (4, 2, 2, 0.5)
    # a moved on after 2 minutes, c after 7 days; interpolated median and p90 of the two
    assert aw["median_hours_in_stage"] == round((120 + 7 * 86400) / 2 / H, 3)
    assert aw["p90_hours_in_stage"] == round((120 + 0.9 * (7 * 86400 - 120)) / H, 3)
    assert [(w["entered"], w["moved_on"]) for w in aw["trend"]] == [(3, 1), (1, 1), (0, 0), (0, 0)]
    assert aw["trend"][0]["median_hours_in_stage"] == round(120 / H, 3)
    assert aw["trend"][2]["median_hours_in_stage"] is None
    co = _stage(k, "Consideration")  # a: 7 days less 2 minutes to Decision; c: Retention at once
    assert (co["entered"], co["moved_on"]) == (2, 2)
    assert co["median_hours_in_stage"] == round((7 * 86400 - 120) / 2 / H, 3)
    de = _stage(k, "Decision")
    assert (de["entered"], de["moved_on"], de["median_hours_in_stage"]) == (1, 1, 14 * 24.0)
    re = _stage(k, "Retention")
    assert (re["entered"], re["moved_on"], re["drop_off"], re["conversion_rate"]) == (2, 0, 2, 0.0)
    assert _stage(k, "Advocacy")["entered"] == 0 and _stage(k, "Advocacy")["conversion_rate"] is None
    # purchases count for the stage the buyer was in: a (Decision) 100, c 40 (Awareness) then 60 (Retention)
    assert (aw["purchases"], aw["revenue"], aw["buyers"], aw["repeat_buyers"]) == (1, 40.0, 1, 0)
    assert (de["revenue"], de["repeat_purchase_rate"]) == (100.0, 0.0)
    assert (re["revenue"], re["repeat_buyers"], re["repeat_purchase_rate"]) == (60.0, 1, 1.0)
    assert [w["revenue"] for w in re["trend"]] == [0.0, 0.0, 60.0, 0.0]
    assert k["totals"] == {
        "purchases": 3,
        "revenue": 200.0,
        "buyers": 2,
        "repeat_buyers": 1,
        "repeat_purchase_rate": 0.5,
    }


def test_nps_and_csat_per_stage_channel_persona(site: Journey) -> None:
    f = kpis.kpis(site.storage, SITE, PERSONAS, CONF, weeks=4, until="2026-11-23")["feedback"]
    nps, csat = f["nps"], f["csat"]
    # c: 10 (promoter), d: 3 (detractor); d's 42 is out of range
    assert (nps["answers"], nps["promoters"], nps["passives"], nps["detractors"], nps["nps"]) == (2, 1, 0, 1, 0.0)
    assert nps["mean"] == 6.5
    assert {r["channel"]: r["nps"] for r in nps["by_channel"]} == {"Organic Social": 100.0, "Direct": -100.0}
    assert {r["persona"]: r["answers"] for r in nps["by_persona"]} == {"Repeat customer": 1, "Other": 1}
    assert {r["stage"]: r["answers"] for r in nps["by_stage"]} == {"Awareness": 2}
    assert (csat["answers"], csat["satisfied"], csat["csat"], csat["mean"]) == (2, 1, 50.0, 3.5)
    assert {r["stage"]: r["csat"] for r in csat["by_stage"]} == {"Retention": 100.0, "Awareness": 0.0}
    assert {r["channel"]: r["answers"] for r in csat["by_channel"]} == {"Direct": 2}


def test_kpis_for_one_persona_and_bad_parameters(site: Journey) -> None:
    k = kpis.kpis(site.storage, SITE, PERSONAS, CONF, weeks=4, until="2026-11-23", persona="Repeat customer")
    aw = _stage(k, "Awareness")
    assert (aw["entered"], aw["moved_on"]) == (1, 1)
    assert (k["totals"]["purchases"], k["totals"]["revenue"], k["totals"]["repeat_purchase_rate"]) == (2, 100.0, 1.0)
    assert (k["feedback"]["nps"]["answers"], k["feedback"]["nps"]["nps"]) == (1, 100.0)
    for kwargs in ({"weeks": 0}, {"weeks": 53}, {"until": "not a date"}, {"persona": "Nobody"}):
        with pytest.raises(BadQuery):
            kpis.kpis(site.storage, SITE, PERSONAS, CONF, **kwargs)


def test_reads_run_under_the_analysis_limits(site: Journey) -> None:
    # a memory limit far below what the query needs: ClickHouse stops it, so the limits are applied, and
    # the error is the query's (400), not "unavailable" (503, retry), on chDB and on a server alike
    tiny = AnalysisSettings(max_memory_bytes=1000)
    with pytest.raises(QueryError, match="(?i)memory"):
        kpis.kpis(site.storage, SITE, PERSONAS, tiny, weeks=4, until="2026-11-23")
    assert limits(CONF) == {"max_execution_time": 20.0, "max_memory_usage": 2 * 1024**3, "max_threads": 2}


def test_another_site_is_never_counted(site: Journey) -> None:
    before = kpis.kpis(site.storage, SITE, PERSONAS, CONF, weeks=4, until="2026-11-23")
    e = site.event
    # the same visitor ids on site s2: a big purchase, an NPS answer, a week-1 return
    send(
        site,
        e("page", "a", 3, path="/cart"),
        e("track", "a", 4, event="Order Completed", properties={"revenue": 1000}),
        e("track", "b", 5, event="NPS Answered", properties={"score": 0}),
        e("page", "d", 7 * DAY + 5, path="/"),
        site="s2",
    )
    assert kpis.kpis(site.storage, SITE, PERSONAS, CONF, weeks=4, until="2026-11-23") == before
    other = kpis.kpis(site.storage, "s2", PERSONAS, CONF, weeks=4, until="2026-11-23")
    assert (other["totals"]["revenue"], other["feedback"]["nps"]["answers"]) == (1000.0, 1)
    assert (
        cohorts.retention(site.storage, SITE, PERSONAS, CONF, periods=2, today=date(2026, 12, 31))["rows"][0]["size"]
        == 3
    )
    got = moments.moments(site.storage, SITE, PERSONAS, CONF, conversions=["Order Completed"], min_support=1)
    aware = next(s for s in got["stages"] if s["stage"] == "Awareness")
    assert {m["name"]: m["with"] for m in aware["moments"]}["/"] == 3
