"""One small site, its expectations computed by hand in the tests that use it.

Weeks start on Monday; T0 = Monday 2026-11-02 09:00 UTC, so day 7 is week 1, day 14 week 2, ...

- ``a``: Paid Search (google cpc), identifies as jane@acme.io, views /pricing (Business buyer);
  back in week 1 and week 3; buys once in week 1 (revenue 100).
- ``b``: direct, on an iPhone, week 0 only (Mobile browser).
- ``c``: from facebook (Organic Social) in week 1, back in week 2; buys twice (40 then 60): Repeat
  customer. Answers NPS 10 and CSAT 5.
- ``d``: direct on a desktop in week 0, reads /blog, never buys (Other). Answers NPS 3 and CSAT 2.
"""

from __future__ import annotations

from typing import Any

from schemas import RawBatch, unfold
from tests.journeys.conftest import CHROME, IPHONE, Journey, enricher

DAY = 24 * 60
SITE = "s1"


def send(j: Journey, *events: dict[str, Any], site: str = SITE) -> None:
    """As Journey.send, but received when the last event happened: weeks-old timestamps would
    otherwise be clamped to the receive time (Segment's clock-skew rule)."""
    raw: RawBatch = {
        "v": 1,
        "site_id": site,
        "received_at": max(ev["timestamp"] for ev in events),
        "ip": "81.2.69.142",
        "user_agent": CHROME,
        "body": {"batch": list(events)},
    }
    j.builder.process([enricher().enrich(x, None) for x in unfold(raw)])


def feed(j: Journey) -> Journey:
    e = j.event
    send(
        j,
        e(
            "page",
            "a",
            0,
            path="/",
            query="?utm_source=google&utm_medium=cpc&utm_campaign=brand",
            referrer="https://www.google.com/",
        ),
        e("identify", "a", 1, user_id="u-a", traits={"email": "jane@acme.io", "plan": "pro"}),
        e("page", "a", 2, path="/pricing"),
    )
    send(
        j,
        e("page", "a", 7 * DAY, path="/cart"),
        e("track", "a", 7 * DAY + 1, event="Order Completed", properties={"revenue": 100}),
    )
    send(j, e("page", "a", 21 * DAY, path="/"))
    send(j, e("page", "b", DAY, path="/", ua=IPHONE))
    send(
        j,
        e("page", "c", 8 * DAY, path="/", referrer="https://www.facebook.com/"),
        e("track", "c", 8 * DAY + 1, event="Order Completed", properties={"revenue": 40}),
        e("track", "c", 8 * DAY + 2, event="NPS Answered", properties={"score": 10}),
    )
    send(
        j,
        e("page", "c", 15 * DAY, path="/"),
        e("track", "c", 15 * DAY + 1, event="Order Completed", properties={"revenue": 60}),
        e("track", "c", 15 * DAY + 2, event="CSAT Answered", properties={"score": 5}),
    )
    send(
        j,
        e("page", "d", 2 * DAY, path="/blog"),
        e("track", "d", 2 * DAY + 1, event="NPS Answered", properties={"score": 3}),
        e("track", "d", 2 * DAY + 2, event="CSAT Answered", properties={"score": 2}),
        e("track", "d", 2 * DAY + 3, event="NPS Answered", properties={"score": 42}),  # out of range: ignored
    )
    return j
