"""Site-level journey analytics behind the read API: contact lists, stages, funnels, paths,
attribution and pain points. Every query is scoped to one site and excludes bots; contacts are
resolved through ``identity_map`` so identity stitching applies retroactively here too."""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from journey_builder.attribution import MODELS
from journey_builder.stages import STAGES
from trailmark import compiled
from trailmark.errors import BadRequest
from trailmark.settings import AnalysisSettings
from trailmark.storage.base import QueryError, Storage


def _q(storage: Storage, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Reads run on the storage's read-only sessions, never queued behind the builder's writes."""
    return storage.query(sql, params, readonly=True)


class BadQuery(BadRequest):
    """A parameter the analytics cannot use (unknown model, empty funnel...)."""


def _contact(alias: str) -> str:
    return f"if(m.contact_id = '', concat('anon:', {alias}.anonymous_id), m.contact_id)"


def _join(db: str, alias: str, devices: str = "") -> str:
    """The identity_map of one site (param ``s``) as an ANY join: a quarter cheaper than joining the
    view on (site, anonymousId) at 10M events (measured in bench/journeys.py's funnel). ``devices``,
    a condition on anonymous_id, limits the map to them."""
    only = f" AND {devices}" if devices else ""
    return (
        f" LEFT ANY JOIN (SELECT anonymous_id, argMax(contact_id, last_seen) AS contact_id"
        f" FROM {db}.identities_data WHERE site_id = {{s:String}}{only} GROUP BY anonymous_id) AS m"
        f" ON m.anonymous_id = {alias}.anonymous_id"
    )


class ContactSet(Protocol):
    """The contacts a read is narrowed to (``persona=``: ``personas.Chosen``). Declared here rather
    than imported because personas.py builds on this module."""

    def sql(self, db: str, p: dict[str, Any]) -> str:
        """A subquery of contact ids of site ``{s:String}`` (``_contact``'s ids); values go to ``p``."""
        ...


def _only(db: str, who: ContactSet | None, p: dict[str, Any], col: str) -> str:
    """`` AND col IN (the contacts of who)``, for a column that holds a contact id; nothing without ``who``."""
    return f" AND {col} IN ({who.sql(db, p)})" if who else ""


def _only_devices(db: str, who: ContactSet | None, p: dict[str, Any], col: str) -> str:
    """`` AND`` the device in ``col`` (an anonymous_id) belongs to a contact of ``who`` now: the same
    contact ``_join`` + ``_contact`` give it (its latest identity link, else ``anon:<device>``), so a
    device filtered here lands on a contact of the set after the join. Filtering devices keeps the
    rows out before any join or grouping; nothing without ``who``."""
    if not who:
        return ""
    chosen = who.sql(db, p)
    return (
        f" AND ({col} IN (SELECT anonymous_id FROM (SELECT anonymous_id, argMax(contact_id, last_seen) AS c"
        f" FROM {db}.identities_data WHERE site_id = {{s:String}} GROUP BY anonymous_id)"
        f" WHERE c != '' AND c IN ({chosen})) OR concat('anon:', {col}) IN ({chosen}))"
    )


def _epoch(value: Any) -> float:
    return datetime.fromisoformat(str(value)).timestamp() if not isinstance(value, int | float) else float(value)


def _range(col: str, params: dict[str, Any], since: str | None, until: str | None) -> str:
    sql = ""
    if since:
        params["since"] = since
        sql += f" AND {col} >= parseDateTime64BestEffort({{since:String}}, 3)"
    if until:
        params["until"] = until
        sql += f" AND {col} < parseDateTime64BestEffort({{until:String}}, 3)"
    return sql


def current_stages(storage: Storage, site_id: str) -> dict[str, str]:
    """contact_id -> the furthest stage it has entered."""
    db = storage.database
    rows = _q(
        storage,
        f"SELECT {_contact('t')} AS contact_id, groupUniqArray(t.stage) AS stages"
        f" FROM {db}.stage_transitions_data AS t{_join(db, 't')} WHERE t.site_id = {{s:String}}"
        " GROUP BY contact_id",
        {"s": site_id},
    )
    out = {}
    for r in rows:
        entered = [s for s in STAGES if s in r["stages"]]
        if entered:
            out[r["contact_id"]] = entered[-1]
    return out


def contacts(
    storage: Storage,
    site_id: str,
    *,
    stage: str | None = None,
    channel: str | None = None,
    campaign: str | None = None,
    converted: bool | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: int = 50,
    offset: int = 0,
    only: list[str] | None = None,
    persona: ContactSet | None = None,
) -> dict[str, Any]:
    """Contacts (a page of them, latest first) with their sessions' summary and current stage;
    ``only`` keeps these contact ids (the interest filter of journey_builder/interests.py),
    ``persona`` the contacts of that set."""
    db = storage.database
    p: dict[str, Any] = {"s": site_id, "limit": limit + 1, "offset": offset}
    where = _range("start", p, since, until) + _only(db, persona, p, "contact_id")
    having = []
    if channel:
        p["channel"] = channel
        having.append("has(channels, {channel:String})")
    if campaign:
        p["campaign"] = campaign
        having.append("has(campaigns, {campaign:String})")
    if converted is not None:
        having.append("conversions > 0" if converted else "conversions = 0")
    if only is not None:
        p["only"] = only
        having.append("contact_id IN {only:Array(String)}")
    stages = current_stages(storage, site_id)
    if stage:
        if stage not in STAGES:
            raise BadQuery(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
        p["ids"] = sorted(c for c, s in stages.items() if s == stage)
        having.append("contact_id IN {ids:Array(String)}")
    rows = _q(
        storage,
        f"SELECT contact_id, min(start) AS first_seen, max(end) AS last_seen, count() AS sessions,"
        f" sum(conversions) AS conversions, argMin(channel, start) AS first_channel,"
        f" groupUniqArray(channel) AS channels, arrayFilter(x -> x != '', groupUniqArray(campaign)) AS campaigns"
        f" FROM {db}.sessions WHERE site_id = {{s:String}}{where} GROUP BY contact_id"
        + (" HAVING " + " AND ".join(having) if having else "")
        + " ORDER BY last_seen DESC, contact_id LIMIT {limit:UInt32} OFFSET {offset:UInt32}",
        p,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    for r in rows:
        r["stage"] = stages.get(r["contact_id"], "")
    return {"contacts": rows, "limit": limit, "offset": offset, "next_offset": offset + limit if more else None}


def stages(storage: Storage, site_id: str, persona: ContactSet | None = None) -> dict[str, Any]:
    """Contacts per stage now and ever, median hours between stages, and touchpoints per stage, kind
    and channel; ``persona``: of the contacts of that set only."""
    db = storage.database
    p: dict[str, Any] = {"s": site_id}
    rows = _q(
        storage,
        f"SELECT contact_id, stage, entered_at FROM {db}.stage_transitions WHERE site_id = {{s:String}}"
        + _only(db, persona, p, "contact_id"),
        p,
    )
    entered: dict[str, dict[str, float]] = defaultdict(dict)
    for r in rows:
        entered[r["contact_id"]][r["stage"]] = _epoch(r["entered_at"])
    current: dict[str, int] = defaultdict(int)
    ever: dict[str, int] = defaultdict(int)
    gaps: dict[tuple[str, str], list[float]] = defaultdict(list)
    for per in entered.values():
        reached = [s for s in STAGES if s in per]
        if not reached:
            continue
        current[reached[-1]] += 1
        for s in reached:
            ever[s] += 1
        for a, b in zip(reached, reached[1:], strict=False):
            gaps[(a, b)].append(max(0.0, per[b] - per[a]) / 3600.0)
    breakdown = _q(
        storage,
        f"SELECT stage, kind, channel, count() AS n FROM {db}.touchpoints_data FINAL"
        " WHERE site_id = {s:String} AND stage != ''"
        + _only_devices(db, persona, p, "anonymous_id")
        + " GROUP BY stage, kind, channel ORDER BY stage, n DESC",
        p,
    )
    return {
        "stages": [{"stage": s, "contacts": current[s], "entered": ever[s]} for s in STAGES],
        "breakdown": breakdown,
        "transitions": [
            {"from": a, "to": b, "contacts": len(v), "median_hours": round(statistics.median(v), 3)}
            for (a, b), v in sorted(gaps.items(), key=lambda kv: STAGES.index(kv[0][0]))
        ],
    }


# A set of tens of thousands of visitors used against the primary key costs more than the rows it
# skips (the granules of converting visitors are spread over the whole table): probe the set instead.
_NO_KEY_SETS = " SETTINGS use_index_for_in_with_subqueries = 0"


def _step_condition(i: int, step: str, p: dict[str, Any]) -> str:
    """A step is a page path (starts with '/': a ``view`` row of step_events) or an event name (``track``)."""
    p[f"step{i}"] = step
    return f"(kind = '{'view' if step.startswith('/') else 'track'}' AND step = {{step{i}:String}})"


def _current(db: str, devices: str) -> str:
    """identity_map (each device's latest contact) for the devices ``devices`` (a condition on
    anonymous_id) only."""
    return (
        f"SELECT anonymous_id, argMax(contact_id, last_seen) AS contact_id FROM {db}.identities_data"
        f" WHERE site_id = {{s:String}} AND {devices} GROUP BY anonymous_id"
    )


# The group of a device's rows: its contact's hash when it shares the contact with other devices
# (``_shared_map``), else its own hash (a device whose contact has no other device is the contact).
# Devices and contacts as 64-bit hashes (cityHash64): grouping and joining numbers costs a third less
# than the ids; two of a site's devices or contacts sharing a hash (odds ~1e-7 at a million) would
# count as one. step_events and session_touches store their rows' hashes (``device``, ``session``:
# migration 026), so a read takes 8 bytes a row instead of reading and hashing each id.
def who(device: str) -> str:
    """The group of a row whose device hash is ``device``, with ``_shared_map`` joined as ``m`` on it
    (attribution's rows here, insights.contact_group's elsewhere; the funnel maps its rows with
    ``transform`` instead)."""
    return f"if(m.contact = 0, {device}, m.contact)"


_WHO = who("e.device")


def _shared_hashes(db: str) -> str:
    """Devices whose contact may have other devices, as hashes (cityHash64 of the anonymous id):
    every device of a contact ever linked to two or more, which the journey builder keeps in
    shared_devices (migration 031) as it links them. A superset of the devices whose current contact
    has several; every other device is a contact of its own, whatever its id: reads can group its
    rows by device, with no identity join.

    Read from shared_devices (399,300 devices at 100M events), instead of being found in every read
    from all of contact_devices (4.2M links, 0.45 s of CPU at 100M: bench/RESULTS.md 2026-12-06).
    Where a query tests it as a set by itself in two places (insights), the same text makes it one
    set."""
    return f"SELECT device FROM {db}.shared_devices WHERE site_id = {{s:String}}"


def _shared_map(db: str, also: str = "") -> str:
    """(device, contact) hashes of the devices ``_shared_hashes`` names and of those of ``also`` (a
    subquery of anonymous ids): each device's current contact (its id: ``name``), the contact of its
    latest link. shared_devices holds every link of its devices; the others' come from identities_data."""
    links = f"SELECT anonymous_id, contact_id, last_seen FROM {db}.shared_devices WHERE site_id = {{s:String}}"
    if also:
        links += (
            f" UNION ALL SELECT anonymous_id, contact_id, last_seen FROM {db}.identities_data"
            f" WHERE site_id = {{s:String}} AND anonymous_id IN ({also})"
        )
    return (
        f"SELECT cityHash64(anonymous_id) AS device, argMax(contact_id, last_seen) AS latest,"
        f" if(latest = '', concat('anon:', anonymous_id), latest) AS name, cityHash64(name) AS contact"
        f" FROM ({links}) GROUP BY anonymous_id"
    )


def funnel(
    storage: Storage,
    site_id: str,
    steps: list[str],
    window_s: int,
    by: str | None = None,
    since: str | None = None,
    until: str | None = None,
    persona: ContactSet | None = None,
    conf: AnalysisSettings | None = None,
) -> dict[str, Any]:
    """Contacts reaching each step in order within ``window_s``, as ClickHouse's windowFunnel counts
    them; ``persona`` keeps the contacts of that set; ``conf``: the analysis limits (its defaults
    when None).

    Read from step_events (migration 018): only the rows of the steps (and, by channel, the arrivals
    from a channel), from its primary key. Devices that share a contact with no other device (most)
    are grouped by device, with no identity join; the few of contacts with several devices are
    grouped by their current contact. Where trailmark/native is built, a funnel's rows stream out and
    it counts the levels (``_native_levels``); else ClickHouse does (``_sql_levels``)."""
    if not 1 <= len(steps) <= 20:
        raise BadQuery("steps: give 1 to 20 comma-separated page paths or event names")
    if by not in (None, "", "channel"):
        raise BadQuery("by: only 'channel' is supported")
    db = storage.database
    p: dict[str, Any] = {"s": site_id, "w": window_s}
    cond_list = [_step_condition(i, s, p) for i, s in enumerate(steps)]
    where = _range("timestamp", p, since, until) + _only_devices(db, persona, p, "anonymous_id")
    rows = (
        _native_levels(storage, steps, cond_list, where, p, window_s, bool(by), conf or AnalysisSettings())
        if compiled.funnel_rows is not None
        else _sql_levels(storage, cond_list, where, p, bool(by))
    )
    totals = [0] * len(steps)
    by_channel: dict[str, list[int]] = defaultdict(lambda: [0] * len(steps))
    for channel, level, n in rows:
        for i in range(level):
            totals[i] += n
            by_channel[channel or "Direct"][i] += n
    out_steps = [
        {"step": s, "count": totals[i], "conversion": round(totals[i] / totals[0], 4) if totals[0] else 0.0}
        for i, s in enumerate(steps)
    ]
    return {"steps": out_steps, "window_s": window_s, "by": dict(by_channel) if by else {}}


def _sql_levels(
    storage: Storage, cond_list: list[str], where: str, p: dict[str, Any], by: bool
) -> list[tuple[str, int, int]]:
    """(first channel, level, contacts) by windowFunnel, the step rows read once and grouped by
    contact: the few shared devices get theirs from the map, as two arrays given to transform() (a
    join of every step row with the map cost ~6 % more CPU at 100M events and 10-35 % more at 10M,
    bench/RESULTS.md 2026-12-05 "funnel and attribution at 100M")."""
    db = storage.database
    relevant = " OR ".join(cond_list + (["kind = 'entry'"] if by else []))
    step_rows = f" FROM {db}.step_events WHERE site_id = {{s:String}} AND ({relevant}){where}"
    channel = "argMinIf(step, timestamp, kind = 'entry')" if by else "''"
    rows = _q(
        storage,
        f"WITH (SELECT (groupArray(device), groupArray(contact)) FROM ({_shared_map(db)})) AS shared"
        f" SELECT channel, level, count() AS n FROM ("
        f" SELECT {channel} AS channel,"
        f" windowFunnel({{w:UInt64}})(toDateTime(timestamp), {', '.join(cond_list)}) AS level"
        f" FROM (SELECT device, kind, step, timestamp{step_rows})"
        f" GROUP BY transform(device, shared.1, shared.2, device)"
        f") WHERE level > 0 GROUP BY channel, level" + _NO_KEY_SETS,
        p,
    )
    return [(r["channel"], int(r["level"]), int(r["n"])) for r in rows]


def _native_refusal(what: str, exc: ValueError, kept: int, max_rows: int) -> Exception:
    """The error for a ValueError of trailmark/native's count of ``what``: more rows than
    ``max_rows`` (a BadQuery: narrow the read), or bytes it cannot read (a QueryError)."""
    if kept >= max_rows:
        return BadQuery(
            f"this {what} reads more than {max_rows:,} rows (analysis.max_memory_bytes);"
            " narrow it with since/until or a persona"
        )
    return QueryError(f"{what} rows: {exc}")


# A funnel's rows as trailmark/native reads them: 16 bytes each as kept, and while counted each
# thread moves one of 64 parts of them into a space of its own (1/32 of them more on two threads)
# beside the parts' unfilled segments (4 MB at most): analysis.max_memory_bytes allows this many
# bytes per row, a third of it left for the rest of the read.
_NATIVE_ROW_BYTES = 24


def _native_levels(
    storage: Storage,
    steps: list[str],
    cond_list: list[str],
    where: str,
    p: dict[str, Any],
    window_s: int,
    by: bool,
    conf: AnalysisSettings,
) -> list[tuple[str, int, int]]:
    """(first channel, level, contacts) counted by trailmark/native (src/funnel.rs) from the step rows, streamed
    in ClickHouse's Native format: each row's device hash, time in ms and the bit mask of the steps
    it meets, one ``UNION ALL`` branch per distinct step (its rows are one range of the primary key,
    and its mask a constant: 0.4 s of CPU less than testing every row against every step, at 100M
    events). At 100M events (34M step rows of 14M devices) windowFunnel's hash table of per-group
    event lists cost ~7 s of CPU; streaming the rows ~1.4 s and counting them ~2 s (bench/RESULTS.md
    2026-12-07 "the funnel counted natively"). The shared devices (``_shared_map``) stream first:
    the native side counts each as its contact. By channel, the arrivals stream last, and each
    contact counted keeps its first (as ``argMinIf(step, timestamp, kind = 'entry')``)."""
    assert compiled.funnel_rows is not None
    db = storage.database
    max_rows = max(1, int(conf.max_memory_bytes) // _NATIVE_ROW_BYTES)
    threads = max(1, int(conf.max_threads))
    limits = {"max_execution_time": float(conf.max_execution_s), "max_threads": threads}
    limits_sets = {**limits, "use_index_for_in_with_subqueries": 0}  # see _NO_KEY_SETS
    counter = compiled.funnel_rows(len(cond_list), window_s, max_rows, by)
    bits: dict[str, int] = {}  # a step's condition (of its first place) -> the bits of its places
    for i, step in enumerate(steps):
        first = cond_list[steps.index(step)]
        bits[first] = bits.get(first, 0) | 1 << i
    width = 8 if len(steps) <= 8 else 16 if len(steps) <= 16 else 32
    sql = " UNION ALL ".join(
        f"SELECT device, toUnixTimestamp64Milli(timestamp) AS ms, toUInt{width}({mask}) AS mask"
        f" FROM {db}.step_events WHERE site_id = {{s:String}} AND {cond}{where}"
        for cond, mask in bits.items()
    )

    def stream(query: str, settings: dict[str, Any], into: Callable[[bytes], None]) -> None:
        with storage.native_blocks(query, p, settings=settings) as blocks:
            for block in blocks:
                into(block)

    try:
        stream(f"SELECT device, contact FROM ({_shared_map(db)})", limits, counter.shared)
        stream(sql, limits_sets, counter.feed)
        levels = counter.levels(threads)
        if by:
            arrivals = (
                f"SELECT device, toUnixTimestamp64Milli(timestamp) AS ms, step AS channel FROM {db}.step_events"
                f" WHERE site_id = {{s:String}} AND kind = 'entry'{where}"
            )
            stream(arrivals, limits_sets, counter.arrivals)
            return counter.channels(threads)
    except ValueError as exc:
        raise _native_refusal("funnel", exc, counter.rows, max_rows) from exc
    return [("", level, n) for level, n in enumerate(levels) if level and n]


def paths(
    storage: Storage,
    site_id: str,
    start: str | None,
    depth: int,
    limit: int,
    since: str | None = None,
    until: str | None = None,
    persona: ContactSet | None = None,
) -> dict[str, Any]:
    """The most common sequences of pages/events within sessions, from ``start`` (or the entry);
    ``persona``: the sessions of that set's contacts."""
    if not 2 <= depth <= 10:
        raise BadQuery("depth: 2 to 10")
    db = storage.database
    p: dict[str, Any] = {"s": site_id, "depth": depth, "limit": limit, "from": start or ""}
    where = _range("timestamp", p, since, until) + _only_devices(db, persona, p, "anonymous_id")
    rows = _q(
        storage,
        f"SELECT path, count() AS n FROM ("
        f" SELECT arraySlice(steps, if({{from:String}} = '', 1, indexOf(steps, {{from:String}})), {{depth:UInt8}})"
        f" AS path FROM ("
        f"  SELECT arrayMap(x -> x.2, arraySort(x -> x.1, groupArray((timestamp,"
        f"   if(type IN ('page', 'screen'), page_path, event))))) AS steps"
        f"  FROM {db}.events WHERE site_id = {{s:String}} AND session_id != '' AND NOT is_bot"
        f"  AND (type IN ('page', 'screen') OR (type = 'track' AND NOT startsWith(event, '$'))){where}"
        f"  GROUP BY session_id)"
        f" WHERE {{from:String}} = '' OR has(steps, {{from:String}}))"
        f" GROUP BY path ORDER BY n DESC, path LIMIT {{limit:UInt32}}",
        p,
    )
    links: dict[tuple[str, str], int] = defaultdict(int)
    for r in rows:
        for i, (a, b) in enumerate(zip(r["path"], r["path"][1:], strict=False)):
            links[(f"{i + 1}:{a}", f"{i + 2}:{b}")] += int(r["n"])
    return {
        "paths": [{"path": r["path"], "count": int(r["n"])} for r in rows],
        "links": [{"source": a, "target": b, "value": v} for (a, b), v in sorted(links.items(), key=lambda x: -x[1])],
    }


# Credit per touch in ClickHouse, the same rules as attribution.weights (the Python reference):
# ``win`` is the conversion's touches in time order, ``n`` their count, ``i`` a 1-based position; a
# touch is (time, direct: its channel is Direct or empty, the hash of its key).
_SQL_WEIGHTS: dict[str, str] = {
    "first_touch": "arrayMap(i -> toFloat64(i = 1), arrayEnumerate(win))",
    "last_touch": "arrayMap(i -> toFloat64(i = n), arrayEnumerate(win))",
    "last_non_direct": "arrayMap(i -> toFloat64(i = if(arrayLastIndex(x -> NOT x.2, win) = 0, n,"
    " arrayLastIndex(x -> NOT x.2, win))), arrayEnumerate(win))",
    "linear": "arrayMap(i -> 1 / n, arrayEnumerate(win))",
    "time_decay": "arrayMap(r -> r / arraySum(decay), decay)",
    "position_based": "arrayMap(i -> multiIf(n = 1, 1., n = 2, 0.5, i = 1 OR i = n, 0.4, 0.2 / (n - 2)),"
    " arrayEnumerate(win))",
}
_BY = ("channel", "source", "medium", "campaign")


def _key_names(db: str, by: str) -> str:
    """(hash, name) of every ``by`` value of the site's session touches: the credited keys travel as
    hashes (``_per_conversion``) and get their names back here. The values are LowCardinality: the
    distinct ones cost a pass over their dictionary keys (10-20 ms of CPU at 10M events)."""
    return (
        f"SELECT cityHash64(v) AS h, v AS name FROM (SELECT DISTINCT toString({by}) AS v"
        f" FROM (SELECT DISTINCT {by} FROM {db}.session_touches WHERE site_id = {{s:String}}))"
    )


# The count path's rows as two numbers each (``_per_conversion``): one array of UInt64 per group costs a
# fraction of an array of tuples (which ClickHouse keeps serialized), and the pairs sort and compare as
# numbers. ``t`` is the row's time in ms since 1900-01-01 (DateTime64's first day: 44 bits to 2299)
# times 2^20, plus 18 bits of its tag (a touch's session hash; 0 for a conversion) times 4, plus its
# flags: 2 for a conversion, 1 for a direct touch. ``k`` is a touch's key hash or a conversion's
# message hash. A touch stored twice is the same pair (counted once); two of a contact's touches at
# the same millisecond with the same key and flags are one only if their sessions' 18 bits agree too.
_MS_BEFORE_1970 = 2208988800000


def _packed_time(ms: str, flags: str, tag: str) -> str:
    """``t`` of a row at ``ms`` (ms since 1970) with its ``flags`` and ``tag`` (the session's hash)."""
    return f"(toUInt64({ms} + {_MS_BEFORE_1970}) * 1048576 + bitAnd({tag}, 262143) * 4 + {flags})"


def _unpacked_s(t: str) -> str:
    """Epoch seconds (Float64) of a packed ``t``: the same value as the ms column divided by 1000."""
    return f"(toFloat64(toInt64(intDiv({t}, 1048576)) - {_MS_BEFORE_1970}) / 1000)"


def _touches_read(db: str, converting: str, shared: str, window: str) -> str:
    """The session touches (``FROM ...``) of the devices ``converting`` and ``shared`` name, tested
    against one set of both (two sets cost a third more CPU in that scan at 100M events)."""
    return (
        f" FROM {db}.session_touches WHERE site_id = {{s:String}}"
        f" AND device IN (SELECT device FROM ({converting}) UNION ALL {shared}){window}"
    )


def _counted_rows(db: str, conversions: str, by: str, span: str, window: str) -> str:
    """The rows attribution counts, as numbers: (device, ms since 1970, session hash, flags, k)
    (``_packed_time`` makes ``t`` of the middle three): the conversions of ``conversions`` (flag 2,
    session 0, ``k`` their message's hash) and the session touches of the devices with a conversion
    in the range (``span``) and of the shared devices (``_shared_hashes``), ``k`` the hash of their
    ``by`` value. Grouped in ClickHouse (``_per_conversion``) or by trailmark/native
    (``_native_credits``, which packs ``t`` itself: the packing cost ClickHouse 60 ms of CPU at 10M
    events, a fifth of the stream)."""
    converting = (
        f"SELECT device FROM {db}.step_events WHERE site_id = {{s:String}}"
        f" AND kind = 'track' AND step = {{conv:String}}{span}"
    )
    # the devices with a conversion in the range (a device alone on its contact with none would make a
    # group with no conversion, which is dropped); not narrowed to a persona, whose set would be
    # built a second time
    direct = "channel IN ('Direct', '')"
    return (
        "SELECT device, toUnixTimestamp64Milli(timestamp) AS ms, toUInt64(0) AS session, toUInt8(2) AS flags,"
        f" cityHash64(message_id) AS k FROM ({conversions})"
        f" UNION ALL SELECT device, toUnixTimestamp64Milli(timestamp), session, toUInt8({direct}), cityHash64({by})"
        + _touches_read(db, converting, _shared_hashes(db), window)
    )


def _per_conversion(
    db: str, conversions: str, model: str, by: str, *, named: bool, span: str = "", window: str = ""
) -> str:
    """One row per conversion of ``conversions`` (rows of device, anonymous_id, message_id, timestamp): its
    time ``at``, the touches ``win`` credited, their ``keys`` (cityHash64 of the ``by`` value, of '' for
    none: ``_key_names`` names them) and weights ``ws``; ``named`` (the details) adds the contact id
    and the message id.

    Only the touches of converting contacts matter (12 % of the contacts in bench/journeys.py): the
    session touches (session_touches, migration 017) of the converting devices and of the devices
    that share a contact with another (``_shared_map``, a few per cent), read once and grouped with
    the conversions by contact: a shared device by its current contact's hash, every other device by
    its own (it is its contact). A touch stored twice counts once, and so does a conversion.
    A touch is grouped as numbers only (its time, whether its channel is direct, its key's hash); the
    counts (not ``named``) group each row as two UInt64 (``_packed_time``): a group's two arrays
    of numbers cost 22-24 % less CPU at 100M events than its arrays of tuples (bench/RESULTS.md
    2026-12-07 "attribution's rows as numbers"). With a range, ``span``
    is its condition on the conversions' ``timestamp`` and ``window`` one on session_touches' that
    holds every touch those conversions can credit: the other touches are left unread."""
    epoch = "toFloat64(toUnixTimestamp64Milli(timestamp)) / 1000"
    direct = "channel IN ('Direct', '')"
    if named:  # every converting device's contact id too (a device alone is its own contact either way)
        # the details' conversions are a few (DETAILS_LIMIT): the touches of their contacts only
        converting = f"SELECT device FROM ({conversions})"
        shared = (
            f"SELECT device FROM ({_shared_map(db)}) WHERE contact IN"
            f" (SELECT contact FROM ({_shared_map(db)}) WHERE device IN ({converting}))"
        )
        touches_read = _touches_read(db, converting, shared, window)
        identities = _shared_map(db, also=f"SELECT anonymous_id FROM ({conversions})")
        at = "conv.3"
        grouped = (
            "SELECT arrayDistinct(groupArrayIf((e.device, e.message_id, e.at), e.is_conversion)) AS conversions,"
            " any(if(m.contact = 0, concat('anon:', e.anonymous_id), m.name)) AS contact_id,"
            " arraySort(x -> x.1, arrayMap(x -> x.2, arrayDistinct(groupArrayIf((e.session,"
            " (e.at, e.direct, e.key)), NOT e.is_conversion)))) AS touches"
            " FROM (SELECT device, anonymous_id, true AS is_conversion, message_id,"
            f" toUInt64(0) AS session, {epoch} AS at, false AS direct, toUInt64(0) AS key FROM ({conversions})"
            f" UNION ALL SELECT device, anonymous_id, false, '', session, {epoch}, {direct},"
            f" cityHash64({by}){touches_read}) AS e"
        )
    else:  # counted: each row as two numbers, conversions with flag 2
        identities = _shared_map(db)
        at = _unpacked_s("conv.1")
        grouped = (
            f"SELECT arrayCompact(arraySort(arrayZip(groupArray({_packed_time('e.ms', 'e.flags', 'e.session')}),"
            " groupArray(e.k)))) AS rows,"
            " arrayFilter(x -> bitAnd(x.1, 2) != 0, rows) AS conversions,"
            f" arrayMap(x -> ({_unpacked_s('x.1')}, bitAnd(x.1, 1) = 1, x.2),"
            " arrayFilter(x -> bitAnd(x.1, 2) = 0, rows)) AS touches"
            f" FROM ({_counted_rows(db, conversions, by, span, window)}) AS e"
        )
    return (
        f"SELECT{' contact_id,' if named else ''} conv.2 AS message_id, {at} AS at,"
        f" arrayFilter(x -> x.1 >= at - {{lb:Float64}} AND x.1 <= at + 0.001, touches) AS hits,"
        f" if(empty(hits), [(at, true, cityHash64(''))], hits) AS win, length(win) AS n,"
        f" arrayMap(x -> pow(2., -greatest(0., at - x.1) / {{hl:Float64}}), win) AS decay,"
        f" {_SQL_WEIGHTS[model]} AS ws, arrayMap(x -> x.3, win) AS keys"
        f" FROM ({grouped}"
        f"  LEFT ANY JOIN ({identities}) AS m ON m.device = e.device"
        f"  GROUP BY {_WHO} HAVING notEmpty(conversions)"
        f" ) ARRAY JOIN conversions AS conv"
    )


# Attribution's rows as trailmark/native keeps them: 24 bytes each, in 64 KiB segments (the buckets'
# unfilled ones 16 MB at most), and while credited each thread copies one bucket of 256 at a time into a
# space of its own: analysis.max_memory_bytes allows this many bytes per row, half of it left for the
# rest of the read.
_NATIVE_CREDIT_ROW_BYTES = 48


def _native_credits(
    storage: Storage, counted: str, model: str, by: str, p: dict[str, Any], conf: AnalysisSettings
) -> list[dict[str, Any]]:
    """(key, credit, conversions) rows as the ClickHouse count makes them, counted by trailmark/native
    (src/attribution.rs) from the rows of ``counted`` (``_counted_rows``) streamed in the Native
    format, the shared devices' map (``_shared_map``) first. The grouping by contact and the arrays
    per conversion cost ClickHouse 0.2-0.3 s of CPU at 10M events, of a read's 0.6 s; natively the
    read takes 25-35 % less CPU (bench/RESULTS.md 2026-12-08 "Attribution counted natively")."""
    assert compiled.attribution_rows is not None
    db = storage.database
    max_rows = max(1, int(conf.max_memory_bytes) // _NATIVE_CREDIT_ROW_BYTES)
    threads = max(1, int(conf.max_threads))
    limits = {"max_execution_time": float(conf.max_execution_s), "max_threads": threads}
    counter = compiled.attribution_rows(max_rows)
    started = time.monotonic()
    try:
        with storage.native_blocks(f"SELECT device, contact FROM ({_shared_map(db)})", p, settings=limits) as blocks:
            for block in blocks:
                counter.shared(block)
        settings = {**limits, "use_index_for_in_with_subqueries": 0}  # see _NO_KEY_SETS
        with storage.native_blocks(counted, p, settings=settings) as blocks:
            for block in blocks:
                counter.feed(block)
        left = float(conf.max_execution_s) - (time.monotonic() - started)
        credits = counter.credit(model, float(p["lb"]), float(p["hl"]), threads, max(0.0, left))
    except TimeoutError:
        raise BadQuery(
            f"this attribution takes longer than {conf.max_execution_s:g} s (analysis.max_execution_s);"
            " narrow it with since/until or a persona"
        ) from None
    except ValueError as exc:
        raise _native_refusal("attribution", exc, counter.rows, max_rows) from exc
    # the keys' hashes get their names back (a key of no name, and a conversion with no touch: none)
    names = {int(r["h"]): r["name"] for r in _q(storage, _key_names(db, by), p)}
    merged: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for key, credit, conversions in credits:
        totals = merged[names.get(key) or p["none"]]
        totals[0] += credit
        totals[1] += conversions
    return [{"key": k, "credit": c, "conversions": n} for k, (c, n) in merged.items()]


DETAILS_LIMIT = 10_000  # conversions listed by attribution(details=True), the first in time


def attribution(
    storage: Storage,
    site_id: str,
    conversion: str,
    model: str,
    by: str,
    lookback_days: int,
    half_life_days: float,
    since: str | None = None,
    until: str | None = None,
    details: bool = False,
    persona: ContactSet | None = None,
    conf: AnalysisSettings | None = None,
) -> dict[str, Any]:
    """Credit per channel/source/campaign for ``conversion`` events, over the session-entry
    touchpoints of the same contact in the lookback window before each conversion. The rows are
    read in ClickHouse and counted by trailmark/native where it is built (``_native_credits``), else
    in ClickHouse (arrays per conversion, ``_per_conversion``). ``persona``: only the conversions of
    contacts in that set (and the total is theirs); ``conf``: the analysis limits (its defaults when
    None)."""
    if model not in MODELS:
        raise BadQuery(f"model: use one of {', '.join(MODELS)}")
    if by not in _BY:
        raise BadQuery("by: channel, source, medium or campaign")
    db = storage.database
    p: dict[str, Any] = {
        "s": site_id,
        "conv": conversion,
        "lb": lookback_days * 86400.0,
        "hl": half_life_days * 86400.0,
    }
    where = _range("timestamp", p, since, until)
    # the conversions of the persona's contacts: their touches follow (only converting contacts' are read)
    who = _only_devices(db, persona, p, "anonymous_id")
    # the conversions from step_events (migration 018) by primary key; a row stored twice (a backfill
    # run again) counts once: _per_conversion keeps one of each (message, time) in a contact, the rows
    # FINAL would collapse (without FINAL: 50 ms less CPU at 10M events)
    conversions = (
        f"SELECT device, anonymous_id, message_id, timestamp FROM {db}.step_events"
        f" WHERE site_id = {{s:String}} AND kind = 'track' AND step = {{conv:String}}{where}{who}"
    )
    # a conversion in [since, until) credits touches in [its time - lookback, its time]: with a range,
    # touches outside [since - lookback, until] are left unread (a second of margin for the float
    # seconds the windows are compared in)
    window = ""
    if since:
        window += (
            " AND timestamp >= parseDateTime64BestEffort({since:String}, 3)"
            " - toIntervalSecond(toInt64(ceil({lb:Float64})) + 1)"
        )
    if until:
        window += " AND timestamp <= parseDateTime64BestEffort({until:String}, 3) + toIntervalSecond(1)"
    p["none"] = "Direct" if by == "channel" else "(none)"
    if compiled.attribution_rows is not None:
        rows = _native_credits(
            storage, _counted_rows(db, conversions, by, where, window), model, by, p, conf or AnalysisSettings()
        )
    else:
        per_conversion = _per_conversion(db, conversions, model, by, named=False, span=where, window=window)
        # every conversion has one row per touch credited: counting their first touches counts them,
        # in the same query (a second read of the conversions cost 50-60 ms of CPU at 10M events); the
        # keys' hashes get their names back (a key of no name, and a conversion with no touch: none)
        rows = _q(
            storage,
            "SELECT if(k.name = '', {none:String}, k.name) AS key, sum(r.credit) AS credit,"
            " sum(r.conversions) AS conversions"
            f" FROM (SELECT key, sum(w) AS credit, countIf(i = 1) AS conversions FROM ({per_conversion})"
            f" ARRAY JOIN keys AS key, ws AS w, arrayEnumerate(ws) AS i GROUP BY key) AS r"
            f" LEFT ANY JOIN ({_key_names(db, by)}) AS k ON k.h = r.key GROUP BY key" + _NO_KEY_SETS,
            p,
        )
    total = sum(int(r["conversions"]) for r in rows)
    out: dict[str, Any] = {
        "model": model,
        "conversion": conversion,
        "lookback_days": lookback_days,
        "by": by,
        "half_life_days": half_life_days if model == "time_decay" else None,
        "total_conversions": int(total),
        "rows": [
            {
                "key": r["key"],
                "credit": round(float(r["credit"]), 6),
                "share": round(float(r["credit"]) / total, 6) if total else 0.0,
            }
            for r in sorted(rows, key=lambda r: (-float(r["credit"]), r["key"]))
            if float(r["credit"]) > 0
        ],
    }
    if details:
        # the first DETAILS_LIMIT conversions in time, each once, chosen before their touches are read
        # (all of them were grouped first: 1.4 s of CPU at 10M events for 10,000 listed); found once,
        # as a scalar, and read from it in the four places _per_conversion names them
        first = (
            f"SELECT groupArray((device, anonymous_id, message_id, timestamp)) FROM (SELECT DISTINCT device,"
            f" anonymous_id, message_id, timestamp FROM ({conversions}) ORDER BY timestamp LIMIT {DETAILS_LIMIT})"
        )
        listed = (
            "SELECT c.1 AS device, c.2 AS anonymous_id, c.3 AS message_id, c.4 AS timestamp"
            " FROM (SELECT arrayJoin(listed) AS c)"
        )
        named = _per_conversion(db, listed, model, by, named=True, window=window)
        convs = _q(
            storage,
            f"WITH ({first}) AS listed SELECT contact_id, message_id, keys, ws FROM ({named}) ORDER BY at"
            + _NO_KEY_SETS,
            p,
        )
        names = {int(r["h"]): r["name"] for r in _q(storage, _key_names(db, by), p)}
        out["conversions"] = []
        for c in convs:
            split: dict[str, float] = defaultdict(float)
            for k, w in zip(c["keys"], c["ws"], strict=True):
                split[names.get(int(k)) or p["none"]] += float(w)
            out["conversions"].append(
                {"contact_id": c["contact_id"], "message_id": c["message_id"], "credits": dict(split)}
            )
    return out


def pain_points(storage: Storage, site_id: str, limit: int = 10, persona: ContactSet | None = None) -> dict[str, Any]:
    """Exit pages with their exit rates, where contacts stop per stage, rage clicks and JS errors;
    ``persona``: of the contacts of that set only."""
    db = storage.database
    p: dict[str, Any] = {"s": site_id, "limit": limit}
    mine = _only(db, persona, p, "contact_id")  # sessions
    devices = _only_devices(db, persona, p, "anonymous_id")  # events
    exits = _q(
        storage,
        f"SELECT x.page AS page, x.exits AS exits, v.pageviews AS pageviews,"
        f" round(x.exits / greatest(v.pageviews, 1), 4) AS exit_rate FROM"
        f" (SELECT exit_page AS page, count() AS exits FROM {db}.sessions WHERE site_id = {{s:String}}"
        f"  AND exit_page != ''{mine} GROUP BY page) AS x"
        f" INNER JOIN (SELECT page_path AS page, count() AS pageviews FROM {db}.events"
        f"  WHERE site_id = {{s:String}} AND type = 'page' AND NOT is_bot{devices} GROUP BY page) AS v"
        " ON v.page = x.page"
        " ORDER BY exits DESC, exit_rate DESC, page LIMIT {limit:UInt32}",
        p,
    )
    current = current_stages(storage, site_id)
    last_exit = _q(
        storage,
        f"SELECT contact_id, argMax(exit_page, end) AS page FROM {db}.sessions WHERE site_id = {{s:String}}"
        f"{mine} GROUP BY contact_id",
        p,
    )
    stuck: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in last_exit:
        stage = current.get(r["contact_id"])
        if stage and stage != STAGES[-1] and r["page"]:
            stuck[stage][r["page"]] += 1
    dropoff = []
    for stage in STAGES[:-1]:
        pages = sorted(stuck[stage].items(), key=lambda kv: (-kv[1], kv[0]))
        dropoff.append(
            {
                "stage": stage,
                "stuck_contacts": sum(stuck[stage].values()),
                "top_exit_pages": [{"page": pg, "count": n} for pg, n in pages[:limit]],
            }
        )
    rage = _q(
        storage,
        f"SELECT page_path AS page, JSONExtractString(properties, 'selector') AS selector, count() AS count"
        f" FROM {db}.events WHERE site_id = {{s:String}} AND event = '$rage_click'{devices} GROUP BY page, selector"
        " ORDER BY count DESC, page LIMIT {limit:UInt32}",
        p,
    )
    errors = _q(
        storage,
        f"SELECT JSONExtractString(properties, 'message') AS message, JSONExtractString(properties, 'source')"
        f" AS source, count() AS count FROM {db}.events WHERE site_id = {{s:String}} AND event = '$error'"
        f"{devices} GROUP BY message, source ORDER BY count DESC, message LIMIT {{limit:UInt32}}",
        p,
    )
    return {"exit_pages": exits, "stage_dropoff": dropoff, "rage_clicks": rage, "errors": errors}
