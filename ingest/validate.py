"""The collector's one validation of each event: the schema (pydantic-core) plus the rules a
schema cannot say (an id is required, a track call needs a name, timestamps must be ISO-8601, the
nesting is at most MAX_DEPTH levels)."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError

MAX_DEPTH = 32
"""Deepest nesting of an accepted event, counted from the event object (a flat event is 1, its
``properties`` 2, ``properties.a`` holding a list 3, ...). Every later stage wraps an event in at
most a few levels (bus record, dead letter) and its serializers (orjson: 254 levels, ClickHouse's
JSON functions) handle that with room to spare; no real tracker nests anywhere near it."""

# orjson.dumps refuses anything nested deeper than this (documented as its recursion limit; the
# tests in tests/edge pin the boundary, so an orjson that changes it fails them)
_ORJSON_DEPTH = 254
_probes = threading.local()


def describe(errors: list[Any]) -> str:
    parts = []
    for err in errors[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "event"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def describe_exc(exc: ValidationError) -> str:
    return describe(exc.errors(include_url=False))


def _iso_ok(value: Any) -> bool:
    if not value:
        return True
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def too_deep(value: Any, max_depth: int = MAX_DEPTH) -> str | None:
    """Why ``value`` (parsed JSON) cannot pass the edge (nested deeper than ``max_depth`` levels,
    or not serializable again), or None.

    The walk runs in C: ``value`` is put inside enough empty lists that orjson.dumps reaches its own
    depth limit exactly when ``value`` is deeper than ``max_depth`` (a Python walk costs ~4x as
    much, and this runs on every batch).
    """
    root, inner = _chain(max_depth)
    inner.append(value)
    try:
        orjson.dumps(root)
    except orjson.JSONEncodeError as exc:
        if "recursion" in str(exc).lower():
            return f"nested deeper than {max_depth} levels"
        return f"not serializable: {exc}"
    finally:
        inner.clear()
    return None


def _chain(max_depth: int) -> tuple[list[Any], list[Any]]:
    """This thread's nest of ``_ORJSON_DEPTH - max_depth`` lists: (outermost, innermost)."""
    chains: dict[int, tuple[list[Any], list[Any]]] | None = getattr(_probes, "chains", None)
    if chains is None:
        chains = _probes.chains = {}
    chain = chains.get(max_depth)
    if chain is None:
        root: list[Any] = []
        inner = root
        for _ in range(_ORJSON_DEPTH - max_depth - 1):
            nested: list[Any] = []
            inner.append(nested)
            inner = nested
        chain = chains[max_depth] = (root, inner)
    return chain


def check_event(ev: dict[str, Any], depth: bool = True) -> str | None:
    """The reason a schema-valid event is still unusable, or None. ``depth=False`` skips the
    nesting check, for callers that checked a whole batch at once."""
    if depth and (reason := too_deep(ev)) is not None:
        return reason
    if not ev.get("anonymousId") and ev.get("userId") in (None, ""):
        return "anonymousId or userId is required"
    kind = ev["type"]
    if kind == "track" and not ev.get("event"):
        return "event: a track call needs an event name"
    if kind == "alias" and not ev.get("previousId"):
        return "previousId: an alias call needs previousId"
    if not _iso_ok(ev.get("timestamp")):
        return f"timestamp: not an ISO-8601 timestamp: {str(ev.get('timestamp'))[:40]!r}"
    if not _iso_ok(ev.get("sentAt")):
        return "sentAt: not an ISO-8601 timestamp"
    return None


def visitor(ev: dict[str, Any]) -> str:
    """The partitioning key part: one visitor's events stay in order."""
    return str(ev.get("anonymousId") or ev.get("userId") or "")
