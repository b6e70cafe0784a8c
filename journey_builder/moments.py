"""Moments of truth: the pages, events and arrival channels whose presence in a stage most raises the
chance that a contact converts, with the counts behind each and a confidence interval.

For each stage S, the population is the contacts that entered S before converting (or never
converted). A contact *has* moment M in S when M happened while S was its furthest stage and before
its first conversion. Then, with ``a`` of ``n1`` contacts with M converting and ``c`` of ``n2``
without M converting, the lift is the ratio of the two rates, ``(a / n1) / (c / n2)``, and its
interval is Katz's log interval for a risk ratio at ``AnalysisSettings.moments_confidence``. A zero
cell would make either infinite, so then 0.5 is added to each of the four cells (Haldane's
correction) for the lift and the interval; the counts are reported as they are.

A moment is listed when at least ``min_support`` contacts have it (``moments_min_support``), and
at least one contact of the stage does not. The SQL keeps the ``max_rows`` moments with the highest
conversion rate per stage; Python computes the lift and the interval and orders them.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

from journey_builder.analytics import BadQuery, _contact, _join
from journey_builder.insights import epoch, query, stage_at, stage_history, stage_name
from journey_builder.personas import Personas
from trailmark.settings import AnalysisSettings
from trailmark.storage.base import Storage

KINDS = ("page", "event", "channel")


def lift(a: int, n1: int, c: int, n2: int, confidence: float) -> tuple[float, float, float]:
    """Risk ratio of converting with vs without a moment, and its Katz log interval."""
    if a == 0 or c == 0 or a == n1 or c == n2:
        fa, fb, fc, fd = a + 0.5, n1 - a + 0.5, c + 0.5, n2 - c + 0.5
    else:
        fa, fb, fc, fd = float(a), float(n1 - a), float(c), float(n2 - c)
    rr = (fa / (fa + fb)) / (fc / (fc + fd))
    se = math.sqrt(1 / fa - 1 / (fa + fb) + 1 / fc - 1 / (fc + fd))
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    return rr, rr * math.exp(-z * se), rr * math.exp(z * se)


def moments(
    storage: Storage,
    site_id: str,
    personas: Personas,
    conf: AnalysisSettings,
    *,
    conversions: list[str],
    min_support: int | None = None,
    limit: int = 20,
    persona: str | None = None,
) -> dict[str, Any]:
    """Per stage, the moments with the highest lift on ``conversions`` (event names)."""
    if not conversions:
        raise BadQuery("conversion: give at least one event name")
    support = conf.moments_min_support if min_support is None else min_support
    if not 1 <= support <= 1_000_000:
        raise BadQuery("min_support: 1 to 1000000")
    if not 1 <= limit <= conf.max_rows:
        raise BadQuery(f"limit: 1 to {conf.max_rows}")
    db = storage.database
    p: dict[str, Any] = {"s": site_id, "conv": conversions, "support": support, "rows": conf.max_rows}
    only = personas.filter_sql(db, conf, p, persona, "contact_id")
    hist = stage_history(db, only)
    conv = (
        f"SELECT {_contact('e')} AS contact_id, min({epoch('e.timestamp')}) AS conv_at"
        f" FROM (SELECT site_id, anonymous_id, timestamp FROM {db}.events AS e WHERE e.site_id = {{s:String}}"
        f" AND NOT e.is_bot AND e.type = 'track' AND e.event IN {{conv:Array(String)}}) AS e{_join(db, 'e')}"
        " GROUP BY contact_id"
    )
    keys = (
        "arrayFilter(k -> k.2 != '', [('page', if(e.type IN ('page', 'screen'), e.page_path, '')),"
        " ('event', if(e.type = 'track' AND NOT has({conv:Array(String)}, e.event)"
        " AND (NOT startsWith(e.event, '$') OR e.event = '$form_submit'), e.event, '')),"
        " ('channel', if(e.channel IN ('', 'Internal'), '', e.channel))])"
    )
    # one row per contact and moment (at most 100 of its times), then the stages it happened in
    had = (
        f"SELECT contact_id, key, groupArray(100)(at) AS ats FROM ("
        f" SELECT {_contact('e')} AS contact_id, {epoch('e.timestamp')} AS at, {keys} AS ks"
        f" FROM (SELECT site_id, anonymous_id, timestamp, type, event, page_path, channel FROM {db}.events AS e"
        f"  WHERE e.site_id = {{s:String}} AND NOT e.is_bot) AS e{_join(db, 'e')})"
        f" ARRAY JOIN ks AS key WHERE 1{only} GROUP BY contact_id, key"
    )
    in_stage = (
        f"arrayDistinct(arrayFilter(i -> i > 0, arrayMap(t -> if(hc.conv_at = 0 OR t < hc.conv_at,"
        f" {stage_at('hc.hist', 't')}, toUInt8(0)), m.ats)))"
    )
    # each contact's stage history and first conversion, joined once per use
    joined = (
        f"SELECT h.contact_id AS contact_id, h.hist AS hist, cv.conv_at AS conv_at"
        f" FROM ({hist}) AS h LEFT JOIN ({conv}) AS cv ON cv.contact_id = h.contact_id"
    )
    rows = query(
        storage,
        conf,
        f"WITH pop AS (SELECT st.2 AS idx, count() AS n, countIf(hc.conv_at > 0) AS c"
        f"  FROM ({joined}) AS hc ARRAY JOIN hc.hist AS st WHERE hc.conv_at = 0 OR hc.conv_at >= st.1 GROUP BY idx)"
        f" SELECT x.idx AS idx, x.key.1 AS kind, x.key.2 AS name, x.n1 AS n1, x.a AS a, pop.n - x.n1 AS n2,"
        f" pop.c - x.a AS c FROM ("
        f" SELECT idx, key, count() AS n1, countIf(conv_at > 0) AS a FROM ("
        f"  SELECT m.key AS key, hc.conv_at AS conv_at, {in_stage} AS stages"
        f"  FROM ({had}) AS m INNER JOIN ({joined}) AS hc ON hc.contact_id = m.contact_id)"
        f" ARRAY JOIN stages AS idx GROUP BY idx, key HAVING n1 >= {{support:UInt32}}) AS x"
        f" INNER JOIN pop ON pop.idx = x.idx WHERE pop.n > x.n1"
        " ORDER BY idx, a / n1 DESC, n1 DESC, name LIMIT {rows:UInt32} BY idx",
        p,
    )
    per: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        a, n1, c, n2 = int(r["a"]), int(r["n1"]), int(r["c"]), int(r["n2"])
        rr, lo, hi = lift(a, n1, c, n2, conf.moments_confidence)
        per.setdefault(stage_name(int(r["idx"])), []).append(
            {
                "kind": r["kind"],
                "name": r["name"],
                "with": n1,
                "with_converted": a,
                "without": n2,
                "without_converted": c,
                "rate_with": round(a / n1, 4),
                "rate_without": round(c / n2, 4),
                "lift": round(rr, 4),
                "ci_low": round(lo, 4),
                "ci_high": round(hi, 4),
            }
        )
    stages = [
        {"stage": s, "moments": sorted(m, key=lambda x: (-x["lift"], -x["with"], x["name"]))[:limit]}
        for s, m in per.items()
    ]
    return {
        "conversions": conversions,
        "min_support": support,
        "confidence": conf.moments_confidence,
        "persona": persona or "",
        "stages": stages,
    }
