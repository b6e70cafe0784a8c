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


def test_contacts_per_persona(site: Journey) -> None:
    expected = {
        None: ["user:u1", "anon:c", "anon:b"],  # latest first
        "Pricing": ["user:u1"],
        "Mobile": ["anon:b"],
        "Ghost": [],
        "Other": ["anon:c"],
    }
    for name in ALL:
        got = analytics.contacts(site.storage, SITE, persona=who(name))["contacts"]
        assert [c["contact_id"] for c in got] == expected[name], name
    [u1] = analytics.contacts(site.storage, SITE, persona=who("Pricing"))["contacts"]
    assert (u1["sessions"], u1["conversions"], u1["stage"]) == (2, 1, "Decision")  # both devices, s1 only
    both = analytics.contacts(site.storage, SITE, stage="Decision", persona=who("Mobile"))["contacts"]
    assert [c["contact_id"] for c in both] == ["anon:b"]
    assert analytics.contacts(site.storage, SITE, stage="Awareness", persona=who("Mobile"))["contacts"] == []


def test_stages_per_persona(site: Journey) -> None:
    current = {  # (contacts now, ever entered) for Awareness, Consideration, Decision
        None: [(1, 3), (0, 1), (2, 2)],
        "Pricing": [(0, 1), (0, 1), (1, 1)],
        "Mobile": [(0, 1), (0, 0), (1, 1)],
        "Ghost": [(0, 0), (0, 0), (0, 0)],
        "Other": [(1, 1), (0, 0), (0, 0)],
    }
    moves = {
        None: {("Awareness", "Consideration"), ("Consideration", "Decision"), ("Awareness", "Decision")},
        "Pricing": {("Awareness", "Consideration"), ("Consideration", "Decision")},
        "Mobile": {("Awareness", "Decision")},
        "Ghost": set(),
        "Other": set(),
    }
    for name in ALL:
        got = analytics.stages(site.storage, SITE, persona=who(name))
        assert [(s["contacts"], s["entered"]) for s in got["stages"][:3]] == current[name], name
        assert {(t["from"], t["to"]) for t in got["transitions"]} == moves[name], name
    mobile = analytics.stages(site.storage, SITE, persona=who("Mobile"))["breakdown"]
    assert {(r["stage"], r["kind"], r["channel"], r["n"]) for r in mobile} == {
        ("Awareness", "session_start", "Organic Social", 1),
        ("Decision", "conversion", "Organic Social", 1),
    }
    other = analytics.stages(site.storage, SITE, persona=who("Other"))["breakdown"]
    assert {(r["stage"], r["kind"], r["channel"], r["n"]) for r in other} == {
        ("Awareness", "session_start", "Direct", 1)
    }
    # u1: a1's session entry (Paid Search) and identify after /pricing; a3's entry, sign-up and identify
    pricing = analytics.stages(site.storage, SITE, persona=who("Pricing"))["breakdown"]
    assert {(r["stage"], r["kind"], r["channel"], r["n"]) for r in pricing} == {
        ("Awareness", "session_start", "Paid Search", 1),
        ("Awareness", "session_start", "Direct", 1),
        ("Consideration", "identify", "Paid Search", 1),
        ("Decision", "conversion", "Direct", 1),
        ("Decision", "identify", "Direct", 1),
    }
    assert analytics.stages(site.storage, SITE, persona=who("Ghost"))["breakdown"] == []


def test_paths_per_persona(site: Journey) -> None:
    signup, pricing, about = ("/", "/signup", "Signed Up"), ("/", "/pricing"), ("/", "/about")
    expected = {
        None: {signup: 2, pricing: 1, about: 1},
        "Pricing": {signup: 1, pricing: 1},  # a3's session through the identity link
        "Mobile": {signup: 1},
        "Ghost": {},
        "Other": {about: 1},
    }
    for name in ALL:
        got = analytics.paths(site.storage, SITE, None, 3, 20, persona=who(name))
        assert {tuple(x["path"]): x["count"] for x in got["paths"]} == expected[name], name
    links = analytics.paths(site.storage, SITE, "/signup", 2, 20, persona=who("Mobile"))["links"]
    assert links == [{"source": "1:/signup", "target": "2:Signed Up", "value": 1}]


def test_pain_points_per_persona(site: Journey) -> None:
    exits = {  # page: (exits, pageviews)
        None: {"/signup": (2, 2), "/about": (1, 1), "/pricing": (1, 1)},
        "Pricing": {"/pricing": (1, 1), "/signup": (1, 1)},
        "Mobile": {"/signup": (1, 1)},
        "Ghost": {},
        "Other": {"/about": (1, 1)},
    }
    stuck = {  # stage: top exit pages of contacts who stopped there
        None: {"Awareness": {"/about": 1}, "Decision": {"/signup": 2}},
        "Pricing": {"Decision": {"/signup": 1}},
        "Mobile": {"Decision": {"/signup": 1}},
        "Ghost": {},
        "Other": {"Awareness": {"/about": 1}},
    }
    for name in ALL:
        got = analytics.pain_points(site.storage, SITE, persona=who(name))
        assert {x["page"]: (x["exits"], x["pageviews"]) for x in got["exit_pages"]} == exits[name], name
        assert {
            d["stage"]: {x["page"]: x["count"] for x in d["top_exit_pages"]}
            for d in got["stage_dropoff"]
            if d["stuck_contacts"]
        } == stuck[name], name
        assert [(r["page"], r["selector"]) for r in got["rage_clicks"]] == (
            [("/about", "#buy")] if name in (None, "Other") else []
        ), name
        assert [r["message"] for r in got["errors"]] == (["boom"] if name in (None, "Mobile") else []), name
