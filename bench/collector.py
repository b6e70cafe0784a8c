"""Collector throughput against a bare Starlette endpoint, in the same run on the same core.

Both servers run under uvicorn (uvloop + httptools) pinned to CPU 0; wrk drives them from CPU 1.
The baseline only parses the JSON body with orjson and answers 202; the collector authenticates,
validates each event with pydantic-core, stamps it, and commits the batch to the embedded event log
before answering. Prints the figures and appends them to bench/RESULTS.md.

    .venv/bin/python bench/collector.py [--seconds 10] [--connections 32]
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


def start(module_src: str, workdir: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    (workdir / "benchapp.py").write_text(module_src)
    port = free_port()
    cmd = [
        "taskset",
        "-c",
        "0",
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
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(lua), url + path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"{non2xx.group(1)} failed responses from {url}{path}:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install -y wrk")
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
