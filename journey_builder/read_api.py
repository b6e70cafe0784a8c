"""Read API: journeys and read-only SQL, authorised by a site's read key (Bearer).

Data-team SQL runs in its own small thread pool behind a server-wide and a per-key limit, so heavy
queries wait or get 429 instead of taking the threads the collector and the journey reads use; a
query whose client goes away is cancelled in ClickHouse. The analysis reads (funnel, attribution,
retention, KPIs, moments...) pass a gate of their own: a few at once per read key and per server, the
rest queue for a while, then get 429.
"""

import asyncio
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from journey_builder import accounts, analytics, interests, personas, queries
from journey_builder.clickmaps import click_map
from journey_builder.insights_api import Persona, insights_router
from journey_builder.map_page import map_router
from journey_builder.sql_sandbox import SqlRefused, SqlSandbox
from schemas import Site
from trailmark.keys import index_keys
from trailmark.ratelimit import EdgeLimits
from trailmark.settings import JourneySettings, SqlSettings
from trailmark.storage.base import QueryError, Storage
from trailmark.web import bearer_site

log = logging.getLogger("trailmark.reads")
MAX_OFFSET = 10_000_000  # deeper paging is a query for /v1/sql


class SqlRequest(BaseModel):
    query: str = Field(
        ...,
        min_length=1,
        max_length=100_000,
        description="one ClickHouse SELECT over this site's tables (see docs/sql.md)",
    )
    params: dict[str, Any] | None = Field(None, description="values for {name:Type} placeholders")


def read_router(
    storage: Callable[[], Storage],
    sites: list[Site],
    settings: JourneySettings,
    sql_settings: SqlSettings,
    database: str,
    limits: EdgeLimits,
) -> APIRouter:
    router = APIRouter(tags=["reads"])
    read_keys, write_keys = index_keys(sites, "read_key"), index_keys(sites, "write_key")
    admin_keys = index_keys(sites, "admin_key")

    refused = [
        (write_keys, "a write key cannot read; use the site's read key"),
        (admin_keys, "an admin key only erases and exports contacts; use the site's read key"),
    ]

    def site(request: Request) -> Site:
        return bearer_site(request, limits, read_keys, refused, "read key")

    @router.get(
        "/v1/journeys/{contact}",
        summary="A contact's journey: identities, sessions, touchpoints",
        description="One contact, so no `persona=`: its persona is in `/v1/personas`' rules.",
    )
    async def journey(contact: str, s: Annotated[Site, Depends(site)]) -> dict[str, Any]:
        store, site_id = storage(), s["site_id"]

        def interests_of(devices: list[str]) -> list[dict[str, Any]]:
            return interests.of_devices(store, site_id, devices, settings)

        result = await asyncio.to_thread(queries.journey, store, site_id, contact, interests_of)
        if result is None:
            raise HTTPException(404, f"no contact or visitor {contact!r} on site {site_id!r}")
        result["interests"] = result.pop("extra")
        return result

    conf = settings
    known = personas.load(settings.analysis)

    def chosen(persona: str | None) -> personas.Chosen | None:
        """``persona=`` of a read: None, or the persona's contacts; an unknown name is a 400."""
        try:
            return known.only(settings.analysis, persona)
        except analytics.BadQuery as exc:
            raise HTTPException(400, str(exc)) from None

    Since = Annotated[str | None, Query(alias="from", description="ISO date/time, inclusive")]
    Until = Annotated[str | None, Query(alias="to", description="ISO date/time, exclusive")]

    # analysis reads take seconds and up to analysis.max_memory_bytes each on a large site: a read key
    # runs a few at once and the server a few more, the rest wait their turn (the map page asks for
    # about ten at once), then get 429; one contact's journey or one account (milliseconds) is not gated
    limits_of = settings.analysis
    server_slots = asyncio.Semaphore(max(1, limits_of.max_concurrent_reads))
    key_slots: dict[str, asyncio.Semaphore] = {}  # per site of a read key: bounded by keys.json

    def busy(message: str) -> HTTPException:
        return HTTPException(429, message, headers={"Retry-After": "5"})

    async def take(slot: asyncio.Semaphore, why: str) -> None:
        if not slot.locked():
            await slot.acquire()  # free: taken at once
            return
        try:
            if limits_of.queue_timeout_s <= 0:
                raise TimeoutError
            await asyncio.wait_for(slot.acquire(), limits_of.queue_timeout_s)
        except TimeoutError:
            raise busy(f"{why}; retry later") from None

    async def run(fn: Callable[..., dict[str, Any]], site_id: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        mine = key_slots.setdefault(site_id, asyncio.Semaphore(max(1, limits_of.max_concurrent_reads_per_key)))
        await take(mine, f"at most {limits_of.max_concurrent_reads_per_key} analysis reads at once per read key")
        try:
            await take(server_slots, "the server is busy with analysis reads")
            try:
                return await asyncio.to_thread(fn, storage(), site_id, *args, **kwargs)
            finally:
                server_slots.release()
        except analytics.BadQuery as exc:
            raise HTTPException(400, str(exc)) from None
        except QueryError as exc:  # our own SQL: log it, answer what failed without echoing it
            log.warning("%s failed: %s", getattr(fn, "__name__", "read"), exc)
            raise HTTPException(400, f"{getattr(fn, '__name__', 'read')} query failed; check the parameters") from None
        finally:
            mine.release()

    @router.get("/v1/journeys", summary="Contacts, filtered by stage, channel, campaign, conversion, interest, dates")
    async def journeys(
        s: Annotated[Site, Depends(site)],
        stage: str | None = None,
        interest: Annotated[str | None, Query(description="an interest value, or kind:value")] = None,
        channel: str | None = None,
        campaign: str | None = None,
        converted: bool | None = None,
        since: Since = None,
        until: Until = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
        persona: Persona = None,
    ) -> dict[str, Any]:
        return await run(
            interests.journeys,
            s["site_id"],
            conf,
            interest=interest,
            stage=stage,
            channel=channel,
            campaign=campaign,
            converted=converted,
            since=since,
            until=until,
            limit=limit,
            offset=offset,
            persona=chosen(persona),
        )

    @router.get(
        "/v1/accounts/{account}",
        summary="An account (group id or domain:<domain>): profile, contacts, stage",
        description="One account, so no `persona=`.",
    )
    async def account(account: str, s: Annotated[Site, Depends(site)]) -> dict[str, Any]:
        result = await asyncio.to_thread(accounts.account, storage(), s["site_id"], account, conf)
        if result is None:
            raise HTTPException(404, f"no account {account!r} on site {s['site_id']!r}")
        return result

    @router.get("/v1/stages", summary="Contacts per journey stage and median time between stages")
    async def stages(s: Annotated[Site, Depends(site)], persona: Persona = None) -> dict[str, Any]:
        return await run(analytics.stages, s["site_id"], chosen(persona))

    @router.get("/v1/funnel", summary="Conversion per step (as windowFunnel counts it), optionally by channel")
    async def funnel(
        s: Annotated[Site, Depends(site)],
        steps: Annotated[str, Query(description="comma-separated page paths (/pricing) or event names")],
        window: Annotated[int, Query(ge=1, le=90 * 86400, description="seconds")] = 86400,
        by: str | None = None,
        since: Since = None,
        until: Until = None,
        persona: Persona = None,
    ) -> dict[str, Any]:
        names = [x.strip() for x in steps.split(",") if x.strip()]
        return await run(
            analytics.funnel, s["site_id"], names, window, by, since, until, chosen(persona), conf=limits_of
        )

    @router.get("/v1/paths", summary="Most common page/event sequences (Sankey links included)")
    async def paths(
        s: Annotated[Site, Depends(site)],
        start: Annotated[str | None, Query(alias="from", description="start page or event")] = None,
        depth: Annotated[int, Query(ge=2, le=10)] = 3,
        limit: Annotated[int, Query(ge=1, le=500)] = 20,
        persona: Persona = None,
    ) -> dict[str, Any]:
        return await run(analytics.paths, s["site_id"], start, depth, limit, persona=chosen(persona))

    @router.get("/v1/attribution", summary="Credit per channel/source/campaign for a conversion")
    async def attribution(
        s: Annotated[Site, Depends(site)],
        conversion: str = "Order Completed",
        model: str = "last_non_direct",
        by: str = "channel",
        lookback_days: Annotated[int | None, Query(ge=1, le=365)] = None,
        half_life_days: Annotated[float | None, Query(gt=0, le=365)] = None,
        since: Since = None,
        until: Until = None,
        details: bool = False,
        persona: Persona = None,
    ) -> dict[str, Any]:
        return await run(
            analytics.attribution,
            s["site_id"],
            conversion,
            model,
            by,
            lookback_days or conf.lookback_days,
            half_life_days or conf.time_decay_half_life_days,
            since,
            until,
            details,
            chosen(persona),
            conf=limits_of,
        )

    @router.get("/v1/pain-points", summary="Exit pages, stage drop-off, rage clicks and JS errors")
    async def pain_points(
        s: Annotated[Site, Depends(site)], limit: Annotated[int, Query(ge=1, le=100)] = 10, persona: Persona = None
    ) -> dict[str, Any]:
        return await run(analytics.pain_points, s["site_id"], limit, chosen(persona))

    @router.get(
        "/v1/clicks",
        summary="Click map of one page: clicks by element (rage, dead) and a density grid",
    )
    async def clicks(
        s: Annotated[Site, Depends(site)],
        response: Response,
        page: Annotated[str, Query(min_length=1, max_length=2048, pattern="^/", description="page path: /pricing")],
        days: Annotated[int, Query(ge=1, le=366, description="look back this many days")] = 30,
        limit: Annotated[int, Query(ge=1, le=200, description="elements listed")] = 50,
        rows: Annotated[int, Query(ge=1, le=200, description="grid rows (20 columns)")] = 40,
        persona: Persona = None,
    ) -> dict[str, Any]:
        # read by the click-map overlay from the site's own pages: the key travels in the header,
        # never a cookie, so any origin may read the answer
        response.headers["Access-Control-Allow-Origin"] = "*"
        who = chosen(persona)
        return await run(click_map, s["site_id"], page, days=days, limit=limit, rows=rows, who=who)

    sandbox = SqlSandbox(sql_settings, database)
    pool = ThreadPoolExecutor(max_workers=max(1, sql_settings.max_concurrent), thread_name_prefix="sql")
    slots = asyncio.Semaphore(max(1, sql_settings.max_concurrent))
    running: dict[str, int] = {}

    @router.post("/v1/sql", summary="Run one SELECT over this site's tables (sandboxed, limited)")
    async def sql(body: SqlRequest, request: Request, s: Annotated[Site, Depends(site)]) -> dict[str, Any]:
        site_id = s["site_id"]
        if running.get(site_id, 0) >= sql_settings.max_concurrent_per_key:
            raise busy(f"at most {sql_settings.max_concurrent_per_key} running queries per read key")
        running[site_id] = running.get(site_id, 0) + 1
        try:
            try:
                await asyncio.wait_for(slots.acquire(), sql_settings.queue_timeout_s)
            except TimeoutError:
                raise busy("the SQL endpoint is busy; retry later") from None
            try:
                return await _run_sql(body, request, site_id)
            finally:
                slots.release()
        finally:
            running[site_id] -= 1
            if not running[site_id]:
                del running[site_id]

    async def _run_sql(body: SqlRequest, request: Request, site_id: str) -> dict[str, Any]:
        query_id = uuid.uuid4().hex
        store = storage()
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(pool, sandbox.run, store, site_id, body.query, body.params, query_id)
        while True:  # a client that goes away takes its query with it
            done, _ = await asyncio.wait({job}, timeout=0.25)
            if done:
                break
            if await request.is_disconnected():
                await asyncio.to_thread(store.cancel, query_id)
                raise HTTPException(499, "client closed the request")
        try:
            rows, truncated = job.result()
        except SqlRefused as exc:
            raise HTTPException(400, f"query refused: {exc}") from None
        return {"rows": rows, "count": len(rows), "truncated": truncated}

    router.include_router(insights_router(run, site, settings))  # retention, personas, KPIs, moments
    router.include_router(map_router())
    return router
