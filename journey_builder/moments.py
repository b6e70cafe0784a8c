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
    p: dict[str, Any] = {"s": site_id, "conv": conversions, "support": support}
    only = personas.filter_sql(db, conf, p, persona, "contact_id")
    hist = stage_history(db, only)
    # each contact's first conversion, from the days of its devices' conversion events (migration 020)
    conv = (
        f"SELECT {_contact('d')} AS contact_id, min({epoch('d.first_at')}) AS conv_at"
        f" FROM (SELECT anonymous_id, first_at FROM {db}.device_days AS d WHERE d.site_id = {{s:String}}"
        f" AND d.kind = 'event' AND d.name IN {{conv:Array(String)}}) AS d{_join(db, 'd')} GROUP BY contact_id"
    )
    keys = (
        "arrayFilter(k -> k.2 != '', [('page', if(e.type IN ('page', 'screen'), e.page_path, '')),"
        " ('event', if(e.type = 'track' AND NOT has({conv:Array(String)}, e.event)"
        " AND (NOT startsWith(e.event, '$') OR e.event = '$form_submit'), e.event, '')),"
        " ('channel', if(e.channel IN ('', 'Internal'), '', toString(e.channel)))])"
    )
    # per contact, every (kind, name, time) of its moments. Read from events: device_days holds the
    # same times, but as one array per device, day and moment, which costs more to regroup by contact
    # than the events themselves (measured at 1M events, bench/RESULTS.md)
    had = (
        f"SELECT {_contact('e')} AS contact_id, groupArray((k.1, k.2, {epoch('e.timestamp')})) AS had"
        f" FROM (SELECT anonymous_id, timestamp, {keys} AS ks FROM {db}.events AS e"
        f"  WHERE e.site_id = {{s:String}} AND NOT e.is_bot) AS e{_join(db, 'e')}"
        " ARRAY JOIN e.ks AS k GROUP BY contact_id"
    )
    # one row per contact (its history, first conversion and moments), marked with what it counts
    # for: (stage, '', '') for each stage it entered before converting (the stage's population), and
    # (stage, kind, name) for each moment it had in that stage before converting, each pair once
    marks = (
        "arrayConcat(arrayMap(st -> (st.2, '', ''), arrayFilter(st -> c.conv_at = 0 OR c.conv_at >= st.1, c.hist)),"
        " arrayDistinct(arrayFilter(x -> x.1 > 0, arrayMap(m -> (if(c.conv_at = 0 OR m.3 < c.conv_at,"
        f" {stage_at('c.hist', 'm.3')}, toUInt8(0)), m.1, m.2), hm.had))))"
    )
    rows = query(
        storage,
        conf,
        f"SELECT x.1 AS idx, x.2 AS kind, x.3 AS name, count() AS n, countIf(conv_at > 0) AS converted FROM ("
        f" SELECT c.conv_at AS conv_at, {marks} AS marks FROM ("
        f"  SELECT h.contact_id AS contact_id, h.hist AS hist, cv.conv_at AS conv_at"
        f"  FROM ({hist}) AS h LEFT JOIN ({conv}) AS cv ON cv.contact_id = h.contact_id) AS c"
        f" LEFT JOIN ({had}) AS hm ON hm.contact_id = c.contact_id)"
        " ARRAY JOIN marks AS x GROUP BY idx, kind, name HAVING kind = '' OR n >= {support:UInt32}",
        p,
    )
    population = {int(r["idx"]): (int(r["n"]), int(r["converted"])) for r in rows if r["kind"] == ""}
    found: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        idx, n1 = int(r["idx"]), int(r["n"])
        n, c = population.get(idx, (0, 0))
        if r["kind"] != "" and n > n1:  # someone in the stage without the moment to compare with
            a = int(r["converted"])
            found.setdefault(idx, []).append(
                {"idx": idx, "kind": r["kind"], "name": r["name"], "n1": n1, "a": a, "n2": n - n1, "c": c - a}
            )
    # the max_rows moments with the highest conversion rate per stage (then the most contacts, by name)
    rows = [
        x
        for idx in sorted(found)
        for x in sorted(found[idx], key=lambda x: (-x["a"] / x["n1"], -x["n1"], x["name"]))[: conf.max_rows]
    ]
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
