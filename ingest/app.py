"""The collector: Segment-compatible HTTP tracking API in front of the event bus.

A batch body is parsed and validated in one pydantic-core call (Rust). When it is valid and holds
one visitor's events, the client's bytes go to the bus unchanged inside a RawBatch record (see
schemas/raw_batch.py): no per-event Python objects are dumped. Otherwise (errors, mixed visitors,
missing messageIds) the slow path validates event by event and publishes one record per visitor.
The answer waits for the bus to make the records durable. Per-event problems are reported in
``rejected`` without losing the rest of the batch.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
import uuid
import zlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, Request, Response
from prometheus_client import Counter, Histogram
from pydantic import ValidationError
from starlette.routing import Route

from ingest.sites import SiteKeys, basic_auth_user
from ingest.validate import MAX_DEPTH, check_event, describe, describe_exc, too_deep, visitor
from schemas import INCOMING_BATCH, INCOMING_EVENT, SCHEMA_VERSION, IncomingBatch, Site, bus_time
from trailmark.bus.base import BusUnavailable, Producer
from trailmark.ratelimit import EdgeLimits, retry_after
from trailmark.settings import CollectorSettings

EVENTS = Counter("trailmark_collector_events_total", "Events received", ["outcome"])
ACCEPTED, REJECTED, UNAVAILABLE = (EVENTS.labels(o) for o in ("accepted", "rejected", "unavailable"))
REQUESTS = Counter("trailmark_collector_requests_total", "Collector requests", ["status"])
BATCH = Histogram("trailmark_collector_batch_events", "Events per request", buckets=(1, 5, 10, 50, 100, 500, 2500))

SINGLE_TYPES = {
    "track": "track",
    "page": "page",
    "identify": "identify",
    "alias": "alias",
    "group": "group",
    "screen": "screen",
}
# Segment's analytics.js (analytics-next) posts to these short paths; "b" is its batching endpoint
SHORT_PATHS = {"t": "track", "p": "page", "i": "identify", "g": "group", "a": "alias", "s": "screen", "b": None}
# the machine-readable ``code`` of each error status; Segment's clients read ``code`` and ``message``
CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    429: "rate_limited",
    503: "unavailable",
}
# Headers a preflight may ask for: what the SDKs send (authorization, content-type, anonymousid,
# sentat, x-retry-count, rsa-*...) and any other well-formed name; only their syntax is checked,
# since no answer carries credentials
_HEADER_LIST = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$")
_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    REQUESTS.labels(str(status)).inc()
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """``{"code", "message"}`` as Segment's API answers (``error`` repeats the message)."""
    return _json(status, {"code": CODES.get(status, "error"), "message": message, "error": message}, headers)


class TrackerScript:
    """The built tracker, served with a content-hash ETag so browsers revalidate cheaply."""

    def __init__(self) -> None:
        try:
            self.body = (resources.files("ingest") / "static" / "t.js").read_bytes()
        except FileNotFoundError:
            self.body = b""
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:20] + '"'


class Collector:
    def __init__(
        self,
        keys: SiteKeys,
        producer: Callable[[], Producer],
        topic: str,
        settings: CollectorSettings,
        limits: EdgeLimits,
    ) -> None:
        self.keys = keys
        self.producer = producer
        self.topic = topic
        self.settings = settings
        self.script = TrackerScript()
        self.limits = limits
        self.client_ip = limits.client_ip

    def rate_limited(self, request: Request) -> Response | None:
        """429 when the client IP is over its limit or has used up its wrong-key allowance."""
        limit, wait = self.limits.before_auth(self.client_ip(request))
        if not wait:
            return None
        what = "requests with a wrong write key" if limit == "bad_key" else "requests"
        return _error(429, f"too many {what} from this address; retry later", {"Retry-After": retry_after(wait)})

    @staticmethod
    def cors(request: Request) -> dict[str, str]:
        """CORS headers for every collector answer, errors and refusals included, so that a browser
        SDK reads the status (a 4xx means: stop, do not retry) instead of a network error it would
        retry forever. Never with credentials: no client needs cookies here (the write key travels in
        the body, the Basic header or the query), so a readable answer gives a page nothing it did not
        send. Which origins may *write* is checked by ``origin_refused``, on the server side."""
        origin = request.headers.get("origin")
        if not origin:
            return {}
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin", "Access-Control-Expose-Headers": "Retry-After"}

    def preflight(self, request: Request) -> Response:
        """OPTIONS: allow what the browser asks for (SDK headers such as AnonymousId, SentAt,
        X-Retry-Count), cached by the browser for a day (browsers cap it lower)."""
        asked = request.headers.get("access-control-request-headers", "")
        headers = {
            **self.cors(request),
            "Access-Control-Allow-Methods": "POST, GET, OPTIONS",
            "Access-Control-Max-Age": "86400",
        }
        if asked and _HEADER_LIST.match(asked):
            headers["Access-Control-Allow-Headers"] = asked
        if not headers.get("Access-Control-Allow-Origin"):
            return Response(status_code=204, headers={"Allow": "POST, GET, OPTIONS"})
        return Response(status_code=204, headers=headers)

    def refuse(self, request: Request, status: int, message: str, allow: str = "") -> Response:
        """An error answer for requests no handler took (a wrong method, an unknown path), with CORS."""
        return _error(status, message, {**self.cors(request), **({"Allow": allow} if allow else {})})

    async def read_body(self, request: Request) -> bytes | Response:
        limit = self.settings.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return _error(413, f"body over {limit} bytes")
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return _error(413, f"body over {limit} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        encoding = request.headers.get("content-encoding", "").lower()
        if encoding in ("gzip", "deflate"):
            try:
                decomp = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
                body = decomp.decompress(body, limit + 1)
            except (zlib.error, gzip.BadGzipFile):
                return _error(400, f"body is not valid {encoding}")
            if len(body) > limit:
                return _error(413, f"decompressed body over {limit} bytes")
            # a stream cut short, or bytes after its end, is not what the client meant to send
            if not decomp.eof:
                return _error(400, f"body is not valid {encoding}: the stream is truncated")
            if decomp.unused_data:
                return _error(400, f"body is not valid {encoding}: data after the end of the stream")
        return body

    async def ingest(self, request: Request, single_type: str | None) -> Response:
        response = await self._ingest(request, single_type)
        if "access-control-allow-origin" not in response.headers:  # every answer: see cors()
            response.headers.update(self.cors(request))
        return response

    async def _ingest(self, request: Request, single_type: str | None) -> Response:
        if (limited := self.rate_limited(request)) is not None:  # before reading the body
            return limited
        raw = await self.read_body(request)
        if isinstance(raw, Response):
            return raw
        # the write key as the Basic user (Segment), else ?writeKey= (RudderStack's beacons); else
        # it is looked for in the body
        header_key = basic_auth_user(request.headers.get("authorization")) or request.query_params.get("writeKey")
        site: Site | None = None
        if header_key:  # reject unknown keys before spending time on the body
            found = self.authenticate(request, header_key)
            if isinstance(found, Response):
                return found
            site = found
        if single_type is None:
            return await self.ingest_batch(request, raw, site)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return _error(400, f"body is not valid JSON (UTF-8): {exc}")
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object")
        if site is None:
            found = self.authenticate(request, body.get("writeKey"))
            if isinstance(found, Response):
                return found
            site = found
        if (refused := self.origin_refused(request, site)) is not None:
            return refused
        body.setdefault("type", single_type)
        return await self.slow_path(request, site, [body], body.get("sentAt"), set(), {})

    def authenticate(self, request: Request, key: Any) -> Site | Response:
        """The site of a write key, or the answer: 401 (counted against the client IP's wrong-key
        allowance), 403 for a read or admin key, 429 when the key is over its rate limit."""
        ip = self.client_ip(request)
        if not isinstance(key, str) or not key:
            self.limits.wrong_key(ip)
            return _error(401, "missing write key (HTTP Basic user name or writeKey in the body)")
        site = self.keys.by_write_key(key)
        if site is None:
            if (kind := self.keys.other_kind(key)) is not None:
                article = "an" if kind == "admin" else "a"
                return _error(403, f"{article} {kind} key cannot write; use the site's write key")
            self.limits.wrong_key(ip)
            return _error(401, "unknown write key")
        if wait := self.limits.for_key(ip, site["site_id"]):
            return _error(429, "too many requests for this write key; retry later", {"Retry-After": retry_after(wait)})
        return site

    def referer_refused(self, request: Request, site: Site) -> bool:
        """The pixel's origin check: an <img> sends no Origin, so its Referer's origin must be one of
        the site's origins. Without either (email clients, no-referrer pages) the hit is taken."""
        referer = request.headers.get("referer")
        if request.headers.get("origin") or not referer:
            return False  # an Origin is checked by origin_refused
        parts = urlsplit(referer)
        try:
            port = f":{parts.port}" if parts.port else ""
        except ValueError:
            return True
        return not self.keys.origin_allowed(site, f"{parts.scheme}://{parts.hostname or ''}{port}")

    def origin_refused(self, request: Request, site: Site) -> Response | None:
        origin = request.headers.get("origin")
        if origin and not self.keys.origin_allowed(site, origin):
            return _error(403, "origin not allowed for this site")
        return None

    async def ingest_batch(self, request: Request, raw: bytes, site: Site | None) -> Response:
        bad: dict[int, str] = {}
        try:  # orjson + validate_python beats pydantic's validate_json here (measured: 105 vs 130 us)
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return _error(400, f"body is not valid JSON (UTF-8): {exc}")
        try:
            INCOMING_BATCH.validate_python(body)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            top = [e for e in errors if len(e["loc"]) < 2 or e["loc"][0] != "batch"]
            if top:
                return _error(400, f"invalid batch body: {describe(top)}")
            for e in errors:
                bad.setdefault(int(e["loc"][1]), describe([{**e, "loc": e["loc"][2:]}]))
        events: list[Any] = body["batch"]
        if site is None:
            found = self.authenticate(request, body.get("writeKey"))
            if isinstance(found, Response):
                return found
            site = found
        if (refused := self.origin_refused(request, site)) is not None:
            return refused
        if len(events) > self.settings.max_batch_events:
            return _error(413, f"over {self.settings.max_batch_events} events in one batch")
        if bad:
            return await self.slow_path(request, site, events, body.get("sentAt"), set(bad), bad)
        # one C-speed depth check of the whole body (batch and event: 2 levels); only when it fails
        # are events checked one by one. A body too deep outside its events (an ignored field) takes
        # the slow path, which forwards only batch and sentAt.
        deep = too_deep(body, MAX_DEPTH + 2) is not None
        if deep:
            bad[-1] = ""
        first = visitor(events[0]) if events else ""
        for index, ev in enumerate(events):
            reason = check_event(ev, depth=deep)
            if reason is not None:
                bad[index] = reason
            elif not ev.get("messageId") or visitor(ev) != first:
                bad.setdefault(-1, "")  # fine, but needs the slow path
        if bad:
            bad.pop(-1, None)
            return await self.slow_path(request, site, events, body.get("sentAt"), set(bad), bad, validated=True)
        if not events:
            return _json(200, {"success": True, "accepted": 0, "rejected": []})
        record = self.record(request, site, orjson.Fragment(raw))
        return await self.send(request, site, [((site["site_id"] + ":" + first).encode(), record)], len(events), [])

    def stamp(self, request: Request, site: Site) -> dict[str, Any]:
        """The server facts of a RawBatch, shared by every record of one request."""
        return {
            "v": SCHEMA_VERSION,
            "site_id": site["site_id"],
            "received_at": bus_time(datetime.now(UTC)),
            "ip": self.client_ip(request),
            "user_agent": request.headers.get("user-agent", ""),
        }

    def record(self, request: Request, site: Site, body: Any) -> bytes:
        return orjson.dumps({**self.stamp(request, site), "body": body})

    async def slow_path(
        self,
        request: Request,
        site: Site,
        events: list[Any],
        sent_at: Any,
        skip: set[int],
        reasons: dict[int, str],
        validated: bool = False,
    ) -> Response:
        """Event by event: validate, check, fill missing messageIds, one record per visitor.
        The caller has authenticated the site and checked the origin."""
        groups: dict[str, list[dict[str, Any]]] = {}
        rejected: list[dict[str, Any]] = [{"index": i, "error": reasons[i]} for i in sorted(skip)]
        for index, event in enumerate(events):
            if index in skip:
                continue
            if not isinstance(event, dict):
                rejected.append({"index": index, "error": "event must be a JSON object"})
                continue
            if not validated:  # else the caller has checked each event (and put failures in skip)
                try:
                    INCOMING_EVENT.validate_python(event)
                except ValidationError as exc:
                    rejected.append({"index": index, "error": describe_exc(exc)})
                    continue
                # the depth of what the client sent, ignored fields included
                reason = too_deep(event) or check_event(event, depth=False)
                if reason is not None:
                    rejected.append({"index": index, "error": reason})
                    continue
            # the client's event as sent: fields the contract does not name (integrations,
            # channel, unknown ones) travel on to RawEvent.extra
            ev = event
            if not ev.get("messageId"):
                ev["messageId"] = str(uuid.uuid4())
            groups.setdefault(visitor(ev), []).append(ev)
        rejected.sort(key=lambda r: int(r["index"]))
        prefix = site["site_id"] + ":"
        stamp = self.stamp(request, site)
        records = [
            ((prefix + key).encode(), orjson.dumps({**stamp, "body": {"batch": evs, "sentAt": sent_at}}))
            for key, evs in groups.items()
        ]
        return await self.send(request, site, records, sum(len(g) for g in groups.values()), rejected)

    async def send(
        self,
        request: Request,
        site: Site,
        records: list[tuple[bytes, bytes]],
        accepted: int,
        rejected: list[dict[str, Any]],
    ) -> Response:
        if records:
            try:
                await self.producer().send_batch(self.topic, records)
            except BusUnavailable as exc:
                UNAVAILABLE.inc(accepted)
                return _error(503, f"event log unavailable, retry later: {exc}", {"Retry-After": "5"})
        ACCEPTED.inc(accepted)
        if rejected:
            REJECTED.inc(len(rejected))
        BATCH.observe(accepted + len(rejected))
        return _json(200, {"success": True, "accepted": accepted, "rejected": rejected})

    async def pixel(self, request: Request) -> Response:
        """GET /v1/p.gif: noscript page views and email opens; always answers the image."""
        q = request.query_params
        # limits and refusals store nothing, and the answer stays the image
        found = None if self.rate_limited(request) else self.authenticate(request, q.get("key") or q.get("writeKey"))
        site = None if found is None or isinstance(found, Response) else found
        if site is not None and self.origin_refused(request, site) is None and not self.referer_refused(request, site):
            page_url = q.get("url") or request.headers.get("referer") or ""
            event: dict[str, Any] = {
                "type": q.get("type") or ("track" if q.get("event") else "page"),
                "event": q.get("event"),
                "messageId": q.get("mid"),
                "anonymousId": q.get("aid") or q.get("anonymousId") or f"pixel-{self.client_ip(request)}",
                "userId": q.get("uid"),
                "properties": {k: v for k, v in q.items() if k.startswith("p_")},
                "context": {
                    "page": {"url": page_url, "path": urlsplit(page_url).path, "referrer": q.get("ref") or ""},
                    "library": {"name": "pixel"},
                },
            }
            await self.slow_path(request, site, [event], None, set(), {})
        return Response(_GIF, media_type="image/gif", headers={"Cache-Control": "no-store, max-age=0"})

    def tracker(self, request: Request) -> Response:
        if not self.script.body:
            return _error(404, "tracker not built: run make (tracker_js/build.mjs)")
        cache = (
            "public, max-age=31536000, immutable"
            if "v" in request.query_params
            else "public, max-age=300, must-revalidate"
        )
        headers = {"ETag": self.script.etag, "Cache-Control": cache, "Access-Control-Allow-Origin": "*"}
        if request.headers.get("if-none-match") == self.script.etag:
            return Response(status_code=304, headers=headers)
        return Response(self.script.body, media_type="application/javascript", headers=headers)


_ERROR = {
    "type": "object",
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "error": {"type": "string"}},
}
ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "accepted (``rejected`` lists the events refused alone)"},
    **{
        status: {"description": what, "content": {"application/json": {"schema": _ERROR}}}
        for status, what in (
            (400, "not JSON, not UTF-8, nested too deep, not a batch"),
            (401, "missing or unknown write key"),
            (403, "a read key, or an origin the site does not allow"),
            (413, "over the size or event limits"),
            (429, "rate limited (Retry-After)"),
            (503, "event log unavailable (Retry-After)"),
        )
    },
}


def _single(collector: Collector, kind: str) -> Callable[[Request], Awaitable[Response]]:
    async def single(request: Request) -> Response:
        return await collector.ingest(request, kind)

    return single


def collector_router(collector: Collector) -> APIRouter:
    router = APIRouter(tags=["collector"])

    async def fast_batch(request: Request) -> Response:
        return await collector.ingest(request, None)

    # The hot path as a plain Starlette route (skips FastAPI's per-request dependency solving,
    # ~20 % of a batch's time); the APIRoute below with the same path documents it in OpenAPI.
    router.routes.append(Route("/v1/batch", fast_batch, methods=["POST"]))

    @router.post("/v1/batch", summary="Segment batch: {batch: [...], sentAt, writeKey?}", responses=ANSWERS)
    async def batch(body: IncomingBatch) -> Response:  # documents the body; requests take the route above
        raise AssertionError("unreachable: POST /v1/batch is served by fast_batch")

    one_event = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/IncomingEvent"}}},
        }
    }
    for name in SINGLE_TYPES:
        router.add_api_route(
            f"/v1/{name}",
            _single(collector, name),
            methods=["POST"],
            responses=ANSWERS,
            summary=f"Segment {name} call",
            openapi_extra=one_event,
        )

    for short, kind in SHORT_PATHS.items():  # aliases, left out of the OpenAPI document

        async def alias(request: Request, _type: str | None = kind) -> Response:
            return await collector.ingest(request, _type)

        router.routes.append(Route(f"/v1/{short}", alias, methods=["POST"]))

    async def beacon(request: Request) -> Response:
        return await collector.ingest(request, None)

    # RudderStack's beacon mode: a text/plain batch with the write key in ?writeKey=
    router.routes.append(Route("/beacon/v1/batch", beacon, methods=["POST"]))

    async def preflight(request: Request) -> Response:
        return collector.preflight(request)

    router.routes.append(Route("/v1/{path:path}", preflight, methods=["OPTIONS"]))
    router.routes.append(Route("/beacon/{path:path}", preflight, methods=["OPTIONS"]))

    @router.get("/v1/p.gif", include_in_schema=False)
    async def pixel(request: Request) -> Response:
        return await collector.pixel(request)

    @router.get("/t.js", include_in_schema=False)
    async def tracker(request: Request) -> Response:
        return collector.tracker(request)

    # A wrong method on a collector path, or an unknown beacon path: answered here, with CORS, rather
    # than by the framework without it (a browser SDK would see a network error and retry forever)
    async def not_allowed(request: Request) -> Response:
        return collector.refuse(request, 405, f"{request.method} is not allowed here; use POST", "POST, OPTIONS")

    async def not_found(request: Request) -> Response:
        return collector.refuse(request, 404, f"no collector endpoint at {request.url.path}")

    posts = ["/v1/batch", *(f"/v1/{n}" for n in SINGLE_TYPES), *(f"/v1/{n}" for n in SHORT_PATHS), "/beacon/v1/batch"]
    others = ["GET", "HEAD", "PUT", "PATCH", "DELETE"]  # POST and OPTIONS are matched above
    for path in posts:
        router.routes.append(Route(path, not_allowed, methods=others))
    router.routes.append(Route("/beacon/{path:path}", not_found, methods=["POST", *others]))
    return router


__all__ = ["Collector", "collector_router"]
