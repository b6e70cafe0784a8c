"""The hop from a collector process to the main process (processes.Proxy over trailmark/upstream.py),
between real HTTP servers on loopback: uvicorn on both sides as in ``trailmark up``, and, where the
main process's misbehaviour is the point, a raw asyncio server that answers as told."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from trailmark.processes import CLIENT_HEADER, PROXIED_METHODS, TOKEN_HEADER, Proxy

TOKEN = "run-secret"


@dataclass
class Main:
    """What the upstream (the main process's stand-in) saw."""

    peers: set[int] = field(default_factory=set)
    left: asyncio.Event = field(default_factory=asyncio.Event)


def _main_app(seen: Main) -> Starlette:
    async def echo(request: Request) -> Response:
        assert request.client is not None
        seen.peers.add(request.client.port)
        body = await request.body()
        return JSONResponse(
            {
                "method": request.method,
                "raw_path": request.scope["raw_path"].decode(),
                "query": request.scope["query_string"].decode(),
                "headers": [[k.decode(), v.decode()] for k, v in request.headers.raw],
                "body": len(body),
                "body_head": body[:16].decode("latin-1"),
            },
            headers={"x-from-main": "1", "server": "main-server"},
        )

    async def big(request: Request) -> Response:
        return Response(bytes(range(256)) * 4096, media_type="application/octet-stream")  # 1 MiB

    async def chunks(request: Request) -> Response:
        async def parts() -> AsyncIterator[bytes]:
            for i in range(5):
                await asyncio.sleep(0.02)
                yield f"part-{i};".encode()

        return StreamingResponse(parts(), media_type="text/plain")

    async def drip(request: Request) -> Response:
        async def parts() -> AsyncIterator[bytes]:
            try:
                for i in range(100):  # 5 s of a piece every 50 ms, unless the reader goes
                    yield f"piece-{i};".encode()
                    await asyncio.sleep(0.05)
            finally:
                seen.left.set()

        return StreamingResponse(parts(), media_type="text/plain")

    async def slow(request: Request) -> Response:
        for _ in range(100):  # up to 5 s, or until the proxy closes the connection
            if await request.is_disconnected():
                seen.left.set()
                return Response(b"")
            await asyncio.sleep(0.05)
        return Response(b"done")

    return Starlette(
        routes=[
            Route("/slow", slow),
            Route("/drip", drip),
            Route("/big", big, methods=["GET", "HEAD"]),
            Route("/chunks", chunks),
            Route("/{path:path}", echo, methods=list(PROXIED_METHODS)),
        ]
    )


async def _serve(
    app: Callable[..., Awaitable[None]], **config: object
) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", **config))  # type: ignore[arg-type]
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    return server, task, sock.getsockname()[1]


@contextlib.asynccontextmanager
async def _running(app: Callable[..., Awaitable[None]], **config: object) -> AsyncIterator[int]:
    server, task, port = await _serve(app, **config)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def _proxy_to(port: int, **kw: object) -> AsyncIterator[tuple[httpx.AsyncClient, Proxy]]:
    proxy = Proxy(f"http://127.0.0.1:{port}", TOKEN, **kw)  # type: ignore[arg-type]
    app = Starlette(routes=[Route("/{path:path}", proxy.handle, methods=list(PROXIED_METHODS))])
    async with _running(app) as front:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{front}", timeout=10) as client:
            try:
                yield client, proxy
            finally:
                await proxy.close()


async def test_a_request_crosses_as_sent_and_its_answer_comes_back() -> None:
    seen = Main()
    async with _running(_main_app(seen)) as port, _proxy_to(port) as (client, _):
        r = await client.post(
            "/v1/journeys/a%2Fb%3Fc?x=1&y=%20",
            content=b'{"q": "select 1"}',
            headers={"x-custom": "kept", "connection": "keep-alive", "te": "trailers", TOKEN_HEADER: "forged"},
        )
        assert r.status_code == 200
        got = r.json()
        assert got["method"] == "POST"
        assert got["raw_path"] == "/v1/journeys/a%2Fb%3Fc" and got["query"] == "x=1&y=%20"
        assert got["body"] == 17 and got["body_head"] == '{"q": "select 1"'
        headers = {}
        for k, v in got["headers"]:
            headers.setdefault(k, []).append(v)
        assert headers["x-custom"] == ["kept"]
        assert headers[TOKEN_HEADER] == [TOKEN]  # the run's token, never the client's
        assert headers[CLIENT_HEADER] == ["127.0.0.1"]
        assert headers["content-length"] == ["17"]
        assert "te" not in headers and "connection" not in headers
        # the main process's own headers come back; its server and date are the answering process's
        assert r.headers["x-from-main"] == "1" and r.headers["server"] != "main-server"


async def test_connections_are_kept_between_requests() -> None:
    seen = Main()
    async with _running(_main_app(seen)) as port, _proxy_to(port) as (client, proxy):
        for i in range(20):
            r = await client.get(f"/n/{i}")
            assert r.status_code == 200 and r.json()["raw_path"] == f"/n/{i}"
        assert proxy.upstream.opened == 1 and len(seen.peers) == 1


async def test_large_and_streamed_answers_arrive_whole() -> None:
    async with _running(_main_app(Main())) as port, _proxy_to(port) as (client, _):
        big = await client.get("/big")
        assert big.status_code == 200 and big.content == bytes(range(256)) * 4096
        streamed = await client.get("/chunks")
        assert streamed.text == "part-0;part-1;part-2;part-3;part-4;"
        head = await client.head("/big")
        assert head.status_code == 200 and head.headers["content-length"] == str(1024 * 1024) and head.content == b""
        after = await client.get("/after-head")  # the pool is sound after a HEAD
        assert after.status_code == 200 and after.json()["raw_path"] == "/after-head"


async def test_a_body_over_the_limit_is_refused_without_reaching_the_main_process() -> None:
    seen = Main()
    async with _running(_main_app(seen)) as port, _proxy_to(port, max_body_bytes=1000) as (client, proxy):
        r = await client.post("/v1/sql", content=b"x" * 1001)
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
        assert proxy.upstream.opened == 0 and not seen.peers


async def test_a_main_process_that_is_down_is_a_503_to_retry() -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    async with _proxy_to(port) as (client, _):
        r = await client.get("/v1/journeys/x")
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        assert r.json()["error"] == "unavailable"


async def test_a_client_that_leaves_closes_the_upstream_connection() -> None:
    seen = Main()
    async with _running(_main_app(seen)) as port, _proxy_to(port) as (client, _):
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/slow", timeout=0.3)
        await asyncio.wait_for(seen.left.wait(), 3)  # the main process saw the hop's connection go


async def test_a_client_that_leaves_during_the_answer_closes_the_upstream_connection() -> None:
    seen = Main()
    async with _running(_main_app(seen)) as port, _proxy_to(port) as (client, proxy):
        async with client.stream("GET", "/drip") as r:
            first = await anext(r.aiter_raw())
            assert first.startswith(b"piece-0;")
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(seen.left.wait(), 3)  # long before the 5 s the answer would take
        assert asyncio.get_running_loop().time() - started < 2
        assert not proxy.upstream._idle  # that connection is not kept
        r2 = await client.get("/after")  # and the next request has a slot and a connection
        assert r2.status_code == 200


async def test_busy_connections_make_a_waiting_request_a_503() -> None:
    seen = Main()
    async with (
        _running(_main_app(seen)) as port,
        _proxy_to(port, max_connections=1, pool_timeout_s=0.3) as (client, _),
    ):
        first = asyncio.ensure_future(client.get("/slow"))
        await asyncio.sleep(0.2)
        second = await client.get("/v1/journeys/x")
        assert second.status_code == 503 and "did not answer" in second.json()["detail"]
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await first


class _Scripted:
    """A raw HTTP/1.1 server that writes ``answer`` for each request. ``then``: "keep" (serve the
    next request on the connection), "drop" (close the connection when a second request arrives on
    it, as a server whose keep-alive timeout ran out at that moment would) or "close" (close it
    right after the answer: one cut short stays cut short)."""

    def __init__(self, answer: bytes, then: str = "keep") -> None:
        self.answer, self.then = answer, then
        self.connections = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                if served and self.then == "drop":
                    break
                writer.write(self.answer)
                await writer.drain()
                served += 1
                if self.then == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def _scripted(script: _Scripted) -> AsyncIterator[int]:
    server = await asyncio.start_server(script, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_kept_connection_closed_under_a_request_is_tried_once_more() -> None:
    script = _Scripted(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", then="drop")
    async with _scripted(script) as port, _proxy_to(port) as (client, proxy):
        for _ in range(3):
            r = await client.get("/readyz")
            assert r.status_code == 200 and r.text == "ok"
        # each second request on a connection found it closed, and went again on a new one
        assert script.connections == 3 and proxy.upstream.opened == 3


async def test_a_request_that_is_not_idempotent_is_not_sent_twice() -> None:
    script = _Scripted(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", then="drop")
    async with _scripted(script) as port, _proxy_to(port) as (client, proxy):
        first = await client.post("/v1/admin/erase", content=b"{}")
        assert first.status_code == 200
        second = await client.post("/v1/admin/erase", content=b"{}")  # its kept connection is closed
        assert second.status_code == 503 and second.headers["retry-after"] == "5"
        assert script.connections == 1 and proxy.upstream.opened == 1


@pytest.mark.parametrize(
    "cut",
    [
        b"content-length: 1000000\r\n\r\n" + b"x" * 10,  # ten bytes of a million
        b"transfer-encoding: chunked\r\n\r\na\r\nxxxxxxxxxx\r\n",  # a chunk, and no last one
    ],
    ids=["length", "chunked"],
)
async def test_an_answer_broken_off_is_not_passed_on_as_complete(cut: bytes) -> None:
    script = _Scripted(b"HTTP/1.1 200 OK\r\n" + cut, then="close")
    async with _scripted(script) as port, _proxy_to(port) as (client, _):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/v1/sql/export")


async def test_a_small_answer_broken_off_is_a_503() -> None:
    # a small body of known length is read whole before the answer starts: cut short, nothing started
    script = _Scripted(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n" + b"x" * 10, then="close")
    async with _scripted(script) as port, _proxy_to(port) as (client, _):
        r = await client.get("/v1/journeys/x")
        assert r.status_code == 503 and "middle of the answer" in r.json()["detail"]


async def test_an_answer_that_is_not_http_is_a_503() -> None:
    async with _scripted(_Scripted(b"SSH-2.0-OpenSSH\r\n\r\n")) as port, _proxy_to(port) as (client, _):
        r = await client.get("/readyz")
        assert r.status_code == 503 and "not HTTP/1.1" in r.json()["detail"]


async def test_a_connection_the_main_process_closes_after_its_answer_is_not_kept() -> None:
    script = _Scripted(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok", then="close")
    async with _scripted(script) as port, _proxy_to(port) as (client, proxy):
        for _ in range(3):
            r = await client.get("/readyz")
            assert r.status_code == 200 and r.text == "ok"
        assert proxy.upstream.opened == 3 and not proxy.upstream._idle
