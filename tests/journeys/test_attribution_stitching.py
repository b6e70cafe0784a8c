"""Attribution across a contact's devices: the SQL (which reads only the touchpoints of converting
contacts' devices) gives the credits of the Python reference (journey_builder.attribution.weights)
computed from the public views, for every model, with identities linked before and after the
conversion, an email contact merged into a user, and visitors that never convert."""

from __future__ import annotations

import pytest

from journey_builder import analytics
from journey_builder.attribution import MODELS, Model
from tests.journeys.conftest import Journey
from tests.journeys.references import reference_credits

SITE = "s1"
GOOGLE_AD = "?utm_source=google&utm_medium=cpc&utm_campaign=brand"
NEWSLETTER = "?utm_source=newsletter&utm_medium=email&utm_campaign=nov"


@pytest.fixture
def site(journey: Journey) -> Journey:
    j = journey
    # u42: paid search on the laptop (identified at once), then a newsletter visit on the phone that
    # converts and is identified only afterwards: the laptop's touch counts retroactively
    j.send(j.event("page", "laptop", 0, query=GOOGLE_AD), j.event("identify", "laptop", 1, user_id="u42"))
    j.send(
        j.event("page", "phone", 600, query=NEWSLETTER),
        j.event("track", "phone", 601, event="Order Completed"),
        j.event("identify", "phone", 602, user_id="u42"),
    )
    # bo: known by email on one device (social visit), converts on another after a userId with the
    # same email merged both into user:u7
    j.send(
        j.event("page", "x", 0, referrer="https://www.facebook.com/"),
        j.event("identify", "x", 1, traits={"email": "bo@corp.example"}),
    )
    j.send(
        j.event("page", "y", 3000, query=GOOGLE_AD),
        j.event("identify", "y", 3001, user_id="u7", traits={"email": "bo@corp.example"}),
        j.event("track", "y", 3002, event="Order Completed"),
        j.event("page", "y", 9000, referrer="https://www.facebook.com/"),  # after it: no credit
        j.event("track", "y", 9001, event="Order Completed"),  # a second conversion: both sessions
    )
    # solo converts anonymously twice (two sessions); lurker never converts (its touch must not count)
    j.send(j.event("page", "solo", 0), j.event("track", "solo", 1, event="Order Completed"))
    j.send(j.event("page", "solo", 200, query=NEWSLETTER), j.event("track", "solo", 201, event="Order Completed"))
    j.send(j.event("page", "lurker", 0, query=GOOGLE_AD), j.event("identify", "lurker", 1, user_id="u42x"))
    return j


def reference(j: Journey, model: Model, lookback_days: int) -> dict[str, float]:
    """Credits per channel from the public views and the Python models."""
    return reference_credits(j.storage, SITE, "Order Completed", model, lookback_days)


def test_the_stitched_scenario_is_what_it_claims(site: Journey) -> None:
    db = site.storage.database
    contacts = {
        r["anonymous_id"]: r["contact_id"]
        for r in site.storage.query(f"SELECT anonymous_id, contact_id FROM {db}.identity_map WHERE site_id = 's1'")
    }
    assert contacts["laptop"] == contacts["phone"] == "user:u42"
    assert contacts["x"] == contacts["y"] == "user:u7"  # the email contact merged into the user


@pytest.mark.parametrize("model", MODELS)
def test_sql_credits_match_the_reference_across_devices(site: Journey, model: Model) -> None:
    got = analytics.attribution(site.storage, SITE, "Order Completed", model, "channel", 30, 7.0, details=True)
    assert got["total_conversions"] == 5
    assert {r["key"]: r["credit"] for r in got["rows"]} == pytest.approx(reference(site, model, 30))
    assert len(got["conversions"]) == 5
    for c in got["conversions"]:
        assert sum(c["credits"].values()) == pytest.approx(1.0)


def test_linear_credits_by_hand(site: Journey) -> None:
    got = analytics.attribution(site.storage, SITE, "Order Completed", "linear", "channel", 30, 7.0)
    # u42: Paid Search (laptop) + Email (phone); u7 first: Organic Social (x) + Paid Search (y), second:
    # thirds to Organic Social, Paid Search, Organic Social; solo: Direct, then Direct + Email halves
    assert {r["key"]: r["credit"] for r in got["rows"]} == pytest.approx(
        {"Paid Search": 0.5 + 0.5 + 1 / 3, "Email": 0.5 + 0.5, "Organic Social": 0.5 + 2 / 3, "Direct": 1.5}
    )


def test_touches_of_two_devices_at_the_same_millisecond_count_as_two(journey: Journey) -> None:
    """Counts group each row as two numbers (analytics._packed_time): two sessions of one contact
    that start at the same millisecond from the same channel stay two touches, as in the reference;
    only a touch stored twice is one."""
    j = journey
    j.send(j.event("page", "tablet", 0, query=NEWSLETTER), j.event("identify", "tablet", 1, user_id="u9"))
    j.send(j.event("page", "desk", 100, query=GOOGLE_AD), j.event("identify", "desk", 101, user_id="u9"))
    j.send(j.event("page", "tv", 100, query=GOOGLE_AD), j.event("identify", "tv", 101, user_id="u9"))
    j.send(j.event("track", "tv", 102, event="Order Completed"))
    got = analytics.attribution(j.storage, SITE, "Order Completed", "linear", "channel", 30, 7.0)
    assert got["total_conversions"] == 1
    want = reference(j, "linear", 30)
    assert want == pytest.approx({"Paid Search": 2 / 3, "Email": 1 / 3})
    assert {r["key"]: r["credit"] for r in got["rows"]} == pytest.approx(want)


def test_details_list_the_first_conversions_in_time_with_their_own_credits(
    site: Journey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """details=true lists the first DETAILS_LIMIT conversions in time, each with the credits it has
    when every conversion is listed; the totals still count them all."""
    every = analytics.attribution(site.storage, SITE, "Order Completed", "linear", "channel", 30, 7.0, details=True)
    monkeypatch.setattr(analytics, "DETAILS_LIMIT", 2)
    got = analytics.attribution(site.storage, SITE, "Order Completed", "linear", "channel", 30, 7.0, details=True)
    assert got["total_conversions"] == every["total_conversions"] == 5
    assert got["rows"] == every["rows"]
    first = site.sql(
        "SELECT message_id FROM {db}.events WHERE site_id = 's1' AND event = 'Order Completed'"
        " ORDER BY timestamp LIMIT 2"
    )
    assert [c["message_id"] for c in got["conversions"]] == [r["message_id"] for r in first]
    by_id = {c["message_id"]: c for c in every["conversions"]}
    assert all(c == by_id[c["message_id"]] for c in got["conversions"])
