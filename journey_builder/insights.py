"""SQL pieces shared by the journey-method reads (retention, personas, stage KPIs, moments of truth,
feedback): the ClickHouse limits every one of them runs under, a contact's stage history, the stage a
contact was in at a given time, and parameter checks.

Every piece takes its values as query parameters (``{name:Type}``); only names of our own (columns,
numbers we formatted) are put into the SQL text.
"""

from __future__ import annotations

from typing import Any

from journey_builder.analytics import BadQuery, _contact, _join
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


def stage_history(db: str, persona_filter: str = "") -> str:
    """Per contact: ``hist``, its stage entries ``(at, stage index 1..5)`` in time order, each stage's
    first entry across the contact's devices. Read from ``stage_transitions_data`` with the one-site
    identity join of analytics.py: 3-7 times faster than the ``stage_transitions`` view, which joins
    the whole ``identity_map`` (measured at 300k events), with the same rows."""
    return (
        f"SELECT contact_id, arraySort(x -> x.1, groupArray((at, idx))) AS hist FROM ("
        f" SELECT {_contact('t')} AS contact_id, toUInt8(indexOf({STAGE_LIST}, t.stage)) AS idx,"
        f" min({epoch('t.entered_at')}) AS at"
        f" FROM (SELECT anonymous_id, stage, entered_at FROM {db}.stage_transitions_data AS t"
        f"  WHERE t.site_id = {{s:String}} AND indexOf({STAGE_LIST}, t.stage) > 0) AS t{_join(db, 't')}"
        f" GROUP BY contact_id, idx) WHERE 1{persona_filter} GROUP BY contact_id"
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
