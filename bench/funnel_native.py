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
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from machine import cpu_model, process_cpu_s  # bench/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent
STEPS = ["/", "/pricing", "/signup", "Signed Up"]
WINDOW_S = 7 * 86400


def peak_rss_mib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return 0


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
    me = os.getpid()
    marks: list[tuple[str, float, float]] = []
    fed: list[float] = []

    def mark(what: str) -> None:
        marks.append((what, time.perf_counter(), process_cpu_s(me)))

    made = compiled.funnel_rows

    class Timed:
        """The module's counter, its calls timed (the phases' ends marked)."""

        def __init__(self, *a: Any) -> None:
            self.inner = made(*a)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def feed(self, block: bytes) -> None:
            t = time.thread_time()
            self.inner.feed(block)
            fed.append(time.thread_time() - t)

        def levels(self, threads: int) -> Any:
            mark("streamed")
            out = self.inner.levels(threads)
            mark("counted")
            return out

    streams = storage.native_blocks

    @contextmanager
    def timed_blocks(sql: str, params: Any, *, settings: Any) -> Iterator[Any]:
        with streams(sql, params, settings=settings) as blocks:
            yield blocks
        if not marks or marks[-1][0] == "start":
            mark("map")

    compiled.funnel_rows = Timed
    storage.native_blocks = timed_blocks  # type: ignore[method-assign]
    rounds: list[dict[str, tuple[float, float]]] = []
    feeds: list[float] = []
    try:
        for _ in range(args.rounds):
            marks.clear()
            fed.clear()
            mark("start")
            analytics.funnel(storage, site, STEPS, WINDOW_S, by=args.by)
            mark("done")
            at = {name: (t, c) for name, t, c in marks}
            phases = [
                ("map", "start", "map"),
                ("stream + read in", "map", "streamed"),
                ("levels", "streamed", "counted"),
                ("whole read", "start", "done"),
            ]
            if args.by:
                phases.insert(3, ("arrivals + channels", "counted", "done"))
            rounds.append({name: (at[b][0] - at[a][0], at[b][1] - at[a][1]) for name, a, b in phases})
            feeds.append(sum(fed))
    finally:
        storage.close()
    print(
        f"Machine: {os.cpu_count()} cores, {cpu_model()}. Funnel {STEPS}, window {WINDOW_S} s"
        f"{', by channel' if args.by else ''}, read from {args.code}; {args.rounds} rounds, median (each)."
    )
    print("| phase | wall | CPU |\n| --- | ---: | ---: |")
    for name in rounds[0]:
        walls = [r[name][0] for r in rounds]
        cpus = [r[name][1] for r in rounds]
        print(
            f"| {name} | {statistics.median(walls):.2f} s ({', '.join(f'{w:.2f}' for w in walls)})"
            f" | {statistics.median(cpus):.2f} s ({', '.join(f'{c:.2f}' for c in cpus)}) |"
        )
    print(f"| rows read into the module (its calls alone) | | {statistics.median(feeds):.2f} s |")
    print(f"Peak RSS of this process: {peak_rss_mib()} MiB")


if __name__ == "__main__":
    main()
