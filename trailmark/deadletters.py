"""Dead-letter replay: list, show and send again the records a stage could not process.

Dead letters are rows of ``trailmark.dead_letters`` (the sink copies the dead-letter topic there).
Each has a stable ``id`` (a hash of the row, an ALIAS column of migration 004), the ``kind`` of failure
the runner recorded (migration 005: unreadable, invalid, enrich_failed, ...), and a *payload type*,
read here from its stage and payload, which says where a replay sends it, in the shape that stage
reads:

=================  =====================================  ===========================================
payload type       payload                                replayed to
=================  =====================================  ===========================================
``raw_batch``      a collector record (RawBatch) the       the raw topic, as it is
                   enricher could not read
``raw_event``      one unfolded event enrichment failed    the raw topic, folded back into a one-event
                   on (RawEvent)                           RawBatch (``unfold`` gives the same event)
``client_event``   an item of a raw batch that unfold or   the raw topic, in a one-item RawBatch of the
                   enrichment refused (as the client       dead letter's site, received at its failure
                   sent it)                                time (the request's IP and user agent are
                                                           not kept; the event's context ones are)
``enriched_event`` an event the journey builder failed     Kafka: the enriched topic, as it is.
                   on (EnrichedEvent)                      Embedded: the raw topic, folded (one process
                                                           has no enriched topic: it is re-enriched)
``none``           not JSON, not an object, a repr, a      nothing: shown, never replayed
                   minimal row
=================  =====================================  ===========================================

Replays go through the normal pipeline, keyed by site and visitor like the collector's records, so a
visitor's events stay on one partition. They are idempotent by messageId: the journey builder skips
events already in ``trailmark.events``, so a dead letter replayed twice is stored once. Every replay
is recorded in ``dead_letter_replays`` (dead-letter id, replay id, time, topic, messageIds), and a
replay skips dead letters replayed before unless asked ``again``. A replay that fails again makes a
new dead letter (a new id), which can be replayed after the next fix.

chDB opens a data folder in one process only, so while a server runs, the CLI goes through its admin
routes (``/v1/admin/dead-letters``, :func:`admin_router`); with the server stopped, or a ClickHouse
server, it opens storage and the bus itself (:class:`DeadLetters`). Both take the same requests.
"""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Protocol

import httpx
import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from ingest.validate import visitor
from schemas import SCHEMA_VERSION, Site, bus_time, json_object
from schemas.raw_batch import RawBatch
from schemas.times import ch_now, ch_text
from schemas.times import parse_time as parse_iso
from trailmark.bus.base import BusUnavailable, EventBus, Producer
from trailmark.errors import BadRequest, TrailmarkError, Unavailable
from trailmark.keys import index_keys, key_digest
from trailmark.ratelimit import EdgeLimits
from trailmark.settings import Settings
from trailmark.storage import open_storage
from trailmark.storage.base import Row, Storage, apply_migrations
from trailmark.web import bearer_site

PayloadType = Literal["raw_batch", "raw_event", "client_event", "enriched_event", "none"]
PAYLOAD_TYPES: tuple[PayloadType, ...] = ("raw_batch", "raw_event", "client_event", "enriched_event", "none")
MAX_PAGE = 1000
# Filtering by payload type while sorting by (failed_at, id) sends ClickHouse 25's query-plan optimizer into its
# step limit (TOO_MANY_QUERY_PLAN_OPTIMIZATIONS; both expressions hash the same columns). The table
# is small and read by its sorting key: these queries run unoptimized, which is also always correct.
QUERY_SETTINGS = {"query_plan_enable_optimizations": 0}

# The payload type of a dead letter, in SQL so that filters run in ClickHouse (JSONHas on invalid JSON
# is 0). Queries read it from a subquery (``rows_sql``), one definition for every filter.
PAYLOAD_TYPE_SQL = (
    "multiIf(payload_encoding != 'utf-8' OR NOT isValidJSON(payload) OR JSONType(payload) != 'Object',"
    " 'none',"
    " stage = 'enrich' AND JSONHas(payload, 'site_id') AND JSONHas(payload, 'body'), 'raw_batch',"
    " stage = 'enrich' AND JSONHas(payload, 'site_id') AND JSONHas(payload, 'message_id'), 'raw_event',"
    " stage = 'journeys' AND JSONHas(payload, 'site_id') AND JSONHas(payload, 'message_id'), 'enriched_event',"
    " stage = 'enrich' AND NOT JSONHas(payload, 'site_id') AND site_id != '', 'client_event',"
    " 'none')"
)


def rows_sql(db: str) -> str:
    """The dead letters with their payload type, as ``d`` (``id`` is an ALIAS column: named, not in ``*``)."""
    return (
        f"(SELECT id, failed_at, site_id, stage, kind, reason, payload, payload_encoding, version,"
        f" {PAYLOAD_TYPE_SQL} AS payload_type FROM {db}.dead_letters) AS d"
    )


_RELATIVE = re.compile(r"(\d+)([smhd])\Z")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class DeadLetterError(TrailmarkError):
    """Base of dead-letter replay errors."""


class BadFilter(DeadLetterError, BadRequest):
    """A filter value that cannot be used (unknown payload type, unreadable time, bad cursor)."""


class RequestRefused(DeadLetterError, BadRequest):
    """The server refused a dead-letter request (a bad filter, a missing or wrong token)."""


class ReplayUnavailable(DeadLetterError, Unavailable):
    """The server, the storage or the bus cannot serve the request now; try again."""


def parse_time(value: str | None, now: datetime | None = None) -> str | None:
    """A time filter as ClickHouse text (UTC): RFC 3339 / ISO 8601, or relative (``30m``, ``24h``, ``7d``)."""
    if not value:
        return None
    if m := _RELATIVE.match(value.strip()):
        at = (now or datetime.now(UTC)) - timedelta(**{_UNITS[m[2]]: int(m[1])})
    else:
        parsed = parse_iso(value.strip())
        if parsed is None:
            raise BadFilter(f"time {value!r}: use ISO 8601 (2026-11-02T09:00:00Z) or 30m / 24h / 7d")
        at = parsed
    return ch_text(at)


@dataclass(frozen=True)
class Filter:
    """Which dead letters: every field narrows (``reason``: a case-insensitive substring)."""

    stage: str | None = None
    kind: str | None = None  # the failure's kind, as the runner recorded it (unreadable, build_failed...)
    reason: str | None = None
    since: str | None = None
    until: str | None = None
    replayed: bool | None = None  # True: only replayed ones, False: only never replayed
    payload_type: str | None = None
    site: str | None = None
    replayable: bool = False  # leave out payload type ``none`` (unless asked for by ``payload_type``)

    def where(self, db: str, after: str | None = None) -> tuple[str, dict[str, Any]]:
        """The WHERE clause over :func:`rows_sql` and its parameters (keyset paging by ``after``)."""
        if self.payload_type is not None and self.payload_type not in PAYLOAD_TYPES:
            raise BadFilter(f"payload type {self.payload_type!r}: one of {', '.join(PAYLOAD_TYPES)}")
        parts, params = ["1"], {}
        for name in ("stage", "kind", "site"):
            if value := getattr(self, name):
                parts.append(f"d.{'site_id' if name == 'site' else name} = {{{name}:String}}")
                params[name] = value
        if self.payload_type:
            parts.append("d.payload_type = {payload_type:String}")
            params["payload_type"] = self.payload_type
        elif self.replayable:
            parts.append("d.payload_type != 'none'")
        if self.reason:
            parts.append("positionCaseInsensitiveUTF8(d.reason, {reason:String}) > 0")
            params["reason"] = self.reason
        for name, op in (("since", ">="), ("until", "<")):
            if (text := parse_time(getattr(self, name))) is not None:
                parts.append(f"d.failed_at {op} toDateTime64({{{name}:String}}, 3, 'UTC')")
                params[name] = text
        if self.replayed is not None:
            op = "IN" if self.replayed else "NOT IN"
            parts.append(f"d.id {op} (SELECT dead_letter_id FROM {db}.dead_letter_replays)")
        if after:
            at, sep, last_id = after.partition("|")
            after_t = parse_time(at) if sep else None
            if after_t is None:
                raise BadFilter(f"cursor {after!r} is not one this API gave")
            parts.append("(d.failed_at, d.id) > (toDateTime64({after_t:String}, 3, 'UTC'), {after_id:String})")
            params.update(after_t=after_t, after_id=last_id)
        return " AND ".join(parts), params


def _cursor(row: Row) -> str:
    return f"{row['failed_at']}|{row['id']}"


def _payload_bytes(row: Row) -> bytes:
    text: str = row["payload"]
    return base64.b64decode(text) if row["payload_encoding"] == "base64" else text.encode("utf-8")


def record_key(site_id: str, event: dict[str, Any]) -> bytes:
    """The bus key of one event as the collector makes it: site and visitor, so order is kept."""
    return f"{site_id}:{visitor(event)}".encode()


def fold(event: Mapping[str, Any]) -> RawBatch:
    """A one-event RawBatch that ``unfold`` turns back into ``event`` (a RawEvent, or the RawEvent
    fields of an EnrichedEvent, whose JSON-object fields may be JSON text: schemas.JSON_TEXT_FIELDS):
    the client's time and sentAt go back as they came, so the clock-skew correction gives the same
    timestamp again."""
    kind = event["type"]
    ev: dict[str, Any] = {**json_object(event.get("extra")), "type": kind, "messageId": event["message_id"]}
    for field, name in (
        ("anonymous_id", "anonymousId"),
        ("user_id", "userId"),
        ("previous_id", "previousId"),
        ("group_id", "groupId"),
        ("original_timestamp", "timestamp"),
        ("sent_at", "sentAt"),
    ):
        if event.get(field):
            ev[name] = event[field]
    if event.get("event"):
        ev["event" if kind == "track" else "name"] = event["event"]
    for field in ("properties", "traits", "context"):
        if value := json_object(event.get(field)):
            ev[field] = value
    return {
        "v": SCHEMA_VERSION,
        "site_id": event["site_id"],
        "received_at": event["received_at"],
        "ip": event.get("ip") or "",
        "user_agent": event.get("user_agent") or "",
        "body": {"batch": [ev], "sentAt": None},
    }


@dataclass
class Outgoing:
    """What one dead letter's replay sends: records for one topic, and the events' messageIds."""

    topic: str
    records: list[tuple[bytes, bytes]]
    message_ids: list[str]


def outgoing(row: Row, settings: Settings) -> Outgoing | str:
    """The records a replay of ``row`` sends, or why it cannot be replayed."""
    ptype, bus = row["payload_type"], settings.bus
    if ptype == "none":
        return "unreadable payload: nothing a stage reads can be made of it"
    try:
        payload = orjson.loads(_payload_bytes(row))
        if ptype == "client_event":
            received = datetime.fromisoformat(row["failed_at"]).replace(tzinfo=UTC)
            batch: RawBatch = {
                "v": SCHEMA_VERSION,
                "site_id": row["site_id"],
                "received_at": bus_time(received),
                "ip": "",
                "user_agent": "",
                "body": {"batch": [payload], "sentAt": None},
            }
            ids = [str(payload["messageId"])] if payload.get("messageId") else []
            return Outgoing(bus.topic_raw, [(record_key(row["site_id"], payload), orjson.dumps(batch))], ids)
        site_id = payload["site_id"]
        if ptype == "raw_batch":
            events = [e for e in (payload.get("body") or {}).get("batch") or () if isinstance(e, dict)]
            key = record_key(site_id, events[0] if events else {})
            return Outgoing(
                bus.topic_raw, [(key, _payload_bytes(row))], [str(e["messageId"]) for e in events if e.get("messageId")]
            )
        key = record_key(site_id, {"anonymousId": payload.get("anonymous_id"), "userId": payload.get("user_id")})
        ids = [str(payload["message_id"])]
        if ptype == "enriched_event" and bus.kind == "kafka":
            return Outgoing(bus.topic_enriched, [(key, orjson.dumps(payload))], ids)
        return Outgoing(bus.topic_raw, [(key, orjson.dumps(fold(payload)))], ids)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:  # a payload of the wrong shape
        return f"payload is not a {ptype}: {type(exc).__name__}: {exc}"


def replay_filter(flt: Filter, again: bool) -> Filter:
    """What a replay selects: no unreadable payloads (nothing to send), and unless ``again`` nothing
    replayed before."""
    return Filter(**{**asdict(flt), "replayable": True, "replayed": None if again else False})


class DeadLetterSource(Protocol):
    """Dead letters through a running server (HTTP) or straight from storage and the bus."""

    async def list(self, flt: Filter, after: str | None, limit: int) -> dict[str, Any]:
        """``{"rows": [...], "total": n, "next": cursor | None}``, oldest first."""

    async def show(self, dead_letter_id: str) -> dict[str, Any] | None:
        """One dead letter with its payload and replays, or None."""

    async def replay(self, flt: Filter, after: str | None, limit: int, again: bool, replay_id: str) -> dict[str, Any]:
        """Replay up to ``limit`` dead letters after the cursor: ``{"selected", "replayed",
        "records", "skipped": [{"id", "reason"}], "next"}``."""


class DeadLetters:
    """Dead letters on one storage, replayed through one producer (a server's, or the CLI's own)."""

    def __init__(self, storage: Callable[[], Storage], producer: Callable[[], Producer], settings: Settings) -> None:
        self.storage = storage
        self.producer = producer
        self.settings = settings
        self.db = settings.storage.database

    def _select(self, columns: str, flt: Filter, after: str | None, limit: int) -> list[Row]:
        where, params = flt.where(self.db, after)
        sql = (
            f"SELECT d.id AS id, toString(d.failed_at) AS failed_at, d.site_id AS site_id, d.stage AS stage,"
            f" d.kind AS kind, d.payload_type AS payload_type, {columns} FROM {rows_sql(self.db)} WHERE {where}"
            f" ORDER BY d.failed_at, d.id LIMIT {max(1, min(limit, MAX_PAGE))}"
        )
        return self.storage().query(sql, params, readonly=True, settings=QUERY_SETTINGS)

    def _replays(self, ids: list[str]) -> dict[str, list[Row]]:
        if not ids:
            return {}
        rows = self.storage().query(
            f"SELECT dead_letter_id, replay_id, toString(replayed_at) AS replayed_at, topic, records, message_ids"
            f" FROM {self.db}.dead_letter_replays WHERE dead_letter_id IN {{ids:Array(String)}}"
            " ORDER BY replayed_at",
            {"ids": ids},
            readonly=True,
        )
        out: dict[str, list[Row]] = {}
        for r in rows:
            out.setdefault(r.pop("dead_letter_id"), []).append(r)
        return out

    def list_sync(self, flt: Filter, after: str | None, limit: int) -> dict[str, Any]:
        rows = self._select("d.reason AS reason, length(d.payload) AS payload_bytes", flt, after, limit)
        replays = self._replays([r["id"] for r in rows])
        for r in rows:
            done = replays.get(r["id"], [])
            r["replays"] = len(done)
            r["last_replayed_at"] = done[-1]["replayed_at"] if done else None
        where, params = flt.where(self.db)
        total = self.storage().query(
            f"SELECT count() AS n FROM {rows_sql(self.db)} WHERE {where}", params, readonly=True
        )[0]["n"]
        return {"rows": rows, "total": int(total), "next": _cursor(rows[-1]) if len(rows) >= limit else None}

    def show_sync(self, dead_letter_id: str) -> dict[str, Any] | None:
        rows = self.storage().query(
            f"SELECT d.id AS id, toString(d.failed_at) AS failed_at, d.site_id AS site_id, d.stage AS stage,"
            f" d.kind AS kind, d.payload_type AS payload_type, d.reason AS reason, d.payload AS payload,"
            f" d.payload_encoding AS payload_encoding, d.version AS version"
            f" FROM {rows_sql(self.db)} WHERE d.id = {{id:String}} LIMIT 1",
            {"id": dead_letter_id},
            readonly=True,
        )
        if not rows:
            return None
        row = rows[0]
        row["replays"] = self._replays([dead_letter_id]).get(dead_letter_id, [])
        return row

    async def list(self, flt: Filter, after: str | None, limit: int) -> dict[str, Any]:
        return await asyncio.to_thread(self.list_sync, flt, after, limit)

    async def show(self, dead_letter_id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.show_sync, dead_letter_id)

    async def replay(self, flt: Filter, after: str | None, limit: int, again: bool, replay_id: str) -> dict[str, Any]:
        flt = replay_filter(flt, again)
        rows = await asyncio.to_thread(
            self._select, "d.payload AS payload, d.payload_encoding AS payload_encoding", flt, after, limit
        )
        skipped: list[dict[str, str]] = []
        sent: list[tuple[Row, Outgoing]] = []
        for row in rows:
            out = outgoing(row, self.settings)
            if isinstance(out, str):
                skipped.append({"id": row["id"], "reason": out})
            else:
                sent.append((row, out))
        by_topic: dict[str, list[tuple[bytes, bytes]]] = {}
        for _, out in sent:
            by_topic.setdefault(out.topic, []).extend(out.records)
        producer = self.producer()
        for topic, records in by_topic.items():  # acknowledged (durable) before the replay is recorded
            await producer.send_batch(topic, records)
        now = ch_now()
        log_rows = [
            {
                "dead_letter_id": row["id"],
                "replay_id": replay_id,
                "replayed_at": now,
                "topic": out.topic,
                "records": len(out.records),
                "message_ids": out.message_ids,
            }
            for row, out in sent
        ]
        if log_rows:
            await asyncio.to_thread(self.storage().insert, "dead_letter_replays", log_rows)
        return {
            "selected": len(rows),
            "replayed": len(sent),
            "records": sum(len(o.records) for _, o in sent),
            "skipped": skipped,
            "next": _cursor(rows[-1]) if len(rows) >= limit else None,
        }


@asynccontextmanager
async def direct_source(
    settings: Settings, bus_factory: Callable[[Settings], EventBus], with_bus: bool
) -> AsyncIterator[DeadLetters]:
    """Dead letters straight from storage (no server running on it) and, for a replay, the bus the
    settings name (the embedded log of the data folder, or Kafka)."""
    storage = await asyncio.to_thread(open_storage, settings)
    bus: EventBus | None = None
    try:
        await asyncio.to_thread(apply_migrations, storage, settings.storage)
        if with_bus:
            bus = bus_factory(settings)
            await bus.start()
            b = settings.bus
            await bus.ensure_topics([b.topic_raw, b.topic_enriched, b.topic_dead_letter])
        producer = bus.producer if bus is not None else _no_bus
        yield DeadLetters(lambda: storage, producer, settings)
    finally:
        if bus is not None:
            await bus.stop()
        await asyncio.to_thread(storage.close)


def _no_bus() -> Producer:
    raise BusUnavailable("no bus opened (list and show do not need one)")


class HttpDeadLetters:
    """The same requests through a running server's admin routes (the server owns chDB)."""

    def __init__(self, url: str, token: str, timeout_s: float = 120) -> None:
        self.client = httpx.AsyncClient(
            base_url=url.rstrip("/"), timeout=timeout_s, headers={"Authorization": f"Bearer {token}"}
        )

    async def _call(self, method: str, path: str, missing_ok: bool = False, **kw: Any) -> Any:
        try:
            r = await self.client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ReplayUnavailable(f"cannot reach {self.client.base_url}: {exc}") from exc
        if r.status_code == 404 and missing_ok:
            return None
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            error = ReplayUnavailable if r.status_code >= 500 else RequestRefused
            raise error(f"{r.status_code}: {detail}")
        return r.json()

    @staticmethod
    def _params(flt: Filter, after: str | None) -> dict[str, Any]:
        params = {k: v for k, v in asdict(flt).items() if v is not None}
        if after:
            params["after"] = after
        return params

    async def list(self, flt: Filter, after: str | None, limit: int) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "GET", "/v1/admin/dead-letters", params={**self._params(flt, after), "limit": limit}
        )
        return result

    async def show(self, dead_letter_id: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self._call(
            "GET", f"/v1/admin/dead-letters/{dead_letter_id}", missing_ok=True
        )
        return result

    async def replay(self, flt: Filter, after: str | None, limit: int, again: bool, replay_id: str) -> dict[str, Any]:
        body = {**self._params(flt, after), "limit": limit, "again": again, "replay_id": replay_id}
        result: dict[str, Any] = await self._call("POST", "/v1/admin/dead-letters/replay", json=body)
        return result

    async def close(self) -> None:
        await self.client.aclose()


# --- admin routes -----------------------------------------------------------------------------------


class ReplayRequest(BaseModel):
    stage: str | None = None
    kind: str | None = None
    reason: str | None = None
    since: str | None = None
    until: str | None = None
    replayed: bool | None = None
    payload_type: str | None = None
    site: str | None = None
    after: str | None = Field(None, description="cursor from the previous answer's next")
    limit: int = Field(100, ge=1, le=MAX_PAGE)
    again: bool = Field(False, description="also dead letters replayed before")
    replay_id: str = Field(default_factory=lambda: uuid.uuid4().hex, max_length=100)


def admin_router(
    storage: Callable[[], Storage],
    producer: Callable[[], Producer],
    settings: Settings,
    sites: list[Site],
    limits: EdgeLimits,
) -> APIRouter:
    """``/v1/admin/dead-letters``: list, show, replay. Dead letters are not all per site (a record that
    cannot be read has none), so these need the admin token (``TRAILMARK_ADMIN_TOKEN``) when one is
    set, and otherwise the admin key of a one-site install (a replay writes: read keys never open
    these); several sites without a token: 403. Wrong keys count against the address's limit."""
    router = APIRouter(prefix="/v1/admin", tags=["admin"])
    service = DeadLetters(storage, producer, settings)
    admin_keys = index_keys(sites, "admin_key")
    token = {key_digest(settings.admin_token): sites[0]} if settings.admin_token and sites else {}
    others = [
        (index_keys(sites, "read_key"), "a read key cannot manage dead letters; use the admin key"),
        (index_keys(sites, "write_key"), "a write key cannot manage dead letters; use the admin key"),
    ]

    def authorised(request: Request) -> None:
        if token:
            bearer_site(
                request,
                limits,
                token,
                [(admin_keys, "admin routes need TRAILMARK_ADMIN_TOKEN"), *others],
                "admin token",
            )
            return
        bearer_site(request, limits, admin_keys, others, "admin key")
        if len(sites) != 1:
            raise HTTPException(403, "several sites share these dead letters: set TRAILMARK_ADMIN_TOKEN")

    # errors need no translation here: the app answers the error tree's BadRequest (a bad filter) with
    # 400 and Unavailable (storage or bus down) with 503 + Retry-After
    Auth = Depends(authorised)

    @router.get("/dead-letters", dependencies=[Auth])
    async def list_dead_letters(
        stage: str | None = None,
        kind: str | None = None,
        reason: str | None = None,
        since: str | None = None,
        until: str | None = None,
        replayed: bool | None = None,
        payload_type: str | None = None,
        site: str | None = None,
        after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    ) -> dict[str, Any]:
        """Dead letters, oldest first, without payloads; ``next`` is the cursor of the next page."""
        flt = Filter(stage, kind, reason, since, until, replayed, payload_type, site)
        result: dict[str, Any] = await service.list(flt, after, limit)
        return result

    @router.get("/dead-letters/{dead_letter_id}", dependencies=[Auth])
    async def show_dead_letter(dead_letter_id: str) -> dict[str, Any]:
        """One dead letter: payload, reason, kind, payload type and its replays."""
        found: dict[str, Any] | None = await service.show(dead_letter_id)
        if found is None:
            raise HTTPException(404, f"no dead letter {dead_letter_id!r}")
        return found

    @router.post("/dead-letters/replay", dependencies=[Auth])
    async def replay_dead_letters(body: ReplayRequest) -> dict[str, Any]:
        """Send up to ``limit`` dead letters through the pipeline again (see trailmark/deadletters.py)."""
        flt = Filter(
            body.stage, body.kind, body.reason, body.since, body.until, body.replayed, body.payload_type, body.site
        )
        result: dict[str, Any] = await service.replay(flt, body.after, body.limit, body.again, body.replay_id)
        return result

    return router
