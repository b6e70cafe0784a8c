"""The compiled reader of enriched run records (trailmark/native, Rust: pyo3 and serde_json).

A Kafka journey builder reads each enriched record, a run of one visitor's events, into a dict per
event (``trailmark.runtime.parse_enriched``). ``read_runs`` makes the same dicts, with the strings
a batch repeats (a type, a channel, a browser, an empty value...) made once and shared: a batch of
20k events then holds a few tens of thousands of distinct strings instead of over a million, and
the builder's later passes over them (the ``events`` columns, their JSON, freeing them) touch far
less memory. What it does not read exactly as orjson does, it leaves to Python (None for the
record); see trailmark/native/src/lib.rs.

The compiled module is used only while it matches its sources: ``make native`` builds it with cargo
and writes the SHA-256 of its sources beside it (``_native.sha256``); when they differ, or
``TRAILMARK_PURE_PYTHON=1`` is set, or it was not built (no Rust toolchain), ``read_runs`` is None
and ``parse_enriched`` reads every record with orjson.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ReadRuns = Callable[[Sequence[bytes], Callable[[bytes], Any]], tuple[list[dict[str, Any]], list[int]]]
"""``read_runs(records, loads)``: the records' events as dicts, in one list, and for each record how
many of them are its (-1: Python reads it)."""

HERE = Path(__file__).parent
SOURCES = ("native/Cargo.toml", "native/Cargo.lock", "native/src/lib.rs")
"""What ``make native`` builds the module from, in the order their SHA-256 is taken."""
PURE_PYTHON = os.environ.get("TRAILMARK_PURE_PYTHON", "") not in ("", "0")


def sources_digest(directory: Path = HERE) -> str | None:
    """The SHA-256 of the module's sources as they are now (None: not shipped, as in a wheel)."""
    digest = hashlib.sha256()
    try:
        for name in SOURCES:
            digest.update((directory / name).read_bytes())
    except OSError:
        return None
    return digest.hexdigest()


def native_state(directory: Path = HERE) -> str:
    """``compiled`` (built from the sources as they are now, or shipped without them), ``stale``
    (built from others, or with no record of them) or ``absent`` (not built)."""
    if not list(directory.glob("_native.*.so")):
        return "absent"
    try:
        built_from = (directory / "_native.sha256").read_text().strip()
    except OSError:
        return "stale"
    now = sources_digest(directory)
    return "compiled" if now is None or built_from == now else "stale"


def load() -> ReadRuns | None:
    """``read_runs`` of the compiled module, or None (see the module's text)."""
    if PURE_PYTHON or native_state() != "compiled":
        return None
    try:
        module = importlib.import_module("trailmark._native")
    except ImportError:
        return None
    found: ReadRuns = module.read_runs
    return found


read_runs = load()
