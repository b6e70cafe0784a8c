"""Unit tests of journey_builder/core.py, the builder's pure logic: no storage, a dict-backed
``Lookups``, enriched events built by hand with explicit timestamps, and every expected value
written out by hand (from the docstrings and the default stages.toml), never computed by the code
under test. The same logic runs through chDB in test_builder.py."""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from journey_builder.core import (
    BatchKeys,
    JourneyCore,
    Output,
    SessionState,
    StageRule,
    VisitorState,
    account_domain,
    apply_group,
    batch_order,
    contact_row,
    current_stage,
    entered_rules,
    event_columns,
    interaction_of,
    is_conversion,
    resolve_contact,
    session_for,
    session_id_for,
    update_contact,
    visitor_id,
)
from journey_builder.stages import Rule, StageRules
from schemas import ENRICHED_DEFAULTS
from schemas.times import epoch_ms

SITE = "s1"
DAY = "2026-11-02"
TIMEOUT_S = 1800
TIMEOUT_MS = 1_800_000
SESSION_NS = uuid.UUID("6f1d8a52-3c1b-4c8e-9a53-1f0e7b7f2d10")
EPOCH = "1970-01-01 00:00:00.000"
NO_CONSENT = {"consent": "", "consent_dnt": False, "consent_cookieless": False, "consent_categories": []}
DESKTOP = {"ua_device_type": "desktop", "ua_browser": "Chrome", "ua_os": "Windows", "geo_country": "DE"}
# the columns of trailmark.events the builder writes (schemas/ddl 001, 002, 003, 007; retention_days
# keeps its default)
EVENT_COLUMNS = set(
    """
    site_id message_id type event anonymous_id user_id contact_id session_id timestamp original_timestamp
    sent_at received_at properties traits context ip user_agent page_url page_host page_path page_query
    page_title content_group referrer referrer_host referrer_type referrer_name search_term utm_source
    utm_medium utm_campaign utm_term utm_content click_id_type click_id channel ua_browser ua_browser_version
    ua_os ua_os_version ua_device_type ua_device_brand ua_device_model is_bot bot_name geo_country geo_region
    geo_city geo_lat geo_lon geo_timezone geo_asn geo_org email email_domain email_free email_disposable
    company_domain company_name phone_e164 phone_country phone_carrier phone_line_type phone_timezone
    first_name last_name enrich_errors
    extra source medium consent consent_dnt consent_cookieless consent_categories
    """.split()
)


def at(clock: str) -> str:
    """Bus time of DAY at ``HH:MM:SS.mmm``."""
    return f"{DAY}T{clock}Z"


def ch(clock: str) -> str:
    """ClickHouse text of DAY at ``HH:MM:SS.mmm``."""
    return f"{DAY} {clock}"


def table_rows(out: Output, table: str, version: int) -> list[dict[str, Any]]:
    """A derived table of ``out`` as rows (``Output.tables`` gives columns)."""
    columns = out.tables(version)[table]
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def event(kind: str, anon: str, clock: str, msg: str, **fields: Any) -> dict[str, Any]:
    """An enriched event as enrichment leaves it: the raw fields, the enrichment defaults, ``fields``."""
    ev: dict[str, Any] = {
        "v": 1,
        "site_id": SITE,
        "message_id": msg,
        "type": kind,
        "anonymous_id": anon,
        "user_id": "",
        "previous_id": "",
        "group_id": "",
        "event": "",
        "properties": {},
        "traits": {},
        "context": {},
        "timestamp": at(clock),
        "original_timestamp": at(clock),
        "sent_at": at(clock),
        "received_at": at(clock),
        "ip": "203.0.113.0",
        "user_agent": "",
        **copy.deepcopy(ENRICHED_DEFAULTS),
    }
    ev.update(fields)
    return ev


def sid(anon: str, msg: str, site: str = SITE) -> str:
    """The documented session id: uuid5 of site|visitor|messageId of the opening event."""
    return str(uuid.uuid5(SESSION_NS, f"{site}|{anon}|{msg}"))


def contact(contact_id: str, **fields: Any) -> dict[str, Any]:
    """A contact as the builder holds it (traits and field_sources parsed), written out by hand."""
    row: dict[str, Any] = {
        "site_id": SITE,
        "contact_id": contact_id,
        "user_id": "",
        "traits": {},
        "field_sources": {},
        "first_seen": "",
        "last_seen": "",
        "country": "",
        "email": "",
        "email_domain": "",
        "email_free": False,
        "email_disposable": False,
        "company_domain": "",
        "company_name": "",
        "phone_e164": "",
        "phone_country": "",
        "phone_carrier": "",
        "phone_line_type": "",
        "first_name": "",
        "last_name": "",
        "consent": "",
        "consent_dnt": False,
        "consent_cookieless": False,
        "consent_categories": [],
        "consent_at": EPOCH,
    }
    row.update(fields)
    return row


def written(c: dict[str, Any]) -> dict[str, Any]:
    """A batch's contact (``Output.contacts``) as written and read back: JSON parsed, no version."""
    row = contact_row(c, 7)
    assert row["version"] == 7
    parsed = {k: v for k, v in row.items() if k != "version"}
    parsed["traits"] = orjson.loads(row["traits"])
    parsed["field_sources"] = orjson.loads(row["field_sources"])
    return parsed


@dataclass
class DictLookups:
    """``Lookups`` from dicts: stored contacts and each contact's devices; records what was asked."""

    contacts: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    devices: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    asked: list[tuple[str, str, str]] = field(default_factory=list)

    def contact(self, site_id: str, contact_id: str) -> dict[str, Any] | None:
        self.asked.append(("contact", site_id, contact_id))
        found = self.contacts.get((site_id, contact_id))
        return copy.deepcopy(found) if found is not None else None

    def anonymous_ids_of(self, site_id: str, contact_id: str) -> list[str]:
        self.asked.append(("anonymous_ids_of", site_id, contact_id))
        return list(self.devices.get((site_id, contact_id), []))

    def store(self, out: Output) -> None:
        """What the builder's write leaves in storage for the next batch's lookups."""
        for key, row in out.contacts.items():
            self.contacts[key] = written(row)
        for r in out.identities:
            devices = self.devices.setdefault((r["site_id"], r["contact_id"]), [])
            if r["anonymous_id"] not in devices:
                devices.append(r["anonymous_id"])


def new_core(
    conversions: tuple[str, ...] = ("Order Completed", "Signed Up"), include_bots: bool = False
) -> JourneyCore:
    return JourneyCore(StageRules.load(), conversions, TIMEOUT_S, include_bots)


def run(core: JourneyCore, lookups: DictLookups, *events: dict[str, Any]) -> Output:
    out = Output()
    core.apply(list(events), lookups, out)  # type: ignore[arg-type]  # TypedDicts are dicts
    return out


def next_batch(core: JourneyCore, lookups: DictLookups, out: Output) -> None:
    """As the builder does between batches: write, then forget contacts (reloaded through lookups)."""
    lookups.store(out)
    core.contacts.clear()
    core.email_contacts.clear()
    core.accounts.clear()


def place(visitor: VisitorState, ev: dict[str, Any]) -> tuple[SessionState, bool]:
    return session_for(visitor, ev, ev["anonymous_id"], epoch_ms(ev["timestamp"]), TIMEOUT_MS)


def stage_row(stage: str, clock: str, rule: str, msg: str, anon: str = "v") -> dict[str, Any]:
    return {
        "site_id": SITE,
        "anonymous_id": anon,
        "stage": stage,
        "entered_at": at(clock),
        "rule": rule,
        "message_id": msg,
    }


# ---- session ids -----------------------------------------------------------------------------


def test_session_ids_are_uuid5_of_site_visitor_and_opening_message() -> None:
    # pinned: a redelivered batch must rebuild the very session it built before, in any version
    assert session_id_for("s1", "a", "m1") == "4533151c-340d-535f-8811-42dc2ec22802"
    for site, anon, msg in [("s1", "a", "m2"), ("s2", "a", "m1"), ("shop", "user:u9", "b6f0-msg"), ("", "", "")]:
        assert session_id_for(site, anon, msg) == str(uuid.uuid5(SESSION_NS, f"{site}|{anon}|{msg}"))


# ---- session_for -----------------------------------------------------------------------------


def test_inactivity_of_exactly_the_timeout_keeps_the_session_one_ms_more_opens_one() -> None:
    v = VisitorState()
    first, new = place(v, event("page", "a", "09:00:00.000", "m1"))
    assert new is True and v.sessions == 1 and v.session is first
    same, new = place(v, event("page", "a", "09:30:00.000", "m2"))  # exactly 1 800 000 ms idle
    assert same is first and new is False and v.sessions == 1
    later, new = place(v, event("page", "a", "09:30:00.001", "m3"))  # 1 800 001 ms idle
    assert new is True and later is not first and v.sessions == 2 and v.session is later
    assert later.session_id == sid("a", "m3")
    assert (later.start, later.end, later.end_ms) == (at("09:30:00.001"), at("09:30:00.001"), 1793611800001)


def test_a_new_session_takes_its_attribution_from_the_opening_event() -> None:
    v = VisitorState()
    ev = event(
        "page",
        "a",
        "09:00:00.000",
        "m1",
        page_path="/landing",
        referrer_host="www.google.com",
        referrer_type="search",
        utm_source="google",
        utm_medium="cpc",
        utm_campaign="spring",
        click_id_type="gclid",
        click_id="abc",
        channel="Paid Search",
        source="google",
        medium="cpc",
        **DESKTOP,
    )
    s, new = place(v, ev)
    assert new is True
    assert s == SessionState(
        session_id=sid("a", "m1"),
        anonymous_id="a",
        start="2026-11-02T09:00:00.000Z",
        end="2026-11-02T09:00:00.000Z",
        end_ms=1793610000000,
        campaign_key="google|cpc|spring|abc",
        referrer_host="www.google.com",
        channel="Paid Search",
        source="google",
        medium="cpc",
        campaign="spring",
        click_id_type="gclid",
        entry_page="/landing",
        exit_page="/landing",
        device="desktop",
        browser="Chrome",
        os="Windows",
        country="DE",
    )


@pytest.mark.parametrize(
    ("channel", "source", "medium", "expected"),
    [
        ("Internal", "", "", ("Direct", "(direct)", "(none)")),
        ("", "", "", ("Direct", "(direct)", "(none)")),
        ("Email", "newsletter", "email", ("Email", "newsletter", "email")),
        ("Referral", "news.example.net", "", ("Referral", "news.example.net", "(none)")),
    ],
)
def test_session_channel_source_and_medium_defaults(
    channel: str, source: str, medium: str, expected: tuple[str, str, str]
) -> None:
    s, _ = place(
        VisitorState(), event("page", "a", "09:00:00.000", "m1", channel=channel, source=source, medium=medium)
    )
    assert (s.channel, s.source, s.medium) == expected


def test_a_new_campaign_opens_a_session_the_same_campaign_does_not() -> None:
    v = VisitorState()
    utm = {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "spring"}
    first, _ = place(v, event("page", "a", "09:00:00.000", "m1", **utm))
    assert first.campaign_key == "google|cpc|spring|"
    assert place(v, event("page", "a", "09:01:00.000", "m2", **utm)) == (first, False)
    # no campaign at all (an internal click) is not a new campaign
    internal = {"referrer_type": "internal", "referrer_host": "shop.example.com", "channel": "Internal"}
    assert place(v, event("page", "a", "09:02:00.000", "m3", **internal)) == (first, False)
    clicked, new = place(v, event("page", "a", "09:03:00.000", "m4", click_id_type="gclid", click_id="abc"))
    assert new is True and clicked.campaign_key == "|||abc" and clicked.session_id == sid("a", "m4")
    mailed, new = place(v, event("track", "a", "09:04:00.000", "m5", utm_source="newsletter", utm_campaign="nov"))
    assert new is True and mailed.campaign_key == "newsletter||nov|" and v.sessions == 3
    again = event("page", "a", "09:05:00.000", "m6", utm_source="newsletter", utm_campaign="nov")
    assert place(v, again) == (mailed, False)


def test_a_new_external_referrer_opens_a_session_on_a_page_view_only() -> None:
    v = VisitorState()
    google = {"referrer_type": "search", "referrer_host": "www.google.com"}
    facebook = {"referrer_type": "social", "referrer_host": "www.facebook.com"}
    first, _ = place(v, event("page", "a", "09:00:00.000", "m1", **google))
    assert place(v, event("track", "a", "09:01:00.000", "m2", **facebook)) == (first, False)
    internal = {"referrer_type": "internal", "referrer_host": "shop.example.com"}
    assert place(v, event("page", "a", "09:02:00.000", "m3", **internal)) == (first, False)
    assert place(v, event("page", "a", "09:03:00.000", "m4", referrer_type="direct")) == (first, False)
    assert place(v, event("page", "a", "09:04:00.000", "m5", **google)) == (first, False)  # the same referrer
    social, new = place(v, event("page", "a", "09:05:00.000", "m6", **facebook))
    assert new is True and social.referrer_host == "www.facebook.com" and social.session_id == sid("a", "m6")
    screen, new = place(v, event("screen", "a", "09:06:00.000", "m7", **google))  # screens are page views too
    assert new is True and screen.referrer_host == "www.google.com" and v.sessions == 3


def test_a_referrer_change_under_the_same_campaign_keeps_the_session() -> None:
    v = VisitorState()
    utm = {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "spring"}
    first, _ = place(v, event("page", "a", "09:00:00.000", "m1", referrer_type="search", referrer_host="x.io", **utm))
    ev = event("page", "a", "09:01:00.000", "m2", referrer_type="social", referrer_host="www.facebook.com", **utm)
    assert place(v, ev) == (first, False)


def test_a_late_event_joins_the_open_session_whatever_it_carries() -> None:
    v = VisitorState()
    first, _ = place(v, event("page", "a", "09:10:00.000", "m1"))
    late = event(
        "page", "a", "09:05:00.000", "m0", utm_source="mail", referrer_type="social", referrer_host="www.facebook.com"
    )
    assert place(v, late) == (first, False)
    assert (first.end, first.end_ms, v.sessions) == (at("09:10:00.000"), 1793610600000, 1)


def test_a_late_event_in_a_later_batch_does_not_move_the_session_end() -> None:
    core, lookups = new_core(), DictLookups()
    run(core, lookups, event("page", "a", "09:00:00.000", "m1", page_path="/"))
    run(core, lookups, event("page", "a", "09:10:00.000", "m2", page_path="/b"))
    out = run(core, lookups, event("track", "a", "09:05:00.000", "m3", event="Viewed", utm_source="late"))
    [row] = table_rows(out, "sessions_data", 1)
    assert (row["session_id"], row["start"], row["end"]) == (sid("a", "m1"), ch("09:00:00.000"), ch("09:10:00.000"))
    assert (row["events"], row["pageviews"], row["exit_page"], row["campaign_key"]) == (3, 2, "/b", "")
    assert out.events["session_id"] == [sid("a", "m1")]
    assert out.touchpoints == []  # joining is not starting


def test_a_late_page_view_does_not_become_the_exit_page() -> None:
    core, lookups = new_core(), DictLookups()
    run(
        core,
        lookups,
        event("page", "a", "09:00:00.000", "m1", page_path="/"),
        event("page", "a", "09:10:00.000", "m2", page_path="/b"),
    )
    out = run(core, lookups, event("page", "a", "09:05:00.000", "m3", page_path="/late"))
    [row] = table_rows(out, "sessions_data", 1)
    assert (row["pageviews"], row["end"]) == (3, ch("09:10:00.000"))
    assert row["exit_page"] == "/b"


# ---- JourneyCore.apply: sessions, touchpoints, stages --------------------------------------------


def journey_stream() -> list[dict[str, Any]]:
    """One visitor: a search visit that converts twice, then a direct return 33 minutes later."""
    internal = {"referrer_type": "internal", "referrer_host": "shop.example.com", "channel": "Internal", **DESKTOP}
    return [
        event(
            "page",
            "v",
            "09:00:00.000",
            "m01",
            page_path="/",
            referrer_type="search",
            referrer_host="www.google.com",
            channel="Organic Search",
            source="google",
            medium="organic",
            **DESKTOP,
        ),
        event("page", "v", "09:01:00.000", "m02", page_path="/pricing", **internal),
        event("track", "v", "09:02:00.000", "m03", event="$form_submit", page_path="/pricing", **DESKTOP),
        event("track", "v", "09:03:00.000", "m04", event="Contact Requested", **DESKTOP),
        event(
            "identify",
            "v",
            "09:04:00.000",
            "m05",
            user_id="u1",
            traits={"email": "v@x.io"},
            email="v@x.io",
            email_domain="x.io",
            **DESKTOP,
        ),
        event("track", "v", "09:05:00.000", "m06", event="Signed Up", **DESKTOP),
        event("page", "v", "09:06:00.000", "m07", page_path="/checkout", **internal),
        event("track", "v", "09:07:00.000", "m08", event="Order Completed", page_path="/checkout", **DESKTOP),
        event("page", "v", "09:40:00.000", "m09", page_path="/", referrer_type="direct", **DESKTOP),  # 33 min idle
        event("track", "v", "09:41:00.000", "m10", event="Shared", page_path="/", **DESKTOP),
    ]


def test_apply_builds_the_sessions_of_a_stream() -> None:
    core = new_core()
    out = run(core, DictLookups(), *journey_stream())
    a, b = sid("v", "m01"), sid("v", "m09")
    common = {"site_id": SITE, "anonymous_id": "v", "device": "desktop", "browser": "Chrome", "os": "Windows"}
    assert table_rows(out, "sessions_data", 7) == [
        {
            **common,
            "session_id": a,
            "user_id": "u1",
            "start": "2026-11-02 09:00:00.000",
            "end": "2026-11-02 09:07:00.000",
            "pageviews": 3,
            "events": 8,
            "entry_page": "/",
            "exit_page": "/checkout",
            "referrer_host": "www.google.com",
            "channel": "Organic Search",
            "source": "google",
            "medium": "organic",
            "campaign": "",
            "click_id_type": "",
            "campaign_key": "",
            "country": "DE",
            "converted": True,
            "conversions": 2,
            "version": 7,
        },
        {
            **common,
            "session_id": b,
            "user_id": "",
            "start": "2026-11-02 09:40:00.000",
            "end": "2026-11-02 09:41:00.000",
            "pageviews": 1,
            "events": 2,
            "entry_page": "/",
            "exit_page": "/",
            "referrer_host": "",
            "channel": "Direct",
            "source": "(direct)",
            "medium": "(none)",
            "campaign": "",
            "click_id_type": "",
            "campaign_key": "",
            "country": "DE",
            "converted": False,
            "conversions": 0,
            "version": 7,
        },
    ]
    assert out.events["session_id"] == [a] * 8 + [b] * 2
    assert out.events["contact_id"] == [""] * 4 + ["user:u1"] * 6
    state = core.visitors[(SITE, "v")]
    assert (state.sessions, state.contact_id) == (2, "user:u1")
    assert state.session is not None and state.session.session_id == b


def test_apply_takes_a_batch_in_batch_order_and_writes_its_events_in_their_own_order() -> None:
    """The builder hands ``apply`` the batch as it came with ``batch_order`` (site, visitor, time):
    each event is derived in that order, and its ``events`` row (session, contact) keeps its place."""
    v = journey_stream()
    w = [dict(e, anonymous_id="w", message_id=f"w-{e['message_id']}", user_id="") for e in v[:3]]
    came = [v[3], w[2], v[0], v[9], w[0], v[5], v[1], v[8], w[1], v[2], v[7], v[4], v[6]]  # as a bus may mix them
    order = batch_order(came)
    assert [came[i]["message_id"] for i in order] == [e["message_id"] for e in v + w]  # "v" < "w"
    out = Output()
    new_core().apply(copy.deepcopy(came), DictLookups(), out, order)  # type: ignore[arg-type]  # TypedDicts are dicts
    in_time = run(new_core(), DictLookups(), *copy.deepcopy(v + w))
    assert out.tables(7) == in_time.tables(7)
    assert out.events["message_id"] == [e["message_id"] for e in came]
    a, b, c = sid("v", "m01"), sid("v", "m09"), sid("w", "w-m01")
    sessions = {"m01": a, "m02": a, "m03": a, "m04": a, "m05": a, "m06": a, "m07": a, "m08": a, "m09": b, "m10": b}
    assert out.events["session_id"] == [sessions.get(e["message_id"], c) for e in came]
    known = {"m05", "m06", "m07", "m08", "m09", "m10"}  # from the identify on (as in the test above)
    assert out.events["contact_id"] == ["user:u1" if e["message_id"] in known else "" for e in came]


def test_batch_order_is_by_site_visitor_and_time_and_keeps_the_order_of_events_of_one_time() -> None:
    came = [
        event("page", "b", "09:00:00.000", "1"),
        event("page", "a", "09:05:00.000", "2"),
        dict(event("page", "a", "09:00:00.000", "3"), site_id="s0"),
        event("page", "a", "09:01:00.000", "4"),
        event("page", "a", "09:01:00.000", "5"),
        dict(event("page", "", "08:00:00.000", "6"), user_id="u"),  # a server-side call: visitor "user:u"
    ]
    assert [came[i]["message_id"] for i in batch_order(came)] == ["3", "4", "5", "2", "1", "6"]


def test_batch_order_sorts_as_the_site_visitor_time_tuples_do_ids_prefixing_others_included() -> None:
    """One string key per event, not a tuple: the order is the tuples' (ties as they came), also
    for sites and visitors of which one begins with another ("a" and "ab" sort as "a" < "ab")."""
    import random

    rng = random.Random(3)
    came = []
    for n in range(400):
        site, anon = rng.choice(["s", "s0", "t"]), rng.choice(["a", "ab", "a b", "b", "", "A"])
        e = dict(event("page", anon, f"09:{rng.randrange(3):02d}:00.000", str(n)), site_id=site)
        came.append(dict(e, user_id=rng.choice(["", "u", "u2"])))
    tuples = [(e["site_id"], visitor_id(e), e["timestamp"]) for e in came]
    assert batch_order(came) == sorted(range(len(came)), key=tuples.__getitem__)


def test_batch_order_keeps_each_visitors_events_in_time_order_when_an_id_holds_a_nul() -> None:
    """A visitor "a<NUL><a time>" has keys that sort among visitor "a"'s: the two visitors' events
    may then interleave, but each one's stay in time order."""
    odd = "a\x00" + at("09:01:30.000")
    came = [
        event("page", "a", "09:02:00.000", "1"),
        event("page", odd, "09:05:00.000", "2"),
        event("page", "a", "09:01:00.000", "3"),
        event("page", odd, "08:00:00.000", "4"),
    ]
    order = [came[i]["message_id"] for i in batch_order(came)]
    assert order.index("3") < order.index("1") and order.index("4") < order.index("2")


def test_apply_records_session_starts_and_interactions_as_touchpoints_with_their_stage() -> None:
    out = run(new_core(), DictLookups(), *journey_stream())
    a, b = sid("v", "m01"), sid("v", "m09")
    search = {"channel": "Organic Search", "source": "google", "medium": "organic", "campaign": ""}
    direct = {"channel": "Direct", "source": "(direct)", "medium": "(none)", "campaign": ""}

    def tp(
        tp_id: str, session: str, clock: str, kind: str, ev: str, path: str, stage: str, attribution: dict[str, str]
    ) -> dict[str, str]:
        return {
            "site_id": SITE,
            "touchpoint_id": tp_id,
            "session_id": session,
            "anonymous_id": "v",
            "timestamp": at(clock),
            "kind": kind,
            "event": ev,
            "page_path": path,
            **attribution,
            "stage": stage,
        }

    assert out.touchpoints == [
        tp(a, a, "09:00:00.000", "session_start", "", "/", "Awareness", search),
        # forms are not conversions for this core: a form_submit touchpoint
        tp("m03", a, "09:02:00.000", "form_submit", "$form_submit", "/pricing", "Consideration", search),
        # an event without a page path takes the session's exit page
        tp("m04", a, "09:03:00.000", "contact", "Contact Requested", "/pricing", "Consideration", search),
        tp("m05", a, "09:04:00.000", "identify", "", "/pricing", "Consideration", search),
        tp("m06", a, "09:05:00.000", "conversion", "Signed Up", "/pricing", "Consideration", search),
        tp("m08", a, "09:07:00.000", "conversion", "Order Completed", "/checkout", "Decision", search),
        tp(b, b, "09:40:00.000", "session_start", "", "/", "Retention", direct),
    ]


def test_apply_enters_stages_by_the_default_rules_and_a_purchase_feeds_retention() -> None:
    core = new_core()
    out = run(core, DictLookups(), *journey_stream())
    assert out.stages == [
        stage_row("Awareness", "09:00:00.000", "first visit", "m01"),
        stage_row("Consideration", "09:01:00.000", "pricing or compare page", "m02"),
        stage_row("Decision", "09:06:00.000", "cart or checkout", "m07"),
        stage_row("Retention", "09:40:00.000", "return after purchase", "m09"),
        stage_row("Advocacy", "09:41:00.000", "referral, review or share", "m10"),
    ]
    assert core.visitors[(SITE, "v")].stages == {
        "Awareness",
        "Consideration",
        "Decision",
        "Purchase",
        "Retention",
        "Advocacy",
    }


def test_entered_rules_takes_the_first_matching_rule_of_each_stage_not_entered_yet() -> None:
    rules = [
        StageRule(Rule("A", "a by event", events=frozenset({"Go"}))),
        StageRule(Rule("A", "a by path", path_contains=("/go", "/run"))),
        StageRule(Rule("B", "b by sessions", min_sessions=3)),
        StageRule(Rule("C", "c after A on a new session", after_stage="A", new_session=True)),
    ]

    def names(event: str = "", path: str = "", sessions: int = 1, entered: tuple[str, ...] = (), new: bool = False):
        return [r.name for r in entered_rules(rules, event, path, sessions, set(entered), new)]

    assert names() == []
    assert names(event="Go", path="/run/x") == ["a by event"]  # one rule per stage: the first that matches
    assert names(path="/x/run") == ["a by path"]  # a substring anywhere in the path
    assert names(path="/walk") == []
    assert names(event="Go", entered=("A",)) == []  # a stage is entered once
    assert names(sessions=3) == ["b by sessions"] and names(sessions=2) == []
    assert names(entered=("A",), new=True) == ["c after A on a new session"]
    assert names(entered=("A",)) == [] and names(new=True) == []
    assert names(event="Go", sessions=5, new=True) == ["a by event", "b by sessions"]  # A is not entered before


def test_retention_needs_a_purchase_then_a_new_session() -> None:
    core = new_core()
    out = run(
        core,
        DictLookups(),
        event("page", "w", "09:00:00.000", "m1", page_path="/blog"),
        event("track", "w", "09:01:00.000", "m2", event="Product Added"),  # Decision by event
        event("page", "w", "10:00:00.000", "m3", page_path="/blog/2"),
        event("track", "w", "10:01:00.000", "m4", event="Order Completed"),  # a purchase inside the session
        event("page", "w", "10:02:00.000", "m5", page_path="/account"),  # same session: not a return
    )
    assert out.stages == [
        stage_row("Awareness", "09:00:00.000", "first visit", "m1", "w"),
        stage_row("Decision", "09:01:00.000", "decision event", "m2", "w"),
        stage_row("Consideration", "10:00:00.000", "second session", "m3", "w"),
    ]
    assert core.visitors[(SITE, "w")].stages == {"Awareness", "Decision", "Consideration", "Purchase"}
    returned = run(core, DictLookups(), event("page", "w", "11:00:00.000", "m6", page_path="/"))
    assert returned.stages == [stage_row("Retention", "11:00:00.000", "return after purchase", "m6", "w")]


def test_a_form_submit_is_a_conversion_when_forms_count() -> None:
    core = new_core(conversions=("Order Completed", "form_submit"))
    out = run(
        core,
        DictLookups(),
        event("page", "f", "09:00:00.000", "m1", page_path="/contact"),
        event("track", "f", "09:01:00.000", "m2", event="Form Submitted"),
    )
    assert [(t["kind"], t["event"]) for t in out.touchpoints] == [
        ("session_start", ""),
        ("conversion", "Form Submitted"),
    ]
    [row] = table_rows(out, "sessions_data", 1)
    assert (row["conversions"], row["converted"]) == (1, True)
    assert "Purchase" in core.visitors[(SITE, "f")].stages


# ---- identity ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("u1", "a@x.io", "", ""), ("user:u1", [])),  # a userId names the contact
        (("u1", "a@x.io", "user:u2", "user:u3"), ("user:u1", [])),  # user contacts are never merged
        (("", "a@x.io", "", ""), ("email:a@x.io", [])),  # email only: a contact by email
        (("", "a@x.io", "email:a@x.io", ""), ("email:a@x.io", [])),
        (("", "b@x.io", "", "user:u9"), ("user:u9", [])),  # the visitor's known contact
        (("", "b@x.io", "", "email:a@x.io"), ("email:a@x.io", [])),
        (("", "a@x.io", "user:u1", "email:a@x.io"), ("user:u1", ["email:a@x.io"])),  # the email's contact wins
        (("u7", "bo@c.io", "email:bo@c.io", ""), ("user:u7", ["email:bo@c.io"])),
        (("u7", "bo@c.io", "email:bo@c.io", "email:bo@c.io"), ("user:u7", ["email:bo@c.io"])),
        (("u7", "bo@c.io", "email:bo@c.io", "email:old@c.io"), ("user:u7", ["email:bo@c.io", "email:old@c.io"])),
        (("u7", "", "", "email:old@c.io"), ("user:u7", ["email:old@c.io"])),
        (("u7", "", "", "user:u7"), ("user:u7", [])),
    ],
)
def test_resolve_contact(args: tuple[str, str, str, str], expected: tuple[str, list[str]]) -> None:
    assert resolve_contact(*args) == expected


def test_a_logged_in_visitors_events_make_one_row_per_link_and_one_contact_row() -> None:
    """Every event of a logged-in visitor carries its userId: the batch writes each link once, with its
    first and last time (identities_data keeps their min and max), and the contact's row once, as of
    its last event."""
    core, lookups = new_core(), DictLookups()
    out = run(
        core,
        lookups,
        event("page", "v", "09:00:00.000", "m1", user_id="u1"),
        event("track", "v", "09:05:00.000", "m2", user_id="u1", event="Clicked"),
        event("identify", "v", "09:10:00.000", "m3", user_id="u1", email="ann@acme.io", email_domain="acme.io"),
        event("page", "v", "09:12:00.000", "m4", user_id="u1"),
    )
    link = {"site_id": SITE, "anonymous_id": "v", "contact_id": "user:u1", "user_id": "u1"}
    assert out.identities == [
        {**link, "email": "", "first_seen": ch("09:00:00.000"), "last_seen": ch("09:12:00.000")},
        {**link, "email": "ann@acme.io", "first_seen": ch("09:10:00.000"), "last_seen": ch("09:10:00.000")},
    ]
    (row,) = table_rows(out, "contacts_data", 42)
    assert row["version"] == 42
    assert (row["email"], row["first_seen"], row["last_seen"]) == (
        "ann@acme.io",
        ch("09:00:00.000"),
        ch("09:12:00.000"),
    )
    assert orjson.loads(row["field_sources"]) == {"email": "identify:m3", "email_domain": "identify:m3"}


def test_two_devices_of_one_user_are_stitched() -> None:
    core, lookups = new_core(), DictLookups()
    enriched = {"email": "ann@acme.io", "email_domain": "acme.io", "company_domain": "acme.io"}
    laptop = run(
        core,
        lookups,
        event("page", "laptop", "09:00:00.000", "m1"),
        event("identify", "laptop", "09:01:00.000", "m2", user_id="u42", traits={"email": "ann@acme.io"}, **enriched),
    )
    assert laptop.identities == [
        {
            "site_id": SITE,
            "anonymous_id": "laptop",
            "contact_id": "user:u42",
            "user_id": "u42",
            "email": "ann@acme.io",
            "first_seen": ch("09:01:00.000"),
            "last_seen": ch("09:01:00.000"),
        }
    ]
    next_batch(core, lookups, laptop)
    phone = run(
        core,
        lookups,
        event("page", "phone", "10:00:00.000", "m3", ua_device_type="mobile"),
        event("identify", "phone", "10:01:00.000", "m4", user_id="u42"),
    )
    assert phone.identities == [
        {
            "site_id": SITE,
            "anonymous_id": "phone",
            "contact_id": "user:u42",
            "user_id": "u42",
            "email": "",
            "first_seen": ch("10:01:00.000"),
            "last_seen": ch("10:01:00.000"),
        }
    ]
    assert phone.events["contact_id"] == ["", "user:u42"]
    assert ("contact", SITE, "user:u42") in lookups.asked  # the stored contact, not a blank one
    assert written(phone.contacts[(SITE, "user:u42")]) == contact(
        "user:u42",
        user_id="u42",
        email="ann@acme.io",
        email_domain="acme.io",
        company_domain="acme.io",
        traits={"email": "ann@acme.io"},  # kept from the stored contact
        field_sources={"email": "identify:m2", "email_domain": "identify:m2", "company_domain": "identify:m2"},
        first_seen=ch("09:01:00.000"),
        last_seen=ch("10:01:00.000"),
    )


def test_an_email_contact_is_merged_into_the_user_contact_with_its_devices() -> None:
    old = "email:bo@corp.example"
    lookups = DictLookups(
        contacts={
            (SITE, old): contact(
                old,
                email="bo@corp.example",
                email_domain="corp.example",
                first_name="Bo",
                last_name="Smith",
                country="FR",
                traits={"name": "Bo Smith"},
                field_sources={
                    "email": "identify:m-old",
                    "first_name": "identify:m-old",
                    "last_name": "identify:m-old",
                },
                first_seen="2026-11-01 08:00:00.000",
                last_seen="2026-11-01 08:05:00.000",
            )
        },
        devices={(SITE, old): ["x1", "x2"]},
    )
    core = new_core()
    core.email_contacts[(SITE, "bo@corp.example")] = old  # as the builder loads it for the batch
    out = run(
        core,
        lookups,
        event("page", "y", "10:00:00.000", "m1"),
        event(
            "identify",
            "y",
            "10:01:00.000",
            "m2",
            user_id="u7",
            traits={"email": "bo@corp.example", "plan": "pro"},
            email="bo@corp.example",
            email_domain="corp.example",
            company_domain="corp.example",
        ),
    )
    link = {"site_id": SITE, "contact_id": "user:u7", "user_id": "u7", "email": "bo@corp.example"}
    seen = {"first_seen": ch("10:01:00.000"), "last_seen": ch("10:01:00.000")}
    assert out.identities == [
        {**link, "anonymous_id": "y", **seen},
        {**link, "anonymous_id": "x1", **seen},
        {**link, "anonymous_id": "x2", **seen},
    ]
    assert ("anonymous_ids_of", SITE, old) in lookups.asked
    assert list(out.contacts) == [(SITE, "user:u7")]
    assert written(out.contacts[(SITE, "user:u7")]) == contact(
        "user:u7",
        user_id="u7",
        email="bo@corp.example",
        email_domain="corp.example",
        company_domain="corp.example",
        first_name="Bo",
        last_name="Smith",
        country="FR",
        traits={"name": "Bo Smith", "email": "bo@corp.example", "plan": "pro"},
        field_sources={
            "email": "identify:m-old",  # the merged contact's provenance is kept
            "first_name": "identify:m-old",
            "last_name": "identify:m-old",
            "email_domain": "merged:email:bo@corp.example",  # it had none for this field
            "country": "merged:email:bo@corp.example",
            "company_domain": "identify:m2",
        },
        first_seen="2026-11-01 08:00:00.000",
        last_seen=ch("10:01:00.000"),
    )
    assert core.visitors[(SITE, "y")].contact_id == "user:u7"
    assert core.email_contacts[(SITE, "bo@corp.example")] == "user:u7"


def test_a_merge_links_the_in_memory_devices_of_the_email_contact() -> None:
    core, lookups = new_core(), DictLookups()
    first = run(
        core,
        lookups,
        event("page", "x", "09:00:00.000", "m1"),
        event("identify", "x", "09:01:00.000", "m2", traits={"email": "bo@c.io"}, email="bo@c.io"),
    )
    assert first.events["contact_id"] == ["", "email:bo@c.io"]
    out = run(core, DictLookups(), event("identify", "y", "10:00:00.000", "m3", user_id="u7", email="bo@c.io"))
    assert [(r["anonymous_id"], r["contact_id"]) for r in out.identities] == [("y", "user:u7"), ("x", "user:u7")]


def test_after_a_merge_the_old_contacts_device_identifies_into_the_user_contact() -> None:
    core, lookups = new_core(), DictLookups()
    run(core, lookups, event("identify", "x", "09:00:00.000", "m1", email="bo@c.io"))
    run(core, lookups, event("identify", "y", "10:00:00.000", "m2", user_id="u7", email="bo@c.io"))
    out = run(core, lookups, event("identify", "x", "10:30:00.000", "m3", email="bo.smith@c.io"))
    assert out.events["contact_id"] == ["user:u7"]


def test_a_merge_moves_only_the_devices_still_in_memory() -> None:
    """The contact -> devices index follows every change: a device evicted or dropped (a failed
    batch) is not linked by the merge (its link comes from storage: ``anonymous_ids_of``); the
    devices still in memory are, and belong to the user afterwards."""
    core, lookups = new_core(), DictLookups()
    for anon, msg in (("a", "m1"), ("b", "m2"), ("c", "m3"), ("d", "m4")):
        run(core, lookups, event("identify", anon, "09:00:00.000", msg, email="bo@c.io"))
    assert core.devices_of(SITE, "email:bo@c.io") == ["a", "b", "c", "d"]
    core.evict(3)  # "a", the least recently seen, leaves memory
    core.drop((SITE, "b"))
    assert core.devices_of(SITE, "email:bo@c.io") == ["c", "d"]
    out = run(core, DictLookups(), event("identify", "y", "10:00:00.000", "m6", user_id="u7", email="bo@c.io"))
    assert [(r["anonymous_id"], r["contact_id"]) for r in out.identities] == [
        ("y", "user:u7"),
        ("c", "user:u7"),
        ("d", "user:u7"),
    ]
    assert core.devices_of(SITE, "email:bo@c.io") == []
    assert core.devices_of(SITE, "user:u7") == ["c", "d", "y"]
    assert core.visitors[(SITE, "d")].contact_id == "user:u7"
    core.evict(1)
    assert (core.devices_of(SITE, "user:u7"), list(core.visitors)) == (["y"], [(SITE, "y")])
    core.clear()
    assert (core.devices_of(SITE, "user:u7"), list(core.visitors)) == ([], [])


def test_an_alias_links_the_previous_id() -> None:
    out = run(new_core(), DictLookups(), event("alias", "", "09:00:00.000", "m1", user_id="u5", previous_id="anon-old"))
    assert [(r["anonymous_id"], r["contact_id"]) for r in out.identities] == [
        ("user:u5", "user:u5"),
        ("anon-old", "user:u5"),
    ]
    assert out.events["anonymous_id"] == ["user:u5"]


# ---- update_contact ---------------------------------------------------------------------------


def merged_row(
    c: dict[str, Any], ev: dict[str, Any], consent: dict[str, Any], merged: list[tuple[str, dict[str, Any]]]
) -> dict[str, Any]:
    """``update_contact``, then the row written."""
    update_contact(c, ev, consent, merged)
    return contact_row(c, 7)


def test_merge_contact_latest_non_empty_wins_and_records_its_source() -> None:
    c = contact("user:u1")
    gmail = {"email": "ann@gmail.com", "email_domain": "gmail.com", "email_free": True}
    merged_row(c, event("identify", "a", "09:00:00.000", "m1", user_id="u1", first_name="Ann", **gmail), NO_CONSENT, [])
    assert (c["first_name"], c["email"], c["email_free"], c["email_disposable"]) == (
        "Ann",
        "ann@gmail.com",
        True,
        False,
    )
    assert c["field_sources"] == {
        "email": "identify:m1",
        "email_domain": "identify:m1",
        "first_name": "identify:m1",
        "email_free": "identify:m1",  # email_disposable stayed False: no source
    }
    # no email: the flags describe the email, so they stay; an empty first name is no news
    merged_row(c, event("identify", "a", "09:05:00.000", "m2", last_name="Lee"), NO_CONSENT, [])
    assert (c["first_name"], c["last_name"], c["email_free"]) == ("Ann", "Lee", True)
    acme = {"email": "anna@acme.io", "email_domain": "acme.io", "email_free": False}
    row = merged_row(
        c, event("track", "a", "09:10:00.000", "m3", first_name="Anna", last_name="Lee", **acme), NO_CONSENT, []
    )
    assert (c["first_name"], c["last_name"], c["email"], c["email_free"]) == ("Anna", "Lee", "anna@acme.io", False)
    assert c["field_sources"] == {
        "email": "track:m3",
        "email_domain": "track:m3",
        "first_name": "track:m3",
        "email_free": "track:m3",
        "last_name": "identify:m2",  # the same value again keeps its first source
    }
    assert orjson.loads(row["field_sources"]) == c["field_sources"]
    assert c["user_id"] == "u1"  # from the first call, kept


def test_merge_contact_takes_no_person_fields_from_a_group_call() -> None:
    c = contact("user:u1", first_name="Ann", email="ann@acme.io", traits={"plan": "pro"})
    c["field_sources"] = {"first_name": "identify:m1", "email": "identify:m1"}
    group = event(
        "group",
        "a",
        "09:00:00.000",
        "m4",
        user_id="u1",
        group_id="g1",
        traits={"name": "Acme", "email": "billing@acme.io"},
        email="billing@acme.io",
        email_free=True,
        company_name="Acme",
        first_name="Billing",
        geo_country="FR",
    )
    row = merged_row(c, group, NO_CONSENT, [])
    assert (c["first_name"], c["email"], c["email_free"], c["company_name"]) == ("Ann", "ann@acme.io", False, "")
    # the country comes from the caller's address, not the traits: the person's, with its source
    assert c["field_sources"] == {"first_name": "identify:m1", "email": "identify:m1", "country": "group:m4"}
    assert (c["traits"], row["traits"]) == ({"plan": "pro"}, '{"plan":"pro"}')
    assert (c["user_id"], c["country"], c["last_seen"]) == ("u1", "FR", ch("09:00:00.000"))


def test_merge_contact_sets_consent_only_from_events_that_say_something_about_it() -> None:
    c = contact("user:u1")
    merged_row(c, event("identify", "a", "09:00:00.000", "m1", user_id="u1"), NO_CONSENT, [])
    assert (c["consent"], c["consent_at"]) == ("", EPOCH)
    granted = {"consent": "granted", "consent_dnt": False, "consent_cookieless": True, "consent_categories": ["ads"]}
    merged_row(c, event("identify", "a", "09:05:00.000", "m2", user_id="u1"), granted, [])
    assert {k: c[k] for k in (*granted, "consent_at")} == {**granted, "consent_at": ch("09:05:00.000")}
    merged_row(c, event("identify", "a", "09:10:00.000", "m3", user_id="u1"), NO_CONSENT, [])
    assert {k: c[k] for k in (*granted, "consent_at")} == {**granted, "consent_at": ch("09:05:00.000")}
    denied = {"consent": "denied", "consent_dnt": True, "consent_cookieless": False, "consent_categories": []}
    row = merged_row(c, event("identify", "a", "09:15:00.000", "m4", user_id="u1"), denied, [])
    assert {k: row[k] for k in (*denied, "consent_at")} == {**denied, "consent_at": ch("09:15:00.000")}


def test_merge_contact_first_and_last_seen_are_min_and_max() -> None:
    c = contact("user:u1")
    for msg, clock in [("m1", "10:00:00.000"), ("m2", "09:00:00.000"), ("m3", "11:00:00.000"), ("m4", "10:30:00.000")]:
        row = merged_row(c, event("identify", "a", clock, msg, user_id="u1"), NO_CONSENT, [])
    assert (c["first_seen"], c["last_seen"]) == (ch("09:00:00.000"), ch("11:00:00.000"))
    assert (row["first_seen"], row["last_seen"]) == (ch("09:00:00.000"), ch("11:00:00.000"))


def test_merge_contact_fills_missing_fields_from_merged_contacts() -> None:
    c = contact("user:u7", first_name="Robert", first_seen="2026-11-02 08:00:00.000")
    c["field_sources"] = {"first_name": "identify:m9"}
    old = contact(
        "email:bo@c.io",
        email="bo@c.io",
        first_name="Bo",
        phone_e164="+33612345678",
        traits={"name": "Bo", "plan": "free"},
        field_sources={"email": "identify:m1"},
        first_seen="2026-10-01 08:00:00.000",
    )
    c["traits"] = {"plan": "pro"}
    merged_row(c, event("identify", "y", "09:00:00.000", "m2", user_id="u7"), NO_CONSENT, [("email:bo@c.io", old)])
    assert (c["email"], c["first_name"], c["phone_e164"]) == ("bo@c.io", "Robert", "+33612345678")
    assert c["field_sources"] == {
        "first_name": "identify:m9",
        "email": "identify:m1",
        "phone_e164": "merged:email:bo@c.io",
    }
    assert c["traits"] == {"name": "Bo", "plan": "pro"}  # the contact's own traits win
    assert (c["first_seen"], c["last_seen"]) == ("2026-10-01 08:00:00.000", ch("09:00:00.000"))


def test_merging_never_pairs_an_email_with_another_emails_flags() -> None:
    c = contact("user:u7", email="u7@corp.io", email_domain="corp.io")
    old = contact("email:old@gmail.com", email="old@gmail.com", email_domain="gmail.com", email_free=True)
    ev = event("identify", "x", "09:00:00.000", "m1", user_id="u7")
    merged_row(c, ev, NO_CONSENT, [("email:old@gmail.com", old)])
    assert (c["email"], c["email_free"]) == ("u7@corp.io", False)


def test_a_country_set_after_a_merge_records_the_event_as_its_source() -> None:
    c = contact("user:u7")
    old = contact("email:bo@c.io", email="bo@c.io", country="FR")
    merged_row(
        c,
        event("identify", "y", "09:00:00.000", "m2", user_id="u7", geo_country="DE"),
        NO_CONSENT,
        [("email:bo@c.io", old)],
    )
    assert c["country"] == "DE"
    assert c["field_sources"].get("country") == "identify:m2"


# ---- accounts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("traits", "domain"),
    [
        ({"website": "https://www.acme.io/about"}, "acme.io"),
        ({"website": "www.example.org"}, "example.org"),
        ({"website": "http://WWW.Shop.Example.net:8080/x"}, "shop.example.net"),
        ({"domain": " Acme.COM ", "website": "https://other.io"}, "acme.com"),
        ({"domain": "", "website": "https://www.b.io"}, "b.io"),
        ({"website": 42}, ""),
        ({}, ""),
    ],
)
def test_account_domain(traits: dict[str, Any], domain: str) -> None:
    assert account_domain(traits) == domain


def test_apply_group_names_the_account_and_merges_traits() -> None:
    account: dict[str, Any] = {
        "site_id": SITE,
        "group_id": "g1",
        "name": "",
        "domain": "",
        "traits": {},
        "first_seen": "",
        "last_seen": "",
    }
    traits = {"name": "Acme Inc", "website": "https://www.acme.io/about", "plan": "pro"}
    row = apply_group(account, event("group", "a", "10:00:00.000", "m1", group_id="g1", traits=traits))
    assert {k: v for k, v in row.items() if k != "version"} == {
        "site_id": SITE,
        "group_id": "g1",
        "name": "Acme Inc",
        "domain": "acme.io",
        "traits": '{"name":"Acme Inc","website":"https://www.acme.io/about","plan":"pro"}',
        "first_seen": ch("10:00:00.000"),
        "last_seen": ch("10:00:00.000"),
    }
    later = event("group", "a", "09:00:00.000", "m2", group_id="g1", traits={"plan": "", "employees": 50})
    row = apply_group(account, later)
    assert account["traits"] == {**traits, "employees": 50}  # an empty plan is no news
    assert (row["name"], row["domain"], row["first_seen"], row["last_seen"]) == (
        "Acme Inc",
        "acme.io",
        ch("09:00:00.000"),
        ch("10:00:00.000"),
    )


def test_a_group_call_updates_the_account_links_the_visitor_and_keeps_person_fields_out() -> None:
    core = new_core()
    group = event(
        "group",
        "v",
        "09:00:00.000",
        "m1",
        user_id="u1",
        group_id="g1",
        traits={"name": "Acme", "website": "https://www.acme.io", "email": "billing@acme.io"},
        email="billing@acme.io",
        email_domain="acme.io",
        company_domain="acme.io",
        phone_timezone="Europe/Paris",
    )
    out = run(core, DictLookups(), group)
    assert out.account_links == [
        {
            "site_id": SITE,
            "group_id": "g1",
            "anonymous_id": "v",
            "first_seen": ch("09:00:00.000"),
            "last_seen": ch("09:00:00.000"),
        }
    ]
    account = out.accounts[(SITE, "g1")]
    assert (account["name"], account["domain"]) == ("Acme", "acme.io")
    assert [(r["contact_id"], r["email"]) for r in out.identities] == [("user:u1", "")]
    person = written(out.contacts[(SITE, "user:u1")])
    assert (person["email"], person["company_domain"], person["traits"]) == ("", "", {})
    assert (out.events["email"], out.events["company_domain"], out.events["phone_timezone"]) == ([""], [""], [""])
    assert [t["kind"] for t in out.touchpoints] == ["session_start"]


# ---- event_columns ----------------------------------------------------------------------------


def test_event_columns() -> None:
    page = event(
        "page",
        "a",
        "09:00:00.000",
        "m1",
        original_timestamp="",
        sent_at="2026-11-02T09:00:01.000Z",
        properties={"a": 1},
        context={"page": {"path": "/"}},
        email="ann@acme.io",
        email_free=True,
        phone_timezone="Europe/Paris",
        first_name="Ann",
        extra={"integrations": {"All": False}},
    )
    group = event(
        "group",
        "a",
        "09:01:00.000",
        "m2",
        group_id="g1",
        sent_at="",
        traits={"name": "Acme"},
        email="billing@acme.io",
        email_domain="acme.io",
        email_free=True,
        email_disposable=True,
        phone_timezone="Europe/Paris",
        first_name="Billing",
    )
    server = event("track", "", "09:02:00.000", "m3", user_id="u9", event="Order Completed")
    granted = {"consent": "granted", "consent_dnt": True, "consent_cookieless": False, "consent_categories": ["ads"]}
    built = [("S1", "C1", granted), ("S1", "", NO_CONSENT), ("", "user:u9", NO_CONSENT)]
    cols = event_columns([page, group, server], built)
    assert set(cols) == EVENT_COLUMNS
    assert {len(v) for v in cols.values()} == {3}
    assert cols["message_id"] == ["m1", "m2", "m3"]
    assert cols["anonymous_id"] == ["a", "a", "user:u9"]
    assert (cols["session_id"], cols["contact_id"]) == (["S1", "S1", ""], ["C1", "", "user:u9"])
    assert cols["original_timestamp"] == [EPOCH, at("09:01:00.000"), at("09:02:00.000")]
    assert cols["sent_at"] == ["2026-11-02T09:00:01.000Z", EPOCH, at("09:02:00.000")]
    assert cols["properties"] == ['{"a":1}', "{}", "{}"]
    assert cols["traits"] == ["{}", '{"name":"Acme"}', "{}"]
    assert cols["context"] == ['{"page":{"path":"/"}}', "{}", "{}"]
    assert cols["extra"] == ['{"integrations":{"All":false}}', "{}", "{}"]
    assert cols["consent"] == ["granted", "", ""]
    assert cols["consent_dnt"] == [True, False, False]
    assert cols["consent_categories"] == [["ads"], [], []]
    # the person fields enrichment read in a group call's traits are the account's
    assert cols["email"] == ["ann@acme.io", "", ""]
    assert cols["email_domain"] == ["", "", ""]
    assert cols["email_free"] == [True, False, False]
    assert cols["email_disposable"] == [False, False, False]
    assert cols["phone_timezone"] == ["Europe/Paris", "", ""]
    assert cols["first_name"] == ["Ann", "", ""]
    assert cols["timestamp"] == [at("09:00:00.000"), at("09:01:00.000"), at("09:02:00.000")]


def test_bots_get_no_session_or_contact_unless_included() -> None:
    bot = {"is_bot": True, "bot_name": "Googlebot"}
    events = [
        event("page", "g", "09:00:00.000", "m1", page_path="/", **bot),
        event("identify", "g", "09:01:00.000", "m2", user_id="u1", **bot),
        event("page", "h", "09:00:00.000", "m3", page_path="/"),
    ]
    core = new_core()
    out = run(core, DictLookups(), *events)
    assert out.events["message_id"] == ["m1", "m2", "m3"]  # kept in events
    assert out.events["session_id"] == ["", "", sid("h", "m3")]
    assert out.events["contact_id"] == ["", "", ""]
    assert [r["anonymous_id"] for r in table_rows(out, "sessions_data", 1)] == ["h"]
    assert {t["anonymous_id"] for t in out.touchpoints} == {"h"}
    assert [r["anonymous_id"] for r in out.stages] == ["h"]
    assert (out.identities, out.contacts) == ([], {})
    assert list(core.visitors) == [(SITE, "h")]

    included = run(new_core(include_bots=True), DictLookups(), *copy.deepcopy(events))
    assert included.events["session_id"] == [sid("g", "m1"), sid("g", "m1"), sid("h", "m3")]
    assert included.events["contact_id"] == ["", "user:u1", ""]


# ---- truth tables -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "name", "conversions", "expected"),
    [
        ("track", "Order Completed", {"Order Completed"}, True),
        ("page", "Order Completed", {"Order Completed"}, False),  # a page named so is no conversion
        ("track", "Signed Up", {"Order Completed"}, False),
        ("track", "$form_submit", {"form_submit"}, True),
        ("track", "Form Submitted", {"form_submit"}, True),
        ("track", "form_submit", {"form_submit"}, True),
        ("track", "$form_submit", {"$form_submit"}, True),
        ("track", "Form Submitted", {"$form_submit"}, False),
        ("track", "$form_submit", set(), False),
        ("track", "Contact Requested", {"Order Completed", "form_submit"}, False),
    ],
)
def test_is_conversion(kind: str, name: str, conversions: set[str], expected: bool) -> None:
    assert is_conversion(kind, name, frozenset(conversions)) is expected


@pytest.mark.parametrize(
    ("kind", "name", "conversion", "expected"),
    [
        ("track", "Order Completed", True, "conversion"),
        ("track", "$form_submit", True, "conversion"),
        ("track", "$form_submit", False, "form_submit"),
        ("track", "Form Submitted", False, "form_submit"),
        ("track", "Contact Requested", False, "contact"),
        ("track", "Support Requested", False, "contact"),
        ("track", "Chat Started", False, "contact"),
        ("track", "$contact", False, "contact"),
        ("identify", "", False, "identify"),
        ("track", "Viewed", False, ""),
        ("page", "", False, ""),
        ("alias", "", False, ""),
        ("group", "", False, ""),
    ],
)
def test_interaction_of(kind: str, name: str, conversion: bool, expected: str) -> None:
    assert interaction_of(kind, name, conversion) == expected


@pytest.mark.parametrize(
    ("stages", "expected"),
    [
        ([], ""),
        (["Awareness"], "Awareness"),
        (["Decision", "Awareness"], "Decision"),
        (["Purchase"], ""),  # the internal marker is no stage
        (["Purchase", "Consideration"], "Consideration"),
        (["Advocacy", "Consideration"], "Advocacy"),
        (["Retention", "Purchase", "Decision"], "Retention"),
    ],
)
def test_current_stage(stages: list[str], expected: str) -> None:
    assert current_stage(stages) == expected


def test_the_first_event_of_each_message_id_per_site() -> None:
    """``BatchKeys.first_of_each``: a messageId sent twice to a site keeps its first event; the same
    messageId on two sites is two events; a batch without repeats keeps every event."""
    ids = [("s1", "m1"), ("s1", "m2"), ("s2", "m1"), ("s1", "m1"), ("s1", "m3"), ("s2", "m1")]
    keys = BatchKeys(ids, [("s1", "a")] * len(ids), ["t"] * len(ids), [0] * len(ids))
    assert keys.first_of_each() == [0, 1, 2, 4]
    unique = keys.take([0, 1, 4])
    assert unique.first_of_each() == [0, 1, 2]
    assert keys.take([]).first_of_each() == []
