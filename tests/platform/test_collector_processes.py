"""``trailmark up`` with collector processes (trailmark/processes.py), on real processes: one command
starts and stops them all, a crashed one is restarted and counted, the keys of the first start
reach every process, rate limits are not multiplied by the processes, /metrics sums their
counters, client addresses cross the proxy, and nothing acknowledged is lost on shutdown.

Which collector process takes a connection is the kernel's choice; tests that need one process
to answer stop the other (SIGSTOP: a stopped process accepts nothing) and let it go after."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest

from tests.conftest import Server
from tests.kafka.conftest import kafka_bootstrap  # noqa: F401 (the real-broker fixture)
from tests.kafka.pipeline import bus_env
from trailmark.processes import merge_metrics
from trailmark.ratelimit import TokenBuckets
from trailmark.shared_buckets import SharedBuckets, SharedTable

TWO = {"TRAILMARK_COLLECTOR_PROCESSES": "2"}


def batch(n: int = 1, tag: str = "cp") -> dict[str, Any]:
    return {
        "batch": [
            {"type": "track", "event": "Split", "anonymousId": f"{tag}-{uuid.uuid4()}", "messageId": str(uuid.uuid4())}
            for _ in range(n)
        ]
    }


def collectors(server: Server) -> list[dict[str, Any]]:
    procs: list[dict[str, Any]] = httpx.get(server.url + "/healthz", timeout=10).json()["collector_processes"]
    return procs


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state == "Z"  # exited, not yet reaped by init


@contextmanager
def only(pid_running: int, pids: list[int]) -> Iterator[None]:
    """Every collector process but ``pid_running`` stopped (SIGSTOP) for the block."""
    stopped = [p for p in pids if p != pid_running]
    for p in stopped:
        os.kill(p, signal.SIGSTOP)
    try:
        yield
    finally:
        for p in stopped:
            os.kill(p, signal.SIGCONT)


def fresh_post(server: Server, body: Any, key: str | None = None, headers: dict[str, str] | None = None) -> int:
    """One request on a new connection (so the kernel picks a process again)."""
    return server.post("/v1/batch", body, key=key, headers={"connection": "close", **(headers or {})}).status_code


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" ([0-9.e+-]+)$"
    m = re.search(pattern, text, re.M)
    assert m, f"{name} {labels} not in /metrics"
    return float(m.group(1))


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two collector processes; nothing exempt from the limits, the client address from
    X-Forwarded-For, a wrong-key allowance of 5 per address (refilled in 20 s)."""
    env = {
        **TWO,
        "TRAILMARK_COLLECTOR__TRUST_FORWARDED_FOR": "true",
        "TRAILMARK_COLLECTOR__RATE_LIMIT_EXEMPT": "[]",
        "TRAILMARK_COLLECTOR__RATE_LIMIT_BAD_KEY_BURST": "5",
        "TRAILMARK_COLLECTOR__RATE_LIMIT_BAD_KEY_PER_S": "0.05",
    }
    srv = Server(tmp_path_factory.mktemp("split") / "data", env).start()
    yield srv
    srv.stop()


def test_keys_of_the_first_start_reach_every_process_and_reads_are_proxied(split: Server) -> None:
    procs = collectors(split)
    pids = [p["pid"] for p in procs]
    assert len(procs) == 2 and all(p["up"] for p in procs) and len(set(pids)) == 2, procs
    for pid in pids:  # keys.json was created by this start; each process takes its write key
        with only(pid, pids):
            assert fresh_post(split, batch(3, tag=f"keys-{pid}"), headers={"x-forwarded-for": "198.51.100.1"}) == 200
    for pid in pids:
        q = f"SELECT count() AS n FROM trailmark.events WHERE anonymous_id LIKE 'keys-{pid}-%'"
        split.wait_for(q, 3)
    # reads, the SQL endpoint and the docs come from the main process through either collector
    assert split.read("/v1/stages").status_code == 200
    assert httpx.get(split.url + "/docs", timeout=10).status_code == 200
    assert "/v1/journeys/{contact}" in httpx.get(split.url + "/openapi.json", timeout=10).json()["paths"]
    ready = httpx.get(split.url + "/readyz", timeout=10).json()
    assert ready["ready"] and ready["roles"] == ["collector", "enricher", "journeys"], ready


def test_the_proxy_keeps_the_path_as_sent(split: Server) -> None:
    anon = f"q?x#y z&{uuid.uuid4()}"  # decoded and sent again, ? and # would cut the id short
    body = {"batch": [{"type": "track", "event": "Odd", "anonymousId": anon, "messageId": str(uuid.uuid4())}]}
    assert fresh_post(split, body, headers={"x-forwarded-for": "198.51.100.2"}) == 200
    split.wait_for(f"SELECT count() AS n FROM trailmark.events WHERE anonymous_id = '{anon}'", 1)
    r = split.read("/v1/journeys/" + quote(anon, safe=""), params={"unused": "a&b"})
    assert r.status_code == 200, r.text
    assert anon in r.text


def test_client_address_crosses_the_proxy(split: Server) -> None:
    stored = "203.0.113.77"
    assert fresh_post(split, batch(tag="addr"), headers={"x-forwarded-for": stored}) == 200
    split.wait_for("SELECT ip FROM trailmark.events WHERE anonymous_id LIKE 'addr-%'", "203.0.113.0")

    def read(ip: str, key: str) -> int:
        h = {"authorization": f"Bearer {key}", "x-forwarded-for": ip, "connection": "close"}
        return httpx.get(split.url + "/v1/stages", headers=h, timeout=30).status_code

    # the main process counts wrong read keys per client address, not per collector process
    assert [read("192.0.2.10", f"rk_guess{i}") for i in range(6)] == [401] * 5 + [429]
    assert read("192.0.2.11", split.site["read_key"]) == 200


def test_wrong_keys_are_one_allowance_across_processes(split: Server) -> None:
    pids = [p["pid"] for p in collectors(split)]
    ip = {"x-forwarded-for": "192.0.2.20"}
    with only(pids[0], pids):
        codes = [fresh_post(split, batch(), key=f"wk_guess{i}", headers=ip) for i in range(5)]
    assert codes == [401] * 5
    with only(pids[1], pids):  # the other process knows this address has used its allowance
        assert fresh_post(split, batch(), key="wk_guess5", headers=ip) == 429
        assert fresh_post(split, batch(), headers=ip) == 429  # even with the right key
    # and so does the main process, for read keys
    r = httpx.get(split.url + "/v1/stages", headers={"authorization": f"Bearer {split.site['read_key']}", **ip})
    assert r.status_code == 429


def test_forged_internal_headers_are_not_trusted(tmp_path: Path) -> None:
    """Loopback is exempt by default: a client that could pose as another address through the
    proxy's own headers would be limited; it is not."""
    srv = Server(tmp_path / "data", {**TWO, "TRAILMARK_COLLECTOR__RATE_LIMIT_BAD_KEY_BURST": "2"}).start()
    try:
        forged = {"x-trailmark-client": "198.51.100.9", "x-trailmark-internal": "guess", "connection": "close"}
        codes = {
            httpx.get(srv.url + "/v1/stages", headers={"authorization": "Bearer rk_x", **forged}).status_code
            for _ in range(6)
        }
        assert codes == {401}
        main_url = re.search(r"the rest on (http://127\.0\.0\.1:\d+)", srv.tail(20_000))
        assert main_url, srv.tail()
        codes = {
            httpx.get(main_url.group(1) + "/v1/stages", headers={"authorization": "Bearer rk_x", **forged}).status_code
            for _ in range(6)
        }
        assert codes == {401}
    finally:
        srv.stop()


def test_metrics_sum_the_collector_processes(split: Server) -> None:
    before = metric(httpx.get(split.url + "/metrics").text, "trailmark_collector_events_total", outcome="accepted")
    pids = [p["pid"] for p in collectors(split)]
    for n, pid in ((4, pids[0]), (7, pids[1])):
        with only(pid, pids):
            assert fresh_post(split, batch(n), headers={"x-forwarded-for": "198.51.100.30"}) == 200
    text = httpx.get(split.url + "/metrics").text
    assert metric(text, "trailmark_collector_events_total", outcome="accepted") == before + 11
    assert metric(text, "trailmark_collector_processes_up") == 2
    assert "trailmark_stage_records_total" in text  # the main process's own families are there too
    assert len(re.findall(r"^# TYPE trailmark_collector_events_total ", text, re.M)) <= 1


def test_a_crashed_collector_is_restarted_and_counted(split: Server) -> None:
    procs = collectors(split)
    victim = procs[0]["pid"]
    os.kill(victim, signal.SIGKILL)
    deadline = time.time() + 30
    while True:
        now = collectors(split)
        if now[0]["up"] and now[0]["pid"] != victim:
            break
        assert time.time() < deadline, now
        time.sleep(0.1)
    assert now[0]["restarts"] == 1 and now[0]["last_exit"] == -signal.SIGKILL, now
    assert now[1]["pid"] == procs[1]["pid"] and now[1]["restarts"] == 0
    assert httpx.get(split.url + "/readyz", timeout=10).status_code == 200
    assert metric(httpx.get(split.url + "/metrics").text, "trailmark_collector_process_restarts_total") == 1
    with only(now[0]["pid"], [p["pid"] for p in now]):
        assert fresh_post(split, batch(), headers={"x-forwarded-for": "198.51.100.40"}) == 200


def test_sigterm_stops_everything_and_loses_nothing_acknowledged(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", TWO).start()
    pids = [p["pid"] for p in collectors(srv)]
    acked: list[int] = []
    stop = threading.Event()

    def send() -> None:  # keeps posting while the server stops; counts what was acknowledged
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    r = client.post(
                        srv.url + "/v1/batch",
                        content=orjson.dumps(batch(10, tag="term")),
                        auth=(srv.site["write_key"], ""),
                        headers={"content-type": "application/json"},
                    )
                except httpx.HTTPError:
                    continue
                if r.status_code == 200:
                    acked.append(r.json()["accepted"])

    senders = [threading.Thread(target=send) for _ in range(4)]
    for t in senders:
        t.start()
    time.sleep(1.5)
    took = srv.terminate(30)
    stop.set()
    for t in senders:
        t.join(15)
    assert took < 20, f"stopped in {took:.1f} s"
    assert srv.proc is not None and srv.proc.returncode in (0, -signal.SIGTERM), srv.tail()
    deadline = time.time() + 5
    while not all(gone(p) for p in pids):
        assert time.time() < deadline, f"collector processes left behind: {pids}"
        time.sleep(0.1)
    assert "Traceback" not in srv.tail(200_000), srv.tail()
    assert sum(acked) > 0
    srv.start()  # the next start stores what the last one acknowledged
    try:
        srv.wait_for(
            "SELECT count() AS n FROM trailmark.events WHERE anonymous_id LIKE 'term-%'", sum(acked), timeout=60
        )
    finally:
        srv.stop()


def test_a_killed_main_process_leaves_no_collector_behind(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", TWO).start()
    pids = [p["pid"] for p in collectors(srv)]
    srv.kill()
    deadline = time.time() + 10
    while not all(gone(p) for p in pids):
        assert time.time() < deadline, f"orphaned collector processes: {pids}"
        time.sleep(0.1)
    srv.start()  # the port is free again: nothing of the killed run holds it
    try:
        assert srv.post("/v1/batch", batch()).status_code == 200
    finally:
        srv.stop()


def test_zero_runs_everything_in_one_process(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", {"TRAILMARK_COLLECTOR_PROCESSES": "0"}).start()
    try:
        assert "collector_processes" not in httpx.get(srv.url + "/healthz").json()
        assert srv.post("/v1/batch", batch(2, tag="one")).status_code == 200
        srv.wait_for("SELECT count() AS n FROM trailmark.events WHERE anonymous_id LIKE 'one-%'", 2)
    finally:
        srv.stop()


@pytest.mark.kafka
def test_collector_processes_on_kafka(tmp_path: Path, kafka_bootstrap: str) -> None:  # noqa: F811
    env = {**bus_env(kafka_bootstrap), **TWO}
    srv = Server(tmp_path / "data", env, args=["--bus", "kafka"]).start()
    try:
        pids = [p["pid"] for p in collectors(srv)]
        for pid in pids:
            with only(pid, pids):
                assert fresh_post(srv, batch(5, tag="kafka")) == 200
        srv.wait_for("SELECT count() AS n FROM trailmark.events WHERE anonymous_id LIKE 'kafka-%'", 10, timeout=60)
        # each process has a spool of its own (two processes replaying one would race)
        assert (tmp_path / "data" / "spool" / "collector-1").is_dir()
    finally:
        took = srv.terminate(30)
    assert took < 20 and "Traceback" not in srv.tail(200_000), srv.tail()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_shared_buckets_answer_as_token_buckets() -> None:
    clock = Clock()
    table = SharedTable.create(100)
    shared = SharedBuckets(2.0, 4, table, "ip")
    shared.clock = clock
    plain = TokenBuckets(2.0, 4, 10_000, clock=clock)
    for i in range(3000):
        key = f"10.0.0.{i * 7 % 23}"
        clock.now += (i % 5) * 0.07
        if i % 4:
            assert shared.take(key) == pytest.approx(plain.take(key)), i
        else:
            assert shared.wait(key) == pytest.approx(plain.wait(key)), i
    table.close()


def test_shared_buckets_stay_bounded() -> None:
    clock = Clock()
    table = SharedTable.create(100)
    b = SharedBuckets(1.0, 2, table, "bad_key")
    b.clock = clock
    for i in range(50_000):  # far more clients than slots: the table does not grow, and still limits
        b.take(f"client-{i}")
        clock.now += 0.001
    assert os.fstat(table.fd).st_size == 3 * table.slots * 24
    assert b.take("guesser") == 0 and b.take("guesser") == 0 and b.take("guesser") > 0
    table.close()


def test_merged_metrics_sum_samples_and_skip_process_families() -> None:
    from prometheus_client import CollectorRegistry, Counter, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    def registry(accepted: float) -> CollectorRegistry:
        r = CollectorRegistry()
        Counter("demo_events", "Events", ["outcome"], registry=r).labels("accepted").inc(accepted)
        return r

    other = generate_latest(registry(3)).decode() + "process_resident_memory_bytes 1e9\n"
    merged = merge_metrics(registry(4).collect(), [other, generate_latest(registry(5)).decode()])
    families = {f.name: f for f in text_string_to_metric_families(merged.decode())}
    totals = [s.value for s in families["demo_events"].samples if s.name == "demo_events_total"]
    assert totals == [12.0] and "process_resident_memory_bytes" not in families
