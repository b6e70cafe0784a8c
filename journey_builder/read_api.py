"""Read API: journeys and read-only SQL, authorised by a site's read key (Bearer)."""


import asyncio
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from journey_builder import analytics, queries
from journey_builder.map_page import map_router
from schemas import Site
from trailmark.settings import JourneySettings
from trailmark.storage.base import QueryError, Storage

MAX_SQL_ROWS = 100_000


class SqlRequest(BaseModel):
    query: str = Field(..., min_length=1, max_length=100_000, description="one read-only ClickHouse query")
    params: dict[str, Any] | None = Field(None, description="values for {name:Type} placeholders")


def read_router(
    storage: Callable[[], Storage],
    sites_by_read_key: Callable[[], dict[str, Site]],
    settings: JourneySettings | None = None,
) -> APIRouter:
    router = APIRouter(tags=["reads"])

    def site(request: Request) -> Site:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            raise HTTPException(401, "missing read key: Authorization: Bearer READ_KEY",
                                headers={"WWW-Authenticate": "Bearer"})
        key = header[7:].strip()
        found = sites_by_read_key().get(key)
        if found is None:
            if any(s["write_key"] == key for s in sites_by_read_key().values()):
                raise HTTPException(403, "a write key cannot read; use the site's read key")
            raise HTTPException(401, "unknown read key", headers={"WWW-Authenticate": "Bearer"})
        return found

    @router.get("/v1/journeys/{contact}", summary="A contact's journey: identities, sessions, touchpoints")
    async def journey(contact: str, s: Annotated[Site, Depends(site)]) -> dict[str, Any]:
        result = await asyncio.to_thread(queries.journey, storage(), s["site_id"], contact)
        if result is None:
            raise HTTPException(404, f"no contact or visitor {contact!r} on site {s['site_id']!r}")
        return result

    conf = settings or JourneySettings()
    Since = Annotated[str | None, Query(alias="from", description="ISO date/time, inclusive")]
    Until = Annotated[str | None, Query(alias="to", description="ISO date/time, exclusive")]

    async def run(fn: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return await asyncio.to_thread(fn, storage(), *args, **kwargs)
        except analytics.BadQuery as exc:
            raise HTTPException(400, str(exc)) from None
        except QueryError as exc:
            raise HTTPException(400, f"query failed: {exc}") from None

    @router.get("/v1/journeys", summary="Contacts, filtered by stage, channel, campaign, conversion, dates")
    async def journeys(
        s: Annotated[Site, Depends(site)],
        stage: str | None = None,
        channel: str | None = None,
        campaign: str | None = None,
        converted: bool | None = None,
        since: Since = None,
        until: Until = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        return await run(analytics.contacts, s["site_id"], stage=stage, channel=channel, campaign=campaign,
                         converted=converted, since=since, until=until, limit=limit, offset=offset)

    @router.get("/v1/stages", summary="Contacts per journey stage and median time between stages")
    async def stages(s: Annotated[Site, Depends(site)]) -> dict[str, Any]:
        return await run(analytics.stages, s["site_id"])

    @router.get("/v1/funnel", summary="Conversion per step (windowFunnel), optionally by channel")
    async def funnel(
        s: Annotated[Site, Depends(site)],
        steps: Annotated[str, Query(description="comma-separated page paths (/pricing) or event names")],
        window: Annotated[int, Query(ge=1, le=90 * 86400, description="seconds")] = 86400,
        by: str | None = None,
        since: Since = None,
        until: Until = None,
    ) -> dict[str, Any]:
        names = [x.strip() for x in steps.split(",") if x.strip()]
        return await run(analytics.funnel, s["site_id"], names, window, by, since, until)

    @router.get("/v1/paths", summary="Most common page/event sequences (Sankey links included)")
    async def paths(
        s: Annotated[Site, Depends(site)],
        start: Annotated[str | None, Query(alias="from", description="start page or event")] = None,
        depth: Annotated[int, Query(ge=2, le=10)] = 3,
        limit: Annotated[int, Query(ge=1, le=500)] = 20,
    ) -> dict[str, Any]:
        return await run(analytics.paths, s["site_id"], start, depth, limit)

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
    ) -> dict[str, Any]:
        return await run(analytics.attribution, s["site_id"], conversion, model, by,
                         lookback_days or conf.lookback_days, half_life_days or conf.time_decay_half_life_days,
                         since, until, details)

    @router.get("/v1/pain-points", summary="Exit pages, stage drop-off, rage clicks and JS errors")
    async def pain_points(
        s: Annotated[Site, Depends(site)], limit: Annotated[int, Query(ge=1, le=100)] = 10
    ) -> dict[str, Any]:
        return await run(analytics.pain_points, s["site_id"], limit)

    @router.post("/v1/sql", summary="Run one read-only query (ClickHouse readonly setting)")
    async def sql(body: SqlRequest, s: Annotated[Site, Depends(site)]) -> dict[str, Any]:
        try:
            rows = await asyncio.to_thread(storage().query, body.query, body.params, readonly=True)
        except QueryError as exc:
            raise HTTPException(400, f"query failed: {exc}") from None
        truncated = len(rows) > MAX_SQL_ROWS
        return {"rows": rows[:MAX_SQL_ROWS], "count": min(len(rows), MAX_SQL_ROWS), "truncated": truncated}

    router.include_router(map_router())
    return router
