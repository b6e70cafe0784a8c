"""Moments of truth: lift, counts and interval computed by hand on small streams."""

from __future__ import annotations

import math

import pytest

from journey_builder import moments
from journey_builder.analytics import BadQuery
from journey_builder.personas import Personas
from tests.analysis.streams import DAY, SITE, feed, send
from tests.journeys.conftest import Journey
from trailmark.settings import AnalysisSettings

CONF = AnalysisSettings()
PERSONAS = Personas.load()
Z95 = 1.959964


@pytest.fixture
def webinar(journey: Journey) -> Journey:
    """Six direct visitors on one day: v1-v3 watch /webinar, v4-v6 do not; v1, v2 and v4 sign up."""
    for i in range(1, 7):
        events = [journey.event("page", f"v{i}", 10 * i, path="/")]
        if i <= 3:
            events.append(journey.event("page", f"v{i}", 10 * i + 1, path="/webinar"))
        if i in (1, 2, 4):
            events.append(journey.event("track", f"v{i}", 10 * i + 2, event="Signed Up"))
        send(journey, *events)
    return journey


def _awareness(out: dict) -> dict[str, dict]:
    stage = next(s for s in out["stages"] if s["stage"] == "Awareness")
    return {f"{m['kind']} {m['name']}": m for m in stage["moments"]}


def test_lift_counts_and_katz_interval(webinar: Journey) -> None:
    out = moments.moments(webinar.storage, SITE, PERSONAS, CONF, conversions=["Signed Up"], min_support=3)
    got = _awareness(out)
    # "/" and Direct: every contact had them, so there is no one without them to compare with
    assert set(got) == {"page /webinar"}
    m = got["page /webinar"]
    assert (m["with"], m["with_converted"], m["without"], m["without_converted"]) == (3, 2, 3, 1)
    assert (m["rate_with"], m["rate_without"], m["lift"]) == (0.6667, 0.3333, 2.0)
    se = math.sqrt(1 / 2 - 1 / 3 + 1 / 1 - 1 / 3)
    assert m["ci_low"] == pytest.approx(2 * math.exp(-Z95 * se), abs=1e-3)
    assert m["ci_high"] == pytest.approx(2 * math.exp(Z95 * se), abs=1e-3)
    # minimum support: three contacts had it, four are asked for
    assert (
        _awareness_or_empty(
            moments.moments(webinar.storage, SITE, PERSONAS, CONF, conversions=["Signed Up"], min_support=4)
        )
        == {}
    )
    # the setting is the default
    small = AnalysisSettings(moments_min_support=3)
    assert "page /webinar" in _awareness(
        moments.moments(webinar.storage, SITE, PERSONAS, small, conversions=["Signed Up"])
    )
    assert _awareness_or_empty(moments.moments(webinar.storage, SITE, PERSONAS, CONF, conversions=["Signed Up"])) == {}


def _awareness_or_empty(out: dict) -> dict[str, dict]:
    return _awareness(out) if any(s["stage"] == "Awareness" for s in out["stages"]) else {}


def test_haldane_when_a_cell_is_zero_and_moments_after_converting_do_not_count(journey: Journey) -> None:
    site = feed(journey)
    out = moments.moments(site.storage, SITE, PERSONAS, CONF, conversions=["Order Completed"], min_support=1)
    got = _awareness(out)
    # Awareness: a, b, c, d; a and c bought. "/" in Awareness: a, b, c (c before buying); d only /blog
    m = got["page /"]
    assert (m["with"], m["with_converted"], m["without"], m["without_converted"]) == (3, 2, 1, 0)
    # zero cell: 0.5 added to each: (2.5 / 4) / (0.5 / 2)
    assert m["lift"] == 2.5
    se = math.sqrt(1 / 2.5 - 1 / 4 + 1 / 0.5 - 1 / 2)
    assert m["ci_high"] == pytest.approx(2.5 * math.exp(Z95 * se), abs=1e-3)
    # c answered NPS after buying: only d's answer (in Awareness, never bought) is a moment
    assert got["event NPS Answered"]["with"] == 1 and got["event NPS Answered"]["with_converted"] == 0
    # the conversion itself is never a moment; a's /pricing happened in Consideration
    assert "event Order Completed" not in got and "page /pricing" not in got
    # Consideration: only a entered it before buying (c bought first), so nobody lacks /pricing there
    assert "Consideration" not in [s["stage"] for s in out["stages"]]


def test_a_moment_counts_once_per_contact_and_stage_over_days_and_devices(journey: Journey) -> None:
    """A contact's moments are its devices' (device_days: a row per device, day and moment), each in
    the stage the contact was in then, counted once per stage however many rows hold it."""
    e = journey.event
    # the phone: /webinar in Awareness, and again the next day: a second session, so in Consideration
    send(journey, e("page", "phone", 0, path="/"), e("page", "phone", 1, path="/webinar"))
    send(journey, e("page", "phone", DAY + 1, path="/webinar"), e("page", "phone", DAY + 5, path="/pricing"))
    # the laptop is u1's; /webinar there after the phone's /pricing, then the phone turns out to be u1's
    send(
        journey,
        e("page", "laptop", 2 * DAY, path="/"),
        e("identify", "laptop", 2 * DAY + 1, user_id="u1"),
        e("page", "laptop", 2 * DAY + 2, path="/webinar"),
    )
    send(journey, e("identify", "phone", 2 * DAY + 3, user_id="u1"))
    send(journey, e("track", "laptop", 3 * DAY, event="Order Completed"))
    # two contacts without /webinar: one in Awareness only, one who reached Consideration
    send(journey, e("page", "v2", 10, path="/"))
    send(journey, e("page", "v3", 20, path="/"), e("page", "v3", 30, path="/pricing"))
    out = moments.moments(journey.storage, SITE, PERSONAS, CONF, conversions=["Order Completed"], min_support=1)
    got = {(s["stage"], m["name"]): m for s in out["stages"] for m in s["moments"]}
    counts = {k: (m["with"], m["with_converted"], m["without"], m["without_converted"]) for k, m in got.items()}
    # u1 once in Awareness (the phone's first day) and once in Consideration, where two rows hold it (the
    # phone's second day, the laptop's, in the stage the phone had reached): counted once, not twice
    assert counts[("Awareness", "/webinar")] == (1, 1, 2, 0)
    assert counts[("Consideration", "/webinar")] == (1, 1, 1, 0)


def test_lift_function_and_bad_parameters(journey: Journey) -> None:
    rr, lo, hi = moments.lift(2, 3, 1, 3, 0.95)
    assert rr == pytest.approx(2.0) and lo < 1 < hi
    for kwargs in ({"conversions": []}, {"min_support": 0}, {"limit": 0}, {"limit": 501}, {"persona": "Nobody"}):
        with pytest.raises(BadQuery):
            moments.moments(journey.storage, SITE, PERSONAS, CONF, **{"conversions": ["x"], **kwargs})
