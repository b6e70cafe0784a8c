"""Answers of the read API computed another way, for tests to compare with: from the public views
(which resolve each device to its current contact) and the Python attribution models."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from journey_builder.attribution import Model, Touch, weights
from trailmark.storage.base import Storage


def _epoch(value: object) -> float:
    return datetime.fromisoformat(str(value).replace(" ", "T") + "+00:00").timestamp()


def reference_credits(
    store: Storage, site_id: str, conversion: str, model: Model, lookback_days: int
) -> dict[str, float]:
    """Credits per channel of ``conversion`` events: each conversion's contact (identity_map), its
    session-start touchpoints (the touchpoints view) in the lookback window, weights() of the model."""
    db = store.database
    conversions = store.query(
        f"SELECT if(m.contact_id = '', concat('anon:', e.anonymous_id), m.contact_id) AS contact_id, e.timestamp AS at"
        f" FROM {db}.events AS e LEFT JOIN {db}.identity_map AS m"
        f" ON m.site_id = e.site_id AND m.anonymous_id = e.anonymous_id"
        " WHERE e.site_id = {s:String} AND e.event = {c:String}",
        {"s": site_id, "c": conversion},
    )
    touches: dict[str, list[Touch]] = defaultdict(list)
    for t in store.query(
        f"SELECT contact_id, timestamp, channel FROM {db}.touchpoints WHERE site_id = {{s:String}}"
        " AND kind = 'session_start' ORDER BY timestamp",
        {"s": site_id},
    ):
        touches[t["contact_id"]].append(Touch(_epoch(t["timestamp"]), t["channel"]))
    credit: dict[str, float] = defaultdict(float)
    for c in conversions:
        at = _epoch(c["at"])
        win = [t for t in touches[c["contact_id"]] if at - lookback_days * 86400 <= t.at_s <= at + 0.001]
        win = win or [Touch(at, "Direct")]
        for t, w in zip(win, weights(model, win, at, 7.0), strict=True):
            credit[t.channel or "Direct"] += w
    return {k: round(v, 6) for k, v in credit.items() if v > 0}
