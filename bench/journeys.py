"""Journey read latency at 1M and 10M events: load synthetic traffic through the real journey
builder into chDB, then time the read API of a real ``trailmark up`` on that data.

    .venv/bin/python bench/journeys.py [--sizes 1000000,10000000] [--requests 200] [--insights]
        [--all-models] [--reads N] [--keep DIR | --data DIR [--code DIR]] [--no-record]

``--keep DIR`` keeps the loaded data in DIR (with its load figures in DIR/load.json); ``--data DIR``
reads such a folder again without loading, so two versions of the read code can be timed on the same
data, alternating: ``--code DIR`` serves the reads from another checkout (a git worktree of the
"before" commit). ``--all-models`` times every attribution model, not only linear. Besides latency
it reports the server process's CPU time per read (user + system, from /proc), which the other load
on a shared machine sways less than wall time. ``--no-record`` prints without appending to RESULTS.md.

Loading goes through JourneyBuilder.process (sessions, touchpoints, identities, contacts, stages
and events are all derived, as in production) but skips the collector and enrichment: events are
generated already enriched. Traffic is realistic in shape: visitors with 1-6 sessions over 60 days,
channel mix with UTM campaigns and click ids, 25 % of visitors identify (some on two devices),
conversions, stage-driving pages. Appends the figures to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from machine import cpu_model, percentile, process_cpu_s, up  # bench/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAGES = [
    "/",
    "/features",
    "/pricing",
    "/blog",
    "/blog/post-1",
    "/blog/post-2",
    "/docs",
    "/docs/start",
    "/compare",
    "/signup",
    "/cart",
    "/checkout",
    "/account",
    "/about",
    "/contact",
]
CHANNELS = [  # (weight, channel, utm_source, utm_medium, campaign pool, referrer host, referrer type, click id)
    (30, "Organic Search", "", "", [], "www.google.com", "search", ""),
    (15, "Paid Search", "google", "cpc", ["brand", "generic", "competitor"], "www.google.com", "search", "gclid"),
    (20, "Direct", "", "", [], "", "direct", ""),
    (10, "Organic Social", "", "", [], "www.facebook.com", "social", ""),
    (6, "Paid Social", "facebook", "paid_social", ["retargeting", "lookalike"], "www.facebook.com", "social", "fbclid"),
    (9, "Email", "newsletter", "email", ["nov-digest", "onboarding", "winback"], "", "email", ""),
    (7, "Referral", "", "", [], "news.example.net", "other", ""),
    (3, "Display", "dsp", "display", ["awareness"], "ads.example.org", "other", ""),
]
DEVICES = [
    ("desktop", "Chrome", "Windows"),
    ("desktop", "Safari", "Mac OS X"),
    ("mobile", "Mobile Safari", "iOS"),
    ("mobile", "Chrome Mobile", "Android"),
    ("tablet", "Mobile Safari", "iOS"),
]
COUNTRIES = ["US", "GB", "DE", "FR", "NL", "JP", "BR", "IN", "CA", "AU"]
START = datetime(2026, 9, 1, tzinfo=UTC)
INSIGHTS = {  # --insights: name -> read (weeks of KPIs ending after the generated traffic)
    "retention": "/v1/retention?cohort=week&periods=8",
    "kpis": "/v1/kpis?weeks=12&to=2026-11-15",
    # computed at each request (what the first request of a question costs), then as served: kept
    # (saved_answers) for analysis.moments_max_age_s; the fresh reads leave their answer kept
    "moments_live": "/v1/moments?conversion=Order%20Completed&fresh=true",
    "moments": "/v1/moments?conversion=Order%20Completed",
}


def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_event(defaults: dict[str, Any], **fields: Any) -> dict[str, Any]:
    ev = dict(defaults)
    ev.update(fields)
    return ev


def visitor_events(rng: random.Random, n: int, defaults: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """One visitor's events in time order, and the userId if it identified."""
    anon = f"anon-{n:09d}"
    device = rng.choice(DEVICES)
    country = rng.choice(COUNTRIES)
    weights = [c[0] for c in CHANNELS]
    user = f"user-{n:09d}" if rng.random() < 0.25 else None
    t = START + timedelta(seconds=rng.uniform(0, 50 * 86400))
    events = []
    sessions = rng.choices([1, 2, 3, 4, 6], [45, 25, 15, 10, 5])[0]
    for s in range(sessions):
        _, channel, src, med, camps, rhost, rtype, click = rng.choices(CHANNELS, weights)[0]
        campaign = rng.choice(camps) if camps else ""
        pages = rng.choices([1, 2, 3, 5, 8], [35, 25, 20, 15, 5])[0]
        path = "/"
        for p in range(pages):
            path = rng.choice(PAGES) if p else rng.choice(["/", "/", "/blog/post-1", "/pricing", "/features"])
            first = p == 0
            events.append(
                make_event(
                    defaults,
                    message_id=str(uuid.uuid4()),
                    type="page",
                    anonymous_id=anon,
                    event="",
                    timestamp=iso(t),
                    original_timestamp=iso(t),
                    sent_at=iso(t),
                    received_at=iso(t),
                    page_path=path,
                    page_url=f"https://shop.example.com{path}",
                    page_host="shop.example.com",
                    referrer_host=rhost if first else "shop.example.com",
                    referrer_type=rtype if first else "internal",
                    channel=channel if first else "Internal",
                    utm_source=src if first else "",
                    utm_medium=med if first else "",
                    utm_campaign=campaign if first else "",
                    click_id_type=click if first else "",
                    click_id=uuid.uuid4().hex[:12] if first and click else "",
                    ua_device_type=device[0],
                    ua_browser=device[1],
                    ua_os=device[2],
                    geo_country=country,
                )
            )
            t += timedelta(seconds=rng.uniform(5, 240))
            if path == "/signup" and rng.random() < 0.5:
                events.append(
                    make_event(
                        defaults,
                        message_id=str(uuid.uuid4()),
                        type="track",
                        anonymous_id=anon,
                        event="Signed Up",
                        timestamp=iso(t),
                        received_at=iso(t),
                        page_path=path,
                        ua_device_type=device[0],
                        geo_country=country,
                    )
                )
            if path == "/checkout" and rng.random() < 0.6:
                events.append(
                    make_event(
                        defaults,
                        message_id=str(uuid.uuid4()),
                        type="track",
                        anonymous_id=anon,
                        event="Order Completed",
                        timestamp=iso(t),
                        received_at=iso(t),
                        page_path=path,
                        properties={"revenue": round(rng.uniform(10, 400), 2)},
                        ua_device_type=device[0],
                        geo_country=country,
                    )
                )
        if user and s == sessions - 1:
            email = f"{user}@{rng.choice(['gmail.com', 'acme.io', 'corp.example', 'outlook.com'])}"
            events.append(
                make_event(
                    defaults,
                    message_id=str(uuid.uuid4()),
                    type="identify",
                    anonymous_id=anon,
                    user_id=user,
                    traits={"email": email},
                    email=email,
                    email_domain=email.split("@")[1],
                    timestamp=iso(t),
                    received_at=iso(t),
                )
            )
        t += timedelta(seconds=rng.uniform(3600, 10 * 86400))
    return events, user


def load(data_dir: Path, target: int, seed: int = 7) -> dict[str, Any]:
    """Runs in a child process: chDB allows one process per data path."""
    from journey_builder.builder import JourneyBuilder
    from schemas import ENRICHED_DEFAULTS
    from trailmark.runtime import tune_gc
    from trailmark.settings import JourneySettings, Settings
    from trailmark.storage import apply_migrations
    from trailmark.storage.chdb_backend import ChdbStorage

    storage = ChdbStorage(data_dir / "clickhouse", "trailmark")
    apply_migrations(storage)
    builder = JourneyBuilder(storage, JourneySettings(max_visitors=200_000))
    tune_gc(Settings().gc_threshold)  # as trailmark's processes do (trailmark/cli.py)
    defaults = {
        "v": 1,
        "site_id": "default",
        "event": "",
        "user_id": "",
        "previous_id": "",
        "group_id": "",
        "properties": {},
        "traits": {},
        "context": {},
        "original_timestamp": "",
        "sent_at": "",
        "ip": "203.0.113.0",
        "user_agent": "",
        **ENRICHED_DEFAULTS,
    }
    rng = random.Random(seed)
    batch: list[dict[str, Any]] = []
    total, n, users = 0, 0, []
    started = time.perf_counter()
    while total < target:
        events, user = visitor_events(rng, n, defaults)
        n += 1
        if user:
            users.append(user)
            if rng.random() < 0.2:  # a second device of the same user
                second, _ = visitor_events(rng, n + 10_000_000_000, defaults)
                for e in second:
                    if e["type"] == "identify":
                        e["user_id"] = user
                events += second
        batch += events
        total += len(events)
        if len(batch) >= 20_000:
            builder.process(batch)  # type: ignore[arg-type]
            batch = []
    if batch:
        builder.process(batch)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    return {"events": total, "visitors": n, "users": users[:: max(1, len(users) // 500)][:500], "load_s": seconds}


def timed(
    client: httpx.Client, url: str, headers: dict[str, str], n: int, pid: int
) -> tuple[float, float, float, float]:
    """p50 and p95 latency of ``n`` reads of ``url``, the server's CPU ms per read, and the first
    read's latency (the server's first read of that kind since it started). Under 20 reads the p95
    is the slowest read."""
    lat = []
    cpu = process_cpu_s(pid)
    for _ in range(n):
        t = time.perf_counter()
        r = client.get(url, headers=headers)
        lat.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, r.text[:300]
    return statistics.median(lat), percentile(lat, 0.95), (process_cpu_s(pid) - cpu) * 1000 / n, lat[0]


def anon(rng: random.Random, info: dict[str, Any]) -> str:
    """A stored visitor's id: from the folder's sample (bench/replicate.py writes one), else by the
    generator's naming (visitor n is anon-<n>)."""
    if info.get("anons"):
        return str(rng.choice(info["anons"]))
    return f"anon-{rng.randrange(info['visitors']):09d}"


def measure(
    size: int,
    requests: int,
    insights: bool = False,
    *,
    models: tuple[str, ...] = ("linear",),
    keep: Path | None = None,
    reuse: Path | None = None,
    code: Path = ROOT,
    reads: int | None = None,
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="trailmark-journeys-"))
    data = reuse or keep or work / "data"
    if reuse is None:
        out = subprocess.run(
            [sys.executable, __file__, "--load-child", str(data), str(size)], capture_output=True, check=True, cwd=ROOT
        )
        info = orjson.loads(out.stdout.splitlines()[-1])
        if keep is not None:
            (data / "load.json").write_bytes(orjson.dumps(info))
    else:
        info = orjson.loads((data / "load.json").read_bytes())
    server, base = up(code, data)
    try:
        key = orjson.loads((data / "keys.json").read_bytes())["sites"][0]["read_key"]
        h = {"authorization": f"Bearer {key}"}
        rng = random.Random(3)
        res: dict[str, Any] = {"size": size, **{k: info[k] for k in ("events", "visitors", "load_s")}}
        res["copies"] = info.get("copies")  # a folder made by bench/replicate.py: not loaded through the builder
        with httpx.Client(base_url=base, timeout=120) as c:
            journey_lat = []
            cpu = process_cpu_s(server.pid)
            for i in range(requests):
                contact = rng.choice(info["users"]) if i % 2 == 0 else anon(rng, info)
                t = time.perf_counter()
                r = c.get(f"/v1/journeys/{contact}", headers=h)
                journey_lat.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200, (contact, r.text[:200])
            res["journey_cpu"] = (process_cpu_s(server.pid) - cpu) * 1000 / requests
            res["journey_p50"], res["journey_p95"] = statistics.median(journey_lat), percentile(journey_lat, 0.95)
            reads = reads or max(5, requests // 20)
            res["reads"] = reads
            res["funnel_p50"], res["funnel_p95"], res["funnel_cpu"], res["funnel_first"] = timed(
                c, "/v1/funnel?steps=/,/pricing,/signup,Signed%20Up&window=604800", h, reads, server.pid
            )
            for model in models:
                (
                    res[f"attribution_{model}_p50"],
                    res[f"attribution_{model}_p95"],
                    res[f"attribution_{model}_cpu"],
                    res[f"attribution_{model}_first"],
                ) = timed(c, f"/v1/attribution?conversion=Order%20Completed&model={model}", h, reads, server.pid)
            res["attribution_p50"] = max(res[f"attribution_{m}_p50"] for m in models)
            res["attribution_p95"] = max(res[f"attribution_{m}_p95"] for m in models)
            if insights:  # issue 16's reads; the data spans START + ~2 months, hence the KPI window
                for name, url in INSIGHTS.items():
                    res[f"{name}_p50"], res[f"{name}_p95"], res[f"{name}_cpu"], _ = timed(c, url, h, reads, server.pid)

            def sql(q: str) -> tuple[Any, float]:
                t = time.perf_counter()
                r = c.post("/v1/sql", json={"query": q}, headers=h)
                assert r.status_code == 200, r.text[:300]
                return r.json()["rows"][0]["n"], (time.perf_counter() - t) * 1000

            res["stored"], _ = sql("SELECT count() AS n FROM trailmark.events")
            # what FINAL costs (the sessions view collapses versions of open sessions)
            res["session_rows"], res["nofinal_ms"] = sql("SELECT count() AS n FROM trailmark.sessions_data")
            res["sessions"], res["final_ms"] = sql("SELECT count() AS n FROM trailmark.sessions_data FINAL")
            _, res["view_ms"] = sql("SELECT count() AS n FROM trailmark.sessions WHERE channel = 'Email'")
        return res
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(work, ignore_errors=True)  # a kept or reused folder is not in it


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--load-child":
        print(orjson.dumps(load(Path(sys.argv[2]), int(sys.argv[3]))).decode())
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--insights", action="store_true", help="also time /v1/retention, /v1/kpis, /v1/moments")
    ap.add_argument("--all-models", action="store_true", help="time every attribution model (default: linear)")
    ap.add_argument(
        "--reads", type=int, help="funnel and attribution reads of each kind (default: requests / 20, at least 5)"
    )
    ap.add_argument("--keep", type=Path, help="load into this folder and keep it (one size)")
    ap.add_argument("--data", type=Path, help="time the reads on a folder loaded with --keep (no load)")
    ap.add_argument("--code", type=Path, default=ROOT, help="checkout that serves the reads (default: this one)")
    ap.add_argument("--no-record", action="store_true", help="print the figures only (no RESULTS.md append)")
    args = ap.parse_args()
    from journey_builder.attribution import MODELS

    models = MODELS if args.all_models else ("linear",)
    opts = {"models": models, "keep": args.keep, "reuse": args.data, "code": args.code.resolve(), "reads": args.reads}
    results = [measure(int(s), args.requests, args.insights, **opts) for s in args.sizes.split(",")]
    cpu = cpu_model()
    lines = [
        f"## Journeys read API — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC (load average {os.getloadavg()[0]:.1f})",
        "",
        f"Machine: {os.cpu_count()} cores, {cpu}. chDB {__import__('chdb').__version__}. Data loaded through"
        " JourneyBuilder.process (enrichment skipped), then read through a `trailmark up` server with"
        f" httpx from the same machine, {args.requests} journey requests (half by userId, half by"
        f" anonymousId), funnel = 4 steps / 7-day window, attribution = {', '.join(models)}"
        + f", {results[0]['reads']} reads of each of these"
        + (" (the slowest model's figures in the table)" if len(models) > 1 else "")
        + f". Reads served by {'this checkout' if opts['code'] == ROOT else opts['code']}"
        + (f" on data loaded earlier ({args.data}; load time from then)" if args.data else "")
        + ".",
        "",
        "| events | visitors | load (builder) | journey p50 / p95 | funnel p50 / p95 | attribution p50 / p95 |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['stored']:,} | {r['visitors']:,} | "
            + (
                f"{r['copies']} copies by bench/replicate.py"
                if r.get("copies")
                else f"{r['load_s']:.0f} s ({r['events'] / r['load_s']:,.0f} ev/s)"
            )
            + f" | {r['journey_p50']:.1f} / {r['journey_p95']:.1f} ms | {r['funnel_p50']:.0f} /"
            f" {r['funnel_p95']:.0f} ms | {r['attribution_p50']:.0f} / {r['attribution_p95']:.0f} ms |"
        )

    def table(title: str, heads: list[str], cells: Callable[[dict[str, Any]], list[str]]) -> None:
        """A table of one row per size: events, then ``cells``."""
        lines.extend(["", title, "", "| events | " + " | ".join(heads) + " |", "| ---: |" + " ---: |" * len(heads)])
        lines.extend(f"| {r['stored']:,} | " + " | ".join(cells(r)) + " |" for r in results)

    table(
        "The first read of each kind (ms; the server's first of that kind since it started):",
        ["funnel", *(f"attribution {m}" for m in models)],
        lambda r: [f"{r['funnel_first']:.0f}", *(f"{r[f'attribution_{m}_first']:.0f}" for m in models)],
    )
    table(
        "Server CPU per read (user + system, ms):",
        ["journey", "funnel", *(f"attribution {m}" for m in models)],
        lambda r: [
            f"{r['journey_cpu']:.1f}",
            f"{r['funnel_cpu']:.0f}",
            *(f"{r[f'attribution_{m}_cpu']:.0f}" for m in models),
        ],
    )
    lines += [
        "",
        "Sessions (ReplacingMergeTree; the `sessions` view reads it with FINAL):",
        "",
        "| events | sessions_data rows (versions) | sessions | count() plain | count() FINAL |"
        " sessions view, one filter |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['stored']:,} | {r['session_rows']:,} | {r['sessions']:,} | {r['nofinal_ms']:.0f} ms |"
            f" {r['final_ms']:.0f} ms | {r['view_ms']:.0f} ms |"
        )
    if len(models) > 1:
        table(
            "Attribution per model, p50 / p95:",
            list(models),
            lambda r: [f"{r[f'attribution_{m}_p50']:.0f} / {r[f'attribution_{m}_p95']:.0f} ms" for m in models],
        )
    if args.insights:
        table(
            "Journey-method reads (issue 16; target p95 < 1 s each at 10M events), and the server's CPU per read:",
            [f"{n} p50 / p95 (CPU)" for n in INSIGHTS],
            lambda r: [f"{r[f'{n}_p50']:.0f} / {r[f'{n}_p95']:.0f} ms ({r[f'{n}_cpu']:.0f} ms)" for n in INSIGHTS],
        )
    lines += [
        "",
        "Targets (issue 15): at 10M events journey p95 < 50 ms, funnel and attribution (every model) p95 < 500 ms;"
        " at 100M journey p95 < 100 ms, funnel and attribution p95 < 3 s.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        with open(ROOT / "bench" / "RESULTS.md", "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
