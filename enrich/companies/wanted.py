"""Domains the enricher wants looked up: a bounded, thread-safe hand-over to the lookup worker.

The enricher runs in a worker thread and must never wait for a lookup, so ``want`` only records the
(site, domain) pair and returns: a pair asked for within ``refresh_age_s`` is ignored at the cost of a
dict look-up (a contact sends the same email with every identify), and when ``queue_size`` pairs are
already waiting a new one is dropped (counted; a later event asks again). The worker takes pairs in
the order they were first asked for.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from prometheus_client import Counter

WANTED = Counter("trailmark_company_lookups_wanted_total", "Company domains the enricher asked for", ["outcome"])


class LookupRequests:
    """(site_id, domain) pairs waiting for the lookup worker."""

    def __init__(self, queue_size: int = 10_000, refresh_age_s: float = 30 * 24 * 3600, seen_max: int = 100_000):
        self.queue_size = queue_size
        self.refresh_age_s = refresh_age_s
        self.seen_max = seen_max
        self._lock = threading.Lock()
        self._pending: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()  # pair -> when it was last queued
        self.dropped = 0

    def want(self, site_id: str, domain: str) -> None:
        """Ask for a lookup; returns at once whatever happens."""
        key = (site_id, domain)
        now = time.monotonic()
        asked = self._seen.get(key)  # the common case, without the lock: a read of a dict is atomic
        if asked is not None and now - asked < self.refresh_age_s:
            return
        with self._lock:
            asked = self._seen.get(key)
            if asked is not None and now - asked < self.refresh_age_s:
                return
            if len(self._pending) >= self.queue_size:
                self.dropped += 1
                WANTED.labels("dropped").inc()
                return
            self._seen[key] = now
            self._seen.move_to_end(key)
            if len(self._seen) > self.seen_max:
                self._seen.popitem(last=False)
            self._pending[key] = None
        WANTED.labels("queued").inc()

    def take(self, n: int) -> list[tuple[str, str]]:
        """Up to ``n`` waiting pairs, oldest first."""
        out: list[tuple[str, str]] = []
        with self._lock:
            while self._pending and len(out) < n:
                out.append(self._pending.popitem(last=False)[0])
        return out

    def again(self, pairs: list[tuple[str, str]]) -> None:
        """Put pairs back (storage was unavailable): they are taken again first."""
        with self._lock:
            for key in reversed(pairs):
                self._pending[key] = None
                self._pending.move_to_end(key, last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)


__all__ = ["LookupRequests"]
