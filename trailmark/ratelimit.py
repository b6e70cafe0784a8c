"""Rate limits at the edge: token buckets per client IP and per write key, and a stricter one per
client IP for requests with a wrong key (bounds key guessing). One ``EdgeLimits`` serves the
collector and the read API of a process, so wrong write keys and wrong read keys draw on the same
allowance.

A token bucket lets a client send ``burst`` requests at once and then ``rate`` per second, which is
what trackers do (a burst of page views, then quiet). The defaults sit far above what a real
tracker sends; they stop floods, not traffic. Memory is bounded: at most ``max_tracked`` buckets
per limit; past it, full buckets are dropped first (a full bucket and no bucket behave alike), then
the oldest. IPv6 clients are counted by /64, the block one subscriber gets, so rotating addresses
within it does not reset the count. Exempt networks (loopback by default: the operator's own host)
skip every limit.

Everything here is synchronous and cheap (a dict lookup and a few float operations per request).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Iterable
from functools import lru_cache

from prometheus_client import Counter
from starlette.requests import Request

from trailmark.settings import CollectorSettings

LIMITED = Counter("trailmark_collector_rate_limited_total", "Requests refused with 429 by a rate limit", ["limit"])
for _limit in ("ip", "key", "bad_key"):
    LIMITED.labels(_limit)


class TokenBuckets:
    """One token bucket per key: ``burst`` tokens, refilled at ``rate`` per second."""

    def __init__(
        self, rate: float, burst: float, max_tracked: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.max_tracked = max(max_tracked, 1)
        self.clock = clock
        self.buckets: dict[str, list[float]] = {}  # key -> [tokens, time of last update]

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _tokens(self, key: str, now: float) -> list[float]:
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= self.max_tracked:
                self._evict(now)
            bucket = self.buckets[key] = [self.burst, now]
        else:
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        return bucket

    def take(self, key: str) -> float:
        """Take one token: 0.0 when there was one, else the seconds until there will be one."""
        if not self.enabled:
            return 0.0
        bucket = self._tokens(key, self.clock())
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return 0.0
        return (1.0 - bucket[0]) / self.rate

    def wait(self, key: str) -> float:
        """The seconds until ``key`` has a token (0.0: it has one now); takes nothing."""
        if not self.enabled or key not in self.buckets:
            return 0.0
        tokens = self._tokens(key, self.clock())[0]
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def _evict(self, now: float) -> None:
        full = [k for k, (tokens, at) in self.buckets.items() if tokens + (now - at) * self.rate >= self.burst]
        for k in full:
            del self.buckets[k]
        if len(self.buckets) >= self.max_tracked * 0.9:  # still crowded: forget the oldest half
            for k in list(self.buckets)[: len(self.buckets) // 2]:
                del self.buckets[k]


def retry_after(wait: float) -> str:
    """A Retry-After value (whole seconds, at least 1) for a wait in seconds."""
    return str(max(1, math.ceil(wait)))


class EdgeLimits:
    """The collector's limits. Each check returns 0.0 (go on) or the seconds to wait (answer 429)."""

    @classmethod
    def from_settings(cls, s: CollectorSettings) -> EdgeLimits:
        return cls(
            ip_rate=s.rate_limit_ip_per_s,
            ip_burst=s.rate_limit_ip_burst,
            key_rate=s.rate_limit_key_per_s,
            key_burst=s.rate_limit_key_burst,
            bad_key_rate=s.rate_limit_bad_key_per_s,
            bad_key_burst=s.rate_limit_bad_key_burst,
            max_tracked=s.rate_limit_max_tracked,
            exempt=s.rate_limit_exempt,
            trust_forwarded_for=s.trust_forwarded_for,
        )

    def __init__(
        self,
        *,
        ip_rate: float,
        ip_burst: float,
        key_rate: float,
        key_burst: float,
        bad_key_rate: float,
        bad_key_burst: float,
        max_tracked: int,
        exempt: Iterable[str],
        trust_forwarded_for: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.trust_forwarded_for = trust_forwarded_for
        self.ip = TokenBuckets(ip_rate, ip_burst, max_tracked, clock)
        self.key = TokenBuckets(key_rate, key_burst, max_tracked, clock)
        self.bad_key = TokenBuckets(bad_key_rate, bad_key_burst, max_tracked, clock)
        self.exempt = [ipaddress.ip_network(n, strict=False) for n in exempt]
        # parsing an address costs more than the bucket itself: remember the last clients seen
        self.client = lru_cache(maxsize=65536)(self._client)

    def client_ip(self, request: Request) -> str:
        """The client's address: the socket peer, or behind a trusted proxy the last
        ``X-Forwarded-For`` entry (the one the proxy added; earlier ones the client may forge)."""
        if self.trust_forwarded_for:
            forwarded = request.headers.get("x-forwarded-for")
            if forwarded:
                return forwarded.rsplit(",", 1)[-1].strip()
        return request.client.host if request.client else ""

    def _client(self, ip: str) -> str | None:
        """The bucket key of a client address; None when it is exempt from every limit."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return ip  # not an address (a test client, a unix socket): counted as it is
        if any(addr in net for net in self.exempt):
            return None
        if addr.version == 6:
            return str(ipaddress.ip_network(f"{addr}/64", strict=False))
        return ip

    def before_auth(self, ip: str) -> tuple[str, float]:
        """Per-IP checks before the key is looked at: the IP's request bucket, and whether the IP
        has used up its wrong-key allowance (then every request waits, so guessing learns nothing)."""
        client = self.client(ip)
        if client is None:
            return "", 0.0
        if wait := self.bad_key.wait(client):
            LIMITED.labels("bad_key").inc()
            return "bad_key", wait
        if wait := self.ip.take(client):
            LIMITED.labels("ip").inc()
            return "ip", wait
        return "", 0.0

    def wrong_key(self, ip: str) -> None:
        """Count a request whose key was missing or unknown against its client IP."""
        client = self.client(ip)
        if client is not None:
            self.bad_key.take(client)

    def for_key(self, ip: str, site_id: str) -> float:
        """The per-write-key bucket (exempt clients skip it too)."""
        if self.client(ip) is None:
            return 0.0
        wait = self.key.take(site_id)
        if wait:
            LIMITED.labels("key").inc()
        return wait


__all__ = ["EdgeLimits", "LIMITED", "TokenBuckets", "retry_after"]
