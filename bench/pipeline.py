"""End-to-end pipeline throughput and freshness: collector -> bus -> enricher -> journey builder -> chDB.

Three set-ups in one run, on the same machine:
  * embedded: ``trailmark up`` (one process, SQLite event log, chDB);
  * kafka: ``trailmark collector``, ``trailmark enricher``, ``trailmark journey-builder`` as three
    processes on a real broker (``--kafka HOST:PORT``, or one started here with deploy/kafka/kafka.sh);
  * kafka-scaled: one collector, two enrichers and two journey builders (each pair one consumer
    group, 6 partitions). Two builders need a ClickHouse server (chDB opens a data path in one
    process only); no server package is installed here, so they use the chDB-backed ClickHouse HTTP
    endpoint of tests/chserver, a Python process in front of the same engine (its HTTP and
    serialisation cost is part of the figure; a real server would not be in Python).

Throughput: wrk posts 50-event browser batches (one visitor each, unique messageIds per request)
as fast as the collector takes them for ``--seconds``; the figure is accepted events divided by
the time until the last of them is queryable in trailmark.events (so a stage that falls behind
counts). Freshness: under a paced load (``--paced-share`` of that throughput), ``PROBERS`` probers
each post a probe event, poll /v1/sql until it is visible, wait 200 ms and post the next; p50/p95
of POST -> queryable over all their probes (one prober gave ~12 probes in 15 s: its p95 was the
slowest probe but one).

    .venv/bin/python bench/pipeline.py [--seconds 15] [--connections 16] [--kafka HOST:PORT] [--only kafka-scaled]

Prints the figures and appends them to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from machine import cpu_model, free_port  # bench/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1]
KAFKA_SH = ROOT / "deploy" / "kafka" / "kafka.sh"
UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
PER_BATCH = 50


def template() -> bytes:
    """One visitor's 50-event batch; wrk fills @VIS@ and @MID@ per request."""
    now = datetime.now(UTC).isoformat()
    events = []
    for i in range(PER_BATCH):
        events.append(
            {
                "type": "page" if i % 5 == 0 else "track",
                "event": "Product Viewed",
                "messageId": f"@MID@-{i:02d}",
                "anonymousId": "@VIS@",
                "timestamp": now,
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
        )
    return orjson.dumps({"batch": events, "sentAt": now})


@dataclass
class Wrk:
    requests: int
    seconds: float
    non2xx: int


def run_wrk(url: str, key: str, seconds: float, connections: int, work: Path, rps: float | None = None) -> Wrk:
    body = work / "body.json"
    body.write_bytes(template())
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    run = uuid.uuid4().hex[:8]
    delay = f"delay = function() return {connections * 1000.0 / rps:.3f} end\n" if rps else ""
    lua = work / "post.lua"
    lua.write_text(
        f'local f = io.open("{body}", "rb"); local tpl = f:read("*all"); f:close()\n'
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "{auth}"\nwrk.headers["User-Agent"] = "{UA}"\n'
        "local n = 0\n"
        "local tid = tostring(math.random(1, 1000000000))\n"
        "request = function()\n"
        "  n = n + 1\n"
        f'  local body = (tpl:gsub("@MID@", "{run}-" .. tid .. "-" .. n))\n'
        '  body = (body:gsub("@VIS@", "v" .. (n % 20000)))\n'
        "  return wrk.format(nil, nil, nil, body)\n"
        "end\n" + delay
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:.0f}s", "--timeout", "10s", "-s", str(lua), url + "/v1/batch"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    assert done, out
    took = float(done.group(2)) / (1000 if done.group(3) == "ms" else 1)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Wrk(int(done.group(1)), took, int(non2xx.group(1)) if non2xx else 0)


class Proc:
    """A ``trailmark`` command (or, with ``module``, another ``python -m`` server) on a free port."""

    def __init__(
        self,
        args: list[str],
        data_dir: Path,
        env: dict[str, str],
        module: str = "trailmark.cli",
        ready: str = "/readyz",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.ready = ready
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(data_dir.parent / f"{args[0] if args else module}.log", "ab")  # noqa: SIM115 - closed in stop()
        clean = {k: v for k, v in os.environ.items() if not k.startswith("TRAILMARK_")}
        where = (
            ["--port", str(self.port), "--data-dir", str(data_dir)]
            if module == "trailmark.cli"
            else ["--port", str(self.port), "--path", str(data_dir)]
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args, *where],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**clean, "TRAILMARK_LOG_LEVEL": "warning", **PROBE_SETTINGS, **env},
        )

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.proc.args} exited; see {self.log.name}")
            try:
                if httpx.get(self.url + self.ready, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"{self.proc.args} not ready; see {self.log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@dataclass
class Setup:
    name: str
    collector: str
    reader: str
    procs: list[Proc]
    site: dict[str, Any]
    notes: str = ""
    broker_pid: int | None = None  # counted in the CPU figure when the bench started the broker
    figures: dict[str, float] = field(default_factory=dict)

    def count(self) -> int:
        r = httpx.post(
            self.reader + "/v1/sql",
            json={"query": "SELECT count() AS n FROM trailmark.events"},
            headers={"authorization": f"Bearer {self.site['read_key']}"},
            timeout=60,
        )
        r.raise_for_status()
        return int(r.json()["rows"][0]["n"])

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


def keys(data_dir: Path) -> dict[str, Any]:
    site: dict[str, Any] = orjson.loads((data_dir / "keys.json").read_bytes())["sites"][0]
    return site


def embedded(work: Path, collector_processes: int | None = None) -> Setup:
    env = {} if collector_processes is None else {"TRAILMARK_COLLECTOR_PROCESSES": str(collector_processes)}
    up = Proc(["up"], work / "embedded" / "data", env)
    up.wait_ready()
    return Setup("embedded (trailmark up: SQLite log, chDB)", up.url, up.url, [up], keys(up.data_dir))


def kafka_env(bootstrap: str, **extra: str) -> dict[str, str]:
    """Fresh topics and groups (a set-up never reads another's records)."""
    tag = uuid.uuid4().hex[:8]
    return {
        "TRAILMARK_KAFKA_BOOTSTRAP": bootstrap,
        "TRAILMARK_BUS__TOPIC_RAW": f"bench.raw.{tag}",
        "TRAILMARK_BUS__TOPIC_ENRICHED": f"bench.enriched.{tag}",
        "TRAILMARK_BUS__TOPIC_DEAD_LETTER": f"bench.dead.{tag}",
        "TRAILMARK_BUS__GROUP_ENRICH": f"bench-enrich-{tag}",
        "TRAILMARK_BUS__GROUP_JOURNEYS": f"bench-journeys-{tag}",
        "TRAILMARK_BUS__GROUP_DEAD_LETTERS": f"bench-dead-{tag}",
        **extra,
    }


def stages(work: Path, name: str, env: dict[str, str], builders: int, enrichers: int) -> list[Proc]:
    """Journey builders first (the first creates keys.json and the schema), then enrichers and the
    collector, each with a copy of the keys; the collector is last."""
    first = Proc(["journey-builder"], work / f"{name}-journey-builder0" / "data", env)
    first.wait_ready()
    procs = [first]
    for command, n in (("journey-builder", builders - 1), ("enricher", enrichers), ("collector", 1)):
        for i in range(n):
            d = work / f"{name}-{command}{i + (command == 'journey-builder')}" / "data"
            d.mkdir(parents=True)
            shutil.copy(first.data_dir / "keys.json", d / "keys.json")
            procs.append(Proc([command], d, env))
    for p in procs[1:]:
        p.wait_ready()
    return procs


def kafka(work: Path, bootstrap: str, extra: dict[str, str]) -> Setup:
    procs = stages(work, "kafka", kafka_env(bootstrap, **extra), builders=1, enrichers=1)
    return Setup(
        "kafka (collector, enricher, journey-builder: 3 processes; chDB)",
        procs[-1].url,
        procs[0].url,
        procs,
        keys(procs[0].data_dir),
        notes="zstd, linger 5 ms, acks=all, idempotent, 3 partitions",
    )


def kafka_scaled(work: Path, bootstrap: str, extra: dict[str, str]) -> Setup:
    ch = Proc([], work / "kafka-scaled-clickhouse" / "data", {}, module="tests.chserver.server", ready="/ping")
    ch.wait_ready()
    env = kafka_env(bootstrap, **{"TRAILMARK_CLICKHOUSE_URL": ch.url, "TRAILMARK_BUS__PARTITIONS": "6", **extra})
    procs = stages(work, "kafka-scaled", env, builders=2, enrichers=2)
    return Setup(
        "kafka ×2 (collector, 2 enrichers, 2 journey-builders: 5 processes; ClickHouse HTTP endpoint"
        " over chDB, 6th process)",
        procs[-1].url,
        procs[0].url,
        [ch, *procs],
        keys(procs[0].data_dir),
        notes="6 partitions",
    )


TICK = os.sysconf("SC_CLK_TCK")


def _stats() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds used so far) of every process, from /proc."""
    out: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK)
    return out


def tree_cpu(roots: list[int]) -> float:
    """CPU seconds of ``roots`` and all their descendants (e.g. trailmark up's collector processes)."""
    stats = _stats()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0.0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo += children.get(pid, [])
    return total


def batch_stats(procs: list[Proc]) -> dict[str, tuple[float, float]]:
    """stage -> (batches, records) so far, summed over ``procs``' /metrics (trailmark_stage_batch_records)."""
    out: dict[str, tuple[float, float]] = {}
    for p in procs:
        try:
            text = httpx.get(p.url + "/metrics", timeout=10).text
        except httpx.HTTPError:
            continue
        for m in re.finditer(r'^trailmark_stage_batch_records_(count|sum)\{stage="([^"]+)"\} (\S+)$', text, re.M):
            n, r = out.get(m.group(2), (0.0, 0.0))
            out[m.group(2)] = (n + float(m.group(3)), r) if m.group(1) == "count" else (n, r + float(m.group(3)))
    return out


def settle(setup: Setup, quiet_s: float = 2.0, timeout: float = 300) -> int:
    """Wait until nothing more is being stored (the count unchanged for ``quiet_s``): what a phase
    sent, including requests wrk cut off at its end without counting them, is in before the next
    phase is timed."""
    deadline = time.monotonic() + timeout
    last, since = setup.count(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        n = setup.count()
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return n
    raise SystemExit(f"{setup.name}: still storing after {timeout:.0f} s")


def wait_count(setup: Setup, target: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if setup.count() >= target:
            return time.monotonic()
        time.sleep(0.1)
    raise SystemExit(f"{setup.name}: only {setup.count()} of {target} events stored after {timeout:.0f} s")


def throughput(setup: Setup, seconds: float, connections: int, work: Path) -> None:
    base = setup.count()
    pids = [p.proc.pid for p in setup.procs] + ([setup.broker_pid] if setup.broker_pid else [])
    cpu0 = tree_cpu(pids)
    each0 = {pid: tree_cpu([pid]) for pid in pids}
    batches0 = batch_stats(setup.procs)
    started = time.monotonic()
    w = run_wrk(setup.collector, setup.site["write_key"], seconds, connections, work)
    if w.non2xx:
        raise SystemExit(f"{setup.name}: {w.non2xx} failed collector responses")
    accepted = w.requests * PER_BATCH
    stored_at = wait_count(setup, base + accepted, timeout=600)
    cpu = tree_cpu(pids) - cpu0
    names = {p.proc.pid: " ".join(str(a) for a in p.proc.args[3:4]) or "clickhouse" for p in setup.procs}
    each = {f"{names.get(pid, 'broker')}:{pid}": round(tree_cpu([pid]) - c, 1) for pid, c in each0.items()}
    print(setup.name, "CPU seconds per process:", each, flush=True)
    print(setup.name, "CPU µs per event:", {k: round(v * 1e6 / accepted) for k, v in each.items()}, flush=True)
    batches = {}
    for stage, (n, r) in batch_stats(setup.procs).items():
        n0, r0 = batches0.get(stage, (0.0, 0.0))
        batches[stage] = f"{n - n0:.0f} batches, {(r - r0) / max(1.0, n - n0):.0f} records each"
    print(setup.name, "stage batches:", batches, flush=True)
    total = stored_at - started
    setup.figures.update(
        accepted=accepted,
        collector_eps=accepted / w.seconds,
        e2e_eps=accepted / total,
        drain_s=total - w.seconds,
        cpu_s=cpu,
        events_per_cpu_s=accepted / cpu,
    )


PROBERS = 4  # concurrent probers of freshness, each its own visitor
# The probers share the site's read key, which runs one /v1/sql query at a time by default (429 for
# the others): four probers polling 25 times a second then mostly meet a 429, and a probe whose
# event is already stored waits behind the others' polls (on 12-05, 628 429s in 126 probes; p95
# 0.86 s against 0.57 s with a query slot per prober, same build). A slot per prober measures the
# pipeline, not that queue; the server-wide limit (sql.max_concurrent) is unchanged.
PROBE_SETTINGS = {"TRAILMARK_SQL__MAX_CONCURRENT_PER_KEY": str(PROBERS)}


def visible(answer: httpx.Response) -> bool:
    """Whether a probe's count query found it. A 429 (the read key's one query at a time,
    ``TRAILMARK_SQL__MAX_CONCURRENT_PER_KEY``, which the probers share) is asked again."""
    if answer.status_code == 429:
        return False
    answer.raise_for_status()
    return int(answer.json()["rows"][0]["n"]) > 0


def freshness(setup: Setup, seconds: float, connections: int, rps: float, work: Path) -> None:
    latencies: list[float] = []
    stop = threading.Event()

    def probe(visitor: str) -> None:
        with httpx.Client(timeout=30) as client:
            auth = (setup.site["write_key"], "")
            read = {"authorization": f"Bearer {setup.site['read_key']}"}
            while not stop.is_set():
                mid = uuid.uuid4().hex
                ev = {"type": "track", "event": "probe", "anonymousId": visitor, "messageId": mid}
                t0 = time.monotonic()
                r = client.post(
                    setup.collector + "/v1/batch",
                    content=orjson.dumps({"batch": [ev]}),
                    auth=auth,
                    headers={"content-type": "application/json", "user-agent": UA},
                )
                r.raise_for_status()
                q = {
                    "query": f"SELECT count() AS n FROM trailmark.events WHERE anonymous_id = '{visitor}'"
                    f" AND message_id = '{mid}'"
                }
                while not visible(client.post(setup.reader + "/v1/sql", json=q, headers=read)):
                    if time.monotonic() - t0 > 60:
                        raise SystemExit(f"{setup.name}: probe not visible after 60 s")
                    time.sleep(0.04)  # 4 probers x 25 reads/s: the 100/s one prober made
                latencies.append(time.monotonic() - t0)
                time.sleep(0.2)

    threads = [threading.Thread(target=probe, args=(f"probe-{i}",), daemon=True) for i in range(PROBERS)]
    for thread in threads:
        thread.start()
        time.sleep(0.25)  # spread over the builder's cycle
    w = run_wrk(setup.collector, setup.site["write_key"], seconds, connections, work, rps=rps / PER_BATCH)
    stop.set()
    for thread in threads:
        thread.join(90)
    latencies.sort()
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    setup.figures.update(
        paced_eps=w.requests * PER_BATCH / w.seconds,
        fresh_p50=q[49],
        fresh_p95=q[94],
        fresh_max=latencies[-1],
        probes=len(latencies),
    )


def start_broker(work: Path) -> tuple[str, dict[str, str], int]:
    """A broker of this run's own (its CPU is then part of the Kafka set-ups' figure): bootstrap,
    the environment kafka.sh needs to stop it, its pid."""
    env = {**os.environ, "KAFKA_RUN_DIR": str(work / "kafka")}
    out = subprocess.run(["bash", str(KAFKA_SH), "start"], env=env, capture_output=True, text=True, check=True)
    pid = int((work / "kafka" / "kafka.pid").read_text().split()[0])
    return out.stdout.strip().splitlines()[-1].removeprefix("bootstrap="), env, pid


SETUPS = ("embedded", "kafka", "kafka-scaled")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--paced-share", type=float, default=0.5, help="freshness load, share of the e2e throughput")
    ap.add_argument("--kafka", help="bootstrap of a running broker (default: start one with kafka.sh)")
    ap.add_argument("--only", choices=SETUPS)
    ap.add_argument(
        "--collector-processes", type=int, help="embedded: TRAILMARK_COLLECTOR_PROCESSES (default: its own)"
    )
    ap.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the Kafka set-ups' stages, e.g. TRAILMARK_BUS__COMPRESSION=none (repeatable)",
    )
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    work = Path(tempfile.mkdtemp(prefix="trailmark-pipeline-"))
    args.load_before = os.getloadavg()[0]
    args.kafka_given = bool(args.kafka)
    broker_env: dict[str, str] | None = None
    broker_pid: int | None = None
    results: list[Setup] = []
    try:
        for kind in SETUPS:
            if args.only and kind != args.only:
                continue
            if kind == "embedded":
                setup = embedded(work, args.collector_processes)
            else:
                bootstrap = args.kafka
                if not bootstrap:
                    bootstrap, broker_env, broker_pid = start_broker(work)
                    args.kafka = bootstrap
                extra = dict(e.split("=", 1) for e in args.env)
                setup = kafka(work, bootstrap, extra) if kind == "kafka" else kafka_scaled(work, bootstrap, extra)
                setup.broker_pid = broker_pid
            try:
                warm = run_wrk(setup.collector, setup.site["write_key"], 3, args.connections, work)
                # every warm-up event stored before the timed load starts: one still on its way
                # would count as a timed one (on Kafka the collector runs ahead of the builder)
                wait_count(setup, warm.requests * PER_BATCH, 300)
                settle(setup)
                throughput(setup, args.seconds, args.connections, work)
                print(setup.name, "throughput", {k: round(v, 1) for k, v in setup.figures.items()}, flush=True)
                settle(setup)  # the freshness probes must not queue behind the load's last events
                freshness(setup, args.seconds, args.connections, args.paced_share * setup.figures["e2e_eps"], work)
            finally:
                setup.stop()
            results.append(setup)
            print(setup.name, {k: round(v, 3) for k, v in setup.figures.items()}, flush=True)
    finally:
        if broker_env is not None:
            subprocess.run(["bash", str(KAFKA_SH), "stop"], env=broker_env, capture_output=True, check=False)
    args.load_after = os.getloadavg()[0]
    report(results, args)
    shutil.rmtree(work, ignore_errors=True)


def report(results: list[Setup], args: argparse.Namespace) -> None:
    cpu = cpu_model()
    lines = [
        f"## Pipeline end to end — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}; everything on this machine"
        f" (wrk, stages, broker). Command: `.venv/bin/python bench/pipeline.py --seconds {args.seconds:g}"
        f" --connections {args.connections}{' --kafka <a running broker>' if args.kafka_given else ''}`."
        " wrk posts 50-event one-visitor batches (~1 KB per event) for"
        f" {args.seconds:g} s; end-to-end = accepted events / time until the last is queryable in"
        " trailmark.events. Freshness = POST of a probe event -> visible through /v1/sql, under a paced load of"
        f" {args.paced_share:.0%} of the end-to-end rate. Load average (1 min) before / after the run:"
        f" {args.load_before:.1f} / {args.load_after:.1f} (other work on the machine shows here).",
        "",
        "| set-up | collector accepted, events/s | end to end, events/s | drain after load, s"
        " | events per CPU second | paced load, events/s | freshness p50 | p95 | max (probes) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in results:
        f = s.figures
        lines.append(
            f"| {s.name} | {f['collector_eps']:,.0f} | **{f['e2e_eps']:,.0f}** | {f['drain_s']:.1f}"
            f" | {f['events_per_cpu_s']:,.0f} | {f['paced_eps']:,.0f} | {f['fresh_p50']:.2f} s"
            f" | **{f['fresh_p95']:.2f} s**"
            f" | {f['fresh_max']:.2f} s ({f['probes']:.0f}) |"
        )
    lines += [
        "",
        "Events per CPU second: accepted events / CPU seconds that the set-up's processes (trailmark's,"
        " their children, the ClickHouse endpoint and"
        + (" the broker, which this run started" if not args.kafka_given else " not the shared broker")
        + ") used from the start of the load until the last event was stored; wrk is not counted. On a"
        " busy machine it is the steadier figure: what the set-up would do with the cores to itself.",
        "",
        "Targets: issue 15, embedded (`make run`) end to end ≥ 12 % of a bare endpoint that only parses the"
        " JSON (35–40k events/s on this machine; bench/collector.py measures that ceiling), freshness p95"
        " < 1 s under half of that load. Issue 12: Kafka end to end ≥ the embedded figure, freshness p95"
        " < 2 s under half of that load:",
    ]
    base = next((s for s in results if s.name.startswith("embedded")), None)
    for s in results:
        if s is base:
            continue
        f = s.figures
        e2e = (
            (
                f"{f['e2e_eps'] / base.figures['e2e_eps']:.0%} of embedded end to end"
                f" ({'met' if f['e2e_eps'] >= base.figures['e2e_eps'] else 'not met'})"
            )
            + f", {f['events_per_cpu_s'] / base.figures['events_per_cpu_s']:.0%} of its events per CPU second"
            if base
            else "no embedded run"
        )
        lines.append(
            f"- {s.name.split(' (')[0]}: {e2e}; freshness p95 {f['fresh_p95']:.2f} s"
            f" ({'met' if f['fresh_p95'] < 2 else 'not met'})."
        )
    lines.append("")
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        with open(ROOT / "bench" / "RESULTS.md", "a") as fh:
            fh.write("\n" + text)


if __name__ == "__main__":
    main()
