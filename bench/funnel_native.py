"""Where a natively counted funnel read's time goes, phase by phase, on a folder that
bench/journeys.py loaded (``--keep``): the shared devices' map, the step rows streamed out of
chDB and read into trailmark/native (one phase: they overlap), and the count of the levels.

    .venv/bin/python bench/funnel_native.py DIR [--rounds 3] [--by channel] [--code CHECKOUT]

The read is journey_builder.analytics.funnel as /v1/funnel serves it (4 steps, a 7-day window, no
date range), in this process on chDB (``DIR/clickhouse``), ``--rounds`` times. ``--code``
imports trailmark and journey_builder from another checkout (a git worktree of an earlier commit,
its trailmark/_native.abi3.so built there), so two versions can be timed in turn on the same data.
Figures per phase: wall time and this process's CPU (user + system); the module's reading in of
the rows is also given alone (the CPU of the calls into it); then the process's peak RSS. Records
nothing (paste the table into bench/RESULTS.md with the machine and the date).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import orjson
from machine import Phases, cpu_model, peak_rss_mib  # bench/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent
STEPS = ["/", "/pricing", "/signup", "Signed Up"]
WINDOW_S = 7 * 86400


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, help="a folder bench/journeys.py --keep made")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--by", default=None, help="'channel': the funnel by channel")
    ap.add_argument("--code", type=Path, default=ROOT, help="checkout to import the read from")
    args = ap.parse_args()
    sys.path.insert(0, str(args.code.resolve()))
    from journey_builder import analytics
    from trailmark import compiled
    from trailmark.storage.chdb_backend import ChdbStorage

    if compiled.funnel_rows is None:
        sys.exit(f"trailmark/native is not built in {args.code} (make native): nothing to time")
    site = orjson.loads((args.data / "keys.json").read_bytes())["sites"][0]["site_id"]
    storage = ChdbStorage(args.data / "clickhouse")
    timed = Phases()
    compiled.funnel_rows = timed.counter(compiled.funnel_rows, "levels", "streamed", "counted")
    timed.streams(storage)
    phases = [
        ("map", "start", "map"),
        ("stream + read in", "map", "streamed"),
        ("levels", "streamed", "counted"),
        ("whole read", "start", "done"),
    ]
    if args.by:
        phases.insert(3, ("arrivals + channels", "counted", "done"))
    try:
        for _ in range(args.rounds):
            timed.round(lambda: analytics.funnel(storage, site, STEPS, WINDOW_S, by=args.by), phases)
    finally:
        storage.close()
    print(
        f"Machine: {os.cpu_count()} cores, {cpu_model()}. Funnel {STEPS}, window {WINDOW_S} s"
        f"{', by channel' if args.by else ''}, read from {args.code}; {args.rounds} rounds, median (each)."
    )
    print(timed.table())
    print(f"Peak RSS of this process: {peak_rss_mib()} MiB")


if __name__ == "__main__":
    main()
