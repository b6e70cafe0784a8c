"""The contract every stage shares: event shapes (events.py) and ClickHouse DDL (ddl/)."""

from schemas.events import (
    ENRICHED_DEFAULTS,
    EVENT_TYPES,
    INCOMING_EVENT,
    JSON_TEXT_FIELDS,
    SCHEMA_VERSION,
    DeadLetter,
    EnrichedEvent,
    IncomingEvent,
    RawEvent,
    Site,
    json_object,
    json_text,
)
from schemas.raw_batch import INCOMING_BATCH, IncomingBatch, RawBatch, unfold
from schemas.times import bus_time

__all__ = [
    "ENRICHED_DEFAULTS",
    "INCOMING_BATCH",
    "IncomingBatch",
    "RawBatch",
    "bus_time",
    "unfold",
    "EVENT_TYPES",
    "INCOMING_EVENT",
    "JSON_TEXT_FIELDS",
    "SCHEMA_VERSION",
    "DeadLetter",
    "EnrichedEvent",
    "IncomingEvent",
    "RawEvent",
    "Site",
    "json_object",
    "json_text",
]
