"""Helpers of the company lookup tests: run the real worker over some domains, read what it stored."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from enrich.companies import CompanyWorker, LookupRequests
from tests.companies.sites import Sites
from trailmark.settings import CompaniesSettings
from trailmark.storage.chdb_backend import ChdbStorage


def settings(sites: Sites, **extra: Any) -> CompaniesSettings:
    return CompaniesSettings(**sites.settings_env(**extra))


async def run(cfg: CompaniesSettings, store: ChdbStorage, pairs: list[tuple[str, str]], timeout: float = 30) -> None:
    wanted = LookupRequests(refresh_age_s=0)  # the worker decides freshness here, from storage
    for site_id, domain in pairs:
        wanted.want(site_id, domain)
    worker = CompanyWorker(cfg, store, wanted)
    task = asyncio.create_task(worker.run(poll_s=0.01))
    try:
        deadline = time.monotonic() + timeout
        while not worker.idle:
            assert time.monotonic() < deadline, "the worker did not finish"
            await asyncio.sleep(0.02)
        assert not task.done(), task  # never crashed
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def profiles(store: ChdbStorage, domain: str) -> list[dict[str, Any]]:
    rows = store.query(
        f"SELECT * FROM {store.database}.company_profiles WHERE domain = {{d:String}} ORDER BY site_id", {"d": domain}
    )
    for r in rows:
        r["field_sources"] = orjson.loads(r["field_sources"])
    return rows
