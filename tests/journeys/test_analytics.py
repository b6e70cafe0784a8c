"""Funnels, paths, attribution, stages, contact lists and pain points on a small hand-made site."""

from __future__ import annotations

from datetime import timedelta

import pytest

from journey_builder import analytics
from tests.journeys.conftest import T0, Journey

SITE = "s1"


@pytest.fixture
def site(journey: Journey) -> Journey:
    j = journey
    # v1: google ad -> pricing -> signup -> Signed Up (all steps)
    j.send(
        j.event(
            "page",
            "v1",
            0,
            path="/",
            query="?utm_source=google&utm_medium=cpc&utm_campaign=brand",
            referrer="https://www.google.com/",
        ),
        j.event("page", "v1", 1, path="/pricing"),
        j.event("page", "v1", 2, path="/signup"),
        j.event("track", "v1", 3, event="Signed Up"),
    )
    # v2: facebook -> pricing, leaves; comes back 2 days later by newsletter and signs up
    j.send(
        j.event("page", "v2", 0, path="/", referrer="https://www.facebook.com/"),
        j.event("page", "v2", 1, path="/pricing"),
        j.event("page", "v2", 2880, path="/signup", query="?utm_source=newsletter&utm_medium=email"),
        j.event("track", "v2", 2881, event="Signed Up"),
    )
    # v3: direct -> pricing only; v4: direct -> blog only (a bounce), with a rage click and an error
    j.send(j.event("page", "v3", 0, path="/"), j.event("page", "v3", 1, path="/pricing"))
    j.send(
        j.event("page", "v4", 0, path="/blog"),
        j.event("track", "v4", 1, event="$rage_click", path="/blog", properties={"selector": "button.buy"}),
        j.event(
            "track", "v4", 2, event="$error", path="/blog", properties={"message": "x is undefined", "source": "app.js"}
        ),
    )
    return j


def test_funnel_counts_each_step_in_order(site: Journey) -> None:
    f = analytics.funnel(site.storage, SITE, ["/", "/pricing", "/signup", "Signed Up"], 86400, by="channel")
    assert [s["count"] for s in f["steps"]] == [3, 3, 1, 1]  # v2's signup came 2 days later
    assert f["steps"][1]["conversion"] == 1.0 and f["steps"][3]["conversion"] == round(1 / 3, 4)
    assert f["by"]["Paid Search"] == [1, 1, 1, 1]
    wide = analytics.funnel(site.storage, SITE, ["/", "/pricing", "/signup", "Signed Up"], 7 * 86400)
    assert [s["count"] for s in wide["steps"]] == [3, 3, 2, 2]


def test_paths_from_a_page(site: Journey) -> None:
    p = analytics.paths(site.storage, SITE, "/pricing", 2, 10)
    got = {tuple(x["path"]): x["count"] for x in p["paths"]}
    assert got == {("/pricing", "/signup"): 1, ("/pricing",): 2}
    entry = analytics.paths(site.storage, SITE, None, 3, 10)
    got = {tuple(x["path"]): x["count"] for x in entry["paths"]}
    assert got[("/", "/pricing", "/signup")] == 1
    assert got[("/", "/pricing")] == 2  # v2's first session and v3
    assert {"source": "1:/", "target": "2:/pricing", "value": 3} in entry["links"]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("first_touch", {"Paid Search": 1.0, "Organic Social": 1.0}),
        ("last_touch", {"Paid Search": 1.0, "Email": 1.0}),
        ("linear", {"Paid Search": 1.0, "Organic Social": 0.5, "Email": 0.5}),
        ("position_based", {"Paid Search": 1.0, "Organic Social": 0.5, "Email": 0.5}),
    ],
)
def test_attribution_over_session_touchpoints(site: Journey, model: str, expected: dict[str, float]) -> None:
    a = analytics.attribution(site.storage, SITE, "Signed Up", model, "channel", 30, 7.0, details=True)
    assert a["total_conversions"] == 2
    assert {r["key"]: r["credit"] for r in a["rows"]} == pytest.approx(expected)
    for c in a["conversions"]:
        assert sum(c["credits"].values()) == pytest.approx(1.0)


def test_time_decay_favours_the_recent_touch(site: Journey) -> None:
    a = analytics.attribution(site.storage, SITE, "Signed Up", "time_decay", "channel", 30, 7.0)
    credits = {r["key"]: r["credit"] for r in a["rows"]}
    # v2: facebook 2 days before the conversion, email 1 minute before: weights 2^(-2/7) : ~1
    social = 2 ** (-(2880 / 1440) / 7)
    email = 2 ** (-(1 / 1440) / 7)
    assert credits["Organic Social"] == pytest.approx(social / (social + email), rel=1e-3)
    assert credits["Paid Search"] == pytest.approx(1.0)


def test_lookback_window_drops_old_touchpoints(site: Journey) -> None:
    a = analytics.attribution(site.storage, SITE, "Signed Up", "first_touch", "channel", 1, 7.0)
    assert {r["key"]: r["credit"] for r in a["rows"]} == {"Paid Search": 1.0, "Email": 1.0}


def test_a_range_credits_touches_before_it_within_the_lookback(site: Journey) -> None:
    # the read leaves unread the touches no conversion of the range can credit: not those before it
    since = (T0 + timedelta(days=1)).isoformat()  # v2's conversion only (day 2), its first visit on day 0
    a = analytics.attribution(site.storage, SITE, "Signed Up", "first_touch", "channel", 30, 7.0, since, details=True)
    assert a["total_conversions"] == 1 and {r["key"]: r["credit"] for r in a["rows"]} == {"Organic Social": 1.0}
    assert [c["credits"] for c in a["conversions"]] == [{"Organic Social": 1.0, "Email": 0.0}]
    until = (T0 + timedelta(minutes=3, seconds=1)).isoformat()  # v1's conversion only (minute 3)
    b = analytics.attribution(site.storage, SITE, "Signed Up", "last_touch", "channel", 30, 7.0, None, until)
    assert b["total_conversions"] == 1 and {r["key"]: r["credit"] for r in b["rows"]} == {"Paid Search": 1.0}


def test_bad_parameters_are_clear_errors(site: Journey) -> None:
    with pytest.raises(analytics.BadQuery, match="model"):
        analytics.attribution(site.storage, SITE, "Signed Up", "shapley", "channel", 30, 7.0)
    with pytest.raises(analytics.BadQuery, match="steps"):
        analytics.funnel(site.storage, SITE, [], 60)
    with pytest.raises(analytics.BadQuery, match="stage"):
        analytics.contacts(site.storage, SITE, stage="Nirvana")


def test_stages_counts_and_median_times(site: Journey) -> None:
    st = analytics.stages(site.storage, SITE)
    by = {s["stage"]: s for s in st["stages"]}
    # v1 and v2 reached Decision (/signup), v3 Consideration (/pricing), v4 only Awareness
    assert (by["Decision"]["contacts"], by["Consideration"]["contacts"], by["Awareness"]["contacts"]) == (2, 1, 1)
    assert by["Awareness"]["entered"] == 4 and by["Consideration"]["entered"] == 3
    t = {(x["from"], x["to"]): x for x in st["transitions"]}
    assert t[("Awareness", "Consideration")]["median_hours"] == pytest.approx(1 / 60, abs=1e-3)
    assert t[("Consideration", "Decision")]["contacts"] == 2


def test_contact_list_filters(site: Journey) -> None:
    everyone = analytics.contacts(site.storage, SITE)
    assert len(everyone["contacts"]) == 4 and everyone["next_offset"] is None
    converted = analytics.contacts(site.storage, SITE, converted=True)
    assert sorted(c["contact_id"] for c in converted["contacts"]) == ["anon:v1", "anon:v2"]
    social = analytics.contacts(site.storage, SITE, channel="Organic Social")
    assert [c["contact_id"] for c in social["contacts"]] == ["anon:v2"]
    decision = analytics.contacts(site.storage, SITE, stage="Decision")
    assert sorted(c["contact_id"] for c in decision["contacts"]) == ["anon:v1", "anon:v2"]
    page = analytics.contacts(site.storage, SITE, limit=3)
    assert len(page["contacts"]) == 3 and page["next_offset"] == 3
    rest = analytics.contacts(site.storage, SITE, limit=3, offset=3)
    assert len(rest["contacts"]) == 1


def test_pain_points(site: Journey) -> None:
    pp = analytics.pain_points(site.storage, SITE)
    exits = {e["page"]: e for e in pp["exit_pages"]}
    assert exits["/pricing"]["exits"] == 2 and exits["/pricing"]["pageviews"] == 3
    assert pp["rage_clicks"] == [{"page": "/blog", "selector": "button.buy", "count": 1}]
    assert pp["errors"] == [{"message": "x is undefined", "source": "app.js", "count": 1}]
    stuck = {d["stage"]: d for d in pp["stage_dropoff"]}
    assert stuck["Consideration"]["top_exit_pages"] == [{"page": "/pricing", "count": 1}]
