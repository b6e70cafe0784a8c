"""The collector: Segment-compatible HTTP tracking API in front of the event bus.

Bodies are parsed once with orjson and each event validated once (normalize.py); records go to the
bus as one batch per request and the answer waits for the bus to make them durable. Per-event
problems are reported in ``rejected`` without losing the rest of the batch.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, Request, Response
from prometheus_client import Counter, Histogram

from ingest.normalize import EventRejected, iso, normalize
from ingest.sites import SiteKeys, basic_auth_user
from schemas import Site
from trailmark.bus.base import BusUnavailable, Producer
from trailmark.settings import CollectorSettings

EVENTS = Counter("trailmark_collector_events_total", "Events received", ["outcome"])
REQUESTS = Counter("trailmark_collector_requests_total", "Collector requests", ["status"])
BATCH = Histogram(
    "trailmark_collector_batch_events", "Events per request", buckets=(1, 5, 10, 50, 100, 500, 2500)
)

SINGLE_TYPES = {"track": "track", "page": "page", "identify": "identify", "alias": "alias",
                "group": "group", "screen": "screen"}
_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    REQUESTS.labels(str(status)).inc()
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json(status, {"error": message}, headers)


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


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
    ) -> None:
        self.keys = keys
        self.producer = producer
        self.topic = topic
        self.settings = settings
        self.script = TrackerScript()

    def client_ip(self, request: Request) -> str:
        if self.settings.trust_forwarded_for:
            forwarded = request.headers.get("x-forwarded-for")
            if forwarded:
                return forwarded.split(",")[0].strip()
        return request.client.host if request.client else ""

    def cors(self, request: Request, site: Site | None) -> dict[str, str]:
        origin = request.headers.get("origin")
        if not origin:
            return {}
        if site is not None and not self.keys.origin_allowed(site, origin):
            return {}
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                "Access-Control-Allow-Credentials": "true"}

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
        return body

    def authenticate(self, request: Request, body: dict[str, Any]) -> Site | Response:
        key = basic_auth_user(request.headers.get("authorization")) or body.get("writeKey")
        if not isinstance(key, str) or not key:
            return _error(401, "missing write key (HTTP Basic user name or writeKey in the body)")
        site = self.keys.by_write_key.get(key)
        if site is None:
            if key in self.keys.read_keys:
                return _error(403, "a read key cannot write; use the site's write key")
            return _error(401, "unknown write key")
        return site

    async def ingest(self, request: Request, single_type: str | None) -> Response:
        raw = await self.read_body(request)
        if isinstance(raw, Response):
            return raw
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return _error(400, f"body is not valid JSON (UTF-8): {exc}")
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object")
        site = self.authenticate(request, body)
        if isinstance(site, Response):
            return site
        headers = self.cors(request, site)
        if request.headers.get("origin") and not headers:
            return _error(403, "origin not allowed for this site")
        if single_type is None:
            events = body.get("batch")
            if not isinstance(events, list):
                return _error(400, "batch must be a JSON array of events", headers)
        else:
            body.setdefault("type", single_type)
            events = [body]
        if len(events) > self.settings.max_batch_events:
            return _error(413, f"over {self.settings.max_batch_events} events in one batch", headers)
        return await self.publish(request, site, events, _parse_ts(body.get("sentAt")), headers)

    async def publish(
        self,
        request: Request,
        site: Site,
        events: list[Any],
        sent_at: datetime | None,
        headers: dict[str, str],
    ) -> Response:
        received_at = datetime.now(UTC)
        ip = self.client_ip(request)
        user_agent = request.headers.get("user-agent", "")
        site_id = site["site_id"]
        max_event = self.settings.max_event_bytes
        skew = self.settings.max_clock_skew_s
        records: list[tuple[bytes, bytes]] = []
        rejected: list[dict[str, Any]] = []
        for index, event in enumerate(events):
            try:
                ev = normalize(event, site_id=site_id, received_at=received_at, batch_sent_at=sent_at,
                               ip=ip, user_agent=user_agent, max_skew_s=skew)
                value = orjson.dumps(ev)
            except EventRejected as exc:
                rejected.append({"index": index, "error": str(exc)})
                continue
            except (TypeError, orjson.JSONEncodeError) as exc:
                rejected.append({"index": index, "error": f"cannot encode event: {exc}"})
                continue
            if len(value) > max_event:
                rejected.append({"index": index, "error": f"event over {max_event} bytes"})
                continue
            key = f"{site_id}:{ev['anonymous_id'] or ev['user_id']}".encode()
            records.append((key, value))
        if records:
            try:
                await self.producer().send_batch(self.topic, records)
            except BusUnavailable as exc:
                EVENTS.labels("unavailable").inc(len(records))
                return _error(503, f"event log unavailable, retry later: {exc}",
                              {**headers, "Retry-After": "5"})
        EVENTS.labels("accepted").inc(len(records))
        if rejected:
            EVENTS.labels("rejected").inc(len(rejected))
        BATCH.observe(len(events))
        return _json(200, {"accepted": len(records), "rejected": rejected}, headers)

    async def pixel(self, request: Request) -> Response:
        """GET /v1/p.gif: noscript page views and email opens; always answers the image."""
        q = request.query_params
        site = self.keys.by_write_key.get(q.get("key") or q.get("writeKey") or "")
        if site is not None:
            page_url = q.get("url") or request.headers.get("referer") or ""
            event: dict[str, Any] = {
                "type": q.get("type") or ("track" if q.get("event") else "page"),
                "event": q.get("event"),
                "messageId": q.get("mid"),
                "anonymousId": q.get("aid") or q.get("anonymousId") or f"pixel-{self.client_ip(request)}",
                "userId": q.get("uid"),
                "properties": {k: v for k, v in q.items() if k.startswith("p_")},
                "context": {"page": {"url": page_url, "path": urlsplit(page_url).path,
                                     "referrer": q.get("ref") or ""}, "library": {"name": "pixel"}},
            }
            await self.publish(request, site, [event], None, {})
        return Response(_GIF, media_type="image/gif",
                        headers={"Cache-Control": "no-store, max-age=0"})

    def tracker(self, request: Request) -> Response:
        if not self.script.body:
            return _error(404, "tracker not built: run make (tracker_js/build.mjs)")
        cache = "public, max-age=31536000, immutable" if "v" in request.query_params else \
            "public, max-age=300, must-revalidate"
        headers = {"ETag": self.script.etag, "Cache-Control": cache, "Access-Control-Allow-Origin": "*"}
        if request.headers.get("if-none-match") == self.script.etag:
            return Response(status_code=304, headers=headers)
        return Response(self.script.body, media_type="application/javascript", headers=headers)


def collector_router(collector: Collector) -> APIRouter:
    router = APIRouter(tags=["collector"])

    @router.post("/v1/batch", summary="Segment batch: {batch: [...], sentAt, writeKey?}")
    async def batch(request: Request) -> Response:
        return await collector.ingest(request, None)

    for name in SINGLE_TYPES:
        async def single(request: Request, _type: str = name) -> Response:
            return await collector.ingest(request, _type)

        router.add_api_route(f"/v1/{name}", single, methods=["POST"], summary=f"Segment {name} call")

    @router.options("/v1/{path:path}", include_in_schema=False)
    async def preflight(request: Request, path: str) -> Response:
        origin = request.headers.get("origin", "")
        if origin and collector.keys.any_origin_allowed(origin):
            return Response(status_code=204, headers={
                "Access-Control-Allow-Origin": origin, "Vary": "Origin",
                "Access-Control-Allow-Methods": "POST, GET, OPTIONS",
                "Access-Control-Allow-Headers": "Content-Type, Authorization, Content-Encoding",
                "Access-Control-Allow-Credentials": "true", "Access-Control-Max-Age": "86400"})
        return Response(status_code=403)

    @router.get("/v1/p.gif", include_in_schema=False)
    async def pixel(request: Request) -> Response:
        return await collector.pixel(request)

    @router.get("/t.js", include_in_schema=False)
    async def tracker(request: Request) -> Response:
        return collector.tracker(request)

    return router


__all__ = ["Collector", "collector_router", "iso"]
