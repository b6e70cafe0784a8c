"""Where a natively counted attribution read's time goes, phase by phase, on a folder that
bench/journeys.py loaded (``--keep``): the shared devices' map, the conversions and touches
streamed out of chDB and read into trailmark/native (one phase: they overlap), the credits counted,
and the keys' names read back.

    .venv/bin/python bench/attribution_native.py DIR [--rounds 3] [--model linear] [--code CHECKOUT]

The read is journey_builder.analytics.attribution as /v1/attribution serves it (conversion "Order
Completed", by channel, a 30-day lookback, no date range), in this process on chDB
(``DIR/clickhouse``), ``--rounds`` times. ``--code`` imports trailmark and journey_builder from
another checkout (its trailmark/_native.abi3.so built there). Figures per phase: wall time and this
process's CPU (user + system); the module's reading in of the rows is also given alone (the CPU of
the calls into it); then the process's peak RSS. Records nothing (paste the table into
bench/RESULTS.md with the machine and the date).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import orjson
from machine import Phases, cpu_model, peak_rss_mib  # bench/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, help="a folder bench/journeys.py --keep made")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default="linear")
    ap.add_argument("--code", type=Path, default=ROOT, help="checkout to import the read from")
    args = ap.parse_args()
    sys.path.insert(0, str(args.code.resolve()))
    from journey_builder import analytics
    from trailmark import compiled
    from trailmark.storage.chdb_backend import ChdbStorage

    made: Any = getattr(compiled, "attribution_rows", None)
    if made is None:
        sys.exit(f"trailmark/native's attribution is not built in {args.code} (make native): nothing to time")
    site = orjson.loads((args.data / "keys.json").read_bytes())["sites"][0]["site_id"]
    storage = ChdbStorage(args.data / "clickhouse")
    timed = Phases()
    compiled.attribution_rows = timed.counter(made, "credit", "streamed", "credited")
    timed.streams(storage)
    phases = [
        ("map", "start", "map"),
        ("stream + read in", "map", "streamed"),
        ("credits", "streamed", "credited"),
        ("keys' names", "credited", "done"),
        ("whole read", "start", "done"),
    ]
    try:
        for _ in range(args.rounds):
            timed.round(
                lambda: analytics.attribution(storage, site, "Order Completed", args.model, "channel", 30, 7.0), phases
            )
    finally:
        storage.close()
    print(
        f"Machine: {os.cpu_count()} cores, {cpu_model()}. Attribution of 'Order Completed' by channel,"
        f" model {args.model}, read from {args.code}; {args.rounds} rounds, median (each)."
    )
    print(timed.table())
    print(f"Peak RSS of this process: {peak_rss_mib()} MiB")


if __name__ == "__main__":
    main()
