"""Memory of ``trailmark up`` (what ``make run`` starts) under sustained load from many distinct
visitors: RSS of the process (and any children) sampled every second while wrk posts batches in
which every event is a new visitor's first.

    .venv/bin/python bench/memory.py [--minutes 10] [--connections 8] [--visitors-per-batch 25]

Each request is a 50-event batch of ``--visitors-per-batch`` visitors never seen before (unique
anonymousIds and messageIds), so the journey builder's visitor cache, the enrichment caches and
the rate limiter meet a new visitor with almost every event: issue 15 asks for a million distinct
visitors in 10 minutes under 1 GiB. Appends max / final RSS, distinct visitors and events stored to
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
from machine import cpu_model, report  # bench/ is on sys.path when a script runs
from pipeline import UA, Proc, Setup, keys

HERE = Path(__file__).resolve().parent
PER_BATCH = 50


def rss_bytes(pid: int, children: bool = True) -> int:
    """RSS of a process and (by default) its children (from /proc; 0 for one that is gone)."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:"))
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split() if children else []
        except (OSError, StopIteration):
            continue
        todo += [int(c) for c in kids]
    return total


def template(visitors: int) -> bytes:
    now = datetime.now(UTC).isoformat()
    events = [
        {
            "type": "page" if i % 2 == 0 else "track",
            "event": "Product Viewed",
            "messageId": f"@MID@-{i:02d}",
            "anonymousId": f"@VIS@-{i % visitors:02d}",
            "timestamp": now,
            "properties": {"sku": f"SKU-{i}", "price": 19.99},
            "context": {
                "page": {
                    "url": f"https://shop.example.com/p/{i}",
                    "path": f"/p/{i}",
                    "referrer": "https://www.google.com/",
                },
                "userAgent": UA,
            },
        }
        for i in range(PER_BATCH)
    ]
    return orjson.dumps({"batch": events, "sentAt": now})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--visitors-per-batch", type=int, default=25)
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for trailmark up (repeatable)")
    args = ap.parse_args()
    env = dict(e.split("=", 1) for e in args.env)
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    up = Proc(["up"], work / "data", env)
    up.wait_ready()
    setup = Setup("embedded", up.url, up.url, [up], keys(up.data_dir))
    body = work / "body.json"
    body.write_bytes(template(args.visitors_per_batch))
    auth = "Basic " + base64.b64encode(f"{setup.site['write_key']}:".encode()).decode()
    run = uuid.uuid4().hex[:8]
    lua = work / "post.lua"
    lua.write_text(
        f'local f = io.open("{body}", "rb"); local tpl = f:read("*all"); f:close()\n'
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "{auth}"\nwrk.headers["User-Agent"] = "{UA}"\n'
        "local n = 0\nlocal tid = tostring(math.random(1, 1000000000))\n"
        "request = function()\n  n = n + 1\n"
        f'  local id = "{run}-" .. tid .. "-" .. n\n'
        '  local body = (tpl:gsub("@MID@", id))\n  body = (body:gsub("@VIS@", "v" .. id))\n'
        "  return wrk.format(nil, nil, nil, body)\nend\n"
    )
    samples: list[tuple[float, int]] = []
    main_rss: list[int] = []  # the main process alone (the collector processes are its children)
    stop = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not stop.is_set():
            samples.append((time.monotonic() - t0, rss_bytes(up.proc.pid)))
            main_rss.append(rss_bytes(up.proc.pid, children=False))
            stop.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        seconds = args.minutes * 60
        out = subprocess.run(
            ["wrk", "-t1", f"-c{args.connections}", f"-d{seconds:.0f}s", "--timeout", "10s", "-s", str(lua),
             up.url + "/v1/batch"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        requests = int(out.split(" requests in ")[0].split()[-1])
        time.sleep(5)  # the pipeline drains a little longer
        stop.set()
        sampler.join()
        stored = setup.count()
        visitors = requests * args.visitors_per_batch
    finally:
        stop.set()
        setup.stop()
        shutil.rmtree(work, ignore_errors=True)  # the event log alone reaches 13-16 GB in 10 minutes
    peak = max(r for _, r in samples)
    main_peak = max(main_rss)
    final = samples[-1][1]
    start = samples[0][1]
    curve = ", ".join(f"{t:.0f}s {r / 2**20:.0f}" for t, r in samples[:: max(1, len(samples) // 10)])
    print(f"RSS MiB over time: {curve}")
    load = os.getloadavg()[0]
    text = (
        f"\n## Memory of trailmark up under load — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n"
        f"Machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}; load average at"
        f" the end {load:.1f}. Command: `.venv/bin/python bench/memory.py --minutes {args.minutes:g}"
        f" --connections {args.connections} --visitors-per-batch {args.visitors_per_batch}"
        f"{''.join(f' --env {e}' for e in args.env)}`: wrk posts 50-event"
        f" batches of {args.visitors_per_batch} new visitors each (unique ids) to one `trailmark up`.\n\n"
        "| minutes | batches accepted | distinct visitors sent | events stored | RSS at start | RSS peak"
        " | RSS at the end | main process's peak |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        f"| {args.minutes:g} | {requests:,} | {visitors:,} | {stored:,} | {start / 2**20:,.0f} MiB"
        f" | {peak / 2**20:,.0f} MiB"
        f" | {final / 2**20:,.0f} MiB | {main_peak / 2**20:,.0f} MiB |\n\n"
        "Target (issue 15): under 1 GiB through 10 minutes of a million distinct"
        " visitors.\n"
    )
    report(text, not args.no_record)


if __name__ == "__main__":
    main()
