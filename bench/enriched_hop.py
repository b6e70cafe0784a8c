"""The enriched hop on Kafka, both ends, in CPU µs per event: the enricher writing its records
(``EnrichStage.serialized``: enrichment and encoding) and the journey builder reading them
(``parse_enriched``) and turning the events into the columns of ``events`` (``event_columns``, the
part of the build that depends on the record format), optionally side by side with another
checkout (``--baseline DIR``, e.g. a ``git worktree`` of an older commit), the runs alternating.

    .venv/bin/python bench/enriched_hop.py [--batches 400] [--repeat 3] [--baseline DIR] [--no-record]

The traffic is bench/pipeline.py's: 50-event one-visitor batches as an SDK sends them (a context
with page, user agent, locale, screen and library; a few properties), each with its own visitor
and messageIds. Each figure is the fastest of five passes over the same batches in one process
(its GC tuned as trailmark's processes tune it). Appends the figures to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from machine import commit_of, cpu_model, report  # bench/ is on sys.path when a script runs

HERE = Path(__file__).resolve().parent
PARTS = ("serialize", "parse", "columns")


def child(batches: int) -> dict[str, Any]:
    """Runs in the checkout under test (sys.path set by the parent)."""
    import pipeline  # bench/pipeline.py of the checkout running this script: the same traffic for both

    from journey_builder.core import event_columns
    from trailmark.bus.base import Message
    from trailmark.runtime import EnrichStage, parse_enriched, tune_gc
    from trailmark.settings import Settings

    template = pipeline.template()
    raw = []
    for i in range(batches):
        body = template.replace(b"@MID@", f"m{i}".encode()).replace(b"@VIS@", f"vis-{i}".encode())
        batch = {"v": 1, "site_id": "default", "received_at": "2026-12-04T21:00:00.000Z", "ip": "203.0.113.9"}
        value = orjson.dumps({**batch, "user_agent": pipeline.UA, "body": orjson.loads(body)})
        raw.append(Message("raw", 0, i, f"default:vis-{i}".encode(), value))
    stage = EnrichStage(Settings(), {})
    tune_gc(Settings().gc_threshold)
    records = [Message("enriched", 0, i, o.key, o.value) for i, o in enumerate(stage.serialized(raw).ok)]
    events = [o.value for o in parse_enriched(records).ok]
    consent = {"consent": "none", "consent_dnt": False, "consent_cookieless": False, "consent_categories": []}
    built = [("session", "contact", consent)] * len(events)

    def fastest(work: Any) -> float:
        best = float("inf")
        for _ in range(5):
            cpu = time.process_time()
            work()
            best = min(best, time.process_time() - cpu)
        return best * 1e6 / len(events)

    return {
        "events": len(events),
        "bytes_per_event": sum(len(r.value) for r in records) / len(events),
        "serialize": fastest(lambda: stage.serialized(raw)),
        "parse": fastest(lambda: parse_enriched(records)),
        "columns": fastest(lambda: event_columns(events, built)),
    }


def run(checkout: Path, batches: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": f"{checkout}{os.pathsep}{checkout / 'bench'}"}
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(batches)], env=env, cwd=checkout, capture_output=True, check=True
    )
    result: dict[str, Any] = orjson.loads(out.stdout.splitlines()[-1])
    return result


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        sys.path[:0] = [str(Path.cwd()), str(HERE)]
        print(orjson.dumps(child(int(sys.argv[2]))).decode())
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=400, help="50-event batches (400: 20,000 events)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline", type=Path, help="another checkout to run side by side (alternating)")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    checkouts = [("this", HERE.parent)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in checkouts}
    loads = [os.getloadavg()[0]]
    for _ in range(args.repeat):
        for name, path in reversed(checkouts):  # baseline first in each round
            runs[name].append(run(path, args.batches))
            loads.append(os.getloadavg()[0])
    lines = [
        f"\n## The enriched hop on Kafka, both ends — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n",
        f"Machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}. Command: "
        f"`.venv/bin/python bench/enriched_hop.py --batches {args.batches} --repeat {args.repeat}"
        + (" --baseline <worktree>`" if args.baseline else "`")
        + f". Load average (1 min) during the runs: {min(loads):.1f}-{max(loads):.1f}. CPU µs per event,"
        " median of the runs (each the fastest of 5 passes): the enricher's `serialized` (enrichment"
        " and encoding), the builder's `parse_enriched` and `event_columns`.\n",
        "| checkout | events | bytes per event | enricher: serialized | builder: parse | builder: columns"
        " | builder: both |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, path in checkouts:
        rs = runs[name]
        med = {p: statistics.median(r[p] for r in rs) for p in PARTS}
        lines.append(
            f"| {name} ({commit_of(path)}) | {rs[0]['events']:,} | {rs[0]['bytes_per_event']:,.0f}"
            f" | {med['serialize']:.1f} | {med['parse']:.1f} | {med['columns']:.1f}"
            f" | **{med['parse'] + med['columns']:.1f}** |"
        )
    report("\n".join(lines) + "\n", not args.no_record)


if __name__ == "__main__":
    main()
