"""The one event contract shared by every stage.

Events travel between stages as JSON objects (orjson) shaped like these TypedDicts, not as pydantic
model instances: the collector validates each incoming event once, at the edge, with a pydantic
TypeAdapter, and later stages trust the shape instead of re-validating and dumping models per event.

Stage contract:
    collector        : HTTP JSON              -> RawEvent      (topic ``raw``)
    enrich           : RawEvent               -> EnrichedEvent (topic ``enriched``)
    journey builder  : EnrichedEvent          -> ClickHouse rows (schemas/ddl)
    any stage        : failed input           -> DeadLetter    (topic ``dead_letter``)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NotRequired, get_type_hints

import orjson
from pydantic import ConfigDict, TypeAdapter
from typing_extensions import TypedDict

EVENT_TYPES = ("track", "page", "screen", "identify", "alias", "group")
EventType = Literal["track", "page", "screen", "identify", "alias", "group"]

SCHEMA_VERSION = 1


class IncomingEvent(TypedDict):
    """One event as a Segment-compatible client sends it (HTTP tracking API spec)."""

    __pydantic_config__ = ConfigDict(extra="ignore", str_max_length=8192)  # type: ignore[misc]

    type: EventType
    messageId: NotRequired[str | None]
    anonymousId: NotRequired[str | None]
    userId: NotRequired[str | int | None]
    previousId: NotRequired[str | None]
    groupId: NotRequired[str | None]
    event: NotRequired[str | None]
    name: NotRequired[str | None]
    category: NotRequired[str | None]
    properties: NotRequired[dict[str, Any] | None]
    traits: NotRequired[dict[str, Any] | None]
    context: NotRequired[dict[str, Any] | None]
    # ISO-8601 strings, checked by the collector with datetime.fromisoformat (cheaper than a
    # datetime field, and the client's text is kept as original_timestamp)
    timestamp: NotRequired[str | None]
    originalTimestamp: NotRequired[str | None]  # the client's clock, when it sends no timestamp
    sentAt: NotRequired[str | None]
    writeKey: NotRequired[str | None]
    # integrations, channel and any other top-level field pass unvalidated (extra="ignore" only
    # skips checking them): unfold keeps them in RawEvent.extra


INCOMING_EVENT = TypeAdapter(IncomingEvent)
"""Validates one incoming event; pydantic-core does the work, no model instance is built."""


class RawEvent(TypedDict):
    """What the collector publishes: the client event, normalised and stamped by the server."""

    v: int  # SCHEMA_VERSION
    site_id: str
    message_id: str
    type: str
    anonymous_id: str
    user_id: str
    previous_id: str
    group_id: str
    event: str  # track event name, or page/screen name
    # objects; on the enriched topic their JSON text (JSON_TEXT_FIELDS): readers take either form
    # through json_object / json_text (typed as both, so compiled code, journey_builder.core built by
    # mypyc, accepts both)
    properties: dict[str, Any] | str
    traits: dict[str, Any] | str
    context: dict[str, Any] | str
    timestamp: str  # ISO-8601 UTC, client clock corrected by sentAt skew
    original_timestamp: str
    sent_at: str
    received_at: str
    ip: str
    user_agent: str
    # top-level fields without a field of their own (integrations, channel, category, _metadata,
    # unknown ones), kept as the client sent them; the write key is never kept
    extra: NotRequired[dict[str, Any] | str]


class EnrichedEvent(RawEvent):
    """A RawEvent plus flat enrichment columns (each maps to a column of trailmark.events).

    Empty string / 0 / False mean "unknown"; ``enrich_errors`` lists ``"name: reason"`` for each
    enrichment that failed, so one failing enrichment never drops the event.
    """

    # page
    page_url: str
    page_host: str
    page_path: str
    page_query: str
    page_title: str
    content_group: str
    # referrer and campaign
    referrer: str
    referrer_host: str
    referrer_type: str  # direct | search | social | email | internal | other
    referrer_name: str
    search_term: str
    utm_source: str
    utm_medium: str
    utm_campaign: str
    utm_term: str
    utm_content: str
    click_id_type: str
    click_id: str
    source: str  # GA-style, lower case: utm_source, else referrer name (google), else referrer host
    medium: str  # GA-style, lower case: utm_medium, else organic / social / email / referral
    channel: str
    # user agent
    ua_browser: str
    ua_browser_version: str
    ua_os: str
    ua_os_version: str
    ua_device_type: str  # desktop | mobile | tablet | tv | console | bot | other
    ua_device_brand: str
    ua_device_model: str
    is_bot: bool
    bot_name: str
    # geo (ip is truncated after lookup unless the site keeps full IPs)
    geo_country: str
    geo_region: str
    geo_city: str
    geo_lat: float
    geo_lon: float
    geo_timezone: str
    geo_asn: int
    geo_org: str
    # contact
    email: str
    email_domain: str
    email_free: bool
    email_disposable: bool
    company_domain: str
    company_name: str
    phone_e164: str
    phone_country: str
    phone_carrier: str
    phone_line_type: str
    phone_timezone: str
    first_name: str
    last_name: str
    enrich_errors: Sequence[str]  # a list; read from the enriched topic, an empty one is () (see parse_enriched)


class DeadLetter(TypedDict):
    """A record a stage could not process: kept with the raw payload, never blocking the stream."""

    stage: str
    reason: str
    payload: str  # the original record, as text (base64 when it was not UTF-8)
    payload_encoding: Literal["utf-8", "base64"]
    failed_at: str
    version: int
    kind: NotRequired[str]  # unreadable | invalid | enrich_failed | unserializable | build_failed | unknown
    site_id: NotRequired[str]  # the failed record's site ("" when it could not be told)


class Site(TypedDict):
    site_id: str
    write_key: str
    read_key: str
    origins: list[str]
    keep_full_ip: NotRequired[bool]
    admin_key: NotRequired[str]  # erase and export a contact's data (keys.json; added at start when missing)
    retention_days: NotRequired[int]  # days its events and journeys are kept (0: for good; default: settings)
    no_consent: NotRequired[str]  # full | aggregate | drop: events without analytics consent (default: settings)
    honour_dnt: NotRequired[bool]  # DNT / GPC count as no consent (default: settings)


def _enriched_defaults() -> dict[str, Any]:
    zero: dict[Any, Any] = {str: "", bool: False, int: 0, float: 0.0}
    raw = set(get_type_hints(RawEvent))
    return {name: zero.get(tp, []) for name, tp in get_type_hints(EnrichedEvent).items() if name not in raw}


ENRICHED_DEFAULTS: dict[str, Any] = _enriched_defaults()
"""Default value of every enrichment field, so a stage can start from a complete record."""

JSON_TEXT_FIELDS = ("properties", "traits", "context", "extra")
"""The JSON-object fields of an enriched event. On the enriched topic (Kafka) they travel as their
JSON text (a string inside the record): the journey builder stores them as text and reads only a
few of them, so it need not build their objects when it reads a record and write them back as text
when it stores the event (bench/enriched_hop.py measures both ends). A stage
reading an enriched event takes either form through :func:`json_object` and :func:`json_text`."""


def json_object(value: object) -> dict[str, Any]:
    """A JSON-object field of an event as an object: the object itself, or its JSON text parsed
    (``{}`` for no value or for text of another JSON type). Text that is not JSON raises
    ``ValueError`` (orjson's ``JSONDecodeError``): the event is then the failing one."""
    if type(value) is dict:
        return value
    if isinstance(value, str):
        got = orjson.loads(value)
        return got if type(got) is dict else {}
    return {}


def json_text(value: object) -> str:
    """A JSON-object field of an event as JSON text, to store: text is taken as it is (the enricher
    wrote it, see :data:`JSON_TEXT_FIELDS`), an object is written (``{}`` for no value)."""
    if type(value) is str:
        return value
    return orjson.dumps(value if value is not None else {}).decode()


__all__ = [
    "EVENT_TYPES",
    "ENRICHED_DEFAULTS",
    "INCOMING_EVENT",
    "JSON_TEXT_FIELDS",
    "SCHEMA_VERSION",
    "DeadLetter",
    "EnrichedEvent",
    "EventType",
    "IncomingEvent",
    "RawEvent",
    "Site",
    "json_object",
    "json_text",
]
