"""Read API: journeys and read-only SQL, authorised by a site's read key (Bearer)."""


import asyncio
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from journey_builder import queries
from schemas import Site
from trailmark.storage.base import QueryError, Storage

MAX_SQL_ROWS = 100_000


class SqlRequest(BaseModel):
    query: str = Field(..., min_length=1, max_length=100_000, description="one read-only ClickHouse query")
    params: dict[str, Any] | None = Field(None, description="values for {name:Type} placeholders")


def read_router(storage: Callable[[], Storage], sites_by_read_key: Callable[[], dict[str, Site]]) -> APIRouter:
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

    @router.post("/v1/sql", summary="Run one read-only query (ClickHouse readonly setting)")
    async def sql(body: SqlRequest, s: Annotated[Site, Depends(site)]) -> dict[str, Any]:
        try:
            rows = await asyncio.to_thread(storage().query, body.query, body.params, readonly=True)
        except QueryError as exc:
            raise HTTPException(400, f"query failed: {exc}") from None
        truncated = len(rows) > MAX_SQL_ROWS
        return {"rows": rows[:MAX_SQL_ROWS], "count": min(len(rows), MAX_SQL_ROWS), "truncated": truncated}

    return router
