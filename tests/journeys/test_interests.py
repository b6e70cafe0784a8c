"""Interests (issue 14): what the materialized view stores per event, the decayed scores read back
for any half-life (hand-computed), a contact's interests summed over its devices, and the interest
filter. The real Enricher and JourneyBuilder on chDB and a ClickHouse server, no mocks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from journey_builder import interests, privacy
from schemas import RawBatch, unfold
from tests.journeys.conftest import CHROME, T0, Journey, enricher
from trailmark.settings import JourneySettings
from trailmark.storage.base import Storage

DAY = 24 * 60  # minutes
AT = T0 + timedelta(days=30)  # "now" of every score below
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


class Stream(Journey):
    """A Journey whose batches arrive after their events (at AT + 1 day), so events days apart keep
    their own times (a time far ahead of its arrival would be clamped to it)."""

    def enrich(self, events: list[dict[str, Any]]) -> list[Any]:
        raw: RawBatch = {
            "v": 1,
            "site_id": "s1",
            "received_at": (AT + timedelta(days=1)).isoformat(),
            "ip": "81.2.69.142",
            "user_agent": CHROME,
            "body": {"batch": events},
        }
        return [enricher().enrich(e, None) for e in unfold(raw)]


@pytest.fixture
def stream(storage: Storage) -> Stream:
    return Stream(storage)


def settings(half_life_days: float = 30.0, **kw: Any) -> JourneySettings:
    return JourneySettings(interest_half_life_days=half_life_days, **kw)


def shop(s: Stream, anon: str = "v1") -> None:
    """Four events, 0, 10, 20 and 25 days after T0 (all at 09:00 UTC, the start of their hour)."""
    s.send(
        s.event("page", anon, 0, path="/shoes/trail-x"),
        s.event("track", anon, 10 * DAY, event="Product Viewed", properties={"category": "Shoes", "name": "Trail X"}),
        s.event(
            "track",
            anon,
            20 * DAY,
            event="Order Completed",
            properties={"products": [{"category": "Shoes", "name": "Trail X"}, {"category": "Socks ", "name": "Wool"}]},
        ),
        s.event("page", anon, 25 * DAY, path="/", query="?q=Waterproof+Boots"),
    )


def scores(rows: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    return {(r["kind"], r["value"]): float(r["score"]) for r in rows}


def test_decayed_scores_are_hand_computed_for_any_half_life(stream: Stream) -> None:
    shop(stream)
    stored = stream.sql("SELECT kind, value, hour, weight, events FROM {db}.interest_hours ORDER BY hour, kind, value")
    # raw, undecayed weights per hour: view 1, purchase 5, search 2; "Socks " is trimmed and lower-cased
    assert [(r["kind"], r["value"], str(r["hour"])[:10], r["weight"], r["events"]) for r in stored] == [
        ("section", "shoes", "2026-11-02", 1, 1),
        ("product", "trail x", "2026-11-12", 1, 1),
        ("product_category", "shoes", "2026-11-12", 1, 1),
        ("product", "trail x", "2026-11-22", 5, 1),  # two lines of one order: the product counts once
        ("product", "wool", "2026-11-22", 5, 1),
        ("product_category", "shoes", "2026-11-22", 5, 1),
        ("product_category", "socks", "2026-11-22", 5, 1),
        ("search", "waterproof boots", "2026-11-27", 2, 1),
    ]
    # half-life 10 days, read 30 days after T0: ages 30, 20, 10 and 5 days
    got = scores(interests.of_devices(stream.storage, "s1", ["v1"], settings(10), at=AT))
    assert got == pytest.approx(
        {
            ("section", "shoes"): 1 * 2**-3,  # 0.125
            ("product_category", "shoes"): 1 * 2**-2 + 5 * 2**-1,  # 2.75
            ("product", "trail x"): 1 * 2**-2 + 5 * 2**-1,
            ("product_category", "socks"): 5 * 2**-1,
            ("product", "wool"): 5 * 2**-1,
            ("search", "waterproof boots"): 2 * 2**-0.5,  # 1.414214
        },
        abs=1e-6,
    )
    # the same stored rows under the default 30 days: the setting applies to history too
    got30 = scores(interests.of_devices(stream.storage, "s1", ["v1"], settings(), at=AT))
    assert got30[("product_category", "shoes")] == pytest.approx(2 ** (-20 / 30) + 5 * 2 ** (-10 / 30), abs=1e-6)
    assert got30[("section", "shoes")] == pytest.approx(2**-1, abs=1e-6)
    # top N, best first; ties by kind then value
    top3 = interests.of_devices(stream.storage, "s1", ["v1"], settings(10), limit=3, at=AT)
    assert [(r["kind"], r["value"]) for r in top3] == [
        ("product", "trail x"),
        ("product_category", "shoes"),
        ("product", "wool"),
    ]
    # a kind left out of the settings is switched off
    no_products = settings(10, interest_kinds=["section", "search"])
    assert set(scores(interests.of_devices(stream.storage, "s1", ["v1"], no_products, at=AT))) == {
        ("section", "shoes"),
        ("search", "waterproof boots"),
    }


def test_every_source_is_read_and_bots_are_not(stream: Stream) -> None:
    s = stream
    named = s.event("page", "v2", 0, path="/guides/setup", query="?utm_source=google&utm_medium=cpc&utm_term=CRM+Tool")
    named["properties"] = {"category": "Docs"}  # analytics.page("Docs", ...): the page's content group
    s.send(
        named,
        s.event("track", "v2", 1, event="Products Searched", properties={"query": "  Tracking  "}),
        s.event("track", "v2", 2, event="Product Added", properties={"category": "Plans", "name": "Pro"}),
        s.event("track", "v2", 3, event="Button Clicked", properties={"category": "ignored"}),
        s.event("page", "v2", 4, path="/search", query="?search=journey+map&s=journey%20map"),
        s.event("page", "bot", 5, path="/shoes", ua=BOT, query="?q=crawl"),
    )
    rows = s.sql("SELECT anonymous_id, kind, value, weight FROM {db}.interest_hours ORDER BY kind, value")
    assert [(r["anonymous_id"], r["kind"], r["value"], r["weight"]) for r in rows] == [
        ("v2", "campaign_term", "crm tool", 1),
        ("v2", "content_group", "docs", 1),
        ("v2", "product", "pro", 3),  # added to the cart
        ("v2", "product_category", "plans", 3),
        ("v2", "search", "journey map", 2),  # ?search= and ?s= on one page view: one search
        ("v2", "search", "tracking", 2),
        ("v2", "section", "guides", 1),
        ("v2", "section", "search", 1),
    ]


def test_a_contact_has_the_interests_of_all_its_devices(stream: Stream) -> None:
    s = stream
    s.send(s.event("page", "ann-laptop", 0, path="/blog/one"), s.event("page", "zed", 0, path="/blog/two"))
    s.send(s.event("page", "ann-phone", DAY, path="/blog/three", ua=CHROME))
    s.send(
        s.event("identify", "ann-laptop", 2 * DAY, user_id="u-ann"),
        s.event("identify", "ann-phone", 2 * DAY + 1, user_id="u-ann"),
    )
    conf = settings(10)
    top = interests.top(s.storage, "s1", ["user:u-ann", "anon:zed"], conf, at=AT)
    assert scores(top["user:u-ann"]) == pytest.approx({("section", "blog"): 2**-3 + 2**-2.9}, abs=1e-6)
    assert top["user:u-ann"][0]["events"] == 2
    assert scores(top["anon:zed"]) == pytest.approx({("section", "blog"): 2**-3}, abs=1e-6)
    # the contact_interests view (30-day half-life, now) sums the same devices
    view = s.sql("SELECT contact_id, kind, value, weight, events FROM {db}.contact_interests ORDER BY contact_id")
    assert [(r["contact_id"], r["value"], r["weight"], r["events"]) for r in view] == [
        ("anon:zed", "blog", 1, 1),
        ("user:u-ann", "blog", 2, 2),
    ]


def test_interest_filter_keeps_only_contacts_with_that_interest(stream: Stream) -> None:
    s = stream
    shop(s, "shopper")
    s.send(
        s.event("page", "reader", 29 * DAY, path="/blog/a"), s.event("identify", "reader", 29 * DAY + 1, user_id="r")
    )
    s.send(s.event("page", "old", 0, path="/blog/b"))
    conf = settings(10)
    assert interests.contacts_with(s.storage, "s1", "Shoes", conf, at=AT) == ["anon:shopper"]
    assert interests.contacts_with(s.storage, "s1", "section:shoes", conf, at=AT) == ["anon:shopper"]
    assert interests.contacts_with(s.storage, "s1", "product:shoes", conf, at=AT) == []
    # "old" read /blog 30 days ago: 2^-3 = 0.125 >= 0.1 with a 10-day half-life, forgotten with 5 days
    assert interests.contacts_with(s.storage, "s1", "blog", conf, at=AT) == ["anon:old", "user:r"]
    assert interests.contacts_with(s.storage, "s1", "blog", settings(5), at=AT) == ["user:r"]
    # /v1/journeys' function: the filter and each contact's top interests
    out = interests.journeys(s.storage, "s1", conf, interest="blog", at=AT)
    assert sorted(c["contact_id"] for c in out["contacts"]) == ["anon:old", "user:r"]
    assert all(c["interests"][0]["value"] == "blog" for c in out["contacts"])
    everyone = interests.journeys(s.storage, "s1", settings(10, interest_top=2), at=AT)
    by_id = {c["contact_id"]: c for c in everyone["contacts"]}
    assert set(by_id) == {"anon:shopper", "user:r", "anon:old"}
    assert len(by_id["anon:shopper"]["interests"]) == 2


def test_erasing_a_contact_erases_its_interests(stream: Stream) -> None:
    s = stream
    s.send(s.event("page", "ann-laptop", 0, path="/blog/one"), s.event("page", "zed", 0, path="/blog/two"))
    s.send(s.event("identify", "ann-laptop", 1, user_id="u-ann", traits={"email": "ann@acme.io"}))
    subject = privacy.resolve_subject(s.storage, "s1", "u-ann")
    assert subject is not None
    eraser = privacy.Eraser(s.storage, subject, privacy.new_request("s1", "u-ann"), settle_s=0)
    privacy.begin(s.storage, eraser)
    eraser.run(sleep=lambda _: None)
    left = s.sql("SELECT anonymous_id FROM {db}.interest_hours")
    assert left == [{"anonymous_id": "zed"}]  # the other visitor's interests stay


def test_odd_input_never_fails_the_events_insert(stream: Stream) -> None:
    """The view runs inside the builder's insert into events: an error there would stop the pipeline."""
    s = stream
    s.send(
        s.event("page", "odd", 0, path="", query="?q=%ZZ%E0%A4&search=&s"),
        s.event("track", "odd", 1, event="Order Completed", properties={"products": "not a list", "name": 7}),
        s.event("track", "odd", 2, event="Product Viewed", properties={"products": [None, 3, {"name": ["x"]}]}),
        s.event("track", "odd", 3, event="Products Searched", properties={"query": {"nested": True}}),
    )
    assert s.sql("SELECT count() AS n FROM {db}.events") == [{"n": 4}]
    # a broken escape is stored as valid text, so every read of it works (JSON out of ClickHouse)
    got = {(r["kind"], r["value"]) for r in interests.of_devices(s.storage, "s1", ["odd"], settings(), at=AT)}
    assert ("search", "%zz\ufffd") in got and not any(kind == "section" for kind, _ in got), got
    assert interests.contacts_with(s.storage, "s1", "search:%zz\ufffd", settings(), at=AT) == ["anon:odd"]
