"""Collector throughput against a bare Starlette endpoint, in the same run on the same core.

Both servers run under uvicorn (uvloop + httptools) pinned to CPU 0; wrk drives them from CPU 1.
The baseline only parses the JSON body with orjson and answers 202; the collector authenticates,
validates each event with pydantic-core, stamps it, and commits the batch to the embedded event log
before answering. Prints the figures and appends them to bench/RESULTS.md.

    .venv/bin/python bench/collector.py [--seconds 10] [--connections 32]

``--up`` measures the collector inside ``trailmark up`` (what ``make run`` starts) while its
pipeline runs, for each ``--processes`` value (``TRAILMARK_COLLECTOR_PROCESSES``; 0 = one
process), each beside a bare Starlette endpoint run just before it: nothing pinned, everything
sharing the machine as a user's would. wrk posts 50-event batches of 50 visitors with unique
messageIds. Per set-up: accepted events/s, end to end (accepted / time until the last is
queryable), and freshness (bench/pipeline.py's probe) under half the end-to-end rate. Rounds
alternate the set-ups, so a busy machine weighs on each.

    .venv/bin/python bench/collector.py --up [--processes 0,1,2] [--rounds 2] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
from machine import cpu_model, free_port  # bench/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1]
UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"

BASELINE = """
import orjson
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

async def batch(request):
    body = orjson.loads(await request.body())
    return Response(orjson.dumps({"accepted": len(body.get("batch", []))}), status_code=202,
                    media_type="application/json")

app = Starlette(routes=[Route("/v1/batch", batch, methods=["POST"]), Route("/v1/track", batch, methods=["POST"])])
"""

COLLECTOR = """
import os
from pathlib import Path
from trailmark.app import create_app
from trailmark.keys import load_or_create
from trailmark.settings import Settings

settings = Settings()
sites, _ = load_or_create(settings.data_dir)
app = create_app(settings, sites, frozenset({"collector"}))
import gc  # as trailmark.cli does before serving
gc.collect()
gc.freeze()
gc.set_threshold(20_000, 20, 20)
"""


def event(i: int, visitor: int | None = None) -> dict[str, object]:
    return {
        "type": "page" if i % 3 == 0 else "track",
        "event": "Product Viewed",
        "messageId": str(uuid.uuid4()),
        "anonymousId": f"anon-{i % 997 if visitor is None else visitor}",
        "timestamp": datetime.now(UTC).isoformat(),
        "properties": {"sku": f"SKU-{i}", "price": 19.99, "currency": "EUR", "list": "search results"},
        "context": {
            "page": {
                "url": f"https://shop.example.com/p/{i}?utm_source=newsletter&utm_medium=email",
                "path": f"/p/{i}",
                "referrer": "https://www.google.com/",
                "title": "Product",
            },
            "userAgent": UA,
            "locale": "en-GB",
            "timezone": "Europe/London",
            "screen": {"width": 1440, "height": 900},
            "library": {"name": "trailmark.js", "version": "0.1.0"},
        },
    }


def start(module_src: str, workdir: Path, env: dict[str, str], pin: bool = True) -> tuple[subprocess.Popen[bytes], str]:
    (workdir / "benchapp.py").write_text(module_src)
    port = free_port()
    cmd = [
        *(["taskset", "-c", "0"] if pin else []),
        sys.executable,
        "-m",
        "uvicorn",
        "benchapp:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
    ]
    proc = subprocess.Popen(cmd, cwd=workdir, env={**os.environ, **env, "PYTHONPATH": f"{workdir}:{ROOT}"})
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(url + "/healthz", timeout=0.5)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    return proc, url


def wrk(url: str, path: str, body: bytes, auth: str, seconds: int, connections: int, workdir: Path) -> float:
    lua = workdir / "post.lua"
    body_file = workdir / "body.json"
    body_file.write_bytes(body)
    lua.write_text(
        f'local f = io.open("{body_file}", "rb"); wrk.body = f:read("*all"); f:close()\n'
        'wrk.method = "POST"\n'
        f'wrk.headers["Content-Type"] = "application/json"\nwrk.headers["Authorization"] = "{auth}"\n'
        f'wrk.headers["User-Agent"] = "{UA}"\n'
    )
    out = run_wrk(["taskset", "-c", "1", "wrk", f"-d{seconds}s"], connections, lua, url + path)
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def run_wrk(command: list[str], connections: int, lua: Path, url: str) -> str:
    """wrk's report; exits when any answer was not 2xx."""
    out = subprocess.run(
        [*command, "-t1", f"-c{connections}", "-s", str(lua), url], capture_output=True, text=True, check=True
    ).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"{non2xx.group(1)} failed responses from {url}:\n{out}")
    return out


def mixed_template() -> bytes:
    """A 50-event batch of 50 visitors; wrk fills @MID@ (unique per request) and @VIS@."""
    now = datetime.now(UTC).isoformat()
    events = []
    for i in range(50):
        ev = event(i)
        ev.update(messageId=f"@MID@-{i:02d}", anonymousId=f"@VIS@-{i:02d}", timestamp=now)
        events.append(ev)
    return orjson.dumps({"batch": events, "sentAt": now})


def wrk_unique(url: str, auth: str, seconds: float, connections: int, work: Path) -> tuple[int, float]:
    """wrk posting ``mixed_template`` with fresh messageIds: (2xx requests, seconds); exits on any other answer."""
    tpl = work / "mixed.json"
    tpl.write_bytes(mixed_template())
    lua = work / "unique.lua"
    run = uuid.uuid4().hex[:8]
    lua.write_text(
        f'local f = io.open("{tpl}", "rb"); local tpl = f:read("*all"); f:close()\n'
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "{auth}"\nwrk.headers["User-Agent"] = "{UA}"\n'
        "local n = 0\nlocal tid = tostring(math.random(1, 1000000000))\n"
        "request = function()\n  n = n + 1\n"
        f'  local body = (tpl:gsub("@MID@", "{run}-" .. tid .. "-" .. n))\n'
        '  body = (body:gsub("@VIS@", "m" .. (n % 5000)))\n'
        "  return wrk.format(nil, nil, nil, body)\nend\n"
    )
    out = run_wrk(["wrk", f"-d{seconds:.0f}s", "--timeout", "10s"], connections, lua, url + "/v1/batch")
    done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    assert done, out
    return int(done.group(1)), float(done.group(2)) / (1000 if done.group(3) == "ms" else 1)


def up_mode(args: argparse.Namespace) -> None:
    """The collector inside ``trailmark up`` against a bare endpoint, per collector_processes value."""
    import base64

    from pipeline import Proc, Setup, freshness, keys, settle, wait_count
    from pipeline import run_wrk as one_visitor_wrk

    work = Path(tempfile.mkdtemp(prefix="trailmark-bench-up-"))
    processes = [int(p) for p in args.processes.split(",")]
    rows: list[dict[str, float]] = []
    for round_ in range(args.rounds):
        order = processes if round_ % 2 == 0 else processes[::-1]
        for n in order:
            load = os.getloadavg()[0]
            base_proc, base_url = start(BASELINE, work, {}, pin=False)
            try:
                wrk_unique(base_url, "Basic x", 2, args.connections, work)  # warm-up
                reqs, took = wrk_unique(base_url, "Basic x", args.seconds, args.connections, work)
                bare_mixed = reqs * 50 / took
                one = one_visitor_wrk(base_url, "x", args.seconds, args.connections, work)
                bare_one = one.requests * 50 / one.seconds
            finally:
                base_proc.terminate()
                base_proc.wait(10)
            up = Proc(["up"], work / f"up-{round_}-{n}" / "data", {"TRAILMARK_COLLECTOR_PROCESSES": str(n)})
            try:
                up.wait_ready()
                setup = Setup(f"collector_processes={n}", up.url, up.url, [up], keys(up.data_dir))
                auth = "Basic " + base64.b64encode(f"{setup.site['write_key']}:".encode()).decode()
                sent, _ = wrk_unique(up.url, auth, 2, args.connections, work)  # warm-up
                reqs, took = wrk_unique(up.url, auth, args.seconds, args.connections, work)  # the pipeline runs
                collector = reqs * 50 / took
                wait_count(setup, (sent + reqs) * 50, timeout=600)
                # drained: what wrk sent but cut off at its end without counting is in too, or it would
                # be stored during the next phase and counted towards it (bench/pipeline.py's settle)
                base = settle(setup)
                started = time.monotonic()
                w = one_visitor_wrk(up.url, setup.site["write_key"], args.seconds, args.connections, work)
                if w.non2xx:
                    raise SystemExit(f"{w.non2xx} failed responses from trailmark up")
                e2e = w.requests * 50 / (wait_count(setup, base + w.requests * 50, timeout=600) - started)
                settle(setup)  # the probes must not queue behind the rest of the end-to-end load
                freshness(setup, args.seconds, 16, e2e / 2, work)
            finally:
                up.stop()
            f = setup.figures
            row = {
                "round": round_ + 1,
                "processes": n,
                "load": load,
                "bare_mixed": bare_mixed,
                "collector": collector,
                "bare_one": bare_one,
                "e2e": e2e,
                "paced": f["paced_eps"],
                "p50": f["fresh_p50"],
                "p95": f["fresh_p95"],
            }
            rows.append(row)
            print(row, flush=True)
    report_up(rows, args)
    shutil.rmtree(work, ignore_errors=True)


def report_up(rows: list[dict[str, float]], args: argparse.Namespace) -> None:
    lines = [
        f"## Collector inside trailmark up — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}, shared with other"
        f" work (load average before each run). Command: `.venv/bin/python bench/collector.py --up --processes"
        f" {args.processes} --rounds {args.rounds} --seconds {args.seconds} --connections {args.connections}`."
        " Nothing pinned; unique messageIds. Collector: 50-event batches of 50 visitors while the pipeline"
        " runs; end to end: 50-event one-visitor batches until the last is queryable; each against the bare"
        " Starlette endpoint (parses the body, answers 202) with the same bodies, run just before.",
        "",
        "| round | collector processes | load | bare, mixed, events/s | collector, events/s | collector / bare"
        " | bare, one visitor | end to end, events/s | end to end / bare | paced load | freshness p50 | p95 |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['round']:.0f} | {r['processes']:.0f} | {r['load']:.1f} | {r['bare_mixed']:,.0f}"
            f" | {r['collector']:,.0f} | **{r['collector'] / r['bare_mixed']:.0%}** | {r['bare_one']:,.0f}"
            f" | {r['e2e']:,.0f} | **{r['e2e'] / r['bare_one']:.0%}** | {r['paced']:,.0f} | {r['p50']:.2f} s"
            f" | **{r['p95']:.2f} s** |"
        )
    lines += [
        "",
        "Targets (issue 15): collector ≥ 30 % of the bare endpoint while the pipeline runs, end to end ≥ 12 %,"
        " freshness p95 < 1 s under half the end-to-end load.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        with open(ROOT / "bench" / "RESULTS.md", "a") as f:
            f.write("\n" + text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--up", action="store_true", help="the collector inside trailmark up (see the docstring)")
    ap.add_argument("--processes", default="0,1,2", help="--up: collector_processes values to compare")
    ap.add_argument("--rounds", type=int, default=2, help="--up: rounds, alternating the set-ups")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    if args.up:
        up_mode(args)
        return
    work = Path(tempfile.mkdtemp(prefix="trailmark-bench-"))
    sent = datetime.now(UTC).isoformat()
    # a browser batch holds one visitor's events; a server-side batch (Segment libraries) mixes visitors
    browser = orjson.dumps({"batch": [event(i, visitor=7) for i in range(50)], "sentAt": sent})
    mixed = orjson.dumps({"batch": [event(i) for i in range(50)], "sentAt": sent})
    single = orjson.dumps(event(1))
    results: dict[str, dict[str, float]] = {}
    data_dir = work / "data"
    for name, src, env in [
        ("starlette-baseline", BASELINE, {}),
        ("trailmark-collector", COLLECTOR, {"TRAILMARK_DATA_DIR": str(data_dir)}),
    ]:
        proc, url = start(src, work, env)
        try:
            auth = "Basic x"
            if name != "starlette-baseline":
                import base64

                key = orjson.loads((data_dir / "keys.json").read_bytes())["sites"][0]["write_key"]
                auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
            wrk(url, "/v1/batch", browser, auth, 2, args.connections, work)  # warm-up
            rps_batch = wrk(url, "/v1/batch", browser, auth, args.seconds, args.connections, work)
            rps_mixed = wrk(url, "/v1/batch", mixed, auth, args.seconds, args.connections, work)
            rps_single = wrk(url, "/v1/track", single, auth, args.seconds, args.connections, work)
            results[name] = {
                "batch_rps": rps_batch,
                "events_per_s": rps_batch * 50,
                "mixed_events_per_s": rps_mixed * 50,
                "single_rps": rps_single,
            }
        finally:
            proc.terminate()
            proc.wait(10)
    base, ours = results["starlette-baseline"], results["trailmark-collector"]
    ratio = ours["events_per_s"] / base["events_per_s"]
    cpu = cpu_model()
    lines = [
        f"## Collector — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}. Servers pinned to CPU 0"
        f" (uvicorn, uvloop, httptools), wrk on CPU 1, {args.connections} connections, {args.seconds} s per run;"
        " 50-event batches (~1 KB per event) and single events.",
        "",
        "| server | batches/s (one visitor) | events/s (one visitor per batch) | events/s (50 visitors per batch)"
        " | single events: requests/s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['batch_rps']:,.0f} | {r['events_per_s']:,.0f} | {r['mixed_events_per_s']:,.0f}"
            f" | {r['single_rps']:,.0f} |"
        )
    mixed_ratio = ours["mixed_events_per_s"] / base["mixed_events_per_s"]
    lines += [
        "",
        f"Collector / baseline (events/s): **{ratio:.0%}** one visitor per batch, **{mixed_ratio:.0%}**"
        " mixed visitors (target ≥ 30 %, and ≥ 150k events/s).",
        "The collector's figure includes committing every batch to the embedded event log.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    with open(ROOT / "bench" / "RESULTS.md", "a") as f:
        f.write("\n" + text)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
