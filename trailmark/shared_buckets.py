"""Rate-limit token buckets shared by the processes of one ``trailmark up`` (trailmark/processes.py).

With collector processes, a client's requests land on whichever process accepted its connection,
and reads on the main process. Buckets kept in each process's memory would let N processes allow N
times the traffic, and a wrong write key would no longer count against the same address's read
attempts. So every process of the run reads and updates the same buckets, in a shared memory
table (a file the main process creates unlinked and hands down by descriptor): the limits mean
exactly what they mean in one process.

The table: per limit, ``slots`` entries of (key hash, tokens, time of last update), addressed by a
64-bit BLAKE2 hash of the key (Python's own ``hash`` differs per process) and probed over
``PROBE`` neighbouring entries. A key not found takes an empty entry, or else the neighbour that
is fullest once refilled (a full bucket and no bucket behave alike; failing that, the oldest):
memory stays fixed and, as with ``TokenBuckets``, an evicted client starts again with a full
bucket. Each update holds a POSIX record lock on its probe range (per process, unlike flock, which
a descriptor inherited by another process would share), so two processes never lose each
other's token. time.monotonic is one clock for every process of a machine (CLOCK_MONOTONIC).
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import tempfile
from pathlib import Path

from trailmark.ratelimit import EdgeLimits, TokenBuckets

PROBE = 16
_ENTRY = struct.Struct("<Qdd")  # key hash (0: empty), tokens, last update
_PROBED = struct.Struct("<" + "Qdd" * PROBE)
_LIMITS = ("ip", "key", "bad_key")


def _slots(max_tracked: int) -> int:
    """A power of two at least twice ``max_tracked`` (a half-empty table keeps probe runs short)."""
    n = PROBE
    while n < 2 * max_tracked:
        n *= 2
    return n


class SharedTable:
    """The shared memory of every limit's buckets: ``len(_LIMITS)`` regions of ``slots`` entries."""

    def __init__(self, fd: int, slots: int) -> None:
        self.fd = fd
        self.slots = slots
        self.size = len(_LIMITS) * slots * _ENTRY.size
        self.map = mmap.mmap(fd, self.size)

    @classmethod
    def create(cls, max_tracked: int, folder: Path | None = None) -> SharedTable:
        """A new zeroed table in an unlinked file (in ``folder``, else the system's temporary
        folder): it disappears with the last process that holds it."""
        slots = _slots(max_tracked)
        f = tempfile.TemporaryFile(dir=folder)
        fd = os.dup(f.fileno())
        f.close()
        os.ftruncate(fd, len(_LIMITS) * slots * _ENTRY.size)
        return cls(fd, slots)

    def region(self, limit: str) -> int:
        return _LIMITS.index(limit) * self.slots * _ENTRY.size

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little") or 1


class SharedBuckets(TokenBuckets):
    """``TokenBuckets`` over one region of a ``SharedTable``: same rates, same answers, one set of
    buckets for every process."""

    def __init__(self, rate: float, burst: float, table: SharedTable, limit: str) -> None:
        super().__init__(rate, burst, table.slots)
        self.table = table
        self.base = table.region(limit)

    def take(self, key: str) -> float:
        return self._update(key, take=True) if self.enabled else 0.0

    def wait(self, key: str) -> float:
        return self._update(key, take=False) if self.enabled else 0.0

    def _update(self, key: str, take: bool) -> float:
        h = _hash(key)
        slots = self.table.slots
        first = h & (slots - 1)
        if first > slots - PROBE:  # keep the probe range inside the region (no wrap-around)
            first = slots - PROBE
        offset = self.base + first * _ENTRY.size
        length = PROBE * _ENTRY.size
        fd, m = self.table.fd, self.table.map
        fcntl.lockf(fd, fcntl.LOCK_EX, length, offset)
        try:
            now = self.clock()
            values = _PROBED.unpack_from(m, offset)
            found = empty = -1
            best, best_fill = 0, -1.0
            for i in range(PROBE):
                kh, tokens, at = values[3 * i : 3 * i + 3]
                if kh == h:
                    found = i
                    break
                if kh == 0:
                    if empty < 0:
                        empty = i
                    continue
                fill = tokens + (now - at) * self.rate  # the fullest refilled neighbour goes first
                if fill > best_fill or (fill == best_fill and at < values[3 * best + 2]):
                    best, best_fill = i, fill
            if found >= 0:
                tokens = min(self.burst, values[3 * found + 1] + (now - values[3 * found + 2]) * self.rate)
                index = found
            elif not take:
                return 0.0  # no bucket: a full one, nothing to wait for
            else:
                tokens, index = self.burst, empty if empty >= 0 else best
            wait = 0.0
            if tokens >= 1.0:
                if take:
                    tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            _ENTRY.pack_into(m, offset + index * _ENTRY.size, h, tokens, now)
            return wait
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN, length, offset)


def share(limits: EdgeLimits, table: SharedTable) -> EdgeLimits:
    """``limits`` with its buckets in ``table`` (same rates and bursts): call it in every process."""
    limits.ip = SharedBuckets(limits.ip.rate, limits.ip.burst, table, "ip")
    limits.key = SharedBuckets(limits.key.rate, limits.key.burst, table, "key")
    limits.bad_key = SharedBuckets(limits.bad_key.rate, limits.bad_key.burst, table, "bad_key")
    return limits


__all__ = ["PROBE", "SharedBuckets", "SharedTable", "share"]
