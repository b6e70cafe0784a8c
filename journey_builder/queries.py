"""SQL behind the read API. Every query filters on the primary key prefix (site, visitor).

A journey is three rounds: one query finds the contact a name resolves to (a name that is no contact
is read as a visitor's anonymous id, known by its sessions), one its devices with their identities
(beside its profile), then its other parts (sessions, touchpoints, stages, accounts; a visitor's
identities too) and the caller's read of the devices run side by side. The parts stay separate
queries: at 10M events their cost is the columns they read from each part of each table (about
0.5 ms of CPU per column for a two-device contact), and one query of six scalar subqueries measured
no cheaper.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import orjson

from trailmark.storage.base import Storage

_POOL = ThreadPoolExecutor(max_workers=7, thread_name_prefix="journey-read")


def _contact_sql(db: str) -> str:
    """The contact a name resolves to (one row, or none): its userId, email, contact id or one of
    its devices, a user's contact first, then the latest seen."""
    return (
        f"SELECT contact_id FROM {db}.contact_handles WHERE site_id = {{s:String}}"
        " AND handle IN ({c:String}, concat('user:', {c:String}), lower({c:String}),"
        " concat('email:', lower({c:String})))"
        " GROUP BY contact_id ORDER BY startsWith(contact_id, 'user:') DESC, max(last_seen) DESC LIMIT 1"
        " SETTINGS max_threads = 1"
    )


def _links_sql(db: str) -> str:
    """Every link of every device ever linked to contact ``cid`` (contact_devices keeps them all), as
    the journey lists identities: one row per (device, contact, user id, email) with its first and
    last time. In one thread: it reads a few granules."""
    return (
        f"SELECT anonymous_id, contact_id, user_id, email, min(first_seen) AS first_seen,"
        f" max(last_seen) AS last_seen FROM {db}.identities_data WHERE site_id = {{s:String}} AND anonymous_id IN"
        f" (SELECT anonymous_id FROM {db}.contact_devices WHERE site_id = {{s:String}} AND contact_id = {{cid:String}})"
        " GROUP BY anonymous_id, contact_id, user_id, email SETTINGS max_threads = 1"
    )


def _current(links: list[dict[str, Any]], contact_id: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The contact's devices (those whose latest link, identity_map's ``argMax(contact_id,
    last_seen)``, is still ``contact_id``) and their links by first time: the identities a journey
    shows, so they take no query of their own."""
    latest: dict[str, dict[str, Any]] = {}
    for row in links:  # DateTime64 text of one format: its order is the times'
        kept = latest.get(row["anonymous_id"])
        if kept is None or row["last_seen"] > kept["last_seen"]:
            latest[row["anonymous_id"]] = row
    devices = sorted(a for a, row in latest.items() if row["contact_id"] == contact_id)
    mine = set(devices)
    return devices, sorted((r for r in links if r["anonymous_id"] in mine), key=lambda r: r["first_seen"])


def _contact_of(storage: Storage, site_id: str, contact: str) -> str | None:
    """The contact id ``contact`` names (userId, email, contact id or one of its devices), else None.

    Two queries, this one and ``_devices``, cost a third less CPU than one with this one as a scalar
    subquery of the other (5.7-6.3 against 8.7-9.2 ms at 10M events, bench/RESULTS.md 2026-12-05),
    a name that is no contact takes only this one, and the contact's profile is read beside
    ``_devices``."""
    rows = storage.query(_contact_sql(storage.database), {"s": site_id, "c": contact}, readonly=True)
    return rows[0]["contact_id"] if rows else None


def _links(storage: Storage, site_id: str, contact_id: str) -> list[dict[str, Any]]:
    return storage.query(_links_sql(storage.database), {"s": site_id, "cid": contact_id}, readonly=True)


def _devices(storage: Storage, site_id: str, contact_id: str) -> list[str]:
    return _current(_links(storage, site_id, contact_id), contact_id)[0]


def _find(storage: Storage, site_id: str, contact: str) -> tuple[str, list[str]] | None:
    """(contact_id, anonymous ids) when ``contact`` names a contact (userId, email, contact id or one
    of its devices), else None."""
    contact_id = _contact_of(storage, site_id, contact)
    return None if contact_id is None else (contact_id, _devices(storage, site_id, contact_id))


def resolve(storage: Storage, site_id: str, contact: str) -> tuple[str, list[str]] | None:
    """(contact_id, anonymous ids) for a userId, email, contact id or anonymousId.

    One query finds the contact (``contact_handles``) and its devices (``contact_devices``, keeping
    only devices whose latest link is still this contact); a name that is no contact is a visitor
    when ``sessions_data`` has a session of that anonymous id.
    """
    found = _find(storage, site_id, contact)
    if found is not None:
        return found
    anonymous_id = contact.removeprefix("anon:")
    seen = storage.query(
        f"SELECT 1 AS x FROM {storage.database}.sessions_data WHERE site_id = {{s:String}}"
        " AND anonymous_id = {a:String} LIMIT 1",
        {"s": site_id, "a": anonymous_id},
        readonly=True,
    )
    return (f"anon:{anonymous_id}", [anonymous_id]) if seen else None


def _parts_sql(db: str) -> dict[str, str]:
    parts = {
        "contact": f"SELECT * EXCEPT (version) FROM {db}.contacts_data FINAL WHERE site_id = {{s:String}}"
        " AND contact_id = {c:String}",
        "identities": f"SELECT anonymous_id, contact_id, user_id, email, min(first_seen) AS first_seen,"
        f" max(last_seen) AS last_seen FROM {db}.identities_data WHERE site_id = {{s:String}}"
        " AND anonymous_id IN {a:Array(String)} GROUP BY anonymous_id, contact_id, user_id, email"
        " ORDER BY first_seen",
        "sessions": f"SELECT session_id, anonymous_id, user_id, start, end, toUInt32(dateDiff('second', start, end))"
        f" AS duration_s, pageviews, events, entry_page AS landing_page, exit_page, referrer_host,"
        f" channel, source, medium, campaign, click_id_type, device, browser, os, country,"
        f" pageviews <= 1 AND events <= 1 AS bounce, converted, conversions, version"
        f" FROM {db}.sessions_data WHERE site_id = {{s:String}}"
        " AND anonymous_id IN {a:Array(String)}",  # every version: see _latest
        "touchpoints": f"SELECT touchpoint_id, session_id, anonymous_id, timestamp, kind, event, page_path, channel,"
        f" source, medium, campaign, stage FROM {db}.touchpoints_data FINAL"
        " WHERE site_id = {s:String} AND anonymous_id IN {a:Array(String)}"
        " ORDER BY timestamp, touchpoint_id",
        "stages": f"SELECT t.stage AS stage, min(t.entered_at) AS entered_at, argMin(t.rule, t.entered_at) AS rule"
        f" FROM {db}.stage_transitions_data AS t WHERE site_id = {{s:String}}"
        " AND anonymous_id IN {a:Array(String)} GROUP BY stage ORDER BY entered_at",
        "accounts": f"SELECT group_id, name, domain, traits, first_seen, last_seen FROM {db}.accounts_data FINAL"
        f" WHERE site_id = {{s:String}} AND group_id IN (SELECT group_id FROM {db}.account_links_data"
        " WHERE site_id = {s:String} AND anonymous_id IN {a:Array(String)}) ORDER BY first_seen, group_id",
    }
    # each part reads a few granules: one thread apiece costs less CPU than two, and the parts run
    # side by side anyway
    return {k: q + " SETTINGS max_threads = 1" for k, q in parts.items()}


def _latest(versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each session's latest version (the row ``sessions_data FINAL`` keeps: the highest
    ``version`` of a (visitor, session)), by start. Read without FINAL, a contact's few rows cost
    2 ms less CPU at 10M events and a third less p95 time (bench/RESULTS.md 2026-12-05)."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in versions:
        key = (row["anonymous_id"], row["session_id"])
        kept = latest.get(key)
        if kept is None or int(row["version"]) > int(kept["version"]):
            latest[key] = row
    for row in latest.values():
        del row["version"]
    return sorted(latest.values(), key=lambda r: (r["start"], r["session_id"]))


def journey(
    storage: Storage, site_id: str, contact: str, devices: Callable[[list[str]], Any] | None = None
) -> dict[str, Any] | None:
    """One contact's (or visitor's) journey. ``devices``, given, is one more read over the contact's
    anonymous ids (the interests), run beside the others; its answer is ``extra`` in the result."""
    sqls = _parts_sql(storage.database)
    contact_id = _contact_of(storage, site_id, contact)
    # a name that is no contact is read as a visitor's anonymous id: no session of it, no journey.
    # A visitor's name (anon:<id>) is never a stored contact's (they are user:<id> or email:<address>,
    # core.resolve_contact): its profile is not looked up, one query of seven less for it
    visitor = contact_id is None
    futures: dict[str, Future[list[dict[str, Any]]]] = {}
    identities: list[dict[str, Any]] = []  # a contact's, read with its devices; a visitor's, beside
    if contact_id is None:
        anonymous_id = contact.removeprefix("anon:")
        contact_id, anonymous_ids = f"anon:{anonymous_id}", [anonymous_id]
    else:  # the profile needs only the contact id: read beside its devices and their identities
        futures["contact"] = _POOL.submit(
            storage.query, sqls["contact"], {"s": site_id, "c": contact_id}, readonly=True
        )
        anonymous_ids, identities = _current(_links(storage, site_id, contact_id), contact_id)
    p = {"s": site_id, "a": anonymous_ids, "c": contact_id}
    for k, q in sqls.items():
        if k != "contact" and (visitor or k != "identities"):
            futures[k] = _POOL.submit(storage.query, q, p, readonly=True)
    extra = _POOL.submit(devices, anonymous_ids) if devices is not None else None
    got = {"contact": [], "identities": identities, **{k: f.result() for k, f in futures.items()}}
    got["sessions"] = _latest(got["sessions"])
    if visitor and not got["sessions"]:
        return None
    touchpoints = got["touchpoints"]
    return {
        "site_id": site_id,
        "contact_id": contact_id,
        "contact": got["contact"][0] if got["contact"] else None,
        "anonymous_ids": anonymous_ids,
        "identities": got["identities"],
        "sessions": got["sessions"],
        "touchpoints": touchpoints,
        "stage_transitions": got["stages"],
        "accounts": [{**a, "traits": orjson.loads(a["traits"] or "{}")} for a in got["accounts"]],
        "conversions": [t for t in touchpoints if t["kind"] == "conversion"],
        "extra": extra.result() if extra is not None else None,
    }
