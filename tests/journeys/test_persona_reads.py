"""``persona=`` on the older reads (journeys list, stages, funnel, paths, attribution, pain points),
in process on chDB and the ClickHouse endpoint, expectations computed by hand on one small stream.

Personas of these tests (rules in ``RULES``, first match wins):

- ``Pricing``: viewed a page containing /pricing. ``user:u1``: device a1 (desktop; google cpc, /,
  /pricing, identifies as u1) and device a3 (iPhone, an hour later: /, /signup, Signed Up, then
  identifies as u1): a3's events count for u1 only through the identity link.
- ``Mobile``: first touch on a phone. ``anon:b`` (iPhone, from facebook: /, /signup, Signed Up, a JS
  error), never identified.
- ``Ghost``: sent an event nobody sends: matches nobody.
- ``Other`` (the default): ``anon:c`` (desktop, direct: /, /about, a rage click).

Site s2 holds a trap for a filter that forgets the site: there device c views /pricing (c would be
``Pricing``) and device b identifies as u1 later than anything on s1 (b would be ``user:u1``).
"""

from __future__ import annotations

import pytest

from journey_builder import analytics
from journey_builder.personas import Chosen, Personas
from tests.analysis.streams import send
from tests.journeys.conftest import IPHONE, Journey
from trailmark.settings import AnalysisSettings

SITE = "s1"
RULES = {
    "default": "Other",
    "persona": [
        {"name": "Pricing", "rules": [{"pages": ["/pricing"]}]},
        {"name": "Mobile", "rules": [{"device": ["mobile"]}]},
        {"name": "Ghost", "rules": [{"events": ["Never Sent"]}]},
    ],
}
KNOWN = Personas.parse(RULES)
CONF = AnalysisSettings()
ALL = (None, "Pricing", "Mobile", "Ghost", "Other")


def who(name: str | None) -> Chosen | None:
    return KNOWN.only(CONF, name)


@pytest.fixture
def site(journey: Journey) -> Journey:
    e = journey.event
    cpc = "?utm_source=google&utm_medium=cpc"
    send(
        journey,
        e("page", "a1", 0, path="/", query=cpc, referrer="https://www.google.com/"),
        e("page", "a1", 1, path="/pricing"),
        e("identify", "a1", 2, user_id="u1"),
    )
    send(
        journey,
        e("page", "b", 5, path="/", referrer="https://www.facebook.com/", ua=IPHONE),
        e("page", "b", 6, path="/signup", ua=IPHONE),
        e("track", "b", 7, event="Signed Up", ua=IPHONE),
        e("track", "b", 7.5, event="$error", properties={"message": "boom", "source": "app.js"}, ua=IPHONE),
    )
    send(
        journey,
        e("page", "c", 8, path="/"),
        e("page", "c", 9, path="/about"),
        e("track", "c", 9.5, event="$rage_click", path="/about", properties={"selector": "#buy"}),
    )
    send(
        journey,
        e("page", "a3", 60, path="/", ua=IPHONE),
        e("page", "a3", 61, path="/signup", ua=IPHONE),
        e("track", "a3", 62, event="Signed Up", ua=IPHONE),
        e("identify", "a3", 63, user_id="u1", ua=IPHONE),
    )
    # the other site: the same device and user ids, arranged to put s1's contacts in other personas
    send(journey, e("page", "c", 70, path="/pricing"), site="s2")
    send(journey, e("page", "b", 71, path="/pricing"), e("identify", "b", 72, user_id="u1"), site="s2")
    return journey


def test_funnel_per_persona(site: Journey) -> None:
    steps = ["/", "/signup", "Signed Up"]
    # u1: / (a1), /signup and Signed Up (a3); b: all three; c: / only
    expected = {None: [3, 2, 2], "Pricing": [1, 1, 1], "Mobile": [1, 1, 1], "Ghost": [0, 0, 0], "Other": [1, 0, 0]}
    for name in ALL:
        got = analytics.funnel(site.storage, SITE, steps, 86400, persona=who(name))
        assert [s["count"] for s in got["steps"]] == expected[name], name
    by = analytics.funnel(site.storage, SITE, steps, 86400, by="channel", persona=who("Pricing"))
    assert by["by"] == {"Paid Search": [1, 1, 1]}


def test_attribution_per_persona(site: Journey) -> None:
    # u1 converts on a3 (Direct session) after a1's Paid Search session; b converts from facebook
    expected: dict[str | None, tuple[int, dict[str, float]]] = {
        None: (2, {"Paid Search": 1.0, "Organic Social": 1.0}),
        "Pricing": (1, {"Paid Search": 1.0}),
        "Mobile": (1, {"Organic Social": 1.0}),
        "Ghost": (0, {}),
        "Other": (0, {}),
    }
    for name in ALL:
        got = analytics.attribution(
            site.storage, SITE, "Signed Up", "first_touch", "channel", 30, 7.0, details=True, persona=who(name)
        )
        assert (got["total_conversions"], {r["key"]: r["credit"] for r in got["rows"]}) == expected[name], name
        assert {c["contact_id"] for c in got["conversions"]} == {
            None: {"user:u1", "anon:b"},
            "Pricing": {"user:u1"},
            "Mobile": {"anon:b"},
        }.get(name, set())
    linear = analytics.attribution(
        site.storage, SITE, "Signed Up", "linear", "channel", 30, 7.0, persona=who("Pricing")
    )
    assert {r["key"]: r["credit"] for r in linear["rows"]} == {"Paid Search": 0.5, "Direct": 0.5}
    assert [r["share"] for r in linear["rows"]] == [0.5, 0.5]  # of the persona's one conversion


def test_unknown_persona_is_refused_with_the_names() -> None:
    with pytest.raises(analytics.BadQuery, match="unknown persona 'Nobody'; use one of Pricing, Mobile, Ghost, Other"):
        who("Nobody")
    assert who(None) is None and who("") is None
