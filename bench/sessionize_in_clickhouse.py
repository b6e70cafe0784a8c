"""Feasibility, not a feature: what sessionizing a batch costs inside ClickHouse (chDB) instead of
in the builder's per-event Python (issue 15, the builder's 50k target).

A batch of events in time order (visitor, time, campaign key, referrer host, type) is grouped by
visitor, and one ``arrayFold`` per visitor walks its events with the rules of
``journey_builder.core.session_for``: a new session after 30 minutes idle, on a new campaign, or on a
page view from a new external referrer without a campaign (the state carried is the open session's
number, last time, campaign key and referrer host). It gives each event its session number. Not
covered: the visitor's stored state (the first event of a returning visitor), late events (older
than the open session's last), stages, touchpoints and identities: a lower bound of the work. The
same rules run in plain Python over the same tuples beside it, as the baseline.

What it showed (bench/RESULTS.md, 2026-12-05 21:15): the rules are not where the builder's time
goes. They cost ~0.25 µs per event in plain Python and ~0.6 in ClickHouse, against ~13 µs per event
for the builder's per-event logic as Python (``_apply``; ~7–8 compiled): its time is in reading
~25 fields per event from dicts and in the rows it builds, so moving the logic into ClickHouse would
not by itself meet the 50k target.

    .venv/bin/python bench/sessionize_in_clickhouse.py [--events 20000] [--visitors 5000]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any

from chdb import session as chs

FOLD = """
SELECT v, arrayFold((acc, e) -> if(
      acc.2 = 0 OR e.1 - acc.2 > 1800000 OR (e.2 != '' AND e.2 != acc.3)
      OR (e.2 = '' AND e.4 = 'page' AND e.3 != '' AND e.3 != acc.4),
      (acc.1 + 1, e.1, e.2, e.3, arrayPushBack(acc.5, acc.1 + 1)),
      (acc.1, e.1, acc.3, acc.4, arrayPushBack(acc.5, acc.1))),
   arraySort(x -> x.1, groupArray((t, c, r, ty))),
   (toUInt64(0), toInt64(0), '', '', CAST([], 'Array(UInt64)'))).5 AS sessions
FROM batch GROUP BY v
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--visitors", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    rng = random.Random(1)
    s = chs.Session()
    s.query("CREATE TABLE batch (v String, t Int64, c String, r String, ty String) ENGINE = Memory")
    events: list[tuple[int, str, str, str, str]] = []
    while len(events) < a.events:  # visits of 1-12 events, 10 s to 5 min apart, over three days
        visitor, t = f"v{rng.randrange(a.visitors)}", rng.randrange(0, 3 * 86_400_000)
        campaign, referrer = rng.choice(["", "", "", "spring", "fall"]), rng.choice(["", "google.com", "news.example"])
        for i in range(rng.randint(1, 12)):
            first = i == 0
            kind = rng.choice(["page", "page", "track"])
            events.append((t, visitor, campaign if first else "", referrer if first else "", kind))
            t += rng.randrange(10_000, 300_000)
    events.sort()
    batch = events[: a.events]
    rows = ",".join(f"('{v}', {t}, '{c}', '{r}', '{k}')" for t, v, c, r, k in batch)
    s.query(f"INSERT INTO batch VALUES {rows}")
    answer = json.loads(str(s.query(FOLD, "JSONCompact")))["data"]  # a look at what it found
    sessions = sum(max(r[1], default=0) for r in answer)
    print(f"{a.events} events, {a.visitors} visitors, {sessions} sessions")
    for _ in range(a.repeat):
        cpu = time.process_time()
        s.query(FOLD + " FORMAT Null")
        in_ch = time.process_time() - cpu
        cpu = time.process_time()
        found = python_fold(batch)
        in_py = time.process_time() - cpu
        assert found == sessions, (found, sessions)
        print(
            f"CPU per event: in ClickHouse {1e6 * in_ch / a.events:.2f} µs,"
            f" the same fold in Python {1e6 * in_py / a.events:.2f} µs"
        )


def python_fold(batch: list[tuple[int, str, str, str, str]]) -> int:
    """The same rules in plain Python over the same events, as a baseline: it gives each event its
    session number, as the fold does (the work compared), and returns the sessions found."""
    state: dict[str, list[Any]] = {}  # visitor -> [sessions, last time, campaign, referrer]
    numbers: list[int] = []
    for t, v, c, r, k in batch:
        st = state.get(v)
        if st is None:
            st = state[v] = [1, t, c, r]
        elif t - st[1] > 1_800_000 or (c and c != st[2]) or (not c and k == "page" and r and r != st[3]):
            st[0] += 1
            st[1], st[2], st[3] = t, c, r
        else:
            st[1] = t
        numbers.append(st[0])
    return sum(st[0] for st in state.values())


if __name__ == "__main__":
    main()
