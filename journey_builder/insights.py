"""SQL pieces shared by the journey-method reads (retention, personas, stage KPIs, moments of truth,
feedback): the ClickHouse limits every one of them runs under, a contact's stage history (from
``device_stages``, migration 025), the stage a contact was in at a given time, and parameter checks.

Every piece takes its values as query parameters (``{name:Type}``); only names of our own (columns,
numbers we formatted) are put into the SQL text.
"""

from __future__ import annotations

from typing import Any

from journey_builder.analytics import BadQuery, _contact, _join, _shared_hashes, _shared_map, who
from journey_builder.stages import STAGES
from trailmark.settings import AnalysisSettings
from trailmark.storage.base import Storage

STAGE_LIST = "[" + ", ".join(f"'{s}'" for s in STAGES) + "]"  # our own names, no quoting needed


def limits(conf: AnalysisSettings) -> dict[str, Any]:
    """ClickHouse settings for each of these reads, passed as the query's own settings (not a
    ``SETTINGS`` clause): a heavy persona or retention query then stops with TIMEOUT_EXCEEDED or
    MEMORY_LIMIT_EXCEEDED, and the storage adapter knows the limit was ours, so the client gets a
    400 with the reason, not a 503 telling it to retry the same query."""
    return {
        "max_execution_time": float(conf.max_execution_s),
        "max_memory_usage": int(conf.max_memory_bytes),
        "max_threads": max(1, int(conf.max_threads)),
    }


def query(storage: Storage, conf: AnalysisSettings, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """One read, read-only, under the analysis limits."""
    return storage.query(sql, params, readonly=True, settings=limits(conf))


def epoch(col: str) -> str:
    """A DateTime64 column as seconds (Float64), the unit the array arithmetic below uses."""
    return f"toFloat64(toUnixTimestamp64Milli({col})) / 1000"


def millis(col: str) -> str:
    """A DateTime64 column as milliseconds (Int64): ordered as ``epoch`` orders it, cheaper to compare."""
    return f"toUnixTimestamp64Milli({col})"


# device_stages (migration 025): per device, each stage's first entry; a stage not entered holds 2299-12-31
STAGE_COLUMNS = tuple(f"{s.lower()}_at" for s in STAGES)
NEVER_S = 7258118400  # 2200-01-01 in seconds: an entry at or after it is "never"


def contact_group(db: str, alias: str, ids: bool) -> tuple[str, str]:
    """(join, expression): the group of a row of ``alias`` (a table with ``anonymous_id``) as a hash,
    its contact's. With ``ids``, through the whole identity map (cityHash64 of analytics._contact's
    id; the join's ``m.contact_id`` is there for ``_contact``). Without, only the devices that share
    a contact (analytics._shared_map) are joined, to their contact's hash: every other device is a
    contact of its own, grouped by its own hash (two contacts of a site sharing a 64-bit hash would
    count as one, as in analytics._WHO)."""
    if ids:
        return _join(db, alias), f"cityHash64({_contact(alias)})"
    device = f"cityHash64({alias}.anonymous_id)"
    return f" LEFT ANY JOIN ({_shared_map(db)}) AS m ON m.device = {device}", who(device)


def contact_stages(db: str, devices: str = "", ids: bool = True, ms: bool = False) -> str:
    """One row per contact of site ``{s:String}``: ``e1`` .. ``e5``, its first entry into each stage
    (seconds, or with ``ms`` milliseconds as Int64; ``NEVER_S`` seconds or more: never), the earliest
    over its devices' ``device_stages`` rows (migration 025), ``g`` (contact_group's hash) and with
    ``ids`` its ``contact_id`` (analytics._contact's). ``devices``: a condition (`` AND ...``) on
    ``t.anonymous_id`` that keeps every device of each contact wanted.

    One pass over the devices' rows: the identity join and the grouping make contacts of them. Without
    ids, only the devices that share a contact are joined, and every other device is a group of its
    own, grouped by numbers (contact_group)."""
    unit = millis if ms else epoch
    mins = ", ".join(f"{unit(f'min(t.{c})')} AS e{i}" for i, c in enumerate(STAGE_COLUMNS, start=1))
    join, g = contact_group(db, "t", ids)
    head, key = (f"{_contact('t')} AS contact_id, ", ", contact_id") if ids else ("", "")
    return (
        f"SELECT {head}{g} AS g, {mins} FROM {db}.device_stages AS t{join} WHERE t.site_id = {{s:String}}{devices}"
        f" GROUP BY g{key}"
    )


# ``hist`` of a contact_stages row: the entered stages' ``(at, stage index 1..5)``, in stage order
HIST = f"arrayFilter(x -> x.1 < {NEVER_S}, [{', '.join(f'(e{i}, toUInt8({i}))' for i in range(1, len(STAGES) + 1))}])"


def stage_history(db: str, persona_filter: str = "", did: str = "", ids: bool = True) -> str:
    """Per contact: ``hist``, its stage entries ``(at, stage index 1..5)`` in stage order (no read
    depends on the order), each stage's first entry across the contact's devices, from
    ``device_stages`` (contact_stages), its ``g`` and with ``ids`` its ``contact_id``.
    ``persona_filter``: a condition (`` AND ...``) on ``contact_id``. ``did``: a subquery of
    anonymous ids (e.g. the devices that bought): then only the rows of those devices and of the
    devices that share a contact (analytics._shared_hashes) are read, which gives every contact of a
    device in ``did`` (and some contacts of shared devices besides: for the right side of a join on
    the contacts of ``did``)."""
    devices = ""
    if did:
        devices = f" AND (t.anonymous_id IN ({did}) OR cityHash64(t.anonymous_id) IN ({_shared_hashes(db)}))"
    head = "contact_id, g" if ids else "g"
    return (
        f"SELECT {head}, {HIST} AS hist FROM ({contact_stages(db, devices, ids)}) WHERE notEmpty(hist){persona_filter}"
    )


def stage_at(hist: str, at: str) -> str:
    """The index (1..5, 0 = none) of the furthest stage entered at or before ``at`` (seconds)."""
    return f"arrayMax(arrayMap(st -> if(st.1 <= {at}, st.2, toUInt8(0)), arrayPushBack({hist}, (0., toUInt8(0)))))"


def stage_name(index: int) -> str:
    return STAGES[index - 1] if 1 <= index <= len(STAGES) else ""


def event_condition(name: str, key: str, p: dict[str, Any], alias: str = "e") -> str:
    """A page path (``/...``) or an event name, as a condition on ``events`` (the funnel's rule)."""
    if not name:
        return "1"
    if len(name) > 200:
        raise BadQuery("event names and paths: at most 200 characters")
    p[key] = name
    if name.startswith("/"):
        return f"({alias}.type IN ('page', 'screen') AND {alias}.page_path = {{{key}:String}})"
    return f"({alias}.type = 'track' AND {alias}.event = {{{key}:String}})"


def names(values: list[str], what: str, most: int = 20) -> list[str]:
    """Checked list parameters (event names, persona names): bounded in count and length."""
    out = [v.strip() for v in values if v.strip()]
    if len(out) > most or any(len(v) > 200 for v in out):
        raise BadQuery(f"{what}: at most {most} values of at most 200 characters")
    return out
