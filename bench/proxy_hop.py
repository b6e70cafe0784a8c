"""The hop from a collector process to the main process inside ``trailmark up``: what a read costs
through the public port (a collector process passes it on) against the main process's own loopback
port, and the collector process's CPU per passed-on request.

    .venv/bin/python bench/proxy_hop.py --data DIR [--baseline CHECKOUT] [--rounds 3]
        [--requests 1000] [--journeys 200] [--no-record]

``--data`` is a folder of ``bench/journeys.py --keep`` (its keys and load.json name the site and
the contacts to read). ``--baseline`` runs another checkout (a git worktree of the "before" commit)
on the same folder, alternating with this one round by round. ``trailmark up`` runs with its
default processes (one collector process on two cores); the main process's port is found with
``ss``. CPU comes from /proc (user + system of the collector process), which the rest of a shared
machine sways less than latency.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import commit_of, cpu_model, percentile, process_cpu_s, report, up  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def timed(client: httpx.Client, paths: Callable[[int], str], n: int, headers: dict[str, str]) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        r = client.get(paths(i), headers=headers)
        out.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, (paths(i), r.status_code, r.text[:200])
    return out


def main_port(pid: int, public: int) -> int:
    """The main process's own loopback port: the one it listens on besides the public port."""
    listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    for line in listening.splitlines():
        found = re.search(r"127\.0\.0\.1:(\d+)", line)
        if f"pid={pid}," in line and found and int(found.group(1)) != public:
            return int(found.group(1))
    raise RuntimeError("the main process's loopback port was not found")


def run(code: Path, data: Path, requests: int, journeys: int) -> dict[str, Any]:
    info = orjson.loads((data / "load.json").read_bytes())
    key = orjson.loads((data / "keys.json").read_bytes())["sites"][0]["read_key"]
    h = {"authorization": f"Bearer {key}"}
    rng = random.Random(3)
    names = [
        rng.choice(info["users"]) if i % 2 == 0 else f"anon-{rng.randrange(info['visitors']):09d}"
        for i in range(journeys)
    ]
    server, base = up(code, data)
    port = int(base.rsplit(":", 1)[1])
    try:
        time.sleep(2)
        own = main_port(server.pid, port)
        kids = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout.split()
        assert len(kids) == 1, f"expected one collector process, found {kids}"
        collector = int(kids[0])
        res: dict[str, Any] = {"commit": commit_of(code)}
        with (
            httpx.Client(base_url=base, timeout=120) as public,
            httpx.Client(base_url=f"http://127.0.0.1:{own}", timeout=120) as direct,
        ):
            timed(public, lambda i: "/healthz", 100, {})  # warm both sides
            timed(public, lambda i: f"/v1/journeys/{names[i]}", min(30, journeys), h)
            cpu = process_cpu_s(collector)
            lat = timed(public, lambda i: "/healthz", requests, {})
            res["healthz_cpu"] = (process_cpu_s(collector) - cpu) * 1000 / requests
            res["healthz_public"] = lat
            res["healthz_main"] = timed(direct, lambda i: "/healthz", requests, {})
            cpu = process_cpu_s(collector)
            lat = timed(public, lambda i: f"/v1/journeys/{names[i]}", journeys, h)
            res["journey_cpu"] = (process_cpu_s(collector) - cpu) * 1000 / journeys
            res["journey_public"] = lat
            res["journey_main"] = timed(direct, lambda i: f"/v1/journeys/{names[i]}", journeys, h)
        res["load"] = os.getloadavg()[0]
        return res
    finally:
        server.terminate()
        server.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True, help="a bench/journeys.py --keep folder")
    ap.add_argument("--baseline", type=Path, help="another checkout to run alternating with this one")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=1000, help="/healthz requests each way")
    ap.add_argument("--journeys", type=int, default=200, help="journeys each way")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    codes = [ROOT] + ([args.baseline.resolve()] if args.baseline else [])
    rows = []
    for _ in range(args.rounds):
        for code in codes:
            r = run(code, args.data.resolve(), args.requests, args.journeys)
            r["label"] = "this" if code == ROOT else "baseline"
            rows.append(r)
            print(r["label"], r["commit"], {k: v for k, v in r.items() if not isinstance(v, list)}, flush=True)

    def p(r: dict[str, Any], k: str) -> str:
        return f"{statistics.median(r[k]):.2f} / {percentile(r[k], 0.95):.2f}"

    lines = [
        f"\n## The proxy hop of trailmark up — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n",
        f"Machine: {os.cpu_count()} cores, {cpu_model()}, Python {sys.version.split()[0]}. Command:"
        f" `.venv/bin/python bench/proxy_hop.py --data {args.data} --rounds {args.rounds} --requests"
        f" {args.requests} --journeys {args.journeys}{' --baseline <checkout>' if args.baseline else ''}`."
        " Latency in ms (p50 / p95), through the public port (a collector process passes the request on)"
        " and on the main process's own port; CPU of the collector process per passed-on request.\n",
        "| checkout | /healthz public | /healthz main | collector CPU per /healthz | journey public"
        " | journey main | collector CPU per journey | load |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} ({r['commit']}) | {p(r, 'healthz_public')} | {p(r, 'healthz_main')}"
            f" | {r['healthz_cpu']:.2f} ms | {p(r, 'journey_public')} | {p(r, 'journey_main')}"
            f" | {r['journey_cpu']:.2f} ms | {r['load']:.1f} |"
        )
    report("\n".join(lines) + "\n", not args.no_record)


if __name__ == "__main__":
    main()
