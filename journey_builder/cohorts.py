"""Cohort retention: contacts grouped by the week or month of their first start event, and the share of
each cohort that comes back (does the return event) in each later period.

One query: per contact, the first start event and the distinct periods with a return event; then per
cohort (and channel or persona) the cohort's size and, summed element-wise (``sumForEach``), who was
back in period 0, 1, ... Period 0 is the cohort's own period. Periods that have not ended yet (the
triangle's missing corner) are ``null``.

It reads ``device_days`` (migration 020), not ``events``: per device, event (or page, or any event)
and UTC day, the first time and the first channel. Weeks and months are whole UTC days, so a day's row
says all a period needs; the day rows of a device are grouped first, then the devices of a contact
(resolved now, so a late identify merges devices' histories). At 10M events that is a few million
rows instead of ten million events.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from journey_builder.analytics import BadQuery, _contact, _current, _range, _shared_hashes
from journey_builder.insights import contact_group, event_condition, query
from journey_builder.personas import Personas
from trailmark.settings import AnalysisSettings
from trailmark.storage.base import Storage

UNITS = {"week": "toStartOfWeek({}, 1)", "month": "toStartOfMonth({})"}  # weeks start on Monday


def _add(d: date, unit: str, n: int) -> date:
    if unit == "week":
        return date.fromordinal(d.toordinal() + 7 * n)
    months = d.year * 12 + d.month - 1 + n
    return date(months // 12, months % 12 + 1, 1)


def _rows_of(name: str, key: str, p: dict[str, Any]) -> str:
    """The ``device_days`` rows (alias ``d``) of a start or return event: a page path (``/...``), an
    event name, or any event when empty; checked and parameterized as the funnel's steps are."""
    if not name:
        return "(d.kind = '')"
    event_condition(name, key, p)
    kind = "page" if name.startswith("/") else "event"
    return f"(d.kind = '{kind}' AND d.name = {{{key}:String}})"


def retention(
    storage: Storage,
    site_id: str,
    personas: Personas,
    conf: AnalysisSettings,
    *,
    cohort: str = "week",
    start_event: str = "",
    return_event: str = "",
    periods: int = 8,
    by: str = "",
    persona: str | None = None,
    since: str | None = None,
    until: str | None = None,
    today: date | None = None,
) -> dict[str, Any]:
    """The cohort x period matrix. ``start_event``/``return_event``: a page path or an event name
    (empty: any event); ``by``: '', 'channel' (first touch) or 'persona'."""
    if cohort not in UNITS:
        raise BadQuery("cohort: week or month")
    if not 1 <= periods <= conf.max_periods:
        raise BadQuery(f"periods: 1 to {conf.max_periods}")
    if by not in ("", "channel", "persona"):
        raise BadQuery("by: channel or persona")
    db = storage.database
    p: dict[str, Any] = {"s": site_id, "periods": periods, "rows": conf.max_rows}
    start = _rows_of(start_event, "r_start", p)
    back = _rows_of(return_event, "r_back", p)
    bucket = UNITS[cohort]
    having = _range("first_at", p, since, until)
    group = {
        "": "''",
        "channel": "if(c.first_channel.2 = '', 'Direct', c.first_channel.2)",
        "persona": "pm.persona",
    }[by]
    persona_join = ""
    if by == "persona":
        persona_join = f" LEFT JOIN ({personas.profile_sql(db, conf, p)}) AS pm ON pm.contact_id = c.contact_id"
    only = personas.filter_sql(db, conf, p, persona, "c.contact_id")

    # the rows of the start and return events: when either is "any event", every event's, and the
    # first channel over them is the first channel over the events the original question reads. A
    # return day is kept as its period (the bucket of its day): fewer values, bucketed once
    def per_device(devices: str, hashed: bool = False) -> str:
        key, name = ("cityHash64(d.anonymous_id)", "device") if hashed else ("d.anonymous_id", "anonymous_id")
        return (
            f"SELECT {key} AS {name}, max({start}) AS started, minIf(d.first_at, {start}) AS first_at,"
            f" groupUniqArrayIf({bucket.format('d.day')}, {back}) AS periods, min(d.first_channel) AS first_channel"
            f" FROM {db}.device_days AS d WHERE d.site_id = {{s:String}} AND ({start} OR {back}){devices}"
            f" GROUP BY {key}"
        )

    def contacts(devices: str, join: str, key: str) -> str:
        return (
            f"SELECT {key} AS contact_id, minIf(e.first_at, e.started) AS first_at,"
            f" arrayDistinct(groupArrayArray(e.periods)) AS back, min(e.first_channel) AS first_channel"
            f" FROM ({per_device(devices)}) AS e{join}"
            f" GROUP BY contact_id HAVING max(e.started){having}"
        )

    if by == "persona" or persona:  # the contacts' ids are joined with their personas
        ident = f" LEFT ANY JOIN ({_current(db, '1')}) AS m ON m.anonymous_id = e.anonymous_id"
        per_contact = contacts("", ident, _contact("e"))
    else:
        # a device whose contact has no other device is a contact of its own: its rows need no
        # identity join and no second grouping (most devices), and are grouped by the device's hash;
        # the others are grouped by their contact's (contact_group). contact_id is not read here
        shared = f"cityHash64(d.anonymous_id) IN ({_shared_hashes(db)})"
        alone = (
            "SELECT toUInt64(0) AS contact_id, e.first_at AS first_at, e.periods AS back,"
            f" e.first_channel AS first_channel FROM ({per_device(f' AND NOT {shared}', hashed=True)}) AS e"
            f" WHERE e.started{having}"
        )
        join, key = contact_group(db, "e", False)
        together = contacts(f" AND {shared}", join, key)
        per_contact = f"{alone} UNION ALL {together}"
    rows = query(
        storage,
        conf,
        f"SELECT toString(cohort) AS cohort, grp, count() AS size, sumForEach(flags) AS retained FROM ("
        # each contact's periods back as offsets from its cohort, computed once (not per period)
        f" SELECT cohort, grp, arrayMap(i -> toUInt64(has(offsets, i)), range(toUInt64({{periods:UInt16}}))) AS flags"
        f" FROM (SELECT {bucket.format('c.first_at')} AS cohort, {group} AS grp,"
        f"  arrayMap(d -> dateDiff('{cohort}', cohort, d), c.back) AS offsets"
        f"  FROM ({per_contact}) AS c{persona_join} WHERE 1{only}))"
        f" GROUP BY cohort, grp ORDER BY cohort DESC, grp LIMIT {{rows:UInt32}}",
        p,
    )
    now = today or datetime.now(UTC).date()
    out = []
    for r in sorted(rows, key=lambda r: (r["cohort"], r["grp"])):
        first = date.fromisoformat(r["cohort"][:10])
        size = int(r["size"])
        counts: list[int | None] = [
            int(n) if _add(first, cohort, i) <= now else None for i, n in enumerate(r["retained"])
        ]
        out.append(
            {
                "cohort": r["cohort"][:10],
                "group": r["grp"],
                "size": size,
                "retained": counts,
                "rate": [None if n is None else round(n / size, 4) for n in counts],
            }
        )
    return {
        "cohort": cohort,
        "periods": periods,
        "start_event": start_event,
        "return_event": return_event,
        "by": by,
        "persona": persona or "",
        "rows": out,
    }
