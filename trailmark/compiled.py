"""What trailmark/native (Rust: pyo3 and serde_json) compiles, where ``make native`` built it.

- ``read_runs``: enriched run records read into events, for the Kafka journey builder
  (``trailmark.runtime.parse_enriched``). It makes the same dicts as orjson does, with the strings
  and numbers a batch repeats in a field (a type, a channel, a browser, an empty value...) made once
  and shared: a batch of 20k events holds ~107k distinct values instead of ~474k, and the builder's
  later passes over them (the ``events`` columns, their JSON, freeing them) touch far less memory.
  What it does not read exactly as orjson does, it leaves to Python (-1 for the record); see
  trailmark/native/src/lib.rs. It also keeps each value's JSON text, by column (``RecordTexts``), and
  writes a batch's ``events`` rows from them as one ``JSONColumns`` document (``RecordTexts.body``,
  ``journey_builder.core.event_document``), for a builder on a ClickHouse server.
- ``session_id``: a session's id (uuid5), as ``journey_builder.core.session_id_for`` makes it in Python.
- ``as_columns``: ``schemas.columns.as_columns`` in one pass over the rows, for the journey
  builder's ``events`` columns (each row walked in its own key order when it has the first row's
  layout, as a batch's events do); ``schemas.columns.as_columns`` itself where it is not built.
- ``funnel_rows``: a funnel's levels counted from its step rows streamed in ClickHouse's Native
  format (``journey_builder.analytics.funnel``; trailmark/native/src/funnel.rs); where it is not
  built, ClickHouse's ``windowFunnel`` counts them.
- ``attribution_rows``: attribution's credits counted from the conversions and touches streamed in
  the Native format (``journey_builder.analytics.attribution``; trailmark/native/src/attribution.rs);
  where it is not built, ClickHouse counts them (arrays per conversion).

The compiled module is used only while it matches its sources: ``make native`` builds it with cargo
and writes the SHA-256 of its sources beside it (``_native.sha256``); when they differ, or
``TRAILMARK_PURE_PYTHON=1`` is set, or it was not built (no Rust toolchain), ``read_runs`` is None
(``parse_enriched`` reads every record with orjson) and ``as_columns`` is schemas'.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from schemas.columns import as_columns as python_columns
from trailmark.builds import PURE_PYTHON, build_state


class RecordTexts(Protocol):
    """The values of the events ``read_runs`` made, as their JSON text came in the records (see
    trailmark/native/src/lib.rs): a batch's ``events`` rows are written from it as they came."""

    @property
    def names(self) -> list[str]:
        """The fields of the first record's rows, in order (``body`` writes those rows)."""

    @property
    def slim(self) -> bool:
        """Whether the dicts leave fields out (``read_runs``' ``skip``)."""

    def __len__(self) -> int:
        """How many events it made."""

    def full(self, events: Sequence[Any]) -> list[dict[str, Any]] | None:
        """``events`` (dicts it made, in the order it made them) with every field, as it makes them
        when it leaves none out; None for an event it did not make."""

    def body(
        self,
        events: Sequence[Any],
        columns: list[str],
        json: list[str],
        times: list[str],
        epoch: str,
        blanks: Mapping[str, str],
        tail: bytes,
    ) -> bytes | None:
        """The ``JSONColumns`` document of ``events`` (dicts it made, in the order it made them) for
        ``columns``, each value as its JSON text came, then ``tail``'s members (a JSON object's
        text); a ``json`` column's null is ``"{}"``, a ``times`` column's ``""`` or null is
        ``epoch``, and a group call's ``blanks`` columns are their JSON text. None when it cannot
        (an event it did not make, a column it has not, a value of another form)."""


E = TypeVar("E")


def whole(raw: RecordTexts, events: list[E]) -> list[E]:
    """``events`` (which ``raw`` read) with every field: made whole by ``raw`` where its dicts leave
    fields out (``slim``), else as they are (and as they are for an event it did not make)."""
    full = raw.full(events) if raw.slim else None
    return events if full is None else full  # type: ignore[return-value]  # the same events, whole


class ReadRuns(Protocol):
    def __call__(
        self, records: Sequence[bytes], loads: Callable[[bytes], Any], skip: Sequence[str] | None = None
    ) -> tuple[list[dict[str, Any]], list[int], RecordTexts | None]:
        """The records' events as dicts, in one list, for each record how many of them are its (-1:
        Python reads it), and the events' values as they came (``RecordTexts``; None when it made no
        event). ``skip``: fields the dicts leave out (only in the ``RecordTexts``)."""


HERE = Path(__file__).parent
SOURCES = (
    "native/Cargo.toml",
    "native/Cargo.lock",
    "native/src/lib.rs",
    "native/src/blocks.rs",
    "native/src/funnel.rs",
    "native/src/attribution.rs",
)
"""What ``make native`` builds the module from, in the order their SHA-256 is taken."""
__all__ = [
    "PURE_PYTHON",
    "AttributionRows",
    "FunnelRows",
    "RecordTexts",
    "as_columns",
    "attribution_rows",
    "funnel_rows",
    "native_state",
    "read_runs",
    "session_id",
    "whole",
]


def native_state(directory: Path = HERE) -> str:
    """``compiled`` (built from the sources as they are now, or shipped without them), ``stale``
    (built from others, or with no record of them) or ``absent`` (not built): see
    ``trailmark.builds.build_state``."""
    return build_state(
        directory.glob("_native.*.so"), directory / "_native.sha256", [directory / name for name in SOURCES]
    )


def load() -> Any:
    """The compiled module, or None (see the module's text)."""
    if PURE_PYTHON or native_state() != "compiled":
        return None
    try:
        return importlib.import_module("trailmark._native")
    except ImportError:
        return None


_native = load()
read_runs: ReadRuns | None = _native.read_runs if _native is not None else None
_columns: Callable[[list[str], Sequence[Mapping[str, Any]]], list[list[Any]]] | None = (
    _native.columns if _native is not None else None
)
session_id: Callable[[bytes, str, str, str], str] | None = _native.session_id if _native is not None else None
"""The uuid5 of a namespace (16 bytes) and ``site|visitor|messageId``, as text, where the module is
built (``journey_builder.core.session_id_for``); None: the core hashes it in Python."""


class FunnelRows(Protocol):
    """A funnel's step rows, kept to count its levels (trailmark/native/src/funnel.rs): the levels
    ClickHouse's ``windowFunnel`` counts, from the rows a query streams in the Native format."""

    def shared(self, data: bytes) -> None:
        """Native bytes of (device UInt64, contact UInt64): devices counted as their contact."""

    def feed(self, data: bytes) -> None:
        """Native bytes of (device UInt64, ms Int64, mask UInt32) rows, cut anywhere."""

    @property
    def rows(self) -> int:
        """How many step rows it holds."""

    def levels(self, threads: int) -> list[int]:
        """Groups per level reached, ``[0, level 1, ..., level steps]``; the rows are used up (by
        channel, the groups counted are kept for ``arrivals``)."""

    def arrivals(self, data: bytes) -> None:
        """By channel, after ``levels``: Native bytes of (device UInt64, ms Int64, channel String)
        rows, kept for ``channels`` (those of the buckets of groups counted)."""

    def channels(self, threads: int) -> list[tuple[str, int, int]]:
        """By channel: (first channel or "", level, groups) of the groups counted; the arrivals
        are used up."""


funnel_rows: Callable[[int, int, int, bool], FunnelRows] | None = _native.FunnelRows if _native is not None else None
"""``FunnelRows(steps, window_s, max_rows, by_channel)`` where the module is built; None: funnels count their
levels with ClickHouse's ``windowFunnel`` (``journey_builder.analytics.funnel``)."""


class AttributionRows(Protocol):
    """Attribution's rows, kept to count its credits (trailmark/native/src/attribution.rs) as
    ``journey_builder.analytics._per_conversion`` counts them in ClickHouse."""

    def shared(self, data: bytes) -> None:
        """Native bytes of (device UInt64, contact UInt64): devices counted as their contact."""

    def feed(self, data: bytes) -> None:
        """Native bytes of (device UInt64, ms Int64, session UInt64, flags UInt8, k UInt64) rows
        (``analytics._counted_rows``), cut anywhere."""

    @property
    def rows(self) -> int:
        """How many rows it holds."""

    def credit(
        self, model: str, lookback_s: float, half_life_s: float, threads: int, limit_s: float
    ) -> list[tuple[int, float, int]]:
        """(key hash, credit, conversions first touched by it) by ``model``; TimeoutError past
        ``limit_s`` seconds. The rows are used up."""


attribution_rows: Callable[[int], AttributionRows] | None = _native.AttributionRows if _native is not None else None
"""``AttributionRows(max_rows)`` where the module is built; None: attribution is counted by ClickHouse
(``journey_builder.analytics.attribution``)."""


def compiled_columns(names: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """``schemas.columns.as_columns`` by the compiled module (which must be built)."""
    assert _columns is not None
    names = list(names)
    return dict(zip(names, _columns(names, rows if type(rows) is list else list(rows)), strict=True))


as_columns: Callable[[Sequence[str], Sequence[Mapping[str, Any]]], dict[str, list[Any]]] = (
    compiled_columns if _columns is not None else python_columns
)
"""``names``' values of ``rows`` as columns (a row without one of them raises KeyError): the
compiled module's where it is built (0.9–1.0 against 2.6–3.5 us per event of 67 columns over a
batch of 20k events, measured alone), else ``schemas.columns.as_columns``."""
