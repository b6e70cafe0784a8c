"""Click maps: where visitors click on one page, by element and as a density grid (``GET /v1/clicks``).

The clicks are the tracker's ``$click`` events (one per click, see tracker_js/README.md), read from
``events`` with their JSON ``properties``: ``selector``, ``text``, ``href``, page position ``x``,
``y`` in a ``pw`` × ``ph`` document (CSS px), position in the element ``ex``, ``ey`` (percent) and
``dead``. Definitions, computed here so that any client's clicks count alike:

- **rage click**: a visitor's third click on the same element (selector) of the page within one
  second. A burst of 3, 5 or 8 quick clicks counts once; a slow run of clicks never does.
- **dead click**: ``properties.dead``: the tracker found the click neither in a clickable element
  (link, button, ``[role=button]``, ``[type=submit]``, ``[data-track]``) nor on a form control.
  Cheap and deterministic; a clickable element whose handler does nothing is not caught.
- **grid**: ``GRID_COLS`` columns × ``rows`` rows over the page's relative position (``x / pw``,
  ``y / ph``). Clicks without a position inside their element (keyboard or scripted clicks report
  the viewport corner) and clicks from older trackers (no ``pw``) are left out of the grid only.

Every query is scoped to one site and one page path, leaves bots out, and looks back ``days``.
Selector and text are cut to the tracker's bounds again here, whatever a client sent.
"""

from __future__ import annotations

from typing import Any

from journey_builder.analytics import ContactSet, _only_devices
from trailmark.storage.base import Storage

GRID_COLS = 20
MAX_SELECTOR = 200  # the tracker's bounds
MAX_TEXT = 100
RAGE_WINDOW_MS = 1000
RAGE_CLICKS = 3

__all__ = ["GRID_COLS", "click_map"]


def _clicks(db: str, only: str = "") -> str:
    """One row per click of the page, with its element, position and rage mark; ``only`` narrows
    the devices (``persona=``)."""
    return (
        "SELECT anonymous_id, timestamp,"
        f" substring(JSONExtractString(properties, 'selector'), 1, {MAX_SELECTOR}) AS selector,"
        f" substring(JSONExtractString(properties, 'text'), 1, {MAX_TEXT}) AS text,"
        " substring(JSONExtractString(properties, 'href'), 1, 2048) AS href,"
        " JSONExtractBool(properties, 'dead') AS dead,"
        " JSONExtractFloat(properties, 'x') AS x, JSONExtractFloat(properties, 'y') AS y,"
        " JSONExtractFloat(properties, 'pw') AS pw, JSONExtractFloat(properties, 'ph') AS ph,"
        " JSONExtractFloat(properties, 'ex') AS ex, JSONExtractFloat(properties, 'ey') AS ey,"
        " count() OVER (PARTITION BY anonymous_id, selector ORDER BY toUnixTimestamp64Milli(timestamp)"
        f" RANGE BETWEEN {RAGE_WINDOW_MS} PRECEDING AND CURRENT ROW) = {RAGE_CLICKS} AS rage"
        f" FROM {db}.events WHERE site_id = {{s:String}} AND event = '$click' AND page_path = {{page:String}}"
        " AND NOT is_bot AND timestamp >= now64(3) - toIntervalDay({days:UInt32})" + only
    )


def click_map(
    storage: Storage, site_id: str, page: str, *, days: int, limit: int, rows: int, who: ContactSet | None = None
) -> dict[str, Any]:
    """Clicks on ``page`` (a path) of one site: totals, the ``limit`` most clicked elements (count,
    share of the page's clicks, rage and dead clicks) and the non-empty cells of the density grid
    (``GRID_COLS`` × ``rows``); with ``who``, only the clicks of its contacts' devices."""
    db = storage.database
    p: dict[str, Any] = {"s": site_id, "page": page, "days": days, "limit": limit, "rows": rows, "cols": GRID_COLS}
    clicks = _clicks(db, _only_devices(db, who, p, "anonymous_id"))
    [totals] = storage.query(
        "SELECT count() AS clicks, uniqExact(anonymous_id) AS visitors, countIf(dead) AS dead_clicks,"
        f" countIf(rage) AS rage_clicks FROM ({clicks})",
        p,
        readonly=True,
    )
    elements = storage.query(
        "SELECT selector, any(text) AS text, any(href) AS href, count() AS clicks,"
        " uniqExact(anonymous_id) AS visitors, countIf(rage) AS rage_clicks, countIf(dead) AS dead_clicks"
        f" FROM ({clicks}) GROUP BY selector ORDER BY clicks DESC, selector LIMIT {{limit:UInt32}}",
        p,
        readonly=True,
    )
    total = int(totals["clicks"])
    for e in elements:
        e["share"] = round(e["clicks"] / total, 4) if total else 0.0
        e["href"] = e["href"] or None
    cells = storage.query(
        "SELECT least(toUInt32(floor(x / pw * {cols:UInt32})), {cols:UInt32} - 1) AS col,"
        " least(toUInt32(floor(y / ph * {rows:UInt32})), {rows:UInt32} - 1) AS row, count() AS clicks"
        f" FROM ({clicks}) WHERE pw > 0 AND ph > 0 AND x >= 0 AND y >= 0 AND x <= pw AND y <= ph"
        " AND ex >= 0 AND ex <= 100 AND ey >= 0 AND ey <= 100"
        " GROUP BY col, row ORDER BY row, col",
        p,
        readonly=True,
    )
    return {
        "page": page,
        "days": days,
        "clicks": total,
        "visitors": int(totals["visitors"]),
        "rage_clicks": int(totals["rage_clicks"]),
        "dead_clicks": int(totals["dead_clicks"]),
        "elements": elements,
        "grid": {
            "cols": GRID_COLS,
            "rows": rows,
            "max": max((c["clicks"] for c in cells), default=0),
            "cells": cells,
        },
    }
