"""Events the builder skips on purpose are counted as drops by reason, apart from ok and dead
letters (dead letters not counted as ok: tests/robustness/test_poison.py)."""

from __future__ import annotations

import re
import time
import uuid

import httpx

from tests.conftest import CHROME_UA, Server


def counters(server: Server) -> dict[str, float]:
    text = httpx.get(server.url + "/metrics", timeout=30).text
    return {
        f"{name}{labels}": float(value)
        for name, labels, value in re.findall(r"^(trailmark_stage_\w+_total)(\{[^}]*\}) ([\d.e+]+)$", text, re.M)
    }


def test_dead_letters_and_drops_are_counted_apart_from_ok(server: Server) -> None:
    ok = 'trailmark_stage_records_total{outcome="ok",stage="enrich+journeys"}'
    dead = 'trailmark_stage_records_total{outcome="dead_letter",stage="enrich+journeys"}'
    dup = 'trailmark_stage_dropped_total{reason="duplicate",stage="journeys"}'
    before = counters(server)
    anon = f"m-{uuid.uuid4().hex[:8]}"
    event = {
        "type": "page",
        "messageId": str(uuid.uuid4()),
        "anonymousId": anon,
        "context": {"page": {"url": "https://shop.example.com/m"}},
    }
    assert server.post("/v1/batch", {"batch": [event]}, headers={"user-agent": CHROME_UA}).status_code == 200
    server.wait_for(f"SELECT count() FROM trailmark.events WHERE anonymous_id = '{anon}'", 1)
    assert server.post("/v1/batch", {"batch": [event]}, headers={"user-agent": CHROME_UA}).status_code == 200
    deadline = time.time() + 20
    while counters(server).get(dup, 0) < before.get(dup, 0) + 1:
        assert time.time() < deadline, counters(server)
        time.sleep(0.2)
    after = counters(server)
    assert after[ok] == before.get(ok, 0) + 2  # the event, then its duplicate (processed, then skipped)
    assert after.get(dead, 0) == before.get(dead, 0)
