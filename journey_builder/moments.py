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
from concurrent.futures import ThreadPoolExecutor
from statistics import NormalDist
from typing import Any

from journey_builder.analytics import BadQuery
from journey_builder.insights import NEVER_S, contact_group, contact_stages, millis, query, stage_name
from journey_builder.personas import Personas
from journey_builder.saved import SavedAnswers
from journey_builder.stages import STAGES
from schemas.times import ch_now, from_ch
from trailmark.settings import AnalysisSettings
from trailmark.storage.base import Storage

KINDS = ("page", "event", "channel")
SAVED_FORMAT = 1  # of _counts' answer as saved.py keeps it: a new shape takes a new number (kept ones then go unread)


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
    saved: SavedAnswers | None = None,
    fresh: bool = False,
) -> dict[str, Any]:
    """Per stage, the moments with the highest lift on ``conversions`` (event names). With
    ``saved``, the counts are a kept answer while it is young enough (saved.py; ``fresh``: computed
    now); ``computed_at`` says when they were computed."""
    if not conversions:
        raise BadQuery("conversion: give at least one event name")
    support = conf.moments_min_support if min_support is None else min_support
    if not 1 <= support <= 1_000_000:
        raise BadQuery("min_support: 1 to 1000000")
    if not 1 <= limit <= conf.max_rows:
        raise BadQuery(f"limit: 1 to {conf.max_rows}")
    if persona:
        personas.check(persona)

    def compute() -> dict[str, Any]:
        return _counts(storage, site_id, personas, conf, conversions, support, persona)

    if saved is None:
        counts, computed_at = compute(), from_ch(ch_now())
    else:
        question = {
            "format": SAVED_FORMAT,
            "conversions": sorted(set(conversions)),
            "support": support,
            "persona": persona or "",
            "rules": repr(personas) if persona else "",  # a changed personas file asks anew
            "max_rows": conf.max_rows,
        }
        counts, computed_at = saved.answer(storage, site_id, question, compute, fresh)
    per: dict[str, list[dict[str, Any]]] = {}
    for r in counts["rows"]:
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
        "computed_at": computed_at,
        "stages": stages,
    }


def _counts(
    storage: Storage,
    site_id: str,
    personas: Personas,
    conf: AnalysisSettings,
    conversions: list[str],
    support: int,
    persona: str | None,
) -> dict[str, Any]:
    """``{"rows": [...]}``: per stage, the ``max_rows`` moments with the highest conversion rate
    (then the most contacts, by name), each ``{idx, kind, name, n1, a, n2, c}`` (with the moment:
    contacts, converted; without it: contacts, converted). JSON, so saved.py can keep it."""
    db = storage.database
    p: dict[str, Any] = {"s": site_id, "conv": conversions, "support": support}
    only = personas.filter_sql(db, conf, p, persona, "h.contact_id")
    # the stage populations and the moments are independent: run at once, the answer takes the slowest
    with ThreadPoolExecutor(2, thread_name_prefix="moments") as pool:
        jobs = [pool.submit(query, storage, conf, sql, p) for sql in _queries(db, only)]
        rows = [r for job in jobs for r in job.result()]
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
    return {
        "rows": [
            x
            for idx in sorted(found)
            for x in sorted(found[idx], key=lambda x: (-x["a"] / x["n1"], -x["n1"], x["name"]))[: conf.max_rows]
        ]
    }


NEVER_MS = NEVER_S * 1000  # a stage entry at or after it is "never"


def _queries(db: str, only: str) -> tuple[str, str]:
    """The two reads of ``moments``: each stage's population ``(idx, '', '', n, converted)``, and per
    stage the moments ``(idx, kind, name, n, converted)`` with at least ``{support}`` contacts.
    ``only``: a persona's condition on ``h.contact_id``, else ''.

    Per contact (``g``, a hash): its first entry into each stage (``device_stages``, migration 025)
    and its first conversion (``device_days``); a moment's times are its ``device_days`` rows' (one
    per device, day and moment: the same times the events hold, bots left out; past the site's
    retention a day's row expires at the start of the day on which its events do). Each time is
    joined to its contact's entries and conversion and given the stage the contact was in then (the
    furthest entered by then), one scalar per time: no per-contact arrays, which cost most of the
    read before (bench/RESULTS.md). A contact counts once per (stage, moment): ``uniqExact`` of its hash (two
    contacts of a site sharing a 64-bit hash would count as one, as in analytics._WHO)."""
    ids = bool(only)
    entries = contact_stages(db, ids=ids, ms=True)
    join, g = contact_group(db, "d", ids)
    conv = (
        f"SELECT {g} AS g, min({millis('d.first_at')}) AS conv_at FROM (SELECT anonymous_id, first_at"
        f" FROM {db}.device_days WHERE site_id = {{s:String}} AND kind = 'event' AND name IN {{conv:Array(String)}})"
        f" AS d{join} GROUP BY g"
    )
    n = len(STAGES)
    # contacts that entered a stage: e1..e5 (ms, NEVER_MS or more: never) and conv_at (0: none)
    contacts = (
        f"SELECT h.g AS g, {', '.join(f'h.e{i} AS e{i}' for i in range(1, n + 1))}, cv.conv_at AS conv_at"
        f" FROM ({entries}) AS h LEFT ANY JOIN ({conv}) AS cv ON cv.g = h.g"
        f" WHERE least({', '.join(f'h.e{i}' for i in range(1, n + 1))}) < {NEVER_MS}{only}"
    )
    population = (
        "SELECT x.2 AS idx, '' AS kind, '' AS name, count() AS n, countIf(conv_at > 0) AS converted"
        f" FROM ({contacts}) ARRAY JOIN arrayFilter(x -> x.1 < {NEVER_MS} AND (conv_at = 0 OR conv_at >= x.1),"
        f" [{', '.join(f'(e{i}, toUInt8({i}))' for i in range(1, n + 1))}]) AS x GROUP BY idx"
    )
    # a moment of each kind, as before from events: pages and screens, events other than the
    # conversions and the internal ones ('$...', but for '$form_submit'), arrival channels
    kinds = (
        "(d.kind = 'page' OR d.kind = 'channel' OR (d.kind = 'event' AND NOT has({conv:Array(String)}, d.name)"
        " AND (NOT startsWith(d.name, '$') OR d.name = '$form_submit')))"
    )
    join, g = contact_group(db, "d", ids)
    times = (
        f"SELECT {g} AS g, d.kind AS kind, d.name AS name, {millis('at')} AS at"
        f" FROM (SELECT anonymous_id, kind, name, times FROM {db}.device_days AS d WHERE d.site_id = {{s:String}}"
        f" AND d.kind != '' AND {kinds}) AS d{join}"
        " ARRAY JOIN d.times AS at"
    )
    stage = f"toUInt8(greatest({', '.join(f'if(c.e{i} <= x.at, {i}, 0)' for i in range(1, n + 1))}))"
    marks = (
        "SELECT idx, kind, name, uniqExact(g) AS n, uniqExactIf(g, conv_at > 0) AS converted FROM ("
        f" SELECT x.g AS g, x.kind AS kind, x.name AS name, {stage} AS idx, c.conv_at AS conv_at"
        f" FROM ({times}) AS x INNER JOIN ({contacts}) AS c ON c.g = x.g"
        " WHERE (c.conv_at = 0 OR x.at < c.conv_at) AND idx > 0)"
        " GROUP BY idx, kind, name HAVING n >= {support:UInt32}"
    )
    return population, marks
