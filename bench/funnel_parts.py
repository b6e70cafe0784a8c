"""Where a funnel read's CPU goes: the funnel's SQL as /v1/funnel serves it, and the same rows with
parts of its work taken away, on a folder that bench/journeys.py loaded (``--keep``).

    .venv/bin/python bench/funnel_parts.py DIR [--rounds 3]

Each query runs in this process on chDB (``DIR/clickhouse``), alternating, ``--rounds`` times; the
figures are this process's CPU (user + system) and wall time per query, median. The funnel is
bench/journeys.py's: 4 steps, a 7-day window, no date range. The parts:

- ``served``: the SQL /v1/funnel runs (journey_builder.analytics.funnel);
- ``by device``: the same, grouped by device, without mapping the shared devices to their contact;
- ``count by device``: the same rows and groups, ``count()`` in place of ``windowFunnel``;
- ``scan``: the same rows read and filtered, no grouping.

Wait until the folder's merges are done before timing it (a folder opened again restarts them, and
a funnel then costs 2-3x the CPU; bench/RESULTS.md 2026-12-06 16:53). Prints a table; records
nothing (paste it into bench/RESULTS.md with the machine and the date).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from machine import process_cpu_s  # bench/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from journey_builder import analytics  # noqa: E402
from trailmark.storage.chdb_backend import ChdbStorage  # noqa: E402

STEPS = ["/", "/pricing", "/signup", "Signed Up"]
WINDOW_S = 7 * 86400


def served_sql(storage: ChdbStorage, site: str) -> tuple[str, dict[str, Any]]:
    """The funnel's SQL and parameters, as analytics.funnel builds them."""
    seen: dict[str, Any] = {}
    query = analytics._q

    def capture(st: Any, sql: str, params: dict[str, Any], *a: Any, **k: Any) -> Any:
        seen["sql"], seen["params"] = sql, params
        return query(st, sql, params, *a, **k)

    analytics._q = capture
    try:
        analytics.funnel(storage, site, STEPS, WINDOW_S)
    finally:
        analytics._q = query
    return seen["sql"], seen["params"]


def parts(db: str, p: dict[str, Any]) -> dict[str, str]:
    conds = [analytics._step_condition(i, s, p) for i, s in enumerate(STEPS)]
    rows = (
        f"SELECT device, kind, step, timestamp FROM {db}.step_events"
        f" WHERE site_id = {{s:String}} AND ({' OR '.join(conds)})"
    )
    funnel = f"windowFunnel({{w:UInt64}})(toDateTime(timestamp), {', '.join(conds)})"
    return {
        "by device": f"SELECT level, count() AS n FROM (SELECT {funnel} AS level FROM ({rows}) GROUP BY device)"
        " WHERE level > 0 GROUP BY level",
        "count by device": f"SELECT count() AS n FROM (SELECT count() AS c FROM ({rows}) GROUP BY device)",
        "scan": f"SELECT count() AS n, sum(device), max(timestamp) FROM ({rows})",
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, help="a folder bench/journeys.py --keep made")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    site = orjson.loads((args.data / "keys.json").read_bytes())["sites"][0]["site_id"]
    storage = ChdbStorage(args.data / "clickhouse")
    sql, p = served_sql(storage, site)
    queries = {"served": sql, **parts(storage.database, p)}
    took: dict[str, list[tuple[float, float]]] = {k: [] for k in queries}
    me = os.getpid()
    for _ in range(args.rounds):
        for name, q in queries.items():
            cpu, wall = process_cpu_s(me), time.perf_counter()
            storage.query(q, p, readonly=True)
            took[name].append((process_cpu_s(me) - cpu, time.perf_counter() - wall))
    print(f"| query ({args.rounds} rounds) | CPU s, median | wall s, median | CPU s, each |")
    print("| --- | ---: | ---: | --- |")
    for name, t in took.items():
        cpu_s = statistics.median(c for c, _ in t)
        wall_s = statistics.median(w for _, w in t)
        print(f"| {name} | {cpu_s:.2f} | {wall_s:.2f} | {', '.join(f'{c:.2f}' for c, _ in t)} |")
    storage.close()


if __name__ == "__main__":
    main()
