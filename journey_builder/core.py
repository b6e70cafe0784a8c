"""The journey builder's logic, with no I/O: sessions, stages, identities, contacts and accounts.

``JourneyCore.apply`` turns a batch of enriched events (deduplicated, taken by site, visitor and
time through ``batch_order``, their visitors' state already loaded) into the rows of every derived
table. State it does
not hold in memory comes through the two methods of ``Lookups`` (a contact the batch did not
foresee, the devices of a contact being merged), which the builder answers from ClickHouse and
tests answer from dicts. Everything here is unit-tested with hand-computed expectations
(tests/journeys/test_core.py); ``journey_builder/builder.py`` adds the reads and writes.

The rows are built for one insert per table, each as columns: events straight from the events (a
batch is tens of thousands of rows of ~80 columns: no per-row dict), sessions and visitor state from
the sessions' slots, the other derived tables (a few rows per visitor) as row dicts transposed.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import orjson

from journey_builder.privacy import NO_CONSENT, consent_of
from journey_builder.stages import PURCHASE, STAGES, Rule, StageRules
from schemas import EnrichedEvent, json_object, json_text
from schemas.columns import as_columns, rows_as_columns
from schemas.times import CH_EPOCH, ch_time, epoch_ms, from_ch
from trailmark.compiled import RecordTexts
from trailmark.compiled import session_id as native_session_id

# uuid5 namespace of session ids; ids must stay stable across versions (a redelivered batch must
# rebuild the session it built before), so the hashing below is uuid5's, done without UUID objects.
_NS = bytes.fromhex("6f1d8a523c1b4c8e9a531f0e7b7f2d10")
FORM_EVENTS = frozenset({"$form_submit", "form_submit", "Form Submitted"})
CONTACT_EVENTS = frozenset({"Contact Requested", "Support Requested", "Chat Started", "$contact"})
CONTACT_FIELDS = (
    "email",
    "email_domain",
    "email_free",
    "email_disposable",
    "company_domain",
    "company_name",
    "phone_e164",
    "phone_country",
    "phone_carrier",
    "phone_line_type",
    "first_name",
    "last_name",
)
_FLAGS = ("email_free", "email_disposable")
_STRING_CONTACT_FIELDS = tuple(f for f in CONTACT_FIELDS if f not in _FLAGS)
_PAGE_TYPES = frozenset({"page", "screen"})
_NOT_EXTERNAL = frozenset({"", "direct", "internal"})
# enriched fields that are not columns of ``events`` (the bus carries them for the builder)
_NOT_EVENT_COLUMNS = frozenset({"v", "previous_id", "group_id", "extra"})
_JSON_COLUMNS = ("properties", "traits", "context")
_TIME_COLUMNS = ("original_timestamp", "sent_at")  # storage parses RFC 3339; "" is not a time
_CONSENT_COLUMNS = tuple(NO_CONSENT)
STORED_ONLY = (
    *("v", "properties", "extra", "original_timestamp", "sent_at", "received_at", "ip", "user_agent"),
    *("page_url", "page_host", "page_query", "page_title", "content_group", "referrer", "referrer_name"),
    *("search_term", "utm_term", "utm_content", "ua_browser_version", "ua_os_version", "ua_device_brand"),
    *("ua_device_model", "bot_name", "geo_region", "geo_city", "geo_lat", "geo_lon", "geo_timezone", "geo_asn"),
    *("geo_org", "phone_timezone", "enrich_errors"),
)
"""Enriched fields the journey builder only stores, never reads of an event: a Kafka builder on a
ClickHouse server reads the records into dicts without them (its ``events`` rows are written from the
records' text: ``event_document``), and makes them whole (``RecordTexts.full``) where it must write the
rows from the dicts (``event_columns``) or dead-letter an event."""
# the ``events`` columns ``apply`` derives (``built_columns``), whatever fields an event has of these names
_DERIVED_COLUMNS = frozenset({"anonymous_id", "session_id", "contact_id", *_CONSENT_COLUMNS})
# the person fields enrichment found in a group call's traits are the account's: blank in its events row
_GROUP_BLANKS: dict[str, Any] = {f: False if f in _FLAGS else "" for f in (*CONTACT_FIELDS, "phone_timezone")}
_GROUP_BLANK_TEXTS = {f: orjson.dumps(v).decode() for f, v in _GROUP_BLANKS.items()}  # as event_document writes them
Transpose = Callable[[Sequence[str], Sequence[Mapping[str, Any]]], dict[str, list[Any]]]
"""``as_columns``'s signature: names' values of rows as columns."""
_NOT_BUILT: tuple[str, str, Mapping[str, Any]] = ("", "", {})  # replaced for every event by ``apply``


def visitor_id(ev: Mapping[str, Any]) -> str:
    """The device-level id: anonymousId, or ``user:<userId>`` for server-side calls without one."""
    return visitor_of(ev["anonymous_id"], ev["user_id"])


def visitor_of(anonymous_id: str, user_id: str) -> str:
    """``visitor_id`` of an event with these ids."""
    return anonymous_id or f"user:{user_id}"


def batch_order(events: Sequence[Mapping[str, Any]]) -> list[int]:
    """The order ``JourneyCore.apply`` takes a batch's events in: indexes into ``events``, by site,
    visitor and time (events of one time in the order they came); ``BatchKeys.order`` of them.

    The events themselves are not sorted: the ``events`` columns are read from their dicts in the
    order they came, which is the order they were made in. Read in visitor order instead, a batch's
    20k dicts of ~75 values (~100 MB) are visited all over memory (measured alone on 20k
    time-ordered events read from records: 3.2-4.4 against 4.9-6.3 us per event)."""
    return batch_keys(events).order()


class BatchKeys:
    """What the builder's passes before the build (duplicates, visitors to load, contacts and
    accounts to load, ``batch_order``) read of each event of a batch, read in one pass over its
    events (``batch_keys``).

    A batch's 20k dicts of ~75 values lie over ~100 MB: each pass over them reads them from all over
    memory again. The keys are read once, and the passes walk these compact lists: 3.5 against 5.5 us
    per event for five passes over the dicts (bench/builder.py --records --server --time-ordered, timed
    one by one; bench/RESULTS.md 2026-12-06)."""

    def __init__(
        self, ids: list[tuple[str, str]], visitors: list[tuple[str, str]], times: list[str], kinds: list[int]
    ) -> None:
        self.ids = ids  # (site, messageId) of each event
        self.visitors = visitors  # (site, visitor): ``visitor_id``
        self.times = times  # the events' timestamps (ISO 8601, UTC)
        self.kinds = kinds  # IDENTIFYING | GROUP of each event

    def __len__(self) -> int:
        return len(self.ids)

    def first_of_each(self) -> list[int]:
        """Indexes of each (site, messageId)'s first event, in order."""
        if len({m for _, m in self.ids}) == len(self.ids):  # no messageId twice (a batch's usual case):
            return list(range(len(self.ids)))  # a set of strings costs less than one of tuples
        seen: set[tuple[str, str]] = set()
        firsts: list[int] = []
        for i, key in enumerate(self.ids):
            if key not in seen:
                seen.add(key)
                firsts.append(i)
        return firsts

    def take(self, indexes: Sequence[int]) -> BatchKeys:
        """The keys of the events at ``indexes``, in that order."""
        return BatchKeys(
            [self.ids[i] for i in indexes],
            [self.visitors[i] for i in indexes],
            [self.times[i] for i in indexes],
            [self.kinds[i] for i in indexes],
        )

    def order(self) -> list[int]:
        """Indexes by site, visitor and time (events of one time in the order they came).

        Each key is one string, site, visitor and time joined by NULs: sorting 20k strings costs half
        what sorting their (site, visitor, time) tuples does (1.0 against 2.1 us per event, measured
        alone). The order is the tuples' but where an id holds a NUL, and even then one visitor's
        events stay in time order (their keys differ only in the time)."""
        keys = [f"{site}\x00{anon}\x00{ts}" for (site, anon), ts in zip(self.visitors, self.times, strict=True)]
        return sorted(range(len(keys)), key=keys.__getitem__)

    def of_kind(self, kind: int) -> list[int]:
        """Indexes of the events of ``kind`` (IDENTIFYING or GROUP)."""
        return [i for i, k in enumerate(self.kinds) if k & kind]


IDENTIFYING = 1
"""``BatchKeys.kinds``: an event with a userId or a person's email (``email_of``)."""
GROUP = 2
"""``BatchKeys.kinds``: a group call naming its group."""


def batch_keys(events: Sequence[Mapping[str, Any]]) -> BatchKeys:
    """``BatchKeys`` of ``events``, read in one pass."""
    ids: list[tuple[str, str]] = []
    visitors: list[tuple[str, str]] = []
    times: list[str] = []
    kinds: list[int] = []
    for ev in events:
        site = ev["site_id"]
        user_id = ev["user_id"]
        ids.append((site, ev["message_id"]))
        visitors.append((site, visitor_of(ev["anonymous_id"], user_id)))
        times.append(ev["timestamp"])
        flags = GROUP if ev["type"] == "group" and ev["group_id"] else 0
        if user_id or email_of(ev):
            flags |= IDENTIFYING
        kinds.append(flags)
    return BatchKeys(ids, visitors, times, kinds)


def email_of(ev: Mapping[str, Any], kind: str | None = None) -> str:
    """The person's email: a group call's email (found in its traits) is the account's. ``kind``:
    the event's type, where the caller has read it."""
    return "" if (ev["type"] if kind is None else kind) == "group" else ev["email"]


def session_id_for(site_id: str, anon: str, message_id: str) -> str:
    """uuid5(namespace, site|visitor|messageId) of the event that opened the session, as text: by
    trailmark/native where it is built (``compiled.session_id``), else as follows."""
    if native_session_id is not None:
        return native_session_id(_NS, site_id, anon, message_id)
    h = bytearray(hashlib.sha1(_NS + f"{site_id}|{anon}|{message_id}".encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50  # version 5
    h[8] = (h[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def campaign_key(ev: Mapping[str, Any]) -> str:
    """What tells one campaign's visit from another's: UTM source, medium, campaign and click id."""
    parts = (ev["utm_source"], ev["utm_medium"], ev["utm_campaign"], ev["click_id"])
    return "|".join(parts) if any(parts) else ""


def account_domain(traits: Mapping[str, Any]) -> str:
    """An account's web domain: the ``domain`` trait, else the host of ``website``."""
    for key in ("domain", "website"):
        value = traits.get(key)
        if isinstance(value, str) and value.strip():
            text = value.strip().lower()
            host = urlsplit(text if "//" in text else "//" + text).hostname or ""
            return host.removeprefix("www.")[:253]
    return ""


def merged_traits(known: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Known traits updated with an event's non-empty ones, as a new dict: the caller serializes
    it before the cached contact or account takes it, so traits JSON cannot hold (nested too
    deep) fail that one event, not every later event of the contact until a restart."""
    merged = dict(known)
    for k, v in new.items():
        if v not in ("", None):
            merged[k] = v
    return merged


def is_conversion(kind: str, name: str, conversions: frozenset[str]) -> bool:
    """A tracked event named as a conversion, or a form submit when forms count as conversions."""
    return (kind == "track" and name in conversions) or (name in FORM_EVENTS and "form_submit" in conversions)


def interaction_of(kind: str, name: str, conversion: bool, feedback: frozenset[str] = frozenset()) -> str:
    """The touchpoint kind of an event that is one (``""``: it is not). ``feedback`` names the
    tracked events that carry an NPS or CSAT answer."""
    if conversion:
        return "conversion"
    if kind == "track" and name in feedback:
        return "feedback"
    if name in FORM_EVENTS:
        return "form_submit"
    if name in CONTACT_EVENTS:
        return "contact"
    return "identify" if kind == "identify" else ""


class StageRule:
    """A stage rule (``journey_builder.stages.Rule``, from stages.toml) as the core evaluates it: a
    compiled class, read at fixed offsets (``entered_rules`` runs for every event)."""

    def __init__(self, rule: Rule) -> None:
        self.stage: str = rule.stage
        self.name: str = rule.name
        self.events: frozenset[str] = rule.events
        self.path_contains: tuple[str, ...] = rule.path_contains
        self.min_sessions: int = rule.min_sessions
        self.after_stage: str = rule.after_stage
        self.new_session: bool = rule.new_session


def entered_rules(
    rules: Sequence[StageRule], event: str, path: str, sessions: int, entered: set[str], new_session: bool
) -> list[StageRule]:
    """The rules an event puts its visitor into a stage by, one per stage it has not entered yet
    (the first of the stage's rules that matches). A rule matches when all its given conditions
    hold: the event's name is one of ``events``; the page path (page views only; ``""`` otherwise)
    contains one of ``path_contains``; the visitor has at least ``min_sessions`` sessions; it has
    entered ``after_stage``; the event opens a session (``new_session``).

    Runs for every event: a visitor who entered every stage a rule leads to costs one set test per
    rule (compiled: 0.1-0.2 against 0.6-1.0 us per event as Python methods, measured alone)."""
    out: list[StageRule] = []
    for rule in rules:
        stage = rule.stage
        if stage in entered or any(r.stage == stage for r in out):
            continue
        if rule.events and event not in rule.events:
            continue
        if rule.path_contains and not (path and any(p in path for p in rule.path_contains)):
            continue
        if sessions < rule.min_sessions:
            continue
        if rule.after_stage and rule.after_stage not in entered:
            continue
        if rule.new_session and not new_session:
            continue
        out.append(rule)
    return out


def current_stage(stages: Iterable[str]) -> str:
    """The most advanced journey stage among those entered."""
    entered = set(stages)
    for stage in reversed(STAGES):
        if stage in entered:
            return stage
    return ""


def resolve_contact(user_id: str, email: str, by_email: str, known: str) -> tuple[str, list[str]]:
    """The contact an identifying event belongs to, and the email-only contacts merged into it.

    ``by_email`` is the contact already holding the email, ``known`` the visitor's contact. A
    userId names the contact; else the email's contact, the visitor's, or a new one by email.
    """
    contact_id = f"user:{user_id}" if user_id else (by_email or known or f"email:{email}")
    merged = [c for c in dict.fromkeys((by_email, known)) if c and c != contact_id and c.startswith("email:")]
    return contact_id, merged


def blank_contact(site_id: str, contact_id: str) -> dict[str, Any]:
    """A contact nothing is known of yet (a copy of ``_BLANK_CONTACT``: two for each new person a
    batch identifies)."""
    c = dict(_BLANK_CONTACT)
    c["site_id"] = site_id
    c["contact_id"] = contact_id
    c["traits"] = {}
    c["field_sources"] = {}
    return c


_BLANK_CONTACT: Final[dict[str, Any]] = {
    "site_id": "",
    "contact_id": "",
    "user_id": "",
    "traits": {},
    "field_sources": {},
    "first_seen": "",
    "last_seen": "",
    "country": "",
    **{f: False if f in _FLAGS else "" for f in CONTACT_FIELDS},
    **NO_CONSENT,
    "consent_at": CH_EPOCH,
}


def blank_account(site_id: str, group_id: str) -> dict[str, Any]:
    """An account nothing is known of yet."""
    return {
        "site_id": site_id,
        "group_id": group_id,
        "name": "",
        "domain": "",
        "traits": {},
        "first_seen": "",
        "last_seen": "",
    }


# Dataclasses for their equality and text (tests), with their own ``__init__``: mypyc compiles it,
# where the one ``dataclass`` writes is Python run by the interpreter (~0.9 us a session, ~0.3 a
# visitor, in a builder that opens a session every third event).
@dataclass(slots=True, init=False)
class SessionState:
    session_id: str
    anonymous_id: str
    start: str
    end: str
    end_ms: int
    campaign_key: str
    referrer_host: str
    channel: str
    source: str
    medium: str
    campaign: str
    click_id_type: str
    entry_page: str
    exit_page: str
    user_id: str
    pageviews: int
    events: int
    conversions: int
    device: str
    browser: str
    os: str
    country: str

    def __init__(
        self,
        session_id: str,
        anonymous_id: str,
        start: str,
        end: str,
        end_ms: int,
        campaign_key: str,
        referrer_host: str,
        channel: str,
        source: str,
        medium: str,
        campaign: str,
        click_id_type: str,
        entry_page: str,
        exit_page: str = "",
        user_id: str = "",
        pageviews: int = 0,
        events: int = 0,
        conversions: int = 0,
        device: str = "",
        browser: str = "",
        os: str = "",
        country: str = "",
    ) -> None:
        self.session_id = session_id
        self.anonymous_id = anonymous_id
        self.start = start
        self.end = end
        self.end_ms = end_ms
        self.campaign_key = campaign_key
        self.referrer_host = referrer_host
        self.channel = channel
        self.source = source
        self.medium = medium
        self.campaign = campaign
        self.click_id_type = click_id_type
        self.entry_page = entry_page
        self.exit_page = exit_page
        self.user_id = user_id
        self.pageviews = pageviews
        self.events = events
        self.conversions = conversions
        self.device = device
        self.browser = browser
        self.os = os
        self.country = country


@dataclass(slots=True, init=False)
class VisitorState:
    session: SessionState | None
    sessions: int
    contact_id: str
    stages: set[str]

    def __init__(
        self,
        session: SessionState | None = None,
        sessions: int = 0,
        contact_id: str = "",
        stages: set[str] | None = None,
    ) -> None:
        self.session = session
        self.sessions = sessions
        self.contact_id = contact_id
        self.stages = set() if stages is None else stages


def session_columns(sessions: Sequence[SessionState]) -> dict[str, list[Any]]:
    """The columns ``sessions_data`` and ``visitor_state`` both keep of each of ``sessions``, built
    column by column rather than as a dict per row transposed for the insert (20k time-ordered
    events, 7k sessions and 5k visitors: every derived table's columns 2.2 against 3.2 us per event,
    measured alone)."""
    return {
        "session_id": [s.session_id for s in sessions],
        "anonymous_id": [s.anonymous_id for s in sessions],
        "user_id": [s.user_id for s in sessions],
        "start": [ch_time(s.start) for s in sessions],
        "end": [ch_time(s.end) for s in sessions],
        "pageviews": [s.pageviews for s in sessions],
        "events": [s.events for s in sessions],
        "conversions": [s.conversions for s in sessions],
        "entry_page": [s.entry_page for s in sessions],
        "exit_page": [s.exit_page for s in sessions],
        "referrer_host": [s.referrer_host for s in sessions],
        "channel": [s.channel for s in sessions],
        "source": [s.source for s in sessions],
        "medium": [s.medium for s in sessions],
        "campaign": [s.campaign for s in sessions],
        "click_id_type": [s.click_id_type for s in sessions],
        "campaign_key": [s.campaign_key for s in sessions],
        "device": [s.device for s in sessions],
        "browser": [s.browser for s in sessions],
        "os": [s.os for s in sessions],
        "country": [s.country for s in sessions],
    }


def sessions_table(sessions: Sequence[tuple[str, SessionState]], version: int) -> dict[str, list[Any]]:
    """The ``sessions_data`` columns of ``sessions`` (site, session)."""
    states = [s for _, s in sessions]
    cols = session_columns(states)
    cols["site_id"] = [site for site, _ in sessions]
    cols["converted"] = [s.conversions > 0 for s in states]
    cols["version"] = [version] * len(states)
    return cols


def state_table(
    visitors: Sequence[tuple[tuple[str, str], VisitorState, Sequence[str]]], version: int
) -> dict[str, list[Any]]:
    """The ``visitor_state`` columns (migration 024) of ``visitors`` ((site, visitor), state,
    markers): each visitor's state after a batch whose events of the visitor begin and end with its
    markers. Only for visitors with a session."""
    sessions = []
    for _, v, _ in visitors:
        assert v.session is not None
        sessions.append(v.session)
    cols = session_columns(sessions)
    cols["site_id"] = [key[0] for key, _, _ in visitors]
    cols["anonymous_id"] = [key[1] for key, _, _ in visitors]
    cols["version"] = [version] * len(sessions)
    cols["markers"] = [list(markers) for _, _, markers in visitors]
    cols["sessions"] = [v.sessions for _, v, _ in visitors]
    cols["stages"] = [sorted(v.stages) for _, v, _ in visitors]
    return cols


def visitor_from_state(row: Mapping[str, Any]) -> VisitorState:
    """The state a ``visitor_state`` row holds (its contact is not part of it: contacts change
    with other devices' identifies, so the builder reads them from identities)."""
    start, end = from_ch(row["start"]), from_ch(row["end"])
    session = SessionState(
        session_id=row["session_id"],
        anonymous_id=row["anonymous_id"],
        start=start,
        end=end,
        end_ms=epoch_ms(end),
        campaign_key=row["campaign_key"],
        referrer_host=row["referrer_host"],
        channel=row["channel"],
        source=row["source"],
        medium=row["medium"],
        campaign=row["campaign"],
        click_id_type=row["click_id_type"],
        entry_page=row["entry_page"],
        exit_page=row["exit_page"],
        user_id=row["user_id"],
        pageviews=int(row["pageviews"]),
        events=int(row["events"]),
        conversions=int(row["conversions"]),
        device=row["device"],
        browser=row["browser"],
        os=row["os"],
        country=row["country"],
    )
    return VisitorState(session=session, sessions=int(row["sessions"]), stages=set(row["stages"]))


def session_for(
    visitor: VisitorState, ev: Mapping[str, Any], anon: str, ts_ms: int, timeout_ms: int
) -> tuple[SessionState, bool]:
    """The session an event belongs to, and whether it opens a new one.

    A new session starts after ``timeout_ms`` of inactivity, on a new campaign (UTM or click id),
    or on a page view from a new external referrer without a campaign. An event older than the
    open session's last one joins it (late delivery never splits a session).
    """
    s = visitor.session
    campaign = campaign_key(ev)
    if s is not None:
        if ts_ms < s.end_ms:
            return s, False
        expired = ts_ms - s.end_ms > timeout_ms
        new_campaign = bool(campaign) and campaign != s.campaign_key
        new_referrer = (
            not campaign
            and ev["type"] in _PAGE_TYPES
            and ev["referrer_type"] not in _NOT_EXTERNAL
            and ev["referrer_host"] != s.referrer_host
        )
        if not (expired or new_campaign or new_referrer):
            return s, False
    ts = ev["timestamp"]
    channel = ev["channel"]
    s = SessionState(
        session_id=session_id_for(ev["site_id"], anon, ev["message_id"]),
        anonymous_id=anon,
        start=ts,
        end=ts,
        end_ms=ts_ms,
        campaign_key=campaign,
        referrer_host=ev["referrer_host"],
        # "Internal" (a same-site referrer without tags) keeps no channel of its own
        channel=channel if channel not in ("", "Internal") else "Direct",
        source=ev["source"] or "(direct)",
        medium=ev["medium"] or "(none)",
        campaign=ev["utm_campaign"],
        click_id_type=ev["click_id_type"],
        entry_page=ev["page_path"],
        exit_page=ev["page_path"],
        device=ev["ua_device_type"],
        browser=ev["ua_browser"],
        os=ev["ua_os"],
        country=ev["geo_country"],
    )
    visitor.session = s
    visitor.sessions += 1
    return s, True


def update_contact(
    c: dict[str, Any], ev: Mapping[str, Any], consent: Mapping[str, Any], merged: Sequence[tuple[str, dict[str, Any]]]
) -> None:
    """Update contact ``c`` (in place) from an identifying event (``contact_row`` is what is written).

    Latest non-empty value wins; ``field_sources`` records which event set each field. Fields the
    contact lacks come from the email-only contacts ``merged`` into it.
    """
    for old_id, oc in merged:
        takes_email = bool(oc.get("email")) and not c.get("email")
        for f in (*CONTACT_FIELDS, "country"):
            if f in _FLAGS:  # the flags describe the email: they come with it or not at all
                if takes_email:
                    c[f] = oc.get(f, False)
                    if f in oc["field_sources"]:
                        c["field_sources"][f] = oc["field_sources"][f]
            elif oc.get(f) and not c.get(f):
                c[f] = oc[f]
                c["field_sources"][f] = oc["field_sources"].get(f, f"merged:{old_id}")
        c["traits"] = {**oc["traits"], **c["traits"]}
        if oc.get("first_seen") and (not c.get("first_seen") or oc["first_seen"] < c["first_seen"]):
            c["first_seen"] = oc["first_seen"]
    source = f"{ev['type']}:{ev['message_id']}"
    person = ev["type"] != "group"  # a group call's traits (and what enrichment read in them) are the account's
    if person:
        fields = [f for f in _STRING_CONTACT_FIELDS if ev[f]]
        if ev["email"]:  # the flags describe the email, so they change only with it
            fields += _FLAGS
        for f in fields:
            value = ev[f]
            if c.get(f) != value:
                c[f] = value
                c["field_sources"][f] = source
    if ev["user_id"]:
        c["user_id"] = ev["user_id"]
    if ev["geo_country"] and ev["geo_country"] != c.get("country"):
        c["country"] = ev["geo_country"]
        c["field_sources"]["country"] = source
    ts = ch_time(ev["timestamp"])
    if consent["consent"]:  # the latest event that says something about consent sets it
        c.update(consent)
        c["consent_at"] = ts
    c["traits"] = merged_traits(c["traits"], json_object(ev["traits"]) if person else {})
    c["first_seen"] = min(c["first_seen"] or ts, ts)
    c["last_seen"] = max(c["last_seen"] or ts, ts)


def contact_row(c: Mapping[str, Any], version: int) -> dict[str, Any]:
    """The ``contacts_data`` row of contact ``c`` (traits and field sources as JSON text)."""
    row = dict(c)
    row["traits"] = orjson.dumps(c["traits"]).decode()  # see merged_traits
    row["field_sources"] = orjson.dumps(c["field_sources"]).decode()
    row["version"] = version
    return row


def apply_group(account: dict[str, Any], ev: Mapping[str, Any]) -> dict[str, Any]:
    """Update ``account`` (in place) from a group call's traits; returns its row to write."""
    traits = merged_traits(account["traits"], json_object(ev["traits"]))
    traits_json = orjson.dumps(traits).decode()  # see merged_traits
    account["traits"] = traits
    if isinstance(name := traits.get("name"), str) and name:
        account["name"] = name[:500]
    if domain := account_domain(traits):
        account["domain"] = domain
    ts = ch_time(ev["timestamp"])
    account["first_seen"] = min(account["first_seen"] or ts, ts)
    account["last_seen"] = max(account["last_seen"] or ts, ts)
    return {**account, "traits": traits_json, "version": time.time_ns()}


class Lookups(Protocol):
    """State the core may need beyond what the builder loaded for the batch."""

    def contact(self, site_id: str, contact_id: str) -> dict[str, Any] | None:
        """A stored contact with ``traits`` and ``field_sources`` parsed; None if there is none."""

    def anonymous_ids_of(self, site_id: str, contact_id: str) -> list[str]:
        """The devices (anonymous ids) stored as linked to a contact."""


@dataclass
class Output:
    """Everything one batch derives: the rows of each table (events as columns) and counters."""

    events: dict[str, list[Any]] = field(default_factory=dict)
    # each event's session, contact and consent, for its events row (``JourneyCore.apply`` without columns)
    built: list[tuple[str, str, Mapping[str, Any]]] = field(default_factory=list)
    sessions: dict[str, tuple[str, SessionState]] = field(default_factory=dict)  # rows built once, at write
    touchpoints: list[dict[str, Any]] = field(default_factory=list)
    # (site, device, contact, userId, email) -> its identities row, one per link of the batch with its
    # first and last time (identities_data keeps their min and max: a logged-in visitor's every event
    # identifies it, and 20,000 such events made 20,000 rows)
    links: dict[tuple[str, str, str, str, str], dict[str, Any]] = field(default_factory=dict)
    # (site, contact) of each link of the batch that gives a device to a contact for the first time, as
    # far as this builder knows (its device's contact before was another, or none): only these can make
    # a contact one of several devices (``BuilderRepository.share_devices``)
    grown: set[tuple[str, str]] = field(default_factory=set)
    # the batch's contacts as held in memory (updated in place); their rows are built at write
    contacts: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)
    accounts: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    account_links: list[dict[str, Any]] = field(default_factory=list)
    # per visitor of the batch: its state (live: read when the rows are built, after the batch) and
    # the messageIds of its first and last event, which mark its visitor_state row as stored
    visitors: dict[tuple[str, str], tuple[VisitorState, str, str]] = field(default_factory=dict)
    skipped_duplicates: int = 0
    skipped_erased: int = 0
    skipped_no_consent: int = 0  # events of a site that drops those without analytics consent
    aggregated: int = 0  # events kept only as consent aggregates

    def let_go(self) -> None:
        """Drop the batch's derived rows once stored, keeping the counters and ``events``' messageIds
        (``event_count``): tens of thousands of rows and tuples a batch, which the cyclic GC, held back
        while the batch was built, would otherwise walk at its next collection (see builder.gc_paused)."""
        self.built = []
        self.sessions = {}
        self.touchpoints = []
        self.links = {}
        self.grown = set()
        self.contacts = {}
        self.stages = []
        self.accounts = {}
        self.account_links = []
        self.visitors = {}

    @property
    def identities(self) -> list[dict[str, Any]]:
        """The identities rows of the batch, in the order their links were made."""
        return list(self.links.values())

    @property
    def event_count(self) -> int:
        """How many event rows the batch writes."""
        ids = self.events.get("message_id")
        return len(ids) if ids is not None else 0

    def tables(self, version: int, transpose: Transpose = as_columns) -> dict[str, dict[str, list[Any]]]:
        """The derived tables as columns, in write order (``events`` goes last); a table without
        rows has no columns. The row tables are transposed by ``transpose`` (see ``rows_columns``)."""
        rows = {
            "touchpoints_data": self.touchpoints,
            "identities_data": self.identities,
            "contacts_data": [contact_row(c, version) for c in self.contacts.values()],
            "stage_transitions_data": self.stages,
            "accounts_data": list(self.accounts.values()),
            "account_links_data": self.account_links,
        }
        sessions = list(self.sessions.values())
        states = [
            (key, v, (first,) if first == last else (first, last))
            for key, (v, first, last) in self.visitors.items()
            if v.session is not None
        ]
        return {
            "sessions_data": sessions_table(sessions, version) if sessions else {},
            **{table: rows_columns(r, transpose) if r else {} for table, r in rows.items()},
            "visitor_state": state_table(states, version) if states else {},
        }


def rows_columns(rows: Sequence[Mapping[str, Any]], transpose: Transpose = as_columns) -> dict[str, list[Any]]:
    """``schemas.columns.rows_as_columns`` of ``rows`` (at least one), transposed by ``transpose``
    (the compiled one where it is built: a batch's touchpoints and stage rows, ~13 values per event,
    cost ~1 us per event through ``as_columns``); rows whose keys differ from the first one's are
    left to ``rows_as_columns``."""
    try:
        return transpose(list(rows[0]), rows)
    except KeyError:
        return rows_as_columns(rows)


def event_columns(
    events: Sequence[Mapping[str, Any]],
    built: Sequence[tuple[str, str, Mapping[str, Any]]],
    transpose: Transpose = as_columns,
) -> dict[str, list[Any]]:
    """The ``events`` rows of a batch as columns: the enriched fields as they are (read by
    ``transpose``, ``as_columns`` or its compiled form), plus each event's visitor, session,
    contact and consent (``built``, one per event, in order)."""
    names = [k for k in events[0] if k not in _NOT_EVENT_COLUMNS]
    cols = transpose(names, events)
    # what is derived from the fields is derived from their columns: a pass over 20k dicts of ~75
    # values reads them from all over memory (the visitors: 0.03 against 0.16-0.49 us per event)
    cols.update(built_columns(list(map(visitor_of, cols["anonymous_id"], cols["user_id"])), built, transpose))
    for name in _JSON_COLUMNS:  # objects, or their JSON text from the enriched topic
        cols[name] = list(map(json_text, cols[name]))
    cols["extra"] = [json_text(e.get("extra")) for e in events]
    for name in _TIME_COLUMNS:
        cols[name] = [v or CH_EPOCH for v in cols[name]]
    groups = [i for i, kind in enumerate(cols["type"]) if kind == "group"]
    for f, blank in _GROUP_BLANKS.items() if groups else ():
        column = cols[f]
        for i in groups:
            column[i] = blank
    return cols


def built_columns(
    visitors: list[str], built: Sequence[tuple[str, str, Mapping[str, Any]]], transpose: Transpose = as_columns
) -> dict[str, list[Any]]:
    """The ``events`` columns ``apply`` derives for each event: its visitor (``visitor_id``, given),
    session, contact and consent (``built``, one per event, in order)."""
    session_ids, contact_ids, consents = zip(*built, strict=True)
    cols = {"anonymous_id": visitors, "session_id": list(session_ids), "contact_id": list(contact_ids)}
    cols.update(transpose(_CONSENT_COLUMNS, consents))
    return cols


def event_document(
    raw: RecordTexts,
    events: Sequence[Mapping[str, Any]],
    visitors: list[str],
    built: Sequence[tuple[str, str, Mapping[str, Any]]],
    transpose: Transpose = as_columns,
) -> tuple[list[str], bytes] | None:
    """The ``events`` rows of a batch (``events``, which ``raw`` read) as one ``JSONColumns`` document
    and its column names: what ``event_columns`` makes, but each enriched value written as its JSON
    text came off the bus (``RecordTexts.body``), with no column lists or JSON made of the dicts; the
    derived columns (``built_columns``, ``visitors`` the events' ``visitor_id``) written by orjson.
    None when ``raw`` cannot (an event it did not read, a field of another form): ``event_columns``."""
    names = raw.names
    columns = [n for n in names if (n not in _NOT_EVENT_COLUMNS or n == "extra") and n not in _DERIVED_COLUMNS]
    derived = built_columns(visitors, built, transpose)
    if "extra" not in names:
        derived["extra"] = ["{}"] * len(events)
    json = [*_JSON_COLUMNS, "extra"]
    body = raw.body(events, columns, json, list(_TIME_COLUMNS), CH_EPOCH, _GROUP_BLANK_TEXTS, orjson.dumps(derived))
    return None if body is None else ([*columns, *derived], body)


def _touchpoint(
    site_id: str, event: str, page_path: str, s: SessionState, tp_id: str, kind: str, ts: str
) -> dict[str, Any]:
    """A touchpoints row of session ``s`` (``site_id``, ``event``, ``page_path``: the event's fields)."""
    return {
        "site_id": site_id,
        "touchpoint_id": tp_id,
        "session_id": s.session_id,
        "anonymous_id": s.anonymous_id,
        "timestamp": ts,
        "kind": kind,
        "event": event,
        "page_path": page_path or s.exit_page,
        "channel": s.channel,
        "source": s.source,
        "medium": s.medium,
        "campaign": s.campaign,
        "stage": "",
    }


class JourneyCore:
    """In-memory journey state of this builder's visitors, and the per-event logic over it.

    ``visitors`` is this builder's own (its partitions' visitors, LRU-bounded by the builder);
    ``contacts``, ``email_contacts`` and ``accounts`` span visitors and are refilled by the
    builder for each batch.
    """

    def __init__(
        self,
        rules: StageRules,
        conversions: Iterable[str],
        session_timeout_s: int,
        include_bots: bool,
        feedback: Iterable[str] = (),
        transpose: Transpose = as_columns,
    ) -> None:
        self.rules = [StageRule(rule) for rule in rules.rules]  # in stages.toml's order
        self.transpose = transpose  # how the events' fields become the ``events`` columns (event_columns)
        self.feedback = frozenset(feedback)
        self.conversions = frozenset(conversions)
        self.timeout_ms = session_timeout_s * 1000
        self.include_bots = include_bots
        self.visitors: OrderedDict[tuple[str, str], VisitorState] = OrderedDict()
        # (site, contact) -> its visitors in ``visitors``: a contact merged into another moves its
        # devices in memory without walking the whole cache. Kept exact by ``link``, ``drop``,
        # ``clear`` and ``evict``, the only ways a visitor's contact or presence changes.
        self._devices: dict[tuple[str, str], set[str]] = {}
        self.email_contacts: dict[tuple[str, str], str] = {}
        self.contacts: dict[tuple[str, str], dict[str, Any]] = {}
        self.accounts: dict[tuple[str, str], dict[str, Any]] = {}

    def link(self, key: tuple[str, str], contact_id: str) -> None:
        """Visitor ``key`` (in ``visitors``) now belongs to ``contact_id``."""
        visitor = self.visitors[key]
        old = visitor.contact_id
        if old == contact_id:
            return
        if old:
            held = self._devices[(key[0], old)]
            held.discard(key[1])
            if not held:
                del self._devices[(key[0], old)]
        if contact_id:
            self._devices.setdefault((key[0], contact_id), set()).add(key[1])
        visitor.contact_id = contact_id

    def devices_of(self, site_id: str, contact_id: str) -> list[str]:
        """The visitors in memory that belong to ``contact_id`` now."""
        return sorted(self._devices.get((site_id, contact_id), ()))

    def drop(self, key: tuple[str, str]) -> None:
        """Forget one visitor (it is read again from storage when it comes back)."""
        visitor = self.visitors.get(key)
        if visitor is not None:
            self.link(key, "")
            del self.visitors[key]

    def clear(self) -> None:
        """Forget every visitor."""
        self.visitors.clear()
        self._devices.clear()

    def evict(self, keep: int) -> None:
        """Forget the least recently used visitors beyond ``keep``."""
        while len(self.visitors) > keep:
            key = next(iter(self.visitors))
            self.drop(key)

    def apply(
        self,
        events: Sequence[EnrichedEvent],
        lookups: Lookups,
        out: Output,
        order: Sequence[int] | None = None,
        columns: bool = True,
    ) -> None:
        """Derive every row of a batch into ``out``. ``events`` are new (not stored yet); the state
        of their visitors, contacts and accounts is loaded. They are taken in ``order`` (indexes
        into ``events``: ``batch_order``), or as they come when it is None (then sorted by site,
        visitor and time already); the ``events`` columns keep the events' own order. Without
        ``columns``, ``out.built`` keeps what each event derived for its row (``event_document``)
        and ``out.events`` is left empty."""
        if not events:
            return
        built: list[tuple[str, str, Mapping[str, Any]]] = [_NOT_BUILT] * len(events)
        for i in range(len(events)) if order is None else order:
            ev = events[i]
            consent = consent_of(ev["context"])
            if ev["is_bot"] and not self.include_bots:
                built[i] = ("", "", consent)  # kept in events, out of journeys
                continue
            session_id, contact_id = self._apply(ev, consent, lookups, out)
            built[i] = (session_id, contact_id, consent)
        if columns:
            out.events = event_columns(events, built, self.transpose)
        else:
            out.built = built

    def _apply(self, ev: EnrichedEvent, consent: Mapping[str, Any], lookups: Lookups, out: Output) -> tuple[str, str]:
        # each field read once (a lookup in a dict of ~40 keys, ~40 times an event, was ~2 us of it)
        site_id, user_id, message_id = ev["site_id"], ev["user_id"], ev["message_id"]
        anon = visitor_of(ev["anonymous_id"], user_id)
        key = (site_id, anon)
        visitor = self.visitors.get(key)
        if visitor is None:
            visitor = self.visitors[key] = VisitorState()
        else:
            self.visitors.move_to_end(key)
        seen = out.visitors.get(key)
        out.visitors[key] = (visitor, message_id if seen is None else seen[1], message_id)
        ts = ev["timestamp"]
        ts_ms = epoch_ms(ts)
        session, new_session = session_for(visitor, ev, anon, ts_ms, self.timeout_ms)
        kind, name, page_path = ev["type"], ev["event"], ev["page_path"]
        page_view = kind in _PAGE_TYPES
        latest = ts_ms >= session.end_ms  # a late event counts, but is not the session's last
        if page_view:
            session.pageviews += 1
            if latest:
                session.exit_page = page_path or session.exit_page
        session.events += 1
        if latest:
            session.end, session.end_ms = ts, ts_ms
        if user_id:
            session.user_id = user_id
        conversion = is_conversion(kind, name, self.conversions)
        if conversion:
            session.conversions += 1
        out.sessions[session.session_id] = (site_id, session)
        if new_session:
            out.touchpoints.append(
                _touchpoint(site_id, name, page_path, session, session.session_id, "session_start", session.start)
            )
        contact_id = self._identify(ev, site_id, kind, user_id, visitor, anon, consent, lookups, out)
        if kind == "group" and ev["group_id"]:
            self._group(ev, anon, out)
        stage = ""
        entered = entered_rules(
            self.rules, name, page_path if page_view else "", visitor.sessions, visitor.stages, new_session
        )
        if conversion:
            visitor.stages.add(PURCHASE)
        for rule in entered:
            visitor.stages.add(rule.stage)
            stage = rule.stage
            out.stages.append(
                {
                    "site_id": site_id,
                    "anonymous_id": anon,
                    "stage": rule.stage,
                    "entered_at": ts,
                    "rule": rule.name,
                    "message_id": message_id,
                }
            )
        interaction = interaction_of(kind, name, conversion, self.feedback)
        if interaction:
            tp = _touchpoint(site_id, name, page_path, session, message_id, interaction, ts)
            tp["stage"] = stage or current_stage(visitor.stages)
            out.touchpoints.append(tp)
        elif new_session:  # the session_start touchpoint just appended takes the stage
            out.touchpoints[-1]["stage"] = stage or current_stage(visitor.stages)
        return session.session_id, contact_id

    def _group(self, ev: EnrichedEvent, anon: str, out: Output) -> None:
        """A group call: its traits describe the account; the visitor is linked to it."""
        key = (ev["site_id"], ev["group_id"])
        account = self.accounts.get(key)
        if account is None:
            account = self.accounts[key] = blank_account(*key)
        out.accounts[key] = apply_group(account, ev)
        ts = ch_time(ev["timestamp"])
        out.account_links.append(
            {"site_id": key[0], "group_id": key[1], "anonymous_id": anon, "first_seen": ts, "last_seen": ts}
        )

    def _identify(
        self,
        ev: EnrichedEvent,
        site_id: str,
        kind: str,
        user_id: str,
        visitor: VisitorState,
        anon: str,
        consent: Mapping[str, Any],
        lookups: Lookups,
        out: Output,
    ) -> str:
        """The event's contact (``site_id``, ``kind`` and ``user_id`` are its fields)."""
        email = email_of(ev, kind)
        if not (user_id or email):
            return visitor.contact_id
        by_email = self.email_contacts.get((site_id, email), "") if email else ""
        known = visitor.contact_id
        contact_id, merged = resolve_contact(user_id, email, by_email, known)
        ts = ch_time(ev["timestamp"])
        links = [anon]
        if kind == "alias" and ev["previous_id"]:
            links.append(ev["previous_id"])
        for old in merged:  # an email-only contact that now turns out to be this user is merged into it
            links.extend(lookups.anonymous_ids_of(site_id, old))
            for a in self.devices_of(site_id, old):  # its devices in memory now belong to the user
                self.link((site_id, a), contact_id)
                links.append(a)
        if len(links) > 1 or known != contact_id:  # a device new to the contact (an alias, a merge, a link)
            out.grown.add((site_id, contact_id))
        for a in dict.fromkeys(links):
            link = (site_id, a, contact_id, user_id, email)
            row = out.links.get(link)
            if row is None:
                out.links[link] = {
                    "site_id": site_id,
                    "anonymous_id": a,
                    "contact_id": contact_id,
                    "user_id": user_id,
                    "email": email,
                    "first_seen": ts,
                    "last_seen": ts,
                }
            elif ts < row["first_seen"]:
                row["first_seen"] = ts
            elif ts > row["last_seen"]:
                row["last_seen"] = ts
        self.link((site_id, anon), contact_id)
        if email:
            self.email_contacts[(site_id, email)] = contact_id
        c = self._contact(site_id, contact_id, lookups)
        olds = [(old, self._contact(site_id, old, lookups)) for old in merged]
        update_contact(c, ev, consent, olds)
        out.contacts[(site_id, contact_id)] = c  # its row is built once, at write (``Output.tables``)
        return contact_id

    def contacts_wanted(self, identifying: Sequence[EnrichedEvent]) -> list[tuple[str, str]]:
        """The (site, contact) that a batch's ``identifying`` events may touch, sorted: each one's
        userId's and email's contact (``email_contacts`` holds those found), and its visitor's."""
        wanted: set[tuple[str, str]] = set()
        for e in identifying:
            site, kind, user_id = e["site_id"], e["type"], e["user_id"]
            email = email_of(e, kind)
            if user_id:
                wanted.add((site, f"user:{user_id}"))
            if email:
                wanted.add((site, self.email_contacts.get((site, email)) or f"email:{email}"))
            known = self.visitors.get((site, visitor_of(e["anonymous_id"], user_id)))
            if known is not None and known.contact_id:
                wanted.add((site, known.contact_id))
        return sorted(wanted)

    def _contact(self, site_id: str, contact_id: str, lookups: Lookups) -> dict[str, Any]:
        key = (site_id, contact_id)
        c = self.contacts.get(key)
        if c is None:  # not foreseen by the builder's loading (e.g. a contact merged in this batch)
            c = self.contacts[key] = lookups.contact(site_id, contact_id) or blank_contact(site_id, contact_id)
        return c
