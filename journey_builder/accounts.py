"""Accounts, read at query time (``GET /v1/accounts/{id}``): the companies and teams contacts belong to.

Two kinds, as the ``account_members`` view (schemas/ddl/016_account_members.sql) defines them:

- a **group account** is a Segment ``group`` call's group id: its traits are in ``accounts_data``, its
  members the devices ``account_links_data`` links to it, each counted for its current contact;
- a **domain account** ``domain:<domain>`` has every current contact whose work email gives that
  company domain (``contacts.company_domain``, never a free-mail one).

An account's profile is its group traits and, when the company lookup has one, the company profile
of its domain (``company_profiles``, migration 012); its stage is the furthest stage any of its
contacts has entered; its journey is its contacts' touchpoints merged in time order (the latest
``account_max_touchpoints``). Every query filters on the site, and the per-visitor ones on the
primary key prefix (site, visitor).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from journey_builder import interests
from journey_builder.stages import STAGES
from trailmark.settings import JourneySettings
from trailmark.storage.base import Storage

DOMAIN_PREFIX = "domain:"


def _q(storage: Storage, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return storage.query(sql, params, readonly=True)


def _members(storage: Storage, site_id: str, group_id: str, domain: str) -> list[str]:
    """Candidate member contacts: the group's linked devices as their current contacts, or the
    contacts with this company domain (some may since have merged into another contact)."""
    db = storage.database
    if domain:
        rows = _q(
            storage,
            f"SELECT contact_id FROM {db}.contacts_data FINAL WHERE site_id = {{s:String}}"
            " AND company_domain = {d:String}",
            {"s": site_id, "d": domain},
        )
    else:
        rows = _q(
            storage,
            f"SELECT DISTINCT if(m.contact_id = '', concat('anon:', l.anonymous_id), m.contact_id) AS contact_id"
            f" FROM {db}.account_links_data AS l"
            f" LEFT ANY JOIN (SELECT anonymous_id, argMax(contact_id, last_seen) AS contact_id"
            f"  FROM {db}.identities_data WHERE site_id = {{s:String}} AND anonymous_id IN"
            f"  (SELECT anonymous_id FROM {db}.account_links_data WHERE site_id = {{s:String}}"
            "   AND group_id = {g:String}) GROUP BY anonymous_id) AS m ON m.anonymous_id = l.anonymous_id"
            " WHERE l.site_id = {s:String} AND l.group_id = {g:String}",
            {"s": site_id, "g": group_id},
        )
    return [r["contact_id"] for r in rows]


def _devices(storage: Storage, site_id: str, contact_ids: list[str]) -> dict[str, list[str]]:
    """contact_id -> its devices now; a merged-away contact has none (and is left out)."""
    db = storage.database
    out: dict[str, list[str]] = {c: [c.removeprefix("anon:")] for c in contact_ids if c.startswith("anon:")}
    named = [c for c in contact_ids if not c.startswith("anon:")]
    if named:
        rows = _q(
            storage,
            f"SELECT d.anonymous_id AS anonymous_id, d.contact_id AS contact_id FROM ({interests.devices_sql(db)}) AS d"
            " ORDER BY anonymous_id",
            {"s": site_id, "ids": named},
        )
        for r in rows:
            out.setdefault(r["contact_id"], []).append(r["anonymous_id"])
    return out


def _company(storage: Storage, site_id: str, domain: str) -> dict[str, Any] | None:
    """The company profile of ``domain`` (migration 012), when that table exists and has one."""
    db = storage.database
    if not domain:
        return None
    exists = _q(
        storage,
        "SELECT count() AS n FROM system.tables WHERE database = {db:String} AND name = 'company_profiles'",
        {"db": db},
    )
    if not exists or not exists[0]["n"]:
        return None
    rows = _q(
        storage,
        f"SELECT * EXCEPT (site_id, version) FROM {db}.company_profiles WHERE site_id = {{s:String}}"
        " AND domain = {d:String} LIMIT 1",
        {"s": site_id, "d": domain},
    )
    if not rows:
        return None
    profile = rows[0]
    if isinstance(profile.get("field_sources"), str):
        profile["field_sources"] = orjson.loads(profile["field_sources"] or "{}")
    return profile


def account(
    storage: Storage, site_id: str, account_id: str, settings: JourneySettings, *, at: datetime | None = None
) -> dict[str, Any] | None:
    """One account: profile, contacts (with their stage), combined journey, stage, interests; None
    when the site has no such account. ``acme.io`` finds ``domain:acme.io`` when no group has that id."""
    db = storage.database
    p: dict[str, Any] = {"s": site_id, "g": account_id}
    group = _q(
        storage,
        f"SELECT group_id, name, domain, traits, first_seen, last_seen FROM {db}.accounts_data FINAL"
        " WHERE site_id = {s:String} AND group_id = {g:String}",
        p,
    )
    domain = ""
    if account_id.startswith(DOMAIN_PREFIX):
        domain = account_id.removeprefix(DOMAIN_PREFIX).strip().lower()
    elif not group and "." in account_id:
        domain = account_id.strip().lower()
    candidates = _members(storage, site_id, account_id, domain) if domain or group else []
    if domain:
        account_id = DOMAIN_PREFIX + domain
    devices = _devices(storage, site_id, candidates)
    members = sorted(c for c in candidates if devices.get(c))
    if not group and not members:
        return None
    anons = sorted({a for c in members for a in devices[c]})
    contact_of = {a: c for c in members for a in devices[c]}
    p = {"s": site_id, "a": anons, "c": members, "n": settings.account_max_touchpoints + 1}
    people = {
        r["contact_id"]: r
        for r in _q(
            storage,
            f"SELECT contact_id, email, first_name, last_name, company_domain, company_name, country,"
            f" first_seen, last_seen FROM {db}.contacts_data FINAL WHERE site_id = {{s:String}}"
            " AND contact_id IN {c:Array(String)}",
            p,
        )
    }
    seen = {
        r["anonymous_id"]: r
        for r in _q(
            storage,
            f"SELECT anonymous_id, min(start) AS first_seen, max(end) AS last_seen, count() AS sessions"
            f" FROM {db}.sessions_data FINAL WHERE site_id = {{s:String}} AND anonymous_id IN {{a:Array(String)}}"
            " GROUP BY anonymous_id",
            p,
        )
    }
    reached: dict[str, set[str]] = {}
    for r in _q(
        storage,
        f"SELECT DISTINCT anonymous_id, stage FROM {db}.stage_transitions_data WHERE site_id = {{s:String}}"
        " AND anonymous_id IN {a:Array(String)}",
        p,
    ):
        reached.setdefault(contact_of[r["anonymous_id"]], set()).add(r["stage"])
    contacts = []
    for c in members:
        person = people.get(c, {})
        visits = [seen[a] for a in devices[c] if a in seen]
        stage = [s for s in STAGES if s in reached.get(c, set())]
        firsts = [str(v["first_seen"]) for v in visits] + ([str(person["first_seen"])] if person else [])
        lasts = [str(v["last_seen"]) for v in visits] + ([str(person["last_seen"])] if person else [])
        contacts.append(
            {
                "contact_id": c,
                "email": person.get("email", ""),
                "first_name": person.get("first_name", ""),
                "last_name": person.get("last_name", ""),
                "company_domain": person.get("company_domain", ""),
                "country": person.get("country", ""),
                "devices": len(devices[c]),
                "sessions": sum(int(v["sessions"]) for v in visits),
                "stage": stage[-1] if stage else "",
                "first_seen": min(firsts) if firsts else None,
                "last_seen": max(lasts) if lasts else None,
            }
        )
    contacts.sort(key=lambda x: (x["last_seen"] or "", x["contact_id"]), reverse=True)
    touchpoints = _q(
        storage,
        f"SELECT touchpoint_id, session_id, anonymous_id, timestamp, kind, event, page_path, channel, source,"
        f" medium, campaign, stage FROM {db}.touchpoints_data FINAL WHERE site_id = {{s:String}}"
        " AND anonymous_id IN {a:Array(String)} ORDER BY timestamp DESC, touchpoint_id DESC LIMIT {n:UInt32}",
        p,
    )
    more = len(touchpoints) > settings.account_max_touchpoints
    touchpoints = touchpoints[: settings.account_max_touchpoints][::-1]
    for t in touchpoints:
        t["contact_id"] = contact_of.get(t["anonymous_id"], "")
    furthest = [s for s in STAGES if any(x["stage"] == s for x in contacts)]
    g = group[0] if group else None
    profile_domain = domain or (g["domain"] if g else "")
    names = sorted({people[c]["company_name"] for c in people if people[c].get("company_name")})
    related = _q(
        storage,
        f"SELECT group_id FROM {db}.accounts_data FINAL WHERE site_id = {{s:String}} AND domain = {{d:String}}"
        " AND domain != '' ORDER BY group_id",
        {"s": site_id, "d": profile_domain},
    )
    related_ids = [r["group_id"] for r in related if r["group_id"] != account_id]
    if g and g["domain"]:
        related_ids.insert(0, DOMAIN_PREFIX + g["domain"].lower())
    return {
        "site_id": site_id,
        "account_id": account_id,
        "source": "domain" if domain else "group",
        "profile": {
            "name": (g["name"] if g else "") or (names[0] if names else ""),
            "domain": profile_domain,
            "traits": orjson.loads(g["traits"] or "{}") if g else {},
            "first_seen": g["first_seen"] if g else None,
            "last_seen": g["last_seen"] if g else None,
            "company": _company(storage, site_id, profile_domain),
        },
        "related_accounts": related_ids,
        "stage": furthest[-1] if furthest else "",
        "contacts": contacts[: settings.account_max_contacts],
        "contacts_total": len(contacts),
        "touchpoints": touchpoints,
        "touchpoints_truncated": more,
        "interests": interests.of_devices(storage, site_id, anons, settings, at=at),
    }


__all__ = ["DOMAIN_PREFIX", "account"]
