"""Regressions of defects found by trying trailmark as a new user would (issue 10)."""

from __future__ import annotations

import pytest

from journey_builder.builder import JourneyBuilder
from tests.journeys.conftest import Journey
from trailmark.settings import JourneySettings


def test_a_click_id_session_stays_one_session_across_a_builder_restart(journey: Journey) -> None:
    j = journey
    landing = "?utm_source=google&utm_medium=cpc&utm_campaign=spring&gclid=Cj0KCQ"
    j.send(j.event("page", "clicker", 0, path="/", query=landing, referrer="https://www.google.com/"))
    j.builder = JourneyBuilder(j.storage, JourneySettings())  # a restart: visitor state comes from storage
    # the same landing page again (a reload) a minute later belongs to the same session
    j.send(j.event("page", "clicker", 1, path="/", query=landing, referrer="https://www.google.com/"))
    rows = j.sql("SELECT pageviews FROM {db}.sessions WHERE anonymous_id = 'clicker'")
    assert rows == [{"pageviews": 2}]


def test_a_new_click_id_after_a_restart_still_starts_a_new_session(journey: Journey) -> None:
    j = journey
    j.send(j.event("page", "clicker2", 0, path="/", query="?gclid=first"))
    j.builder = JourneyBuilder(j.storage, JourneySettings())
    j.send(j.event("page", "clicker2", 1, path="/", query="?gclid=second"))
    assert j.sql("SELECT count() AS n FROM {db}.sessions WHERE anonymous_id = 'clicker2'") == [{"n": 2}]


@pytest.mark.parametrize(
    ("query", "referrer", "source", "medium"),
    [
        ("", "https://www.google.com/", "google", "organic"),
        ("", "https://www.facebook.com/", "facebook", "social"),
        ("", "https://blog.example.net/post", "blog.example.net", "referral"),
        ("?utm_source=Google&utm_medium=CPC", "", "google", "cpc"),
        ("?gclid=abc", "", "google", "cpc"),
        ("", "", "(direct)", "(none)"),
    ],
)
def test_source_and_medium_are_named_once_the_same_way_in_events_and_sessions(
    journey: Journey, query: str, referrer: str, source: str, medium: str
) -> None:
    j = journey
    (enriched,) = j.enrich([j.event("page", "src", 0, path="/", query=query, referrer=referrer)])
    j.builder.process([enriched])
    session = j.sql("SELECT source, medium FROM {db}.sessions WHERE anonymous_id = 'src'")
    event = j.sql("SELECT source, medium FROM {db}.events WHERE anonymous_id = 'src'")
    assert session == [{"source": source, "medium": medium}]
    # the event carries the enrichment's own naming; the session shows GA's (direct)/(none) for none
    assert event == [
        {
            "source": source.strip("()").replace("direct", "").replace("none", ""),
            "medium": medium.strip("()").replace("none", ""),
        }
    ]


def test_a_group_call_keeps_the_persons_context_traits_and_not_the_companys(journey: Journey) -> None:
    j = journey
    group = j.event("group", "grp", 0, traits={"name": "Acme Inc", "email": "billing@acme.io"})
    group["groupId"] = "g1"
    group["context"]["traits"] = {"email": "jane@acme.io", "firstName": "Jane"}
    (enriched,) = j.enrich([group])
    assert enriched["email"] == "jane@acme.io" and enriched["first_name"] == "Jane"
    assert enriched["company_name"] != "Acme Inc"


def test_a_click_id_in_context_campaign_is_used(journey: Journey) -> None:
    """Apps and single-page sites send the landing click id in context.campaign (trailmark.js does,
    under the parameter's own name) when the current URL no longer carries it."""
    j = journey
    ev = j.event("page", "app-click", 0, path="/after-navigation")
    ev["context"]["campaign"] = {"source": "google", "medium": "cpc", "name": "spring", "gclid": "Cj0K"}
    (enriched,) = j.enrich([ev])
    assert (enriched["click_id_type"], enriched["click_id"]) == ("gclid", "Cj0K")
    assert (enriched["source"], enriched["medium"], enriched["channel"]) == ("google", "cpc", "Paid Search")
    only_click = j.event("page", "app-click2", 0, path="/x")
    only_click["context"]["campaign"] = {"ttclid": "T1"}
    (enriched,) = j.enrich([only_click])
    assert (enriched["source"], enriched["medium"], enriched["channel"]) == ("tiktok", "cpc", "Paid Social")


def test_the_visitor_cache_is_bounded_by_its_setting(storage: object) -> None:
    j = Journey(storage, max_visitors=3)  # type: ignore[arg-type]
    j.send(*(j.event("page", f"cache-{i}", i) for i in range(10)))
    assert len(j.builder.visitors) <= 3
    j.send(j.event("page", "cache-0", 12))  # dropped from memory, reloaded from ClickHouse: same session
    assert j.sql("SELECT count() AS n FROM {db}.sessions WHERE anonymous_id = 'cache-0'") == [{"n": 1}]
