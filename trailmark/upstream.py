"""A pool of keep-alive HTTP/1.1 connections to one local server: the hop from a collector process to
the main process inside ``trailmark up`` (``processes.Proxy``).

Why not httpx: on this hop httpx (h11 in Python, a response object and a stream per request) cost about
a millisecond of the collector process's CPU per request, more than the main process took to answer
``/healthz``. Here a request is one write of its head and body, the answer is parsed by httptools (C,
the parser uvicorn already uses), and a small answer comes back in one piece (bench/RESULTS.md,
2026-12-06 "the proxy hop").

What it handles, because the server is our own uvicorn on loopback: requests with a known body (read
whole by the caller), answers with a Content-Length or chunked, HEAD, and connections the server
closed while idle (its keep-alive timeout is 5 s: an idle connection is reused for at most
``idle_s``, and an idempotent request on a reused one that closes before any byte of the answer is
sent once more on a new one; another request is a 503 to retry). Not handled: ``Expect:
100-continue`` and upgrades (never forwarded), HTTP/1.0 servers and answers that end where the
connection closes (uvicorn sends neither).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import httptools

from trailmark.errors import Unavailable

# requests sent again, once, when a kept connection turns out closed (RFC 9110 9.2.2)
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class UpstreamError(Unavailable):
    """The server could not be reached, did not answer in time, or broke the answer off."""


class PoolTimeout(UpstreamError):
    """Every connection stayed busy for the whole wait."""


@dataclass
class _Parsed:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    head_done: bool = False
    done: bool = False
    keep_alive: bool = False
    parser: httptools.HttpResponseParser | None = None

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.head_done = True
        # asked now: once the message is complete the parser has forgotten it
        self.keep_alive = self.parser is not None and self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.done = True


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = time.monotonic()

    def fresh(self, idle_s: float) -> bool:
        return time.monotonic() - self.idle_since < idle_s and not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


class Answer:
    """The head of an answer and its body: ``body`` when it came whole with the head, else ``stream()``."""

    def __init__(
        self,
        upstream: Upstream,
        conn: _Connection,
        parser: httptools.HttpResponseParser,
        parsed: _Parsed,
        head_only: bool,
    ) -> None:
        self._upstream, self._parser, self._parsed = upstream, parser, parsed
        self._conn: _Connection | None = conn
        self.status: int = parser.get_status_code()
        self.headers = parsed.headers
        self.complete = parsed.done or head_only
        self.body = b"".join(parsed.chunks) if self.complete else b""
        self._head_only = head_only
        if self.complete:
            self._finish(reusable=parsed.keep_alive)

    def _finish(self, reusable: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:  # the request is over: its connection back (or closed), its slot free
            self._upstream._release(conn, reusable and not self._head_only)
            self._upstream._slots.release()

    async def stream(self) -> AsyncIterator[bytes]:
        """The rest of the body, piece by piece; raises UpstreamError if the server breaks it off."""
        parsed = self._parsed
        if parsed.chunks:
            yield b"".join(parsed.chunks)
            parsed.chunks.clear()
        ok = False
        try:
            while not parsed.done and self._conn is not None:
                data = await self._upstream._read(self._conn)
                if not data:
                    raise UpstreamError("the server closed the connection in the middle of the answer")
                _feed(self._parser, data)
                if parsed.chunks:
                    yield b"".join(parsed.chunks)
                    parsed.chunks.clear()
            ok = parsed.keep_alive
        finally:  # also when the caller stops early (its client left): the connection is not reused
            self._finish(reusable=ok)

    def close(self) -> None:
        """Drop the connection of an answer whose body is not read to its end."""
        if self._conn is not None:
            self._finish(reusable=False)


SMALL_BODY_BYTES = 256 * 1024


def _small(headers: list[tuple[bytes, bytes]]) -> bool:
    """A body of a known length up to SMALL_BODY_BYTES."""
    for name, value in headers:
        if name == b"content-length":
            return value.isdigit() and int(value) <= SMALL_BODY_BYTES
    return False


def _feed(parser: httptools.HttpResponseParser, data: bytes) -> None:
    try:
        parser.feed_data(data)
    except httptools.HttpParserError as exc:
        raise UpstreamError(f"the server's answer is not HTTP/1.1: {exc}") from None


class Upstream:
    """At most ``limit`` requests at once (more wait up to ``pool_timeout_s``, then PoolTimeout), at
    most ``keep`` idle connections kept."""

    def __init__(
        self,
        host: str,
        port: int,
        limit: int = 64,
        keep: int = 16,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 300.0,
        pool_timeout_s: float = 10.0,
        idle_s: float = 2.0,
    ) -> None:
        self.host, self.port = host, port
        self.keep, self.idle_s = keep, idle_s
        self.connect_timeout_s, self.read_timeout_s, self.pool_timeout_s = (
            connect_timeout_s,
            read_timeout_s,
            pool_timeout_s,
        )
        self._slots = asyncio.Semaphore(limit)
        self._idle: deque[_Connection] = deque()
        self.opened = 0  # connections made (tests count them)

    async def request(self, method: str, target: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> Answer:
        """Sends one request (its headers without Content-Length or Transfer-Encoding: this sets the
        length of ``body``) and returns its answer once the head has come. The request holds one of
        the ``limit`` slots until its answer is read to the end or closed."""
        try:
            await asyncio.wait_for(self._slots.acquire(), self.pool_timeout_s)
        except TimeoutError:
            raise PoolTimeout(f"no connection free within {self.pool_timeout_s:g} s") from None
        head = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
        for name, value in headers:
            head += (name, b": ", value, b"\r\n")
        if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            head += (b"content-length: ", str(len(body)).encode(), b"\r\n")
        head.append(b"\r\n")
        message = b"".join(head) + body
        try:
            reuse = True
            while True:
                conn, reused = await self._connection(reuse)
                try:
                    return await self._exchange(conn, message, method == "HEAD")
                except _ClosedBeforeAnswer:
                    conn.close()
                    if not reused or method not in _IDEMPOTENT:
                        raise UpstreamError("the server closed the connection without answering") from None
                    # a kept connection the server closed as this request was sent on it (its
                    # keep-alive ran out): the server never read it, and it goes once more on a new one
                    reuse = False
                except BaseException:
                    conn.close()
                    raise
        except BaseException:
            self._slots.release()
            raise

    async def _exchange(self, conn: _Connection, message: bytes, head_only: bool) -> Answer:
        parsed = _Parsed()
        parser = parsed.parser = httptools.HttpResponseParser(parsed)
        try:
            conn.writer.write(message)
            await conn.writer.drain()
        except (ConnectionError, OSError):
            raise _ClosedBeforeAnswer from None
        first = True
        # the head, and a small body of known length with it (uvicorn writes them apart): passed on
        # whole, it takes no streaming
        while not (parsed.head_done and (head_only or parsed.done or not _small(parsed.headers))):
            data = await self._read(conn)
            if not data:
                if first:
                    raise _ClosedBeforeAnswer
                if parsed.head_done:
                    raise UpstreamError("the server closed the connection in the middle of the answer")
                raise UpstreamError("the server closed the connection in the middle of the answer's head")
            first = False
            _feed(parser, data)
        return Answer(self, conn, parser, parsed, head_only)

    async def _read(self, conn: _Connection) -> bytes:
        try:
            return await asyncio.wait_for(conn.reader.read(65536), self.read_timeout_s)
        except TimeoutError:
            raise UpstreamError(f"no answer within {self.read_timeout_s:g} s") from None
        except (ConnectionError, OSError):
            return b""

    async def _connection(self, reuse: bool = True) -> tuple[_Connection, bool]:
        while reuse and self._idle:
            conn = self._idle.pop()  # the most recent: the likeliest still open
            if conn.fresh(self.idle_s):
                return conn, True
            conn.close()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.connect_timeout_s
            )
        except (TimeoutError, OSError) as exc:
            raise UpstreamError(f"cannot connect to {self.host}:{self.port}: {type(exc).__name__}") from None
        self.opened += 1
        return _Connection(reader, writer), False

    def _release(self, conn: _Connection, reusable: bool) -> None:
        if reusable and len(self._idle) < self.keep and not conn.writer.is_closing():
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    async def close(self) -> None:
        while self._idle:
            conn = self._idle.pop()
            conn.close()
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()


class _ClosedBeforeAnswer(UpstreamError):
    """A connection closed before a byte of the answer came (retried once when it was a kept one)."""
