"""A contact's data under the site's control: erasure, export, retention, consent rules.

**Identifiers.** A person is known by typed identifiers: ``anon:<anonymousId>`` for each device
(the stored visitor id, so ``anon:user:<userId>`` for server-side calls without one),
``user:<userId>``, ``email:<address>``, and the contact ids (already ``user:...`` / ``email:...``).
``Subject`` collects every identifier linked to a contact: its devices, the user ids and emails seen
on them, and the contacts merged into it.

**Suppression first, then deletes.** An erasure first stores a hash of every identifier
(``identifier_hash``: SHA-256 of site, NUL, identifier) in ``suppressed_identifiers``; the journey
builder drops any event carrying one of them (``Suppression``), so late events, client retries and
replays cannot bring the contact back (the list and its reader live in trailmark/suppression.py: the
enricher reads it too). Only then are the rows deleted. No identifier is kept in the clear once the
erasure is done, not even in ``erasure_requests``.

**Steps, and resuming.** Each step (suppress, one delete per table, dead letters, the logs) is
recorded in ``erasure_requests`` when it ends. The subject is kept in ``erasure_subjects`` until the
erasure is done, because a stopped erasure cannot look the contact up again (part of it is gone):
after a restart ``unfinished`` finds it and ``resume`` goes on after its last recorded step.
Every step can run twice.

**Deletes are mutations.** ``ALTER TABLE ... DELETE`` with ``mutations_sync = 2`` rewrites the parts
holding the rows, so once it returns the data is gone from disk, where a lightweight ``DELETE`` only
masks rows until a later merge. Which tables: every MergeTree table of the database, matched by the
identifier columns it has (``anonymous_id``, ``user_id``, ``email``, ``contact_id``, ``handle``), so a
table added later is covered without a change here; dead letters are matched on their payload. On a
ClickHouse cluster they run ``ON CLUSTER`` on the replicated ``_local`` tables (``on_cluster``), as
do retention changes.

**Passes.** A builder batch that passed the suppression check just before it was stored can land
after the first delete; each pass waits ``settle_s``, counts what still matches, and deletes again.

**Logs.** The embedded log and the collector's spool are rewritten by the caller's ``scrub`` (records
of the subject dropped, or a batch's other events kept). Kafka topics are never rewritten: the
suppression list covers what is still in flight, topic retention the rest.

**Consent.** ``consent_of`` reads the consent an event carries; ``split_by_consent`` applies each
site's rule for events without analytics consent (kept in full, only counted in
``consent_aggregates``, or dropped) before the journey builder stores anything.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import orjson

from journey_builder import queries
from schemas.events import EnrichedEvent, Site, json_object
from schemas.times import ch_now
from trailmark.errors import ConfigError
from trailmark.settings import PrivacySettings
from trailmark.storage.base import LOCAL_SUFFIX, SHARD_KEYS, ClusterRenderer, Row, Storage
from trailmark.suppression import Suppression as Suppression  # re-exported: the builder imports it from here
from trailmark.suppression import identifier_hash

IDENTIFIER_COLUMNS = ("anonymous_id", "user_id", "email", "contact_id", "handle")
# tables an erasure writes itself; they hold hashes and counts, never an identifier
OWN_TABLES = frozenset({"suppressed_identifiers", "erasure_requests", "erasure_subjects", "schema_migrations"})
WORK_TABLE = "erasure_subjects"  # migration 010: an unfinished erasure's subject (see begin / resume)
JSON_COLUMNS = ("properties", "traits", "context", "extra", "field_sources")


@dataclass
class Subject:
    """Everything that identifies one contact on one site."""

    site_id: str
    contact_id: str
    contact_ids: set[str] = field(default_factory=set)
    anonymous_ids: set[str] = field(default_factory=set)
    user_ids: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)

    def identifiers(self) -> list[str]:
        """Typed identifiers, sorted (contact ids are typed already)."""
        typed = {f"anon:{a}" for a in self.anonymous_ids} | {f"user:{u}" for u in self.user_ids}
        typed |= {f"email:{e.lower()}" for e in self.emails} | self.contact_ids
        return sorted(typed)

    def values(self) -> list[str]:
        """The identifiers as they appear in rows and records (untyped), sorted."""
        return sorted(self.anonymous_ids | self.user_ids | self.emails | self.contact_ids)

    def params(self) -> dict[str, Any]:
        return {
            "s": self.site_id,
            "a": sorted(self.anonymous_ids),
            "u": sorted(self.user_ids),
            "e": sorted(self.emails),
            "c": sorted(self.contact_ids),
            "h": self.values(),
        }


def resolve_subject(storage: Storage, site_id: str, contact: str) -> Subject | None:
    """The contact named by a userId, email, contact id or anonymousId, with every identifier
    linked to it (two rounds of links: devices -> their user ids and emails -> contacts merged)."""
    found = queries.resolve(storage, site_id, contact)
    if found is None:
        return None
    contact_id, anonymous_ids = found
    sub = Subject(site_id, contact_id, {contact_id}, set(anonymous_ids))
    if not contact_id.startswith("anon:"):
        kind, _, value = contact_id.partition(":")
        (sub.user_ids if kind == "user" else sub.emails).add(value)
    else:
        sub.contact_ids.clear()
    db = storage.database
    for _ in range(2):
        p = sub.params()
        for r in storage.query(
            f"SELECT DISTINCT anonymous_id, contact_id, user_id, email FROM {db}.identities_data"
            " WHERE site_id = {s:String} AND (contact_id IN {c:Array(String)} OR anonymous_id IN {a:Array(String)}"
            " OR user_id IN {u:Array(String)} OR email IN {e:Array(String)})",
            p,
            readonly=True,
        ):
            sub.anonymous_ids.add(r["anonymous_id"])
            for attr, value in (("contact_ids", r["contact_id"]), ("user_ids", r["user_id"]), ("emails", r["email"])):
                if value:
                    getattr(sub, attr).add(value)
        for r in storage.query(
            f"SELECT DISTINCT contact_id, user_id, email FROM {db}.contacts_data WHERE site_id = {{s:String}}"
            " AND (contact_id IN {c:Array(String)} OR user_id IN {u:Array(String)} OR email IN {e:Array(String)})",
            p,
            readonly=True,
        ):
            for attr, value in (("contact_ids", r["contact_id"]), ("user_ids", r["user_id"]), ("emails", r["email"])):
                if value:
                    getattr(sub, attr).add(value)
    sub.anonymous_ids.discard("")
    return sub


# --- consent (stored with every event and with the contact) ---------------------------------------------

NO_CONSENT: Mapping[str, Any] = {  # read, never changed: consent_of hands it out as it is
    "consent": "",
    "consent_dnt": False,
    "consent_cookieless": False,
    "consent_categories": [],
}


def consent_of(context: object) -> Mapping[str, Any]:
    """The consent columns of an event, from ``context.consent``: trailmark.js sends
    ``[choice, DNT or GPC, ids stored]`` (choice 1: opted in, null: no choice; an opted-out visitor
    sends nothing); Segment's consent object is read from its ``categoryPreferences``. For an event
    that says nothing of consent (most of them), ``NO_CONSENT`` itself, not a copy: it is called for
    every event a journey builder builds, and what it gives is read, never changed."""
    if isinstance(context, str):  # the JSON text the enriched topic carries (schemas.JSON_TEXT_FIELDS)
        if '"consent"' not in context:  # most events say nothing of consent: no parse for them
            return NO_CONSENT
        context = json_object(context)
    sent = context.get("consent") if isinstance(context, dict) else None
    if isinstance(sent, list):
        choice = sent[0] if sent else None
        return {
            "consent": "granted" if choice == 1 else "denied" if choice == 0 else "none",
            "consent_dnt": len(sent) > 1 and bool(sent[1]),
            "consent_cookieless": len(sent) > 2 and sent[2] is False,
            "consent_categories": [],
        }
    if isinstance(sent, dict):
        prefs = sent.get("categoryPreferences")
        prefs = prefs if isinstance(prefs, dict) else {}
        granted = sorted(str(k)[:100] for k, v in prefs.items() if v is True)[:100]
        return {
            "consent": "granted" if granted else "denied" if prefs else "none",
            "consent_dnt": False,
            "consent_cookieless": False,
            "consent_categories": granted,
        }
    return NO_CONSENT


# --- events without analytics consent: kept in full, as aggregates only, or not at all ------------------

NoConsent = Literal["full", "aggregate", "drop"]
NO_CONSENT_MODES: tuple[NoConsent, ...] = ("full", "aggregate", "drop")
AGGREGATE_TABLE = "consent_aggregates"  # migration 009
# the columns an aggregate row is counted by (consent_aggregates' ORDER BY key), from the enriched event
AGGREGATE_KEY = {
    "type": "type",
    "event": "event",
    "page_path": "page_path",
    "channel": "channel",
    "source": "source",
    "medium": "medium",
    "campaign": "utm_campaign",
    "country": "geo_country",
    "device_type": "ua_device_type",
    "browser": "ua_browser",
}


@dataclass(frozen=True)
class ConsentPolicy:
    """One site's rule for events without analytics consent (``PrivacySettings`` and keys.json)."""

    mode: NoConsent = "full"
    honour_dnt: bool = False
    analytics_categories: frozenset[str] = frozenset({"analytics"})

    def lacks_analytics_consent(self, context: object) -> bool:
        """Whether an event's ``context.consent`` withholds analytics: the visitor said no (trailmark.js
        choice 0, every Segment category refused), sent DNT/GPC to a site that honours it, or chose
        categories without an analytics one. No consent information at all (server-side SDKs), or no
        choice made yet, is not a refusal: nothing was said, and trailmark.js sends nothing before
        ``optIn`` when the site requires consent."""
        c = consent_of(context)
        if c["consent"] == "denied" or (self.honour_dnt and c["consent_dnt"]):
            return True
        granted = c["consent_categories"]
        return bool(granted) and not any(g.lower() in self.analytics_categories for g in granted)


@dataclass(frozen=True)
class ConsentPolicies:
    """Each site's :class:`ConsentPolicy`, built once at start from keys.json and the settings."""

    default: ConsentPolicy = ConsentPolicy()
    sites: dict[str, ConsentPolicy] = field(default_factory=dict)

    @classmethod
    def from_sites(cls, sites: Iterable[Site], settings: PrivacySettings) -> ConsentPolicies:
        """A site's ``no_consent`` / ``honour_dnt`` in keys.json win over the settings; an unknown
        mode stops the start with the reason (a typo must not keep what the site meant to discard)."""
        categories = frozenset(c.lower() for c in settings.analytics_categories)
        default = ConsentPolicy(settings.no_consent, settings.honour_dnt, categories)
        out = {}
        for site in sites:
            asked = site.get("no_consent", default.mode)
            mode = next((m for m in NO_CONSENT_MODES if m == asked), None)
            if mode is None:
                raise ConfigError(
                    f"site {site['site_id']!r}: no_consent must be one of {', '.join(NO_CONSENT_MODES)}, not {asked!r}"
                )
            honour = site.get("honour_dnt", default.honour_dnt)
            out[site["site_id"]] = ConsentPolicy(mode, bool(honour), categories)
        return cls(default, out)

    def of(self, site_id: str) -> ConsentPolicy:
        return self.sites.get(site_id, self.default)

    def all_full(self) -> bool:
        """Every site keeps every event (the default): the split has nothing to do."""
        return self.default.mode == "full" and all(p.mode == "full" for p in self.sites.values())


class ConsentSplit(NamedTuple):
    """What :func:`split_by_consent` made of a batch."""

    kept: list[EnrichedEvent]  # stored as today: events, sessions, identities, contacts...
    aggregates: list[dict[str, Any]]  # rows for ``consent_aggregates`` (storage.insert(AGGREGATE_TABLE, rows))
    aggregated: int  # events counted in those rows and not stored otherwise
    dropped: int  # events not kept in any form (mode drop)


def split_by_consent(events: Sequence[EnrichedEvent], policies: ConsentPolicies) -> ConsentSplit:
    """Split a batch by its sites' rules for events without analytics consent. Pure: no storage.

    Events with consent, and every event of a site in ``full`` mode, are kept in order. The others
    of an ``aggregate`` site become counts per (site, UTC day, and the :data:`AGGREGATE_KEY`
    columns: page path without its query, channel, source, medium, campaign, country, device type,
    browser), one row per distinct key, sorted; no identifier, address, referrer URL or property
    leaves the event. Those of a ``drop`` site are only counted in ``dropped``."""
    if policies.all_full():
        return ConsentSplit(list(events), [], 0, 0)
    kept: list[EnrichedEvent] = []
    counts: Counter[tuple[str, ...]] = Counter()
    dropped = 0
    for ev in events:
        policy = policies.of(ev["site_id"])
        if policy.mode == "full" or not policy.lacks_analytics_consent(ev.get("context")):
            kept.append(ev)
        elif policy.mode == "aggregate":
            counts[_aggregate_key(ev)] += 1
        else:
            dropped += 1
    names = ("site_id", "day", *AGGREGATE_KEY)
    rows = [{**dict(zip(names, key, strict=True)), "events": n} for key, n in sorted(counts.items())]
    return ConsentSplit(kept, rows, sum(counts.values()), dropped)


def _aggregate_key(ev: EnrichedEvent) -> tuple[str, ...]:
    raw: dict[str, Any] = ev  # type: ignore[assignment]  # read by name below
    values = [raw.get(f) for f in AGGREGATE_KEY.values()]
    day = str(raw.get("timestamp") or "")[:10] or "1970-01-01"  # bus time is ISO-8601 UTC
    return (str(raw.get("site_id", "")), day, *(v if isinstance(v, str) else "" for v in values))


# --- retention ---------------------------------------------------------------------------------------------

# migration 008, and the reads' tables derived from events, touchpoints and stage rows (017, 018, 020, 021,
# 024, 025: filled by materialized views that copy each row's retention_days, so a change reaches them only
# here)
RETENTION_TABLES = (
    "events",
    "sessions_data",
    "touchpoints_data",
    "stage_transitions_data",
    "session_touches",
    "step_events",
    "track_events",
    "device_days",
    "device_stages",  # 025: copied from stage_transitions_data by a view
    "interest_hours",
    "event_keys",  # 024: copied from events by a view, as the reads' tables above
    "visitor_state",  # 024: written by the journey builder, the DEFAULT as sessions_data
)
# the type of retention_days where it is not UInt16: a summary's, an aggregate (the max over the rows
# it merged, migration 020). Its DEFAULT is set all the same, so every table says the current setting
RETENTION_TYPES = {
    "device_days": "SimpleAggregateFunction(max, UInt16)",
    "device_stages": "SimpleAggregateFunction(max, UInt16)",
    "interest_hours": "SimpleAggregateFunction(max, UInt16)",
}


def retention_expression(days_by_site: dict[str, int], default_days: int) -> str:
    """``retention_days`` of a row as SQL: its site's days, else the default (0: kept for good)."""
    sites = sorted(days_by_site)
    if not sites:
        return str(int(default_days))
    names = "[" + ", ".join("'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'" for s in sites) + "]"
    days = "[" + ", ".join(str(int(days_by_site[s])) for s in sites) + "]"
    return f"toUInt16(transform(site_id, {names}, {days}, {int(default_days)}))"


def on_cluster(statement: str, cluster: str) -> list[str]:
    """A runtime ``ALTER`` (an erasure's delete, a retention change) as it must run. Without a cluster,
    unchanged. On one (``TRAILMARK_STORAGE__CLUSTER``) the public names are Distributed tables, which
    take no mutation: the statement runs ``ON CLUSTER`` against the replicated ``<table>_local``
    tables, and a column change also on the Distributed table (ClusterRenderer, the same rendering
    as the migrations). ``mutations_sync = 2`` then waits for every replica of the shard."""
    if not cluster:
        return [statement]
    renderer = ClusterRenderer(cluster, "")  # the replication path only matters for CREATE TABLE
    renderer.tables.update(SHARD_KEYS)
    return renderer.render(statement)


def retention_statements(
    storage: Storage, days_by_site: dict[str, int], default_days: int = 0, cluster: str = ""
) -> list[str]:
    """The statements that bring each retention table's ``retention_days`` DEFAULT to the current
    settings (rows written from now on carry their site's days) and, where that DEFAULT changed,
    update the rows already stored (a mutation; their TTL follows at the next merge). Nothing when
    the settings did not change. Rendered for ``cluster`` when it is set."""
    db, expr = storage.database, retention_expression(days_by_site, default_days)
    current = {
        r["table"]: r["default_expression"]
        for r in storage.query(
            "SELECT table, default_expression FROM system.columns WHERE database = {db:String}"
            " AND name = 'retention_days'",
            {"db": db},
        )
    }
    probe = storage.query("SELECT formatQuerySingleLine('SELECT ' || {e:String}) AS q", {"e": expr})[0]["q"]
    out = []
    for table in RETENTION_TABLES:
        now = storage.query(
            "SELECT formatQuerySingleLine('SELECT ' || {e:String}) AS q", {"e": current.get(table) or "0"}
        )[0]["q"]
        if table not in current or now == probe:
            continue
        kind = RETENTION_TYPES.get(table, "UInt16")
        out += on_cluster(f"ALTER TABLE {db}.{table} MODIFY COLUMN retention_days {kind} DEFAULT {expr}", cluster)
        out += on_cluster(
            f"ALTER TABLE {db}.{table} UPDATE retention_days = {expr} WHERE retention_days != {expr}"
            " SETTINGS mutations_sync = 2",
            cluster,
        )
    return out


def apply_retention(
    storage: Storage, days_by_site: dict[str, int], default_days: int = 0, cluster: str = ""
) -> list[str]:
    """Run :func:`retention_statements`; returns the tables changed."""
    changed = []
    for statement in retention_statements(storage, days_by_site, default_days, cluster):
        storage.execute(statement)
        table = statement.split()[2].rsplit(".", 1)[1].removesuffix(LOCAL_SUFFIX)
        if table not in changed:
            changed.append(table)
    return changed


# --- log records --------------------------------------------------------------------------------------

_IDENTITY_FIELDS = ("anonymousId", "userId", "previousId", "anonymous_id", "user_id", "previous_id", "email")


class RecordScrubber:
    """Decides, for one record of a log (raw, enriched or dead-letter topic), whether it mentions the
    subject: a raw batch loses the events that do (and is dropped when none is left); any other
    record is dropped whole. ``__call__`` returns the new value, or None to drop the record."""

    def __init__(self, subject: Subject) -> None:
        self.site_id = subject.site_id
        self.ids = set(subject.values())
        self.emails = {e.lower() for e in subject.emails}
        # a dead letter carries the failed record as JSON text inside JSON: its quotes are escaped
        self.needles = [n for v in self.ids for n in (orjson.dumps(v), orjson.dumps(orjson.dumps(v).decode())[1:-1])]

    def _is_id(self, value: object) -> bool:
        return isinstance(value, str) and (value in self.ids or value.lower() in self.emails)

    def _event_mentions(self, ev: object) -> bool:
        if not isinstance(ev, dict):
            return False
        if any(self._is_id(ev.get(f)) for f in _IDENTITY_FIELDS):
            return True
        context = ev.get("context")
        for traits in (ev.get("traits"), context.get("traits") if isinstance(context, dict) else None):
            if isinstance(traits, dict) and any(self._is_id(v) for v in traits.values()):
                return True
        return False

    def __call__(self, value: bytes) -> bytes | None:
        try:
            record = orjson.loads(value)
        except orjson.JSONDecodeError:  # nested deeper than orjson reads: the bytes are searched
            record = None
        if isinstance(record, dict) and record.get("site_id") not in (None, "", self.site_id):
            return value  # another site's record
        body = record.get("body") if isinstance(record, dict) else None
        if isinstance(body, dict) and isinstance(body.get("batch"), list):  # a collector RawBatch
            kept = [ev for ev in body["batch"] if not self._event_mentions(ev)]
            if not kept:
                return None
            if len(kept) == len(body["batch"]):
                return value
            return orjson.dumps({**record, "body": {**body, "batch": kept}})
        if self._event_mentions(record) or any(n in value for n in self.needles):
            return None
        return value


# --- erasure --------------------------------------------------------------------------------------------


@dataclass
class Progress:
    request_id: str
    site_id: str
    contact_hash: str
    status: str = "running"
    steps_done: int = 0
    steps_total: int = 0
    identifiers: int = 0
    detail: str = ""
    requested_at: str = field(default_factory=ch_now)

    def row(self) -> dict[str, Any]:
        return {
            "site_id": self.site_id,
            "request_id": self.request_id,
            "contact_hash": self.contact_hash,
            "status": self.status,
            "steps_done": self.steps_done,
            "steps_total": self.steps_total,
            "identifiers": self.identifiers,
            "detail": self.detail,
            "requested_at": self.requested_at,
            "updated_at": ch_now(),
            "version": time.time_ns(),
        }


def new_request(site_id: str, contact: str) -> Progress:
    return Progress(uuid.uuid4().hex, site_id, identifier_hash(site_id, contact))


def save(storage: Storage, progress: Progress) -> None:
    storage.insert("erasure_requests", [progress.row()])


def load(storage: Storage, site_id: str, request_id: str) -> Row | None:
    rows = storage.query(
        f"SELECT request_id, status, steps_done, steps_total, identifiers, detail, requested_at, updated_at"
        f" FROM {storage.database}.erasure_requests FINAL WHERE site_id = {{s:String}} AND request_id = {{r:String}}",
        {"s": site_id, "r": request_id},
        readonly=True,
    )
    return rows[0] if rows else None


def erasable_tables(storage: Storage, cluster: str = "") -> list[tuple[str, list[str]]]:
    """(table, identifier columns) of every table of the database that has a site and at least one
    identifier column; dead letters are matched on their payload instead. The MergeTree tables, or
    on a cluster the Distributed tables over them (the public names: counted there over every
    shard, mutated through :func:`on_cluster` on their ``_local`` tables)."""
    db = storage.database
    engine = "x.engine = 'Distributed'" if cluster else "x.engine LIKE '%MergeTree'"
    rows = storage.query(
        "SELECT c.table AS t, groupArray(c.name) AS cols FROM system.columns AS c"
        " INNER JOIN system.tables AS x ON x.database = c.database AND x.name = c.table"
        f" WHERE c.database = {{db:String}} AND {engine} AND c.default_kind != 'ALIAS'"
        " GROUP BY c.table ORDER BY c.table",
        {"db": db},
    )
    out = []
    for r in rows:
        cols = [c for c in IDENTIFIER_COLUMNS if c in r["cols"]]
        if r["t"] not in OWN_TABLES and "site_id" in r["cols"] and cols and r["t"] != "dead_letters":
            out.append((r["t"], cols))
    return out


def _match(cols: Iterable[str]) -> str:
    arrays = {"anonymous_id": "a", "user_id": "u", "email": "e", "contact_id": "c", "handle": "h"}
    return "site_id = {s:String} AND (" + " OR ".join(f"{c} IN {{{arrays[c]}:Array(String)}}" for c in cols) + ")"


_PAYLOAD = "if(payload_encoding = 'base64', tryBase64Decode(payload), payload)"


def _dead_letter_match(subject: Subject) -> tuple[str, dict[str, Any]]:
    """Dead letters of the site (or of no known site) whose payload holds an identifier as a JSON
    string, plain or inside an escaped JSON text (multiSearchAny takes at most 255 needles a call)."""
    needles = [n.decode() for n in RecordScrubber(subject).needles]
    chunks = [needles[i : i + 200] for i in range(0, len(needles), 200)] or [[]]
    params: dict[str, Any] = {"s": subject.site_id}
    terms = []
    for i, chunk in enumerate(chunks):
        params[f"n{i}"] = chunk
        terms.append(f"multiSearchAny({_PAYLOAD}, {{n{i}:Array(String)}})")
    return "site_id IN ({s:String}, '') AND (" + " OR ".join(terms) + ")", params


# --- an erasure's working copy of its subject, so an interrupted erasure can resume ------------------
#
# An erasure runs for seconds to minutes; the process may die between two of its steps. To finish
# the work after a restart the eraser must know what it was erasing, and by then some tables no
# longer name the contact (re-resolving it would miss identifiers). So the subject is kept in
# ``erasure_subjects`` while its erasure is unfinished, and deleted (a mutation, like the rows) when
# it is done. It holds nothing the unfinished erasure has not yet deleted elsewhere, has no
# ``site_id`` column (``/v1/sql`` cannot read it) and is not itself erased.


def _subject_json(subject: Subject) -> str:
    return orjson.dumps(
        {
            "site_id": subject.site_id,
            "contact_id": subject.contact_id,
            "contact_ids": sorted(subject.contact_ids),
            "anonymous_ids": sorted(subject.anonymous_ids),
            "user_ids": sorted(subject.user_ids),
            "emails": sorted(subject.emails),
        }
    ).decode()


def begin(storage: Storage, eraser: Eraser) -> None:
    """Record a new erasure: its working copy of the subject first, then its progress row (an
    erasure whose progress row exists can always be resumed)."""
    storage.insert(
        WORK_TABLE,
        [{"request_id": eraser.progress.request_id, "subject": _subject_json(eraser.subject), "created_at": ch_now()}],
    )
    save(storage, eraser.progress)


def unfinished(storage: Storage, before: str, cluster: str = "") -> list[tuple[str, str]]:
    """(site, request id) of every erasure not done whose subject is still kept and whose progress
    was last recorded ``before`` (ClickHouse time text: the start of the process asking, so an
    erasure another live process is running now is left to it): interrupted by a stop, or failed
    (storage errors, rows left after the passes); oldest first. Working copies of erasures that are
    done (a stop between the last two writes) are deleted on the way."""
    db = storage.database
    rows = storage.query(
        f"SELECT site_id, request_id, status FROM {db}.erasure_requests FINAL"
        f" WHERE request_id IN (SELECT request_id FROM {db}.{WORK_TABLE})"
        " AND (status = 'done' OR updated_at < {t:DateTime64(3, 'UTC')}) ORDER BY requested_at, request_id",
        {"t": before},
    )
    done = [r["request_id"] for r in rows if r["status"] == "done"]
    if done:
        for statement in on_cluster(
            f"ALTER TABLE {db}.{WORK_TABLE} DELETE WHERE request_id IN {{r:Array(String)}} SETTINGS mutations_sync = 2",
            cluster,
        ):
            storage.execute(statement, {"r": done})
    return [(r["site_id"], r["request_id"]) for r in rows if r["status"] != "done"]


def resume(
    storage: Storage, site_id: str, request_id: str, settle_s: float = 2.0, passes: int = 3, cluster: str = ""
) -> Eraser | None:
    """An eraser that goes on from the last step the request recorded; None when the request is
    unknown, done, or its subject was not kept."""
    db = storage.database
    state = storage.query(
        f"SELECT contact_hash, status, steps_done, requested_at FROM {db}.erasure_requests FINAL"
        " WHERE site_id = {s:String} AND request_id = {r:String}",
        {"s": site_id, "r": request_id},
    )
    kept = storage.query(
        f"SELECT subject FROM {db}.{WORK_TABLE} WHERE request_id = {{r:String}} LIMIT 1", {"r": request_id}
    )
    if not state or not kept or state[0]["status"] == "done":
        return None
    doc = orjson.loads(kept[0]["subject"])
    subject = Subject(
        doc["site_id"],
        doc["contact_id"],
        set(doc["contact_ids"]),
        set(doc["anonymous_ids"]),
        set(doc["user_ids"]),
        set(doc["emails"]),
    )
    progress = Progress(request_id, site_id, state[0]["contact_hash"], requested_at=state[0]["requested_at"])
    eraser = Eraser(storage, subject, progress, settle_s, passes, cluster)
    progress.steps_done = min(int(state[0]["steps_done"]), progress.steps_total - 1)
    progress.detail = f"resumed after step {progress.steps_done}"
    save(storage, progress)
    return eraser


Step = Callable[[], str]  # runs one step of an erasure; returns what to report about it


class Eraser:
    """Runs one erasure in steps, each recorded in ``erasure_requests`` when it is done: suppress,
    one delete per table, dead-letter replays, dead letters, the site's saved answers, the logs, then
    verification (passes). Every step can run twice (a resumed erasure repeats the one it was in)."""

    def __init__(
        self,
        storage: Storage,
        subject: Subject,
        progress: Progress,
        settle_s: float = 2.0,
        passes: int = 3,
        cluster: str = "",
        tables: list[tuple[str, list[str]]] | None = None,
    ) -> None:
        self.storage = storage
        self.subject = subject
        self.progress = progress
        self.settle_s = settle_s
        self.passes = passes
        self.cluster = cluster
        self.tables = erasable_tables(storage, cluster) if tables is None else tables
        progress.identifiers = len(subject.identifiers())
        progress.steps_total = len(self.steps()) + 1  # and the verification

    def steps(self, scrub: Callable[[RecordScrubber], int] | None = None) -> list[tuple[str, Step]]:
        """(name, step) in order; ``scrub`` rewrites the logs (privacy_api.scrub_logs) and returns
        how many records it changed."""

        def logs() -> str:
            n = scrub(RecordScrubber(self.subject)) if scrub is not None else 0
            return f"removed {n} log record(s); verifying"

        out: list[tuple[str, Step]] = [("suppress", self.suppress)]
        out += [(f"delete {t}", functools.partial(self.delete_table, t, cols)) for t, cols in self.tables]
        out += [("delete dead_letter_replays", self.delete_replays), ("delete dead_letters", self.delete_dead_letters)]
        out.append(("delete saved_answers", self.delete_saved_answers))
        out.append(("logs", logs))
        return out

    def run(
        self,
        scrub: Callable[[RecordScrubber], int] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        after_step: Callable[[int], None] | None = None,
    ) -> None:
        """Every step not recorded as done yet, then verification and the final state.
        ``after_step(n)`` is called once step n is recorded (tests stop an erasure there)."""
        for number, (_, step) in enumerate(self.steps(scrub), start=1):
            if number <= self.progress.steps_done:
                continue
            self.progress.detail = step()
            self.progress.steps_done = number
            save(self.storage, self.progress)
            if after_step is not None:
                after_step(number)
        self.finish(self.verify(sleep))

    def _mutate(self, statement: str, params: dict[str, Any]) -> None:
        for s in on_cluster(statement, self.cluster):
            self.storage.execute(s, params)

    def suppress(self) -> str:
        now = ch_now()
        s = self.subject
        self.storage.insert(
            "suppressed_identifiers",
            [
                {
                    "site_id": s.site_id,
                    "hash": identifier_hash(s.site_id, i),
                    "request_id": self.progress.request_id,
                    "suppressed_at": now,
                }
                for i in s.identifiers()
            ],
        )
        return "suppressed; deleting rows"

    def delete_table(self, table: str, cols: list[str]) -> str:
        db = self.storage.database
        self._mutate(
            f"ALTER TABLE {db}.{table} DELETE WHERE {_match(cols)} SETTINGS mutations_sync = 2", self.subject.params()
        )
        return f"deleted from {table}"

    def delete_replays(self) -> str:
        db = self.storage.database
        where, dp = _dead_letter_match(self.subject)
        ids = [r["id"] for r in self.storage.query(f"SELECT id FROM {db}.dead_letters WHERE {where}", dp)]
        if ids:
            self._mutate(
                f"ALTER TABLE {db}.dead_letter_replays DELETE WHERE dead_letter_id IN"
                " {ids:Array(String)} SETTINGS mutations_sync = 2",
                {"ids": ids},
            )
        return "deleted dead-letter replays"

    def delete_dead_letters(self) -> str:
        where, dp = _dead_letter_match(self.subject)
        self._mutate(
            f"ALTER TABLE {self.storage.database}.dead_letters DELETE WHERE {where} SETTINGS mutations_sync = 2", dp
        )
        return "deleted dead letters"

    def delete_saved_answers(self) -> str:
        """The site's kept answers (migration 029): counts and names, no identifier, but a name only
        this contact had stays in them until they are computed again."""
        self._mutate(
            f"ALTER TABLE {self.storage.database}.saved_answers DELETE WHERE site_id = {{s:String}}"
            " SETTINGS mutations_sync = 2",
            {"s": self.subject.site_id},
        )
        return "deleted the site's saved answers"

    def delete_all(self) -> None:
        """Every delete again (a verification pass found rows)."""
        for table, cols in self.tables:
            self.delete_table(table, cols)
        self.delete_replays()
        self.delete_dead_letters()

    def remaining(self) -> int:
        """Rows that still match the subject, over every table."""
        db, p = self.storage.database, self.subject.params()
        total = 0
        for table, cols in self.tables:
            total += int(self.storage.query(f"SELECT count() AS n FROM {db}.{table} WHERE {_match(cols)}", p)[0]["n"])
        where, dp = _dead_letter_match(self.subject)
        total += int(self.storage.query(f"SELECT count() AS n FROM {db}.dead_letters WHERE {where}", dp)[0]["n"])
        return total

    def verify(self, sleep: Callable[[float], None] = time.sleep) -> int:
        """Wait, count what matches, delete again while anything does; what is left after the passes."""
        left = 0
        for _ in range(self.passes):
            sleep(self.settle_s)
            left = self.remaining()
            if not left:
                break
            self.delete_all()
        else:
            left = self.remaining()
        return left

    def finish(self, left: int) -> None:
        """Record the outcome; once done, the working copy of the subject goes too (after the state,
        so a stop in between leaves a done request whose copy :func:`unfinished` deletes)."""
        self.progress.steps_done = self.progress.steps_total
        self.progress.status = "done" if left == 0 else "failed"
        self.progress.detail = "erased" if left == 0 else f"{left} row(s) still match after {self.passes} passes"
        save(self.storage, self.progress)
        if left == 0:
            self._mutate(
                f"ALTER TABLE {self.storage.database}.{WORK_TABLE} DELETE WHERE request_id = {{r:String}}"
                " SETTINGS mutations_sync = 2",
                {"r": self.progress.request_id},
            )

    def fail(self, reason: str) -> None:
        """Record a failure; the subject stays kept, so the next start resumes the erasure."""
        self.progress.status = "failed"
        self.progress.detail = reason[:500]
        save(self.storage, self.progress)


# --- export ---------------------------------------------------------------------------------------------


def _parsed(row: Row) -> Row:
    for c in JSON_COLUMNS:
        if isinstance(row.get(c), str):
            try:
                row[c] = orjson.loads(row[c] or "{}")
            except orjson.JSONDecodeError:
                pass  # kept as the text it is
    return row


def export_chunks(storage: Storage, subject: Subject, page_rows: int = 1000) -> Iterator[bytes]:
    """Everything stored about a subject as one JSON document, in chunks: the small sections first,
    then the events page by page (keyset on timestamp, message id), so memory stays bounded."""
    db, p = storage.database, subject.params()
    sections = {
        "contacts": f"SELECT * EXCEPT (version) FROM {db}.contacts_data FINAL WHERE site_id = {{s:String}}"
        " AND contact_id IN {c:Array(String)} ORDER BY first_seen, contact_id",
        "identities": f"SELECT anonymous_id, contact_id, user_id, email, min(first_seen) AS first_seen,"
        f" max(last_seen) AS last_seen FROM {db}.identities_data WHERE {_match(['anonymous_id'])}"
        " GROUP BY anonymous_id, contact_id, user_id, email ORDER BY first_seen, anonymous_id",
        "sessions": f"SELECT * EXCEPT (version) FROM {db}.sessions_data FINAL WHERE {_match(['anonymous_id'])}"
        " ORDER BY start, session_id",
        "touchpoints": f"SELECT * FROM {db}.touchpoints_data FINAL WHERE {_match(['anonymous_id'])}"
        " ORDER BY timestamp, touchpoint_id",
        "stage_transitions": f"SELECT * FROM {db}.stage_transitions_data FINAL WHERE {_match(['anonymous_id'])}"
        " ORDER BY entered_at, stage",
        "accounts": f"SELECT a.* EXCEPT (version) FROM {db}.accounts_data AS a FINAL WHERE site_id = {{s:String}}"
        f" AND group_id IN (SELECT group_id FROM {db}.account_links_data WHERE {_match(['anonymous_id'])})"
        " ORDER BY first_seen, group_id",
    }
    head = {
        "site_id": subject.site_id,
        "contact_id": subject.contact_id,
        "exported_at": ch_now(),
        "anonymous_ids": sorted(subject.anonymous_ids),
        "user_ids": sorted(subject.user_ids),
        "emails": sorted(subject.emails),
    }
    yield orjson.dumps(head)[:-1]
    for name, sql in sections.items():
        rows = [_parsed(r) for r in storage.query(sql, p, readonly=True)]
        yield b',"' + name.encode() + b'":' + orjson.dumps(rows)
    yield b',"events":['
    where = _match(["anonymous_id", "user_id", "contact_id"])
    after: tuple[str, str] | None = None
    first = True
    while True:
        keyset = " AND (timestamp, message_id) > ({t:DateTime64(3, 'UTC')}, {m:String})" if after else ""
        page = storage.query(
            f"SELECT * FROM {db}.events WHERE {where}{keyset} ORDER BY timestamp, message_id LIMIT {int(page_rows)}",
            {**p, **({"t": after[0], "m": after[1]} if after else {})},
            readonly=True,
        )
        for row in page:
            yield (b"" if first else b",") + orjson.dumps(_parsed(row))
            first = False
        if len(page) < page_rows:
            break
        after = (page[-1]["timestamp"], page[-1]["message_id"])
    yield b"]}"
