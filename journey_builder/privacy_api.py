"""Privacy API: erase and export a contact, authorised by the site's admin key (Bearer ``ak_...``).

The admin key opens only these routes: a read or write key gets 403 here, and the admin key gets
403 on the read routes. Wrong keys count against the client address like on the read API.

Erasure is asynchronous (202 + a request id; ``GET /v1/erasures/{id}`` reports progress): its
ClickHouse mutations and log rewrites take seconds to minutes. Erasures run one at a time in the
server process, each step recorded when done. An erasure the server stopped in (or that failed)
resumes after the next start, on the first request to these routes, from its last recorded step
(journey_builder/privacy.py ``unfinished`` / ``resume``); the suppression list it wrote holds
meanwhile.
"""

import asyncio
import logging
from collections.abc import Callable
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse

from journey_builder import privacy
from schemas import Site
from schemas.times import ch_now
from trailmark.bus.base import EventBus
from trailmark.bus.embedded import EmbeddedBus
from trailmark.bus.spool import SpoolingProducer
from trailmark.keys import index_keys
from trailmark.ratelimit import EdgeLimits
from trailmark.settings import Settings
from trailmark.storage.base import Storage
from trailmark.web import bearer_site

log = logging.getLogger("trailmark.privacy")


class Logs(Protocol):
    """Where records of a contact may still wait: the bus (rewritten when it is the embedded log)
    and the collector's spool (when it runs one). The runtime has both."""

    bus: EventBus
    spool: SpoolingProducer | None


def scrub_logs(logs: Logs, settings: Settings, change: Callable[[bytes], bytes | None]) -> int:
    """Rewrite the embedded log's topics and the spool with ``change``; Kafka topics are left alone."""
    b = settings.bus
    changed = 0
    if isinstance(logs.bus, EmbeddedBus):
        for topic in (b.topic_raw, b.topic_enriched, b.topic_dead_letter):
            changed += logs.bus.rewrite(topic, change)
    if logs.spool is not None:
        changed += logs.spool.rewrite(change)
    return changed


def privacy_router(
    storage: Callable[[], Storage], logs: Logs, sites: list[Site], settings: Settings, limits: EdgeLimits
) -> APIRouter:
    router = APIRouter(tags=["privacy"])
    admin_keys = index_keys(sites, "admin_key")
    refused = [
        (keys, "erase and export need the site's admin key (keys.json: admin_key)")
        for keys in (index_keys(sites, "read_key"), index_keys(sites, "write_key"))
    ]
    conf, cluster = settings.privacy, settings.storage.cluster
    running: dict[str, asyncio.Task[None]] = {}
    one_at_a_time = asyncio.Lock()
    resumed = False  # unfinished erasures of earlier runs are picked up once per process
    started = ch_now()  # ... those last recorded before this process started (no live process has them)

    async def admin_site(request: Request) -> Site:
        site = bearer_site(request, limits, admin_keys, refused, "admin key")
        await resume_unfinished()
        return site

    # no ``from __future__ import annotations`` here: FastAPI reads these annotations at route creation
    Admin = Annotated[Site, Depends(admin_site)]

    async def subject_of(site: Site, contact: str) -> privacy.Subject:
        found = await asyncio.to_thread(privacy.resolve_subject, storage(), site["site_id"], contact)
        if found is None:
            raise HTTPException(404, f"no contact or visitor {contact!r} on site {site['site_id']!r}")
        return found

    def scrub(change: privacy.RecordScrubber) -> int:
        return scrub_logs(logs, settings, change)

    async def erase(eraser: privacy.Eraser) -> None:
        async with one_at_a_time:
            try:
                await asyncio.to_thread(eraser.run, scrub)
                log.warning("erasure %s: %s", eraser.progress.request_id, eraser.progress.detail)
            except Exception as exc:
                log.exception("erasure %s failed", eraser.progress.request_id)
                try:
                    await asyncio.to_thread(eraser.fail, f"{type(exc).__name__}: {exc}")
                except Exception:  # storage itself is down: the request stays running, then interrupted
                    log.exception("erasure %s: cannot record the failure", eraser.progress.request_id)
            finally:
                running.pop(eraser.progress.request_id, None)

    def start(eraser: privacy.Eraser) -> None:
        request_id = eraser.progress.request_id
        running[request_id] = asyncio.create_task(erase(eraser), name=f"erase-{request_id}")

    async def resume_unfinished() -> None:
        nonlocal resumed
        if resumed:
            return
        resumed = True  # set first: requests arriving meanwhile must not start the same erasures twice
        try:
            store = storage()
            for site_id, request_id in await asyncio.to_thread(privacy.unfinished, store, started, cluster):
                if request_id in running:
                    continue
                eraser = await asyncio.to_thread(
                    privacy.resume, store, site_id, request_id, conf.erase_settle_s, conf.erase_passes, cluster
                )
                if eraser is not None:
                    log.warning("erasure %s: resuming after step %d", request_id, eraser.progress.steps_done)
                    start(eraser)
        except Exception:
            resumed = False  # storage not up yet: the next request tries again
            raise

    @router.delete(
        "/v1/contacts/{contact}",
        status_code=202,
        summary="Erase a contact: every identity's events, sessions, journeys, dead letters, logs",
    )
    async def erase_contact(contact: str, site: Admin) -> JSONResponse:
        subject = await subject_of(site, contact)
        progress = privacy.new_request(site["site_id"], contact)
        store = storage()
        eraser = await asyncio.to_thread(
            privacy.Eraser, store, subject, progress, conf.erase_settle_s, conf.erase_passes, cluster
        )
        await asyncio.to_thread(privacy.begin, store, eraser)
        start(eraser)
        return JSONResponse(
            {
                "request_id": progress.request_id,
                "status": "running",
                "identifiers": progress.identifiers,
                "status_url": f"/v1/erasures/{progress.request_id}",
            },
            status_code=202,
        )

    @router.get("/v1/erasures/{request_id}", summary="Progress of an erasure (running, done, failed, interrupted)")
    async def erasure(request_id: str, site: Admin) -> dict[str, Any]:
        row = await asyncio.to_thread(privacy.load, storage(), site["site_id"], request_id)
        if row is None:
            raise HTTPException(404, f"no erasure {request_id!r} on site {site['site_id']!r}")
        if row["status"] == "running" and request_id not in running:  # and could not be resumed
            row["status"] = "interrupted"
            row["detail"] = "the server stopped before it finished and the erasure cannot resume; erase again"
        return row

    @router.get(
        "/v1/contacts/{contact}/export", summary="Everything stored about a contact, as one JSON document (streamed)"
    )
    async def export_contact(contact: str, site: Admin) -> StreamingResponse:
        subject = await subject_of(site, contact)
        chunks = privacy.export_chunks(storage(), subject, conf.export_page_rows)
        name = f"trailmark-export-{site['site_id']}.json"
        return StreamingResponse(
            chunks, media_type="application/json", headers={"Content-Disposition": f'attachment; filename="{name}"'}
        )

    return router
