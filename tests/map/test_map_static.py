"""map_router() on its own: the page and its files, content types, caching, no path escapes, package data."""

from __future__ import annotations

import re
import tomllib
from collections.abc import AsyncIterator
from fnmatch import fnmatch

import httpx
import pytest
from fastapi import FastAPI

from journey_builder.map_page import load_static, map_router
from tests.conftest import ROOT

STATIC = ROOT / "journey_builder" / "static"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(map_router())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://map.test") as c:
        yield c


async def test_page_is_html_with_a_strict_policy(client: httpx.AsyncClient) -> None:
    r = await client.get("/map")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "<script>" not in r.text  # no inline script: the policy would block it
    for src in re.findall(r'(?:src|href)="(/map/static/[^"?]+)', r.text):
        assert (await client.get(src)).status_code == 200, src
    assert (await client.head("/map")).status_code == 200


@pytest.mark.parametrize(
    ("path", "ctype"),
    [
        ("map.js", "text/javascript; charset=utf-8"),
        ("map.css", "text/css; charset=utf-8"),
        ("vendor/chart.umd.min.js", "text/javascript; charset=utf-8"),
        ("vendor/chartjs-chart-sankey.min.js", "text/javascript; charset=utf-8"),
        ("vendor/chart.js.LICENSE.txt", "text/plain; charset=utf-8"),
    ],
)
async def test_static_files_and_types(client: httpx.AsyncClient, path: str, ctype: str) -> None:
    r = await client.get(f"/map/static/{path}")
    assert r.status_code == 200 and r.headers["content-type"] == ctype
    assert r.headers["x-content-type-options"] == "nosniff"
    again = await client.get(f"/map/static/{path}", headers={"if-none-match": r.headers["etag"]})
    assert again.status_code == 304 and not again.content


@pytest.mark.parametrize(
    "path", ["../map_page.py", "..%2Fmap_page.py", "nope.js", "vendor/", "/etc/passwd", "vendor/../../builder.py"]
)
async def test_only_static_files_are_served(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(f"/map/static/{path}")).status_code == 404


def test_vendored_charts_are_small_licensed_and_versioned() -> None:
    vendor = STATIC / "vendor"
    total = sum(f.stat().st_size for f in STATIC.rglob("*") if f.is_file())
    assert total < 320_000, f"static files are {total} bytes"
    chart = (vendor / "chart.umd.min.js").read_text()[:200]
    sankey = (vendor / "chartjs-chart-sankey.min.js").read_text()[:200]
    assert "Chart.js v4.5.1" in chart and "MIT" in chart
    assert "chartjs-chart-sankey v0.19.1" in sankey and "MIT" in sankey
    for lic in ("chart.js.LICENSE.txt", "chartjs-chart-sankey.LICENSE.txt"):
        assert "Permission is hereby granted" in (vendor / lic).read_text()


def test_every_static_file_is_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["*"]
    files = [f for f in STATIC.rglob("*") if f.is_file()]
    assert files
    for f in files:
        assert any(fnmatch(f.name, p) for p in patterns), f"{f.name} would be left out of the wheel"
    assert set(load_static()) == {str(f.relative_to(STATIC)) for f in files}
