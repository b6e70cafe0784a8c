"""Stage KPIs and feedback: per journey stage and per week, contacts entered, moved on, conversion to a
later stage, drop-off, median and p90 time in stage, revenue, purchases and repeat purchase rate; NPS
and CSAT per stage, channel and persona.

Definitions (README "Stage KPIs"):
- a contact *entered* a stage in the week of its first entry (``stage_transitions``);
- it *moved on* when it later entered any later stage (stages may be skipped); the time in stage is
  the time to that next entry, so only contacts that moved on have one;
- a purchase (``AnalysisSettings.purchase_events``) counts for the stage the contact was in when it
  bought (the furthest stage entered by then); ``revenue`` is its ``revenue`` property; a buyer is a
  *repeat* buyer in a week when one of its purchases that week was not its first ever;
- feedback is the ``NPS Answered`` (``score`` 0-10) and ``CSAT Answered`` (``score`` 1-5) events;
  answers out of range are ignored. NPS = % promoters (9-10) - % detractors (0-6); CSAT = % of
  answers 4 or 5. The channel is the answering session's; the stage, the contact's at the answer.

Everything is aggregated in ClickHouse: the stage flow from each contact's first entries (one row per
contact: ``device_stages``, migration 025, its devices grouped by their current contact), counted per
(stage, week) and per stage by ``GROUPING SETS``; purchases counted under (stage, week), (stage,
'all') and (all stages, 'all') by one ``ARRAY JOIN`` of those keys, so the weekly trend and the
totals (distinct buyers included) come from one pass; Python only shapes the answer.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

from journey_builder.analytics import BadQuery, _contact, _join
from journey_builder.insights import (
    NEVER_S,
    contact_group,
    contact_stages,
    epoch,
    query,
    stage_at,
    stage_history,
    stage_name,
)
from journey_builder.personas import Personas
from journey_builder.stages import STAGES
from trailmark.settings import AnalysisSettings
from trailmark.storage.base import Storage

ALL = 255  # the stage index of the all-stages totals row


def _window(weeks: int, until: str | None, conf: AnalysisSettings) -> tuple[date, date]:
    """Whole weeks (Monday to Monday) ending with the one holding ``until`` (default: now)."""
    if not 1 <= weeks <= conf.max_periods:
        raise BadQuery(f"weeks: 1 to {conf.max_periods}")
    try:
        end = datetime.fromisoformat(until).date() if until else datetime.now(UTC).date()
    except ValueError:
        raise BadQuery("to: an ISO date") from None
    last = end - timedelta(days=end.weekday())
    return last - timedelta(weeks=weeks - 1), last + timedelta(weeks=1)


def _hours(seconds: Any, ok: bool) -> float | None:
    return round(float(seconds) / 3600, 3) if ok else None


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def kpis(
    storage: Storage,
    site_id: str,
    personas: Personas,
    conf: AnalysisSettings,
    *,
    weeks: int = 12,
    until: str | None = None,
    persona: str | None = None,
) -> dict[str, Any]:
    """Stage KPIs per week and in total over ``weeks`` whole weeks, and feedback."""
    first, after = _window(weeks, until, conf)
    db = storage.database
    p: dict[str, Any] = {
        "s": site_id,
        "lo": datetime(first.year, first.month, first.day, tzinfo=UTC).timestamp(),
        "hi": datetime(after.year, after.month, after.day, tzinfo=UTC).timestamp(),
        "buy": list(conf.purchase_events),
        "rev": conf.revenue_property,
    }
    only = personas.filter_sql(db, conf, p, persona, "contact_id")
    # the contacts' stage entries (e1..e5): every contact's without its id, or the persona's
    entries = f"SELECT * FROM ({contact_stages(db)}) WHERE 1{only}" if persona else contact_stages(db, ids=False)
    # the three queries are independent: run at once, the answer takes the slowest, not the sum
    pool = ThreadPoolExecutor(3, thread_name_prefix="kpis")
    feedback_job = pool.submit(feedback, storage, site_id, personas, conf, dict(p), persona)
    flow_job = pool.submit(
        query,
        storage,
        conf,
        f"SELECT idx, if(w = 0, 'all', toString(toDate(w))) AS wk, count() AS entered, countIf(moved) AS moved_on,"
        f" quantilesExactInclusiveIf(0.5, 0.9)(dur, moved) AS q FROM ("
        f" SELECT h.1 AS idx, toUInt16(toStartOfWeek(toDateTime(toUInt32(h.2)), 1)) AS w, h.3 < inf AS moved,"
        f"  if(moved, h.3 - h.2, 0.) AS dur"
        f" FROM ({entries})"
        f" ARRAY JOIN arrayFilter(x -> x.2 >= {{lo:Float64}} AND x.2 < {{hi:Float64}}, {_ENTRIES}) AS h)"
        # per stage and week, and per stage over the window (w = 0)
        " GROUP BY GROUPING SETS ((idx, w), (idx))",
        p,
    )
    rev = (
        "if(JSONType(e.properties, {rev:String}) = 'String', toFloat64OrZero(JSONExtractString(e.properties,"
        " {rev:String})), JSONExtractFloat(e.properties, {rev:String}))"
    )
    # the stage histories of buyers only (their devices' rows): the hash join's right side stays as
    # small as the buyers
    bought = (
        f"SELECT anonymous_id FROM {db}.track_events WHERE site_id = {{s:String}} AND event IN {{buy:Array(String)}}"
    )
    week = "toString(toStartOfWeek(toDateTime(toUInt32({})), 1))"
    # a buyer is its contact's hash (insights.contact_group); with a persona, its id too, to filter on
    ids = bool(persona)
    join, g = contact_group(db, "e", ids)
    buyer = f"{_contact('e')} AS contact_id, {g} AS g" if ids else f"{g} AS g"
    buys_job = pool.submit(
        query,
        storage,
        conf,
        f"SELECT g.1 AS idx, g.2 AS wk, count() AS purchases, sum(amount) AS revenue, uniqExact(b_g) AS buyers,"
        f" uniqExactIf(b_g, n > 1) AS repeat_buyers FROM ("
        f" SELECT b.g AS b_g, x.1 AS at, x.2 AS amount, n, {stage_at('h.hist', 'x.1')} AS idx,"
        f"  [(idx, {week.format('x.1')}), (idx, 'all'), (toUInt8(255), 'all')] AS levels"
        f" FROM (SELECT g, arraySort(groupArray((at, amount))) AS buys FROM ("
        f"  SELECT {buyer}, {epoch('e.timestamp')} AS at, {rev} AS amount"
        f"  FROM (SELECT anonymous_id, timestamp, properties FROM {db}.track_events AS e FINAL"
        f"   WHERE e.site_id = {{s:String}} AND e.event IN {{buy:Array(String)}})"
        f"  AS e{join}) WHERE 1{only} GROUP BY g) AS b"
        f" ARRAY JOIN b.buys AS x, arrayEnumerate(b.buys) AS n"
        f" LEFT JOIN ({stage_history(db, only, did=bought, ids=ids)}) AS h ON h.g = b.g"
        f" WHERE x.1 >= {{lo:Float64}} AND x.1 < {{hi:Float64}})"
        " ARRAY JOIN levels AS g GROUP BY g",
        p,
    )
    try:
        flow, buys, answers = flow_job.result(), buys_job.result(), feedback_job.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    weeks_list = [str(first + timedelta(weeks=i)) for i in range(weeks)]
    per: dict[tuple[int, str], dict[str, Any]] = {}
    for r in flow:
        entered, moved = int(r["entered"]), int(r["moved_on"])
        per[(int(r["idx"]), r["wk"])] = {
            "entered": entered,
            "moved_on": moved,
            "drop_off": entered - moved,
            "conversion_rate": _rate(moved, entered),
            "median_hours_in_stage": _hours(r["q"][0], moved > 0),
            "p90_hours_in_stage": _hours(r["q"][1], moved > 0),
        }
    money: dict[tuple[int, str], dict[str, Any]] = {}
    total: dict[str, Any] = _money({})
    for r in buys:
        if int(r["idx"]) == ALL:
            total = _money(r)
        else:
            money[(int(r["idx"]), r["wk"])] = _money(r)
    stages = []
    for i, name in enumerate(STAGES, start=1):
        row = {"stage": name, **_flow(per.get((i, "all"))), **_money_or_zero(money.get((i, "all")))}
        row["trend"] = [{"week": w, **_flow(per.get((i, w))), **_money_or_zero(money.get((i, w)))} for w in weeks_list]
        stages.append(row)
    return {
        "from": str(first),
        "to": str(after),
        "weeks": weeks_list,
        "persona": persona or "",
        "stages": stages,
        "totals": total,
        "feedback": answers,
    }


def _next(i: int) -> str:
    """The time a contact_stages row moved on from stage ``i`` (``e{i}``): its first entry into a later
    stage at or after it (stages may be skipped), ``inf`` if none."""
    later = [f"if(e{j} >= e{i} AND e{j} < {NEVER_S}, e{j}, inf)" for j in range(i + 1, len(STAGES) + 1)]
    return f"least({', '.join(later)})" if len(later) > 1 else (later[0] if later else "inf")


# a contact_stages row's entries as (stage index, entered at, moved on at); a stage never entered
# has its at "never", so the window's filter leaves it out
_ENTRIES = "[" + ", ".join(f"(toUInt8({i}), e{i}, {_next(i)})" for i in range(1, len(STAGES) + 1)) + "]"


def _flow(x: dict[str, Any] | None) -> dict[str, Any]:
    return x or {
        "entered": 0,
        "moved_on": 0,
        "drop_off": 0,
        "conversion_rate": None,
        "median_hours_in_stage": None,
        "p90_hours_in_stage": None,
    }


def _money(r: dict[str, Any]) -> dict[str, Any]:
    buyers = int(r.get("buyers", 0))
    return {
        "purchases": int(r.get("purchases", 0)),
        "revenue": round(float(r.get("revenue", 0.0)), 2),
        "buyers": buyers,
        "repeat_buyers": int(r.get("repeat_buyers", 0)),
        "repeat_purchase_rate": _rate(int(r.get("repeat_buyers", 0)), buyers),
    }


def _money_or_zero(x: dict[str, Any] | None) -> dict[str, Any]:
    return x or _money({})


def feedback(
    storage: Storage,
    site_id: str,
    personas: Personas,
    conf: AnalysisSettings,
    p: dict[str, Any],
    persona: str | None,
) -> dict[str, Any]:
    """NPS and CSAT in the window of ``p`` (lo/hi), overall and per stage, channel and persona. Stage
    histories and persona profiles are computed for the answering contacts only."""
    db = storage.database
    p["nps"], p["csat"] = conf.nps_event, conf.csat_event
    answers = (
        f"SELECT {_contact('e')} AS contact_id, e.session_id AS session_id, {epoch('e.timestamp')} AS at,"
        " if(e.event = {nps:String}, 'nps', 'csat') AS kind,"
        " JSONExtract(e.properties, 'score', 'Nullable(Float64)') AS score"
        f" FROM (SELECT anonymous_id, session_id, timestamp, event, properties FROM {db}.track_events AS e FINAL"
        "  WHERE e.site_id = {s:String} AND e.event IN ({nps:String}, {csat:String})"
        "  AND toUnixTimestamp64Milli(e.timestamp) >= {lo:Float64} * 1000"
        f"  AND toUnixTimestamp64Milli(e.timestamp) < {{hi:Float64}} * 1000) AS e{_join(db, 'e')}"
    )
    only = personas.filter_sql(db, conf, p, persona, "a.contact_id")
    within = f"SELECT contact_id FROM ({answers})"
    answered = (
        f"SELECT anonymous_id FROM {db}.track_events WHERE site_id = {{s:String}} AND event IN ({{nps:String}},"
        " {csat:String}) AND toUnixTimestamp64Milli(timestamp) >= {lo:Float64} * 1000"
        " AND toUnixTimestamp64Milli(timestamp) < {hi:Float64} * 1000"
    )
    hist = stage_history(db, did=answered)  # the answering contacts' (their devices' rows)
    # no answer in the window (a site that asks for none): the persona profiles of nobody would still
    # read every event, so ask the narrow table first
    asked = query(
        storage,
        conf,
        f"SELECT 1 AS x FROM {db}.track_events WHERE site_id = {{s:String}} AND event IN ({{nps:String}},"
        " {csat:String}) AND toUnixTimestamp64Milli(timestamp) >= {lo:Float64} * 1000"
        " AND toUnixTimestamp64Milli(timestamp) < {hi:Float64} * 1000 LIMIT 1",
        p,
    )
    rows = (
        []
        if not asked
        else query(
            storage,
            conf,
            f"SELECT kind, dim, key, count() AS answers, countIf(score >= 9) AS promoters,"
            f" countIf(score <= 6) AS detractors, countIf(score >= 4) AS satisfied, avg(score) AS mean FROM ("
            f" SELECT a.kind AS kind, assumeNotNull(a.score) AS score,"
            f"  [('', ''), ('stage', {stage_at('h.hist', 'a.at')}::String), ('channel', if(sc.channel = '', 'Direct',"
            f"  sc.channel)), ('persona', pm.persona)] AS dims"
            f" FROM ({answers}) AS a"
            f" LEFT JOIN ({hist}) AS h ON h.contact_id = a.contact_id"
            f" LEFT JOIN (SELECT session_id, argMax(channel, version) AS channel FROM {db}.sessions_data"
            f"  WHERE site_id = {{s:String}} AND session_id IN (SELECT session_id FROM {db}.track_events"
            "  WHERE site_id = {s:String}"
            "  AND event IN ({nps:String}, {csat:String})) GROUP BY session_id) AS sc ON sc.session_id = a.session_id"
            f" LEFT JOIN ({personas.profile_sql(db, conf, p, within=within)}) AS pm ON pm.contact_id = a.contact_id"
            " WHERE a.score IS NOT NULL AND a.score = round(a.score)"
            f" AND if(a.kind = 'nps', a.score BETWEEN 0 AND 10, a.score BETWEEN 1 AND 5){only})"
            " ARRAY JOIN dims AS d GROUP BY kind, d.1 AS dim, d.2 AS key ORDER BY kind, dim, answers DESC, key",
            p,
        )
    )
    out: dict[str, Any] = {
        "nps": {"event": conf.nps_event, **_score("nps", {})},
        "csat": {"event": conf.csat_event, **_score("csat", {})},
    }
    for kind in ("nps", "csat"):
        for dim in ("stage", "channel", "persona"):
            out[kind][f"by_{dim}"] = []
    for r in rows:
        kind, dim = r["kind"], r["dim"]
        if dim == "":
            out[kind].update(_score(kind, r))
            continue
        key = stage_name(int(r["key"])) if dim == "stage" else r["key"]
        out[kind][f"by_{dim}"].append({dim: key, **_score(kind, r)})
    return out


def _score(kind: str, r: dict[str, Any]) -> dict[str, Any]:
    n = int(r.get("answers", 0))
    mean = round(float(r["mean"]), 3) if n else None
    if kind == "nps":
        pro, det = int(r.get("promoters", 0)), int(r.get("detractors", 0))
        return {
            "answers": n,
            "promoters": pro,
            "passives": n - pro - det,
            "detractors": det,
            "nps": round(100 * (pro - det) / n, 1) if n else None,
            "mean": mean,
        }
    sat = int(r.get("satisfied", 0))
    return {"answers": n, "satisfied": sat, "csat": round(100 * sat / n, 1) if n else None, "mean": mean}
