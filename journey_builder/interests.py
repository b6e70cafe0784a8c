"""Interests of contacts and visitors, read from ``interest_hours`` (schemas/ddl/015_interests.sql).

A materialized view fills ``interest_hours`` as events are stored: per visitor (device), interest
kind and value and hour, the sum of the events' weights, not decayed. The decay is applied here, when
read: score = sum over hours of weight * 2^(-(at - hour) / half-life), so the half-life setting is
right for every event already stored, whenever it changes. A contact's interests are the sum over
its devices (``identity_map``: each device counts for the contact it belongs to now).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from journey_builder import analytics
from schemas.times import ch_text
from trailmark.settings import JourneySettings
from trailmark.storage.base import Storage

KINDS = ("content_group", "section", "product_category", "product", "search", "campaign_term")


def _score(at_param: str = "at", hl_param: str = "hl") -> str:
    """SQL of a decayed score over ``interest_hours`` rows (a future hour counts as now)."""
    return (
        f"sum(i.weight * exp2(-greatest(0, dateDiff('second', i.hour, {{{at_param}:DateTime64(3, 'UTC')}}))"
        f" / {{{hl_param}:Float64}}))"
    )


def _params(site_id: str, settings: JourneySettings, at: datetime | None) -> dict[str, Any]:
    return {
        "s": site_id,
        "at": ch_text(at or datetime.now(UTC)),
        "hl": settings.interest_half_life_days * 86400.0,
        "kinds": [k for k in settings.interest_kinds if k in KINDS],
    }


def parse(interest: str) -> tuple[str, str]:
    """``kind:value`` or a bare value (any kind) -> (kind or '', value), as stored (trimmed, lower case)."""
    kind, sep, value = interest.partition(":")
    if sep and kind in KINDS:
        return kind, value.strip().lower()
    return "", interest.strip().lower()


def devices_sql(db: str) -> str:
    """(anonymous_id, current contact) of the devices of contacts ``ids``; ``anon:<id>`` is itself."""
    return (
        f"SELECT anonymous_id, argMax(contact_id, last_seen) AS contact_id FROM {db}.identities_data"
        " WHERE site_id = {s:String} AND anonymous_id IN (SELECT anonymous_id FROM"
        f" {db}.contact_devices WHERE site_id = {{s:String}} AND contact_id IN {{ids:Array(String)}})"
        " GROUP BY anonymous_id HAVING contact_id IN {ids:Array(String)}"
    )


def top(
    storage: Storage,
    site_id: str,
    contact_ids: list[str],
    settings: JourneySettings,
    *,
    limit: int | None = None,
    at: datetime | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """contact_id -> its strongest interests now (kind, value, score, events, last_seen), best first."""
    if not contact_ids:
        return {}
    db = storage.database
    p = _params(site_id, settings, at)
    p |= {
        "ids": sorted(set(contact_ids)),
        "anons": sorted({c.removeprefix("anon:") for c in contact_ids if c.startswith("anon:")}),
        "n": limit if limit is not None else settings.interest_top,
    }
    rows = storage.query(
        f"WITH devices AS ({devices_sql(db)})"
        f" SELECT if(d.contact_id = '', concat('anon:', i.anonymous_id), d.contact_id) AS contact_id,"
        f" i.kind AS kind, i.value AS value, round({_score()}, 6) AS score, sum(i.events) AS events,"
        f" max(i.last_seen) AS last_seen"
        f" FROM {db}.interest_hours AS i LEFT ANY JOIN devices AS d ON d.anonymous_id = i.anonymous_id"
        " WHERE i.site_id = {s:String} AND i.kind IN {kinds:Array(String)}"
        " AND (i.anonymous_id IN (SELECT anonymous_id FROM devices) OR i.anonymous_id IN {anons:Array(String)})"
        " GROUP BY contact_id, kind, value HAVING contact_id IN {ids:Array(String)}"
        " ORDER BY contact_id, score DESC, kind, value LIMIT {n:UInt32} BY contact_id",
        p,
        readonly=True,
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r.pop("contact_id"), []).append(r)
    return out


def of_devices(
    storage: Storage,
    site_id: str,
    anonymous_ids: list[str],
    settings: JourneySettings,
    *,
    limit: int | None = None,
    at: datetime | None = None,
) -> list[dict[str, Any]]:
    """The strongest interests of these devices together (a contact's, an account's), best first."""
    if not anonymous_ids:
        return []
    p = _params(site_id, settings, at) | {"a": sorted(set(anonymous_ids))}
    p["n"] = limit if limit is not None else settings.interest_top
    return storage.query(
        f"SELECT i.kind AS kind, i.value AS value, round({_score()}, 6) AS score, sum(i.events) AS events,"
        f" max(i.last_seen) AS last_seen FROM {storage.database}.interest_hours AS i"
        " WHERE i.site_id = {s:String} AND i.anonymous_id IN {a:Array(String)} AND i.kind IN {kinds:Array(String)}"
        " GROUP BY kind, value ORDER BY score DESC, kind, value LIMIT {n:UInt32}",
        p,
        readonly=True,
    )


def contacts_with(
    storage: Storage, site_id: str, interest: str, settings: JourneySettings, *, at: datetime | None = None
) -> list[str]:
    """Contacts (and anonymous visitors, ``anon:<id>``) whose score for ``interest`` is at least
    ``interest_min_score`` now, summed over their devices."""
    kind, value = parse(interest)
    db = storage.database
    p = _params(site_id, settings, at) | {"kind": kind, "value": value, "min": settings.interest_min_score}
    rows = storage.query(
        f"SELECT if(m.contact_id = '', concat('anon:', i.anonymous_id), m.contact_id) AS contact_id"
        f" FROM {db}.interest_hours AS i"
        f" LEFT ANY JOIN (SELECT anonymous_id, argMax(contact_id, last_seen) AS contact_id"
        f"  FROM {db}.identities_data WHERE site_id = {{s:String}} GROUP BY anonymous_id) AS m"
        " ON m.anonymous_id = i.anonymous_id"
        " WHERE i.site_id = {s:String} AND i.value = {value:String} AND i.kind IN {kinds:Array(String)}"
        " AND ({kind:String} = '' OR i.kind = {kind:String})"
        f" GROUP BY contact_id, i.kind HAVING {_score()} >= {{min:Float64}}",
        p,
        readonly=True,
    )
    return sorted({r["contact_id"] for r in rows})


def journeys(
    storage: Storage,
    site_id: str,
    settings: JourneySettings,
    *,
    interest: str | None = None,
    at: datetime | None = None,
    **filters: Any,
) -> dict[str, Any]:
    """``GET /v1/journeys``: :func:`analytics.contacts`, restricted to contacts with ``interest``
    when given, each with its top interests."""
    only = contacts_with(storage, site_id, interest, settings, at=at) if interest else None
    out = analytics.contacts(storage, site_id, only=only, **filters)
    found = top(storage, site_id, [r["contact_id"] for r in out["contacts"]], settings, at=at)
    for r in out["contacts"]:
        r["interests"] = found.get(r["contact_id"], [])
    return out


__all__ = ["KINDS", "contacts_with", "devices_sql", "journeys", "of_devices", "parse", "top"]
