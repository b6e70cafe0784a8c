"""The contract every stage shares: event shapes (events.py) and ClickHouse DDL (ddl/)."""

from schemas.events import (
    ENRICHED_DEFAULTS,
    EVENT_TYPES,
    INCOMING_EVENT,
    SCHEMA_VERSION,
    DeadLetter,
    EnrichedEvent,
    IncomingEvent,
    RawEvent,
    Site,
)

__all__ = [
    "ENRICHED_DEFAULTS",
    "EVENT_TYPES",
    "INCOMING_EVENT",
    "SCHEMA_VERSION",
    "DeadLetter",
    "EnrichedEvent",
    "IncomingEvent",
    "RawEvent",
    "Site",
]
