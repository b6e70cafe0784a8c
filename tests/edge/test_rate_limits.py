"""Rate limits: token buckets per client IP and per write key, and a wrong-key allowance per IP;
429 + Retry-After, counted in /metrics. Each test is its own client (X-Forwarded-For, trusted by
the ``tight`` server); the buckets themselves are checked with a hand-driven clock."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx

from tests.conftest import Server
from tests.edge.conftest import METRICS_TOKEN
from trailmark.ratelimit import EdgeLimits, TokenBuckets


def batch() -> dict[str, Any]:
    return {"batch": [{"type": "track", "event": "Limited", "anonymousId": f"rl-{uuid.uuid4()}"}]}


def post(server: Server, ip: str, key: str | None = None, forwarded: str | None = None) -> httpx.Response:
    return server.post("/v1/batch", batch(), key=key, headers={"x-forwarded-for": forwarded or ip})


def limited(r: httpx.Response) -> bool:
    if r.status_code != 429:
        return False
    assert int(r.headers["retry-after"]) >= 1, r.headers
    assert r.json()["code"] == "rate_limited", r.text
    return True


def test_per_ip_burst_then_429_with_retry_after(tight: Server) -> None:
    for _ in range(10):
        assert post(tight, "203.0.113.10").status_code == 200
    r = post(tight, "203.0.113.10")
    assert limited(r) and "address" in r.json()["message"]
    # a forged first X-Forwarded-For entry does not help: the proxy's (last) entry counts
    assert limited(post(tight, "", forwarded="198.18.0.1, 203.0.113.10"))
    assert post(tight, "203.0.113.11").status_code == 200  # other clients are not affected
    # single events and the pixel share the bucket
    assert limited(
        tight.post("/v1/track", {"event": "x", "anonymousId": "a"}, headers={"x-forwarded-for": "203.0.113.10"})
    )


def test_per_write_key_limit_across_addresses(tight: Server) -> None:
    key = tight_sites(tight)[1]["write_key"]
    codes = [post(tight, f"198.51.100.{i // 10}", key).status_code for i in range(40)]  # 10 per address
    assert 30 <= codes.count(200) <= 32 and codes[-1] == 429, codes
    r = post(tight, "198.51.100.200", key)
    assert limited(r) and "write key" in r.json()["message"]
    assert post(tight, "198.51.100.201").status_code == 200  # the other site's key is not affected


def test_wrong_keys_use_up_the_address(tight: Server) -> None:
    ip = "192.0.2.50"
    for i in range(5):
        assert post(tight, ip, f"wk_guess{i}").status_code == 401
    assert limited(post(tight, ip, "wk_guess5"))
    r = post(tight, ip)  # even the right key: a guesser learns nothing more from this address
    assert limited(r) and "wrong write key" in r.json()["message"]
    assert post(tight, "192.0.2.51").status_code == 200


def test_limited_requests_are_counted(tight: Server) -> None:
    for _ in range(12):
        post(tight, "203.0.113.99")
    text = httpx.get(tight.url + "/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}).text
    counts = dict(re.findall(r'trailmark_collector_rate_limited_total\{limit="(\w+)"\} ([\d.]+)', text))
    assert float(counts["ip"]) >= 1 and set(counts) == {"ip", "key", "bad_key"}, counts


def tight_sites(server: Server) -> list[dict[str, Any]]:
    import orjson

    sites: list[dict[str, Any]] = orjson.loads((server.data_dir / "keys.json").read_bytes())["sites"]
    return sites


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_at_its_rate() -> None:
    clock = Clock()
    b = TokenBuckets(rate=2.0, burst=4, max_tracked=10, clock=clock)
    assert [b.take("a") for _ in range(4)] == [0.0] * 4
    assert b.take("a") == 0.5  # one token in half a second
    clock.now += 0.5
    assert b.take("a") == 0.0 and b.take("a") > 0
    clock.now += 100
    assert [b.take("a") for _ in range(4)] == [0.0] * 4  # refilled up to the burst, not beyond
    assert b.take("a") > 0


def test_memory_is_bounded() -> None:
    clock = Clock()
    b = TokenBuckets(rate=1.0, burst=2, max_tracked=1000, clock=clock)
    for i in range(50_000):
        b.take(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(b.buckets) <= 1000


def test_ipv6_counted_by_64_and_loopback_exempt() -> None:
    limits = EdgeLimits(
        ip_rate=1,
        ip_burst=2,
        key_rate=0,
        key_burst=0,
        bad_key_rate=0,
        bad_key_burst=0,
        max_tracked=100,
        exempt=["127.0.0.0/8", "::1/128"],
    )
    assert [limits.before_auth(f"2001:db8:1:2::{i}")[1] > 0 for i in range(3)] == [False, False, True]
    assert limits.before_auth("2001:db8:1:3::1")[1] == 0.0
    assert all(limits.before_auth("127.0.0.1")[1] == 0.0 for _ in range(10))


def test_wrong_read_keys_use_up_the_address_too(tight: Server) -> None:
    def read(ip: str, key: str) -> httpx.Response:
        return httpx.get(
            tight.url + "/v1/stages", timeout=30, headers={"authorization": f"Bearer {key}", "x-forwarded-for": ip}
        )

    ip = "192.0.2.60"
    for i in range(5):
        assert read(ip, f"rk_guess{i}").status_code == 401
    r = read(ip, "rk_guess5")
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert read(ip, tight.site["read_key"]).status_code == 429  # the right key learns nothing here
    assert read("192.0.2.61", tight.site["read_key"]).status_code == 200
    # the allowance is shared with the collector: wrong write keys from an address count for reads
    for i in range(5):
        post(tight, "192.0.2.62", f"wk_guess{i}")
    assert read("192.0.2.62", tight.site["read_key"]).status_code == 429
