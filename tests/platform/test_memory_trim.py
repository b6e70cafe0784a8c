"""Every trailmark process hands its C heap's free pages back to the system every few seconds
(``trim_memory_every``, glibc's malloc_trim): a batch's event dicts come from malloc, and their pages,
freed among live ones, would otherwise stay in the process's RSS."""

from __future__ import annotations

import os
import time

import pytest

from trailmark.runtime import trim_memory_every
from trailmark.settings import Settings


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_pages_freed_among_live_ones_leave_the_rss_at_the_next_trim() -> None:
    blocks = [bytearray(4000) for _ in range(60_000)]  # ~240 MB from malloc (too large for pymalloc)
    kept = blocks[::50]  # one block in fifty stays, so the freed ones are not at the heap's top
    del blocks
    time.sleep(0.3)
    before = _rss()
    trimmer = trim_memory_every(0.05)
    if trimmer is None:
        pytest.skip("this C library has no malloc_trim")
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and before - _rss() < 150 * 2**20:
            time.sleep(0.05)
        assert before - _rss() >= 150 * 2**20
        assert trimmer.is_alive() and trimmer.daemon
        assert len(kept) == 1_200
    finally:
        trimmer.stop()
    trimmer.join(timeout=5)
    assert not trimmer.is_alive()


def test_no_trimming_when_switched_off() -> None:
    assert trim_memory_every(0) is None
    assert Settings().memory_trim_interval_s > 0  # on by default
