"""The journey builder alone: events per second of CPU and of wall time, loading generated traffic
through ``JourneyBuilder.process`` into a fresh chDB, optionally side by side with another checkout
(``--baseline DIR``, e.g. a ``git worktree`` of an older commit), the runs alternating.

    .venv/bin/python bench/builder.py [--events 200000] [--batch 20000] [--repeat 2] [--baseline DIR]
                                      [--returning DATA | --records] [--time-ordered] [--logged-in] [--server]

``--records`` times the Kafka journey builder's work: each batch comes as enriched-topic records
(runs of a visitor's events, written as the checkout's enricher writes them) and reading them
(``parse_enriched``) is timed with the build. ``--returning DATA`` times visitors coming back
instead: a copy of a loaded folder (bench/journeys.py --keep), visitors drawn among the stored ones,
a builder with nothing in memory (see ``child_returning``).

``--server`` writes to a ClickHouse HTTP endpoint in its own process (tests/chserver: chDB behind
ClickHouse's HTTP interface, started from this checkout for every run, a fresh database each),
as a scale-out journey builder writes to a ClickHouse server: the builder's figures are then its
own process's, and the endpoint's CPU over the run is reported beside them.

``--logged-in`` gives every event of the visitors who identify (a quarter of them; ~28 % of the
events) their userId, as analytics.js sends a logged-in user's events (by default only their
identify call does): each such event then links its device and updates its contact.

CPU time (``time.process_time``: every thread of the process, chDB's included) is the figure to
compare on a shared machine: wall time grows with whatever else runs, CPU time much less. The
traffic is bench/journeys.py's (visitors with 1-6 sessions, campaigns, identifies, conversions),
with unique messageIds; the process tunes its GC as trailmark's processes do. Appends the figures
to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import atexit
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from machine import commit_of, cpu_model, report  # bench/ is on sys.path when a script runs

HERE = Path(__file__).resolve().parent


def as_records(batch: list[dict[str, Any]]) -> list[Any]:
    """A batch as the Kafka journey builder gets it: enriched-topic records, one per run of a
    visitor's events (at most 50, as from one raw batch), written as this checkout's enricher writes
    them (``EnrichStage.serialized``: its field names once, its JSON-object fields as text if the
    checkout has ``schemas.JSON_TEXT_FIELDS``)."""
    import schemas
    from trailmark.bus.base import Message
    from trailmark.runtime import _run_record

    texts = getattr(schemas, "JSON_TEXT_FIELDS", ())
    records: list[Any] = []
    i = 0
    while i < len(batch):
        anon = batch[i]["anonymous_id"]
        j = i
        while j < len(batch) and j - i < 50 and batch[j]["anonymous_id"] == anon:
            j += 1
        fields = tuple(batch[i])
        rows = []
        for ev in batch[i:j]:
            rows.append(orjson.dumps([orjson.dumps(v).decode() if k in texts else v for k, v in ev.items()]))
        records.append(Message("enriched", 0, len(records), f"default:{anon}".encode(), _run_record(fields, rows)))
        i = j
    return records


def child(
    events: int, batch_rows: int, records: bool = False, ordered: bool = False, logged_in: bool = False
) -> dict[str, Any]:
    """Runs in the checkout under test (sys.path set by the parent): one load, one chDB. With
    ``records``, each batch comes as enriched-topic records and the timing includes reading them
    (``parse_enriched``), as in a Kafka journey-builder process. With ``ordered``, the events come in
    time order, as a live site sends them: a batch covers a few days of the 60 (not every visitor's
    whole history, spread over three months), a visitor's events come over several batches, and
    the builder meets most visitors again from memory. With ``logged_in``, every event of the
    visitors who identify carries their userId, as analytics.js sends a logged-in user's events."""
    import random

    import journeys as traffic  # bench/journeys.py of this checkout

    from journey_builder.builder import JourneyBuilder
    from schemas import ENRICHED_DEFAULTS
    from trailmark.settings import JourneySettings
    from trailmark.storage import apply_migrations
    from trailmark.storage.chdb_backend import ChdbStorage

    storage: Any
    if url := os.environ.get("BENCH_CLICKHOUSE_URL"):  # --server
        from trailmark.storage.server_backend import ServerStorage

        storage = ServerStorage(url, f"bench_{os.getpid()}")
    else:
        work = tempfile.mkdtemp(prefix="bench-builder-")
        atexit.register(shutil.rmtree, work, True)  # 0.2-0.5 GB a run; chDB holds the path until the process ends
        storage = ChdbStorage(Path(work) / "clickhouse", "trailmark")
    apply_migrations(storage)
    builder = JourneyBuilder(storage, JourneySettings(max_visitors=200_000))
    defaults = {"v": 1, "site_id": "default", "event": "", "user_id": "", "previous_id": "", "group_id": "",
                "properties": {}, "traits": {}, "context": {}, "original_timestamp": "", "sent_at": "",
                "ip": "203.0.113.0", "user_agent": "", **ENRICHED_DEFAULTS}  # fmt: skip
    rng = random.Random(7)
    batches: list[list[dict[str, Any]]] = []
    batch: list[dict[str, Any]] = []
    total = n = 0
    while total < events:
        evs, user = traffic.visitor_events(rng, n, defaults)
        n += 1
        if user and rng.random() < 0.2:  # a second device of the same user
            second, _ = traffic.visitor_events(rng, n + 10_000_000_000, defaults)
            for e in second:
                if e["type"] == "identify":
                    e["user_id"] = user
            evs += second
        if logged_in and user:  # a known user, logged in on each of its devices from the first event
            for e in evs:
                e["user_id"] = user
        batch += evs
        total += len(evs)
        if len(batch) >= batch_rows:
            batches.append(batch)
            batch = []
    if batch:
        batches.append(batch)
    if ordered:
        # each event made anew in the order it comes, as the enricher makes them: the dicts then lie
        # in memory in that order, as in a pipeline, not in the order the traffic was generated in
        stream = [dict(e) for e in sorted((e for b in batches for e in b), key=lambda e: e["timestamp"])]
        batches = [stream[i : i + batch_rows] for i in range(0, len(stream), batch_rows)]
    if records:
        from trailmark.runtime import parse_enriched

        try:  # the values as they came, which the builder writes the events rows from (BuildStage.write)
            from trailmark.runtime import raw_source
        except ImportError:  # an older checkout: none
            raw_source = None
        skip: tuple[str, ...] = ()
        if getattr(storage, "json_columns", False):  # as the Kafka runner reads records for a server
            try:
                from journey_builder.core import STORED_ONLY as skip
            except ImportError:  # a checkout whose dicts hold every field
                pass

        encoded = [as_records(b) for b in batches]
        del batches
        _tune_gc()
        collections = _gc_clock()
        cpu, wall = time.process_time(), time.perf_counter()
        for recs in encoded:
            ok = (parse_enriched(recs, skip=skip) if skip else parse_enriched(recs)).ok
            raw = raw_source(ok) if raw_source is not None else None
            builder.process([o.value for o in ok], *(() if raw is None else (raw,)))
            del ok, raw  # the batch freed before the next is read, as when nothing holds it
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        return {"events": total, "cpu_s": cpu, "wall_s": wall, **collections}
    _tune_gc()
    collections = _gc_clock()
    cpu, wall = time.process_time(), time.perf_counter()
    for b in batches:
        builder.process(b)  # type: ignore[arg-type]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"events": total, "cpu_s": cpu, "wall_s": wall, **collections}


def child_returning(events: int, batch_rows: int, data: Path) -> dict[str, Any]:
    """Returning visitors on a loaded folder (a copy of ``data``, e.g. bench/journeys.py --keep's
    10M events): 12,000 visitors drawn at random among the stored ones come back once each (what
    this checkout writes for them), then about ``events`` new events of visitors drawn among them
    are timed, with a new builder for each batch (nothing in memory, as after a restart or a
    rebalance, or once the in-memory cache let them go) and background merges stopped (they belong
    to the whole load, not to these batches)."""
    import random

    import journeys as traffic  # bench/journeys.py of this checkout

    from journey_builder.builder import JourneyBuilder
    from schemas import ENRICHED_DEFAULTS
    from trailmark.settings import JourneySettings
    from trailmark.storage import apply_migrations
    from trailmark.storage.chdb_backend import ChdbStorage

    copy = Path(tempfile.mkdtemp(prefix="bench-builder-", dir=data.parent))
    try:
        shutil.copytree(data / "clickhouse", copy / "clickhouse", symlinks=True)  # its store links tables
        storage = ChdbStorage(copy / "clickhouse", "trailmark")
        apply_migrations(storage)  # this checkout's (an upgrade's backfills are not timed)
        defaults = {"v": 1, "site_id": "default", "event": "", "user_id": "", "previous_id": "", "group_id": "",
                    "properties": {}, "traits": {}, "context": {}, "original_timestamp": "", "sent_at": "",
                    "ip": "203.0.113.0", "user_agent": "", **ENRICHED_DEFAULTS}  # fmt: skip
        stored = int(  # first devices: anon-<n, 9 digits>; second devices are anon-<n + 10^10>
            storage.query(
                "SELECT uniqExact(anonymous_id) AS n FROM trailmark.events WHERE anonymous_id LIKE 'anon-0%'"
            )[0]["n"]
        )
        rng = random.Random(7)
        pool = rng.sample(range(stored), 12_000)  # bench/journeys.py's visitors are anon-<n>, n < stored

        def visit(visitors: list[int]) -> list[list[dict[str, Any]]]:
            evs: list[dict[str, Any]] = []
            for n in visitors:
                evs += traffic.visitor_events(rng, n, defaults)[0]
            return [evs[i : i + batch_rows] for i in range(0, len(evs), batch_rows)]

        for b in visit(pool):  # the first return of each: what this checkout writes for them
            JourneyBuilder(storage, JourneySettings(max_visitors=200_000)).process(b)  # type: ignore[arg-type]
        again: list[int] = []
        while len(again) * 6 < events:  # bench/journeys.py's visitors have about 6 events
            again.append(rng.choice(pool))
        batches = visit(again)
        storage.execute("SYSTEM STOP MERGES")
        _tune_gc()
        cpu, wall = time.process_time(), time.perf_counter()
        for b in batches:
            JourneyBuilder(storage, JourneySettings(max_visitors=200_000)).process(b)  # type: ignore[arg-type]
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        return {"events": sum(map(len, batches)), "cpu_s": cpu, "wall_s": wall}
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def _gc_clock() -> dict[str, float]:
    """From now on, the cyclic GC's collections in this process (``gc_n``) and the CPU time of the
    threads that ran them (``gc_s``), as ``gc.callbacks`` sees them; filled in as they happen."""
    import gc

    seen = {"gc_n": 0.0, "gc_s": 0.0}
    started = [0.0]

    def clock(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.thread_time()
        else:
            seen["gc_n"] += 1
            seen["gc_s"] += time.thread_time() - started[0]

    gc.callbacks.append(clock)
    return seen


def _tune_gc() -> None:
    try:  # as trailmark's processes do (trailmark/cli.py); older checkouts had no such function
        from trailmark.runtime import tune_gc
        from trailmark.settings import Settings

        tune_gc(Settings().gc_threshold)
    except ImportError:
        import gc

        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)  # what the older trailmark/cli.py set


def run(
    checkout: Path,
    events: int,
    batch_rows: int,
    returning: Path | None = None,
    records: bool = False,
    ordered: bool = False,
    server: bool = False,
    logged_in: bool = False,
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": f"{checkout}{os.pathsep}{checkout / 'bench'}"}
    endpoint = None
    try:
        if server:  # tests/chserver's endpoint, as the storage tests start it
            from machine import process_cpu_s

            sys.path.insert(0, str(HERE.parent))
            from tests.chserver import ClickHouseEndpoint

            endpoint = ClickHouseEndpoint(Path(tempfile.mkdtemp(prefix="bench-builder-server-")) / "clickhouse")
            env["BENCH_CLICKHOUSE_URL"] = endpoint.start().url
            assert endpoint.proc is not None
            before = process_cpu_s(endpoint.proc.pid)
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(events), str(batch_rows)]
            + ([str(returning)] if returning else [])
            + (["--records"] if records else [])
            + (["--ordered"] if ordered else [])
            + (["--logged-in"] if logged_in else []),
            env=env,
            cwd=checkout,
            capture_output=True,
            check=True,
        )
        result: dict[str, Any] = orjson.loads(out.stdout.splitlines()[-1])
        if endpoint is not None and endpoint.proc is not None:  # its CPU over the child's life, migrations included
            result["server_cpu_s"] = process_cpu_s(endpoint.proc.pid) - before
        return result
    finally:
        if endpoint is not None:
            endpoint.stop()
            shutil.rmtree(endpoint.path.parent, True)


def main() -> None:
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        sys.path[:0] = [str(Path.cwd()), str(Path.cwd() / "bench")]
        events, batch_rows, extra = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
        flags = {"--records", "--ordered", "--logged-in"}
        returning = [a for a in extra if a not in flags]
        got = (
            child_returning(events, batch_rows, Path(returning[0]))
            if returning
            else child(
                events,
                batch_rows,
                records="--records" in extra,
                ordered="--ordered" in extra,
                logged_in="--logged-in" in extra,
            )
        )
        print(orjson.dumps(got).decode())
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--baseline", type=Path, help="another checkout to run side by side (alternating)")
    ap.add_argument(
        "--returning",
        type=Path,
        help="a loaded data folder (bench/journeys.py --keep): time returning visitors on a copy of it"
        " (--events per visit) instead of new ones on an empty store",
    )
    ap.add_argument(
        "--records",
        action="store_true",
        help="the Kafka journey builder's work: batches come as enriched-topic records (runs of a visitor's"
        " events) and reading them (parse_enriched) is timed too",
    )
    ap.add_argument(
        "--time-ordered",
        action="store_true",
        help="the events in time order, as a live site sends them (default: visitor by visitor, each"
        " visitor's whole 60-day history in one batch)",
    )
    ap.add_argument(
        "--server",
        action="store_true",
        help="write to a ClickHouse HTTP endpoint in another process (tests/chserver, chDB), as a scale-out"
        " builder does: the figures are the builder process's own, the endpoint's CPU beside them",
    )
    ap.add_argument(
        "--logged-in",
        action="store_true",
        help="every event of the visitors who identify (a quarter of them) carries their userId, as"
        " analytics.js sends a logged-in user's events",
    )
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    if args.server and args.returning:
        ap.error("--server loads an empty store: not with --returning")
    root = HERE.parent
    checkouts = [("this", root)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in checkouts}
    loads = [os.getloadavg()[0]]
    for _ in range(args.repeat):
        for name, path in reversed(checkouts):  # baseline first in each round
            runs[name].append(
                run(
                    path,
                    args.events,
                    args.batch,
                    args.returning,
                    args.records,
                    args.time_ordered,
                    args.server,
                    args.logged_in,
                )
            )
            loads.append(os.getloadavg()[0])
    lines = [
        f"\n## Journey builder alone{', returning visitors' if args.returning else ''}"
        f"{', reading enriched-topic records (Kafka)' if args.records else ''}"
        f"{', events in time order' if args.time_ordered else ''}"
        f"{', logged-in users' if args.logged_in else ''}"
        f"{', writing to a ClickHouse HTTP endpoint' if args.server else ''}"
        f" — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n",
        f"Machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}. Command: "
        f"`.venv/bin/python bench/builder.py --events {args.events} --batch {args.batch} --repeat {args.repeat}"
        + (f" --returning {args.returning}" if args.returning else "")
        + (" --records" if args.records else "")
        + (" --time-ordered" if args.time_ordered else "")
        + (" --logged-in" if args.logged_in else "")
        + (" --server" if args.server else "")
        + (" --baseline <worktree>`" if args.baseline else "`")
        + f". Load average (1 min) during the runs: {min(loads):.1f}-{max(loads):.1f}.\n",
        "| checkout | events | events per CPU second (each run) | median | events per wall second (each run) |"
        " cyclic GC: collections, CPU s (each run) |" + (" endpoint's CPU, s (each run) |" if args.server else ""),
        "| --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if args.server else ""),
    ]
    for name, path in checkouts:
        rs = runs[name]
        per_cpu = [r["events"] / r["cpu_s"] for r in rs]
        per_wall = [r["events"] / r["wall_s"] for r in rs]
        lines.append(
            f"| {name} ({commit_of(path)}) | {rs[0]['events']:,} | {', '.join(f'{x:,.0f}' for x in per_cpu)}"
            f" | **{statistics.median(per_cpu):,.0f}** | {', '.join(f'{x:,.0f}' for x in per_wall)} |"
            + " "
            + ", ".join(f"{r.get('gc_n', 0):.0f} / {r.get('gc_s', 0):.2f}" for r in rs)
            + " |"
            + (" " + ", ".join(f"{r['server_cpu_s']:.1f}" for r in rs) + " |" if args.server else "")
        )
    report("\n".join(lines) + "\n", not args.no_record)


if __name__ == "__main__":
    main()
