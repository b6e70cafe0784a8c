"""The customer journey map: one HTML page (``GET /map``) and its static files (``/map/static/...``).

The page itself needs no key; its script asks for the site's read key (``?key=`` once, then kept in
``sessionStorage``) and calls the read API (``/v1/stages``, ``/v1/funnel``, ``/v1/paths``,
``/v1/journeys``, ...) with ``Authorization: Bearer``. Files come from ``journey_builder/static``
(package data), loaded once; only files that exist there are served, with fixed content types.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from importlib.abc import Traversable

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
# Everything the page loads is its own: no inline script, no third-party origin.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",  # the page URL may carry ?key=
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


class StaticFile:
    __slots__ = ("body", "content_type", "etag")

    def __init__(self, body: bytes, content_type: str) -> None:
        self.body = body
        self.content_type = content_type
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _walk(node: Traversable, prefix: str = "") -> dict[str, StaticFile]:
    files: dict[str, StaticFile] = {}
    for child in node.iterdir():
        name = f"{prefix}{child.name}"
        if child.is_dir():
            files.update(_walk(child, f"{name}/"))
            continue
        suffix = "." + child.name.rsplit(".", 1)[-1] if "." in child.name else ""
        if suffix in CONTENT_TYPES:
            files[name] = StaticFile(child.read_bytes(), CONTENT_TYPES[suffix])
    return files


def load_static() -> dict[str, StaticFile]:
    """Every servable file under journey_builder/static, by its relative path (``vendor/x.js``)."""
    return _walk(resources.files("journey_builder") / "static")


def _respond(request: Request, f: StaticFile, cache: str) -> Response:
    headers = {"ETag": f.etag, "Cache-Control": cache, **SECURITY_HEADERS}
    if request.headers.get("if-none-match") == f.etag:
        return Response(status_code=304, headers=headers)
    return Response(f.body, media_type=f.content_type, headers=headers)


def map_router() -> APIRouter:
    """``GET /map`` (the page) and ``GET /map/static/{path}`` (its script, styles and vendored charts)."""
    router = APIRouter(tags=["journey map"])
    files = load_static()
    page = files["map.html"]

    @router.get(
        "/map",
        response_class=Response,
        summary="Customer journey map (HTML; asks for the read key in the browser)",
        responses={200: {"content": {"text/html": {}}}},
    )
    async def journey_map(request: Request) -> Response:
        return _respond(request, page, "no-cache")

    router.add_api_route("/map", journey_map, methods=["HEAD"], include_in_schema=False)

    @router.get("/map/static/{path:path}", include_in_schema=False)
    async def static(path: str, request: Request) -> Response:
        f = files.get(path)
        if f is None:
            raise HTTPException(404, "not found")
        # vendored files never change under a name; the page's own files revalidate (ETag)
        return _respond(request, f, "public, max-age=86400" if path.startswith("vendor/") else "no-cache")

    return router
