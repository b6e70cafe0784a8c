"""HTTP pieces every role's app shares: a security header on every answer, the API docs served from
this server (no CDN), and the optional token in front of /metrics."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas import Site
from trailmark.keys import find_site
from trailmark.ratelimit import EdgeLimits, retry_after

# swagger-ui's bundle, stylesheet and icon as the fastapi-offline package ships them (MIT; swagger-ui
# itself is Apache-2.0): the docs page loads nothing from another host
SWAGGER_STATIC = Path(fastapi_offline.__file__).parent / "static"
_NOSNIFF = (b"x-content-type-options", b"nosniff")


class NoSniff:
    """Adds ``X-Content-Type-Options: nosniff`` to every answer, so a browser never reads a JSON
    answer (which may echo a client's text) as HTML or script. Plain ASGI: one list append per
    answer, nothing on the request side."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_nosniff(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), _NOSNIFF]
            await send(message)

        await self.app(scope, receive, send_nosniff)


def add_docs(app: FastAPI, path: str = "/docs") -> None:
    """Swagger UI at ``path``, its files under ``path/static``. The app must be created with
    ``docs_url=None, redoc_url=None`` (FastAPI's own pages load swagger-ui and ReDoc from a CDN)."""
    static = f"{path}/static"
    app.mount(static, StaticFiles(directory=SWAGGER_STATIC), name="docs-static")

    @app.get(path, include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - API",
            swagger_js_url=f"{root}{static}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{static}/swagger-ui.css",
            swagger_favicon_url=f"{root}{static}/favicon.png",
            # no validator badge: swagger-ui would send the document to an outside validator
            swagger_ui_parameters={"validatorUrl": None},
        )


async def _own_metrics() -> bytes:
    return bytes(generate_latest())


def add_metrics(app: FastAPI, token: str | None, render: Callable[[], Awaitable[bytes]] = _own_metrics) -> None:
    """Prometheus metrics at /metrics, as ``render`` gives them (by default this process's registry);
    with ``token`` set, only for ``Authorization: Bearer <token>`` (compared in constant time)."""
    expected = f"Bearer {token}".encode() if token else None

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        if expected is not None:
            presented = request.headers.get("authorization", "").encode("latin-1", "replace")
            if not hmac.compare_digest(presented, expected):
                return Response(
                    b'{"error": "metrics need Authorization: Bearer <TRAILMARK_METRICS_TOKEN>"}',
                    status_code=401,
                    media_type="application/json",
                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                )
        return Response(await render(), media_type=CONTENT_TYPE_LATEST)


__all__ = ["NoSniff", "SWAGGER_STATIC", "add_docs", "add_metrics"]


def bearer_site(
    request: Request,
    limits: EdgeLimits,
    keys: Mapping[bytes, Site],
    refused: Sequence[tuple[Mapping[bytes, Site], str]],
    kind: str,
) -> Site:
    """The site whose key of ``kind`` (indexed by ``index_keys``) the request's Bearer header holds.

    429 while the client address is over its limits; 401 for a missing or unknown key, 403 with the
    message paired with another kind of key in ``refused`` (a write key on a read route...). Every
    key that does not fit counts against the address's wrong-key allowance, so guessing learns
    nothing."""
    ip = limits.client_ip(request)
    limit, wait = limits.before_auth(ip)
    if wait:
        what = "requests with a wrong key" if limit == "bad_key" else "requests"
        raise HTTPException(
            429, f"too many {what} from this address; retry later", headers={"Retry-After": retry_after(wait)}
        )
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        limits.wrong_key(ip)
        raise HTTPException(
            401,
            f"missing {kind}: Authorization: Bearer {kind.upper().replace(' ', '_')}",
            headers={"WWW-Authenticate": "Bearer"},
        )
    key = header[7:].strip()
    found = find_site(keys, key)
    if found is None:
        limits.wrong_key(ip)
        for other, message in refused:
            if find_site(other, key) is not None:
                raise HTTPException(403, message)
        raise HTTPException(401, f"unknown {kind}", headers={"WWW-Authenticate": "Bearer"})
    return found


def openapi_errors_as_400(app: FastAPI) -> None:
    """The OpenAPI document says what the app answers: a request that fails validation gets 400
    (create_app's handler), not FastAPI's default 422; its body is ``{"error", "detail"}``."""
    build = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        error = {"type": "object", "properties": {"error": {"type": "string"}, "detail": {}}}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                if responses.pop("422", None) is not None:
                    responses.setdefault(
                        "400", {"description": "invalid request", "content": {"application/json": {"schema": error}}}
                    )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
