"""Enriched events -> sessions, touchpoints, identities, contacts, stages, events in ClickHouse.

The builder is the single writer for its visitors (the bus keys records by site + visitor), so it
keeps each visitor's open session in memory and reloads it from ClickHouse after a restart or a
rebalance, as of the last batch whose events are stored. Contacts, emails and accounts span
visitors (several builders of a group write them), so they are read fresh for every batch.
Write order makes redelivery harmless: derived tables first (versioned / replacing, so a re-derived
row collapses), ``events`` last; an event already in ``events`` (looked up by visitor + messageId on
the primary key) is skipped. So at-least-once delivery stores every event exactly once.

Not covered: a builder killed after writing identities of a batch, in which an email-only identify
is followed by a userId identify of the same visitor; the batch, redelivered, then finds the
later contact already linked and adds a link of the email to it. Two builders updating one
contact at once (two devices of a person on two partitions): the later write wins per contact.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from journey_builder.privacy import NO_CONSENT, Suppression, consent_of
from journey_builder.repository import BuilderRepository
from journey_builder.stages import PURCHASE, STAGES, StageRules
from schemas import EnrichedEvent
from schemas.times import CH_EPOCH, ch_time, epoch_ms, from_ch
from trailmark.settings import JourneySettings
from trailmark.storage.base import Storage

_NS = uuid.UUID("6f1d8a52-3c1b-4c8e-9a53-1f0e7b7f2d10")
FORM_EVENTS = {"$form_submit", "form_submit", "Form Submitted"}
CONTACT_EVENTS = {"Contact Requested", "Support Requested", "Chat Started", "$contact"}
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


def visitor_id(ev: EnrichedEvent) -> str:
    """The device-level id: anonymousId, or ``user:<userId>`` for server-side calls without one."""
    return ev["anonymous_id"] or f"user:{ev['user_id']}"


def _email(ev: EnrichedEvent) -> str:
    """The person's email: a group call's email (found in its traits) is the account's."""
    return "" if ev["type"] == "group" else ev["email"]


def _account_domain(traits: Mapping[str, Any]) -> str:
    """An account's web domain: the ``domain`` trait, else the host of ``website``."""
    for key in ("domain", "website"):
        value = traits.get(key)
        if isinstance(value, str) and value.strip():
            text = value.strip().lower()
            host = urlsplit(text if "//" in text else "//" + text).hostname or ""
            return host.removeprefix("www.")[:253]
    return ""


def _merged_traits(known: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Known traits updated with an event's non-empty ones, as a new dict: the caller serializes
    it before the cached contact or account takes it, so traits JSON cannot hold (nested too
    deep) fail that one event, not every later event of the contact until a restart."""
    merged = dict(known)
    for k, v in new.items():
        if v not in ("", None):
            merged[k] = v
    return merged


def _campaign_key(ev: EnrichedEvent) -> str:
    parts = (ev["utm_source"], ev["utm_medium"], ev["utm_campaign"], ev["click_id"])
    return "|".join(parts) if any(parts) else ""


@dataclass
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
    exit_page: str = ""
    user_id: str = ""
    pageviews: int = 0
    events: int = 0
    conversions: int = 0
    device: str = ""
    browser: str = ""
    os: str = ""
    country: str = ""

    def row(self, site_id: str, version: int) -> dict[str, Any]:
        return {
            "site_id": site_id,
            "session_id": self.session_id,
            "anonymous_id": self.anonymous_id,
            "user_id": self.user_id,
            "start": ch_time(self.start),
            "end": ch_time(self.end),
            "pageviews": self.pageviews,
            "events": self.events,
            "entry_page": self.entry_page,
            "exit_page": self.exit_page,
            "referrer_host": self.referrer_host,
            "channel": self.channel,
            "source": self.source,
            "medium": self.medium,
            "campaign": self.campaign,
            "click_id_type": self.click_id_type,
            "campaign_key": self.campaign_key,
            "device": self.device,
            "browser": self.browser,
            "os": self.os,
            "country": self.country,
            "converted": self.conversions > 0,
            "conversions": self.conversions,
            "version": version,
        }


@dataclass
class VisitorState:
    session: SessionState | None = None
    sessions: int = 0
    contact_id: str = ""
    stages: set[str] = field(default_factory=set)


@dataclass
class Output:
    events: list[dict[str, Any]] = field(default_factory=list)
    sessions: dict[str, tuple[str, SessionState]] = field(default_factory=dict)  # rows built once, at write
    touchpoints: list[dict[str, Any]] = field(default_factory=list)
    identities: list[dict[str, Any]] = field(default_factory=list)
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)
    accounts: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    account_links: list[dict[str, Any]] = field(default_factory=list)
    skipped_duplicates: int = 0
    skipped_erased: int = 0


class JourneyBuilder:
    def __init__(self, storage: Storage, settings: JourneySettings) -> None:
        self.repo = BuilderRepository(storage)
        self.settings = settings
        self.rules = StageRules.load(settings.stages_file)
        self.conversions = set(settings.conversions)
        self.timeout_ms = settings.session_timeout_s * 1000
        self.max_visitors = settings.max_visitors
        self.visitors: OrderedDict[tuple[str, str], VisitorState] = OrderedDict()
        self.email_contacts: dict[tuple[str, str], str] = {}
        self.contacts: dict[tuple[str, str], dict[str, Any]] = {}
        self.accounts: dict[tuple[str, str], dict[str, Any]] = {}
        self.suppression = Suppression(storage)

    # ---- public -------------------------------------------------------------------------------

    def process(self, batch: Sequence[EnrichedEvent]) -> Output:
        """Derive and write everything for one batch; returns what was written (for metrics/tests)."""
        fresh = self._drop_seen(batch)
        out = Output(skipped_duplicates=len(batch) - len(fresh))
        if not fresh:
            return out
        fresh = self._drop_erased(fresh, out)
        if not fresh:
            return out
        fresh.sort(key=lambda e: (e["site_id"], visitor_id(e), e["timestamp"]))
        # Contacts, emails and accounts span visitors, so other builders of the group (other
        # partitions) change them too: read fresh for every batch. Visitors are this builder's own.
        self.contacts.clear()
        self.email_contacts.clear()
        self.accounts.clear()
        self._load_visitors(fresh)
        self._load_contacts(fresh)
        self._load_accounts(fresh)
        for ev in fresh:
            if ev["is_bot"] and not self.settings.include_bots:
                out.events.append(self._event_row(ev, "", ""))  # kept in events, out of journeys
                continue
            self._apply(ev, out)
        self._write(out)
        self._evict()
        return out

    def forget(self, event: Mapping[str, Any]) -> None:
        """Drop the in-memory state of a failed event's visitor (it may be half-updated); the next
        batch reloads it from ClickHouse. Tolerates a malformed event, which is why it failed."""
        anon = event.get("anonymous_id") or f"user:{event.get('user_id', '')}"
        self.visitors.pop((event.get("site_id", ""), anon), None)

    # ---- dedup and state loading -------------------------------------------------------------

    def _drop_seen(self, batch: Sequence[EnrichedEvent]) -> list[EnrichedEvent]:
        unique: dict[tuple[str, str], EnrichedEvent] = {}
        for ev in batch:
            unique.setdefault((ev["site_id"], ev["message_id"]), ev)
        if not unique:
            return []
        visitors = sorted({(e["site_id"], visitor_id(e)) for e in unique.values()})
        known = self.repo.seen_messages(visitors, [m for _, m in unique])
        return [ev for k, ev in unique.items() if k not in known]

    def _drop_erased(self, events: list[EnrichedEvent], out: Output) -> list[EnrichedEvent]:
        """Events carrying an erased identifier are dropped (late, retried or replayed events of an
        erased contact). After any new erasure every cached visitor and contact is dropped too: the
        next batch reloads them from ClickHouse, where the erased ones are gone."""
        if self.suppression.changed():
            self.visitors.clear()
            self.contacts.clear()
            self.accounts.clear()
            self.email_contacts.clear()
        erased = self.suppression.erased(events)  # type: ignore[arg-type]  # TypedDicts are dicts
        kept = [ev for ev, gone in zip(events, erased, strict=True) if not gone]
        out.skipped_erased = len(events) - len(kept)  # counted by the runner (trailmark_stage_dropped_total)
        return kept

    def _load_visitors(self, events: Iterable[EnrichedEvent]) -> None:
        """State of the visitors not in memory, as of the last batch whose events are stored.

        A builder that died between its inserts (kill -9, or a batch that failed halfway) leaves
        sessions, stage entries ... of a batch whose events are not stored; that batch is
        delivered again, here or to another builder of the group, and must meet the state from
        before it: sessions and stage entries count only with stored events, and the open
        session's counters are checked against them. The Purchase marker comes back with the
        sessions that converted.
        """
        missing = sorted({(e["site_id"], visitor_id(e)) for e in events} - self.visitors.keys())
        if not missing:
            return
        for key in missing:
            self.visitors[key] = VisitorState()
        rows = self.repo.last_sessions(missing)
        converted: set[tuple[str, str]] = set()
        for r in rows:
            s = r["s"]
            start, end = from_ch(s[0]), from_ch(s[1])
            state = self.visitors[(r["site_id"], r["anonymous_id"])]
            state.sessions = int(r["n"])
            state.session = SessionState(
                session_id=r["last_session"],
                anonymous_id=r["anonymous_id"],
                start=start,
                end=end,
                end_ms=epoch_ms(end),
                campaign_key=s[18],
                referrer_host=s[4],
                channel=s[5],
                source=s[6],
                medium=s[7],
                campaign=s[8],
                click_id_type=s[9],
                entry_page=s[2],
                exit_page=s[3],
                pageviews=int(s[10]),
                events=int(s[11]),
                conversions=int(s[12]),
                user_id=s[13],
                device=s[14],
                browser=s[15],
                os=s[16],
                country=s[17],
            )
            if int(r["converted"]) > (state.session.conversions > 0):  # an earlier session converted
                converted.add((r["site_id"], r["anonymous_id"]))
        self._check_open_sessions([(k, s) for k in missing if (s := self.visitors[k].session) is not None])
        for key in missing:
            state = self.visitors[key]
            if key in converted or (state.session is not None and state.session.conversions > 0):
                state.stages.add(PURCHASE)
        for r in self.repo.visitor_contacts(missing):
            self.visitors[(r["site_id"], r["anonymous_id"])].contact_id = r["contact_id"]
        for r in self.repo.visitor_stages(missing):
            self.visitors[(r["site_id"], r["anonymous_id"])].stages |= set(r["stages"])

    def _check_open_sessions(self, sessions: list[tuple[tuple[str, str], SessionState]]) -> None:
        """Counters of each reloaded open session recomputed from its stored events when they
        disagree (a batch that extended it was written but for its events)."""
        if not sessions:
            return
        found: dict[tuple[str, str, str], dict[str, Any]] = {}
        for r in self.repo.session_event_counts(sorted((site, anon, s.session_id) for (site, anon), s in sessions)):
            n = int(r["n"])
            got = found.setdefault(
                (r["site_id"], r["anonymous_id"], r["session_id"]),
                {"events": 0, "pageviews": 0, "conversions": 0, "end": "", "page": ("", ""), "user": ("", "")},
            )
            got["events"] += n
            got["pageviews"] += n if r["type"] in ("page", "screen") else 0
            got["conversions"] += n if self._is_conversion(r["type"], r["event"]) else 0
            got["end"] = max(got["end"], from_ch(r["last_at"]))
            if r["page"]:
                got["page"] = max(got["page"], (from_ch(r["page_at"]), r["page"]))
            if r["last_user"]:
                got["user"] = max(got["user"], (from_ch(r["user_at"]), r["last_user"]))
        for (site, anon), s in sessions:
            stored = found.get((site, anon, s.session_id))
            if stored is None or stored["events"] == s.events:
                continue
            s.events, s.pageviews, s.conversions = stored["events"], stored["pageviews"], stored["conversions"]
            s.end, s.end_ms = stored["end"], epoch_ms(stored["end"])
            s.exit_page = stored["page"][1] or s.exit_page
            s.user_id = stored["user"][1] or s.user_id

    def _load_contacts(self, events: Sequence[EnrichedEvent]) -> None:
        """Contacts this batch may touch, in two queries (not one per contact)."""
        emails = sorted({(e["site_id"], _email(e)) for e in events if _email(e)} - self.email_contacts.keys())
        if emails:
            for r in self.repo.email_contacts(emails):
                self.email_contacts[(r["site_id"], r["email"])] = r["contact_id"]
        wanted: set[tuple[str, str]] = set()
        for e in events:
            email = _email(e)
            if not (e["user_id"] or email):
                continue
            site = e["site_id"]
            if e["user_id"]:
                wanted.add((site, f"user:{e['user_id']}"))
            if email:
                wanted.add((site, self.email_contacts.get((site, email)) or f"email:{email}"))
            known = self.visitors.get((site, visitor_id(e)))
            if known is not None and known.contact_id:
                wanted.add((site, known.contact_id))
        missing = sorted(wanted - self.contacts.keys())
        if not missing:
            return
        for row in self.repo.contacts(missing):
            self.contacts[(row["site_id"], row["contact_id"])] = self._parsed(row)
        for site, cid in missing:
            self.contacts.setdefault((site, cid), self._blank_contact(site, cid))

    def _load_accounts(self, events: Sequence[EnrichedEvent]) -> None:
        """The accounts this batch's group calls touch, in one query."""
        wanted = {(e["site_id"], e["group_id"]) for e in events if e["type"] == "group" and e["group_id"]}
        missing = sorted(wanted - self.accounts.keys())
        if not missing:
            return
        for row in self.repo.accounts(missing):
            row["traits"] = orjson.loads(row["traits"] or "{}")
            self.accounts[(row["site_id"], row["group_id"])] = row
        for site, gid in missing:
            self.accounts.setdefault(
                (site, gid),
                {
                    "site_id": site,
                    "group_id": gid,
                    "name": "",
                    "domain": "",
                    "traits": {},
                    "first_seen": "",
                    "last_seen": "",
                },
            )

    @staticmethod
    def _parsed(row: dict[str, Any]) -> dict[str, Any]:
        row["traits"] = orjson.loads(row["traits"] or "{}")
        row["field_sources"] = orjson.loads(row["field_sources"] or "{}")
        return row

    @staticmethod
    def _blank_contact(site_id: str, contact_id: str) -> dict[str, Any]:
        row: dict[str, Any] = {
            "site_id": site_id,
            "contact_id": contact_id,
            "user_id": "",
            "traits": {},
            "field_sources": {},
            "first_seen": "",
            "last_seen": "",
            "country": "",
        }
        for f in CONTACT_FIELDS:
            row[f] = False if f in ("email_free", "email_disposable") else ""
        return {**row, **NO_CONSENT, "consent_at": CH_EPOCH}

    def _contact(self, site_id: str, contact_id: str) -> dict[str, Any]:
        key = (site_id, contact_id)
        if key not in self.contacts:  # not foreseen by _load_contacts (e.g. an alias): one lookup
            rows = self.repo.contacts([key])
            self.contacts[key] = self._parsed(rows[0]) if rows else self._blank_contact(site_id, contact_id)
        return self.contacts[key]

    # ---- per event ------------------------------------------------------------------------------

    def _apply(self, ev: EnrichedEvent, out: Output) -> None:
        site_id = ev["site_id"]
        anon = visitor_id(ev)
        visitor = self.visitors.setdefault((site_id, anon), VisitorState())
        self.visitors.move_to_end((site_id, anon))
        ts, ts_ms = ev["timestamp"], epoch_ms(ev["timestamp"])
        session, new_session = self._session_for(visitor, ev, anon, ts, ts_ms)
        kind, name = ev["type"], ev["event"]
        if kind in ("page", "screen"):
            session.pageviews += 1
            session.exit_page = ev["page_path"] or session.exit_page
        session.events += 1
        if ts_ms >= session.end_ms:
            session.end, session.end_ms = ts, ts_ms
        if ev["user_id"]:
            session.user_id = ev["user_id"]
        is_conversion = self._is_conversion(kind, name)
        if is_conversion:
            session.conversions += 1
        out.sessions[session.session_id] = (site_id, session)
        if new_session:
            out.touchpoints.append(self._touchpoint(ev, session, session.session_id, "session_start", session.start))
        contact_id = self._identify(ev, visitor, anon, out)
        if kind == "group" and ev["group_id"]:
            self._group(ev, anon, out)
        interaction = (
            "conversion"
            if is_conversion
            else "form_submit"
            if name in FORM_EVENTS
            else "contact"
            if name in CONTACT_EVENTS
            else "identify"
            if kind == "identify"
            else ""
        )
        stage = ""
        entered = self.rules.entered(
            event=name,
            path=ev["page_path"] if kind in ("page", "screen") else "",
            sessions=visitor.sessions,
            entered=visitor.stages,
            new_session=new_session,
        )
        if is_conversion and PURCHASE not in visitor.stages:
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
                    "message_id": ev["message_id"],
                }
            )
        if interaction:
            tp = self._touchpoint(ev, session, ev["message_id"], interaction, ts)
            tp["stage"] = stage or self._current_stage(visitor)
            out.touchpoints.append(tp)
        elif new_session and out.touchpoints and out.touchpoints[-1]["touchpoint_id"] == session.session_id:
            out.touchpoints[-1]["stage"] = stage or self._current_stage(visitor)
        out.events.append(self._event_row(ev, session.session_id, contact_id))

    def _is_conversion(self, kind: str, name: str) -> bool:
        return (kind == "track" and name in self.conversions) or (
            name in FORM_EVENTS and "form_submit" in self.conversions
        )

    def _current_stage(self, visitor: VisitorState) -> str:
        for stage in reversed(STAGES):
            if stage in visitor.stages:
                return stage
        return ""

    def _session_for(
        self, visitor: VisitorState, ev: EnrichedEvent, anon: str, ts: str, ts_ms: int
    ) -> tuple[SessionState, bool]:
        s = visitor.session
        campaign = _campaign_key(ev)
        external = ev["referrer_type"] not in ("", "direct", "internal") and ev["type"] in ("page", "screen")
        if s is not None:
            expired = ts_ms - s.end_ms > self.timeout_ms
            new_campaign = bool(campaign) and campaign != s.campaign_key
            new_referrer = external and ev["referrer_host"] != s.referrer_host and not campaign
            late = ts_ms < s.end_ms  # an event older than the open session's last one joins it
            if late or not (expired or new_campaign or new_referrer):
                return s, False
        session_id = str(uuid.uuid5(_NS, f"{ev['site_id']}|{anon}|{ev['message_id']}"))
        s = SessionState(
            session_id=session_id,
            anonymous_id=anon,
            start=ts,
            end=ts,
            end_ms=ts_ms,
            campaign_key=campaign,
            # "Internal" (a same-site referrer without tags) keeps no channel of its own
            referrer_host=ev["referrer_host"],
            channel=ev["channel"] if ev["channel"] not in ("", "Internal") else "Direct",
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

    def _touchpoint(self, ev: EnrichedEvent, s: SessionState, tp_id: str, kind: str, ts: str) -> dict[str, Any]:
        return {
            "site_id": ev["site_id"],
            "touchpoint_id": tp_id,
            "session_id": s.session_id,
            "anonymous_id": s.anonymous_id,
            "timestamp": ts,
            "kind": kind,
            "event": ev["event"],
            "page_path": ev["page_path"] or s.exit_page,
            "channel": s.channel,
            "source": s.source,
            "medium": s.medium,
            "campaign": s.campaign,
            "stage": "",
        }

    def _group(self, ev: EnrichedEvent, anon: str, out: Output) -> None:
        """A group call: its traits describe the account; the visitor is linked to it."""
        site_id, group_id = ev["site_id"], ev["group_id"]
        account = self.accounts[(site_id, group_id)]
        traits = _merged_traits(account["traits"], ev["traits"] or {})
        traits_json = orjson.dumps(traits).decode()  # see _merged_traits
        account["traits"] = traits
        if isinstance(name := traits.get("name"), str) and name:
            account["name"] = name[:500]
        if domain := _account_domain(traits):
            account["domain"] = domain
        ts = ch_time(ev["timestamp"])
        account["first_seen"] = min(account["first_seen"] or ts, ts)
        account["last_seen"] = max(account["last_seen"] or ts, ts)
        out.accounts[(site_id, group_id)] = {**account, "traits": traits_json, "version": time.time_ns()}
        out.account_links.append(
            {"site_id": site_id, "group_id": group_id, "anonymous_id": anon, "first_seen": ts, "last_seen": ts}
        )

    def _identify(self, ev: EnrichedEvent, visitor: VisitorState, anon: str, out: Output) -> str:
        site_id = ev["site_id"]
        email = _email(ev)
        user_id = ev["user_id"]
        if not (user_id or email):
            return visitor.contact_id
        known_by_email = self.email_contacts.get((site_id, email), "") if email else ""
        contact_id = f"user:{user_id}" if user_id else (known_by_email or visitor.contact_id or f"email:{email}")
        ts = ch_time(ev["timestamp"])
        links = [anon]
        if ev["type"] == "alias" and ev["previous_id"]:
            links.append(ev["previous_id"])
        # an email-only contact that now turns out to be this user is merged into it
        merged = [
            c
            for c in dict.fromkeys((known_by_email, visitor.contact_id))
            if c and c != contact_id and c.startswith("email:")
        ]
        for old in merged:
            links.extend(self._anonymous_ids_of(site_id, old))
        for a in dict.fromkeys(links):
            out.identities.append(
                {
                    "site_id": site_id,
                    "anonymous_id": a,
                    "contact_id": contact_id,
                    "user_id": user_id,
                    "email": email,
                    "first_seen": ts,
                    "last_seen": ts,
                }
            )
        visitor.contact_id = contact_id
        if email:
            self.email_contacts[(site_id, email)] = contact_id
        self._merge_contact(ev, contact_id, out, merged)
        return contact_id

    def _anonymous_ids_of(self, site_id: str, contact_id: str) -> list[str]:
        ids = self.repo.anonymous_ids_of(site_id, contact_id)
        ids += [
            v.session.anonymous_id
            for (s, _), v in self.visitors.items()
            if s == site_id and v.contact_id == contact_id and v.session is not None
        ]
        return ids

    def _merge_contact(self, ev: EnrichedEvent, contact_id: str, out: Output, merged: Sequence[str] = ()) -> None:
        """Latest non-empty value wins; ``field_sources`` records which event set each field."""
        c = self._contact(ev["site_id"], contact_id)
        for old in merged:  # fields the user contact lacks come from the contact merged into it
            oc = self._contact(ev["site_id"], old)
            for f in (*CONTACT_FIELDS, "country"):
                if oc.get(f) and not c.get(f):
                    c[f] = oc[f]
                    c["field_sources"][f] = oc["field_sources"].get(f, f"merged:{old}")
            c["traits"] = {**oc["traits"], **c["traits"]}
            if oc.get("first_seen") and (not c.get("first_seen") or oc["first_seen"] < c["first_seen"]):
                c["first_seen"] = oc["first_seen"]
        source = f"{ev['type']}:{ev['message_id']}"
        person = ev["type"] != "group"  # a group call's traits (and what enrichment read in them) are the account's
        fields = [f for f in CONTACT_FIELDS if person and isinstance(ev[f], str) and ev[f]]  # type: ignore[literal-required]
        if person and ev["email"]:  # the flags describe the email, so they change only with it
            fields += ["email_free", "email_disposable"]
        for f in fields:
            value = ev[f]  # type: ignore[literal-required]
            if c.get(f) != value:
                c[f] = value
                c["field_sources"][f] = source
        if ev["user_id"]:
            c["user_id"] = ev["user_id"]
        if ev["geo_country"]:
            c["country"] = ev["geo_country"]
        consent = consent_of(ev["context"])
        if consent["consent"]:  # the latest event that says something about consent sets it
            c.update(consent)
            c["consent_at"] = ch_time(ev["timestamp"])
        traits = _merged_traits(c["traits"], ev["traits"] if person else {})
        traits_json = orjson.dumps(traits).decode()  # see _merged_traits
        c["traits"] = traits
        ts = ch_time(ev["timestamp"])
        c["first_seen"] = min(c["first_seen"] or ts, ts)
        c["last_seen"] = max(c["last_seen"] or ts, ts)
        row = dict(c)
        row["traits"] = traits_json
        row["field_sources"] = orjson.dumps(c["field_sources"]).decode()
        row["version"] = time.time_ns()
        out.contacts[contact_id] = row

    @staticmethod
    def _event_row(ev: EnrichedEvent, session_id: str, contact_id: str) -> dict[str, Any]:
        row: dict[str, Any] = dict(ev)
        row.pop("v", None)
        row.pop("previous_id", None)
        row.pop("group_id", None)
        row["anonymous_id"] = visitor_id(ev)
        row["session_id"] = session_id
        row["contact_id"] = contact_id
        if ev["type"] == "group":  # the person fields enrichment found in group traits are the account's
            for f in (*CONTACT_FIELDS, "phone_timezone"):
                row[f] = False if f in ("email_free", "email_disposable") else ""
        row["extra"] = orjson.dumps(ev.get("extra") or {}).decode()
        for f in ("original_timestamp", "sent_at"):  # storage parses RFC 3339; "" is not a time
            if not row[f]:
                row[f] = CH_EPOCH
        for f in ("properties", "traits", "context"):
            row[f] = orjson.dumps(row[f]).decode()
        row.update(consent_of(ev["context"]))
        return row

    # ---- writing --------------------------------------------------------------------------------

    def _write(self, out: Output) -> None:
        version = time.time_ns()
        self.repo.write(
            {
                "sessions_data": [session.row(site, version) for site, session in out.sessions.values()],
                "touchpoints_data": out.touchpoints,
                "identities_data": out.identities,
                "contacts_data": list(out.contacts.values()),
                "stage_transitions_data": out.stages,
                "accounts_data": list(out.accounts.values()),
                "account_links_data": out.account_links,
                "events": out.events,  # last: its presence marks the batch as done
            }
        )

    def _evict(self) -> None:
        while len(self.visitors) > self.max_visitors:
            self.visitors.popitem(last=False)
        if len(self.contacts) > self.max_visitors:
            self.contacts.clear()
        if len(self.accounts) > self.max_visitors:
            self.accounts.clear()
        if len(self.email_contacts) > self.max_visitors:
            self.email_contacts.clear()
