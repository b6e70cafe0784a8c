"""Collector processes inside ``trailmark up``: HTTP ingestion never waits on the pipeline's GIL.

With ``collector_processes`` N > 0, ``trailmark up`` is one main process (enrichment, journey
builder, read API, storage: chDB lets only one process open its folder) serving a loopback port of
its own, and N collector processes it starts, restarts and stops. The main process binds the public
port and hands the listening socket to every collector process (inherited, one accept queue: no
port another program could share). A collector process writes batches straight to the event log
(the embedded log takes writers from several processes; on Kafka each process produces, with its
own spool). Whatever else arrives on the public port (reads, /v1/sql, /map, /docs, /healthz,
/readyz, /metrics, admin) is streamed to the main process by ``Proxy``.

Why these choices:
- The client's address crosses the proxy in a header the main process trusts only with the run's
  secret token (``ForwardedClient``), so rate limits and stored IPs see the real client, not
  loopback (which is exempt from limits). ``X-Forwarded-For`` passes unchanged, so
  ``trust_forwarded_for`` keeps meaning what it says.
- Rate limits: every process of the run uses the same token buckets, in shared memory
  (trailmark/shared_buckets.py), so N processes allow what one allows, and wrong write keys and
  wrong read keys still draw on one allowance per address.
- Counters live in each process; the main process's /metrics adds its collectors' samples to its
  own (``merged_metrics``), fetched over each collector's private loopback port.
- A collector process reads its settings and the sites from a pipe the main process holds open:
  keys.json is created once, before any of them starts, and when the main process dies (even by
  SIGKILL) the pipe closes and the collector stops: no orphan keeps the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import uvicorn
from fastapi import FastAPI
from prometheus_client import REGISTRY, Counter, Gauge, Metric, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from schemas import Site
from trailmark.bus.base import Producer
from trailmark.settings import Settings
from trailmark.shared_buckets import SharedTable
from trailmark.upstream import Answer, Upstream, UpstreamError
from trailmark.web import add_metrics

log = logging.getLogger("trailmark.processes")

TOKEN_HEADER = "x-trailmark-internal"  # the run's secret: only collector processes know it
CLIENT_HEADER = "x-trailmark-client"  # the socket peer of the proxied request, as the collector saw it
INTERNAL_PREFIX = "/_trailmark/"  # a collector process's own routes (metrics), token only
PROXIED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# hop-by-hop headers (RFC 9110 7.6.1) and the proxy's own: never forwarded either way; date, server
# and nosniff are set again by the answering process
_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        TOKEN_HEADER.encode(),
        CLIENT_HEADER.encode(),
    }
)
_UPSTREAM_DROP = _HOP | {b"date", b"server", b"x-content-type-options"}
# the hop sets the body's length itself, and sends the body it has read whole: no 100-continue
_NOT_FORWARDED = _HOP | {b"content-length", b"expect"}

RESTARTS = Counter("trailmark_collector_process_restarts_total", "Collector processes restarted after they exited")
UP = Gauge("trailmark_collector_processes_up", "Collector processes serving the public port")


def collector_process_count(settings: Settings) -> int:
    """How many collector processes ``trailmark up`` starts: the setting, or by default, on the
    embedded log, one per two cores beyond the two the pipeline needs, at least one and at most 4;
    none on a single core or on Kafka (where ``trailmark collector`` processes scale the collector
    out, and each process would need its own spool). On two cores one collector process raised the
    collector's share of a bare endpoint from 23-29 % to 29-37 % and end to end from 9-11 % to
    12-14 %, and with it ``trailmark up`` peaks at 928 MiB under the memory bench (bench/RESULTS.md,
    2026-12-05)."""
    if settings.collector_processes is not None:
        return max(0, settings.collector_processes)
    if settings.bus.kind != "embedded":
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return 0 if cores < 2 else max(1, min(4, cores // 2 - 1))


def public_socket(host: str, port: int) -> socket.socket:
    """The public listening socket, bound here once and inherited by every collector process."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.set_inheritable(True)
    return sock


def loopback_socket() -> socket.socket:
    """A listening socket on a free loopback port (the main process's own, a collector's private one)."""
    return socket.create_server(("127.0.0.1", 0), backlog=2048)


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


# --- in a collector process ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessSpec:
    """What the main process tells a collector process (one JSON line on its stdin)."""

    slot: int
    processes: int
    settings: Settings
    sites: list[Site]
    token: str
    main_url: str
    public_fd: int
    limits_fd: int  # the shared rate-limit table (trailmark/shared_buckets.py)
    limit_slots: int

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "slot": self.slot,
                "processes": self.processes,
                "settings": self.settings.model_dump(mode="json"),
                "sites": self.sites,
                "token": self.token,
                "main_url": self.main_url,
                "public_fd": self.public_fd,
                "limits_fd": self.limits_fd,
                "limit_slots": self.limit_slots,
            }
        )

    @classmethod
    def decode(cls, line: bytes) -> ProcessSpec:
        d = orjson.loads(line)
        settings = Settings(**d["settings"])
        fds = (d["public_fd"], d["limits_fd"], d["limit_slots"])
        return cls(d["slot"], d["processes"], settings, d["sites"], d["token"], d["main_url"], *fds)

    def collector_settings(self) -> Settings:
        """This process's settings: on Kafka, a spool of its own (slot 0 keeps the single-process
        spool folder, so what an earlier run spooled is replayed)."""
        s = self.settings
        if self.slot == 0:
            return s
        spool = (s.bus.spool_dir or s.data_dir / "spool") / f"collector-{self.slot}"
        return s.model_copy(update={"bus": s.bus.model_copy(update={"spool_dir": spool})})


def watch_parent(stream: Any) -> None:
    """Stop this process (SIGTERM: a graceful stop) when the main process's pipe closes: the main
    process ended, even by SIGKILL, and nothing else would stop this one."""

    def wait() -> None:
        with contextlib.suppress(OSError):
            while stream.read(4096):
                pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait, name="parent-watch", daemon=True).start()


def tell_ready(private_port: int) -> None:
    """Tell the main process this collector serves, and where its private port is."""
    sys.stdout.write(f"ready {private_port}\n")
    sys.stdout.flush()


class TellingProducer:
    """A collector process's producer: after a batch is in the log, the main process hears of it
    (one line on the status pipe per event-loop turn, however many batches), so its consumer
    reads at once rather than at its next poll (up to 0.25 s later)."""

    def __init__(self, inner: Producer) -> None:
        self.inner = inner
        self.told = False

    async def send_batch(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        await self.inner.send_batch(topic, records)
        if not self.told:
            self.told = True
            asyncio.get_running_loop().call_soon(self._tell)

    def _tell(self) -> None:
        self.told = False
        with contextlib.suppress(OSError):  # the main process is gone: watch_parent stops this one
            sys.stdout.write("w\n")
            sys.stdout.flush()


class Proxy:
    """Streams a request the collector does not serve to the main process and its answer back.

    Bounded: at most ``max_connections`` requests at once per collector process (more wait up to
    the pool timeout, then 503) and bodies up to ``max_body_bytes`` (413); a main process that does
    not answer is a 503 with Retry-After, as any unavailable dependency. A client that leaves
    before the answer closes the upstream connection too, as it would have closed its own to the
    main process. The hop itself is trailmark/upstream.py: kept connections, the answer parsed by
    httptools, a small answer relayed whole."""

    def __init__(
        self,
        main_url: str,
        token: str,
        max_connections: int = 64,
        read_timeout_s: float = 300.0,
        max_body_bytes: int = 16 * 1024**2,
        pool_timeout_s: float = 10.0,
    ) -> None:
        self.token = token.encode()
        self.max_body_bytes = max_body_bytes
        main = urlsplit(main_url)
        self.upstream = Upstream(
            main.hostname or "127.0.0.1",
            main.port or 80,
            limit=max_connections,
            keep=max(1, max_connections // 4),
            read_timeout_s=read_timeout_s,
            pool_timeout_s=pool_timeout_s,
        )

    async def handle(self, request: Request) -> Response:
        headers = [(k, v) for k, v in request.headers.raw if k.lower() not in _NOT_FORWARDED]
        peer = request.client.host if request.client else ""
        headers += [(TOKEN_HEADER.encode(), self.token), (CLIENT_HEADER.encode(), peer.encode())]
        body = b""
        if "content-length" in request.headers or "transfer-encoding" in request.headers:
            # read first (bounded): then a client that leaves can be noticed while the main process works
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_body_bytes:
                    return _answer(413, "payload_too_large", f"body over {self.max_body_bytes} bytes")
                chunks.append(chunk)
            body = b"".join(chunks)
        # the path as the client sent it (percent-encoded: a %2F or %3F in a contact id stays one)
        target = request.scope.get("raw_path") or request.scope["path"].encode()
        if query := request.scope.get("query_string"):
            target += b"?" + query
        sending = asyncio.ensure_future(self.upstream.request(request.method, target, headers, body))
        left = asyncio.ensure_future(_left(request.receive))
        await asyncio.wait((sending, left), return_when=asyncio.FIRST_COMPLETED)
        left.cancel()
        if not sending.done():  # the client left: closing the upstream connection tells the main
            sending.cancel()  # process, which stops the work (a /v1/sql query is cancelled)
            with contextlib.suppress(asyncio.CancelledError, UpstreamError):
                await sending
            return _answer(503, "unavailable", "the client went away")
        try:
            answer = sending.result()
        except UpstreamError as exc:
            return _answer(503, "unavailable", f"the main trailmark process did not answer ({exc}); retry")
        back = [(k, v) for k, v in answer.headers if k not in _UPSTREAM_DROP]
        if not answer.complete:
            return _Relayed(answer, back)
        response = Response(answer.body, status_code=answer.status)  # most: they came whole with their head
        response.raw_headers = back
        return response

    async def close(self) -> None:
        await self.upstream.close()


def _answer(status: int, code: str, detail: str) -> Response:
    headers = {"Retry-After": "5"} if status == 503 else None
    body = orjson.dumps({"error": code, "detail": detail})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


async def _left(receive: Receive) -> None:
    """Returns when the client has gone away (its body has been read: nothing else comes)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class _Relayed(Response):
    """An answer of the main process whose body is still coming, passed on piece by piece. Its
    connection is dropped, whatever happens, when this is over: at once if the client leaves (the
    main process then stops the work, as for a client that leaves before the answer), and if the
    main process breaks the answer off the error ends this response unfinished, so the client sees
    it cut short, never complete."""

    def __init__(self, answer: Answer, headers: list[tuple[bytes, bytes]]) -> None:
        self.answer = answer
        self.status_code = answer.status
        self.raw_headers = headers
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def relay() -> None:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.answer.stream():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        relaying, left = asyncio.ensure_future(relay()), asyncio.ensure_future(_left(receive))
        try:
            await asyncio.wait((relaying, left), return_when=asyncio.FIRST_COMPLETED)
            if not relaying.done():
                relaying.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relaying
            else:
                relaying.result()  # the main process broke the answer off: raised to the server
        finally:  # also when this task is cancelled (the server stopping): nothing left running
            relaying.cancel()
            left.cancel()
            self.answer.close()


def internal_allowed(request: Request, token: str) -> bool:
    presented = request.headers.get(TOKEN_HEADER, "").encode()
    return hmac.compare_digest(presented, token.encode())


# --- in the main process ------------------------------------------------------------------------------


class ForwardedClient:
    """The main process's view of a proxied request: its client is the collector's socket peer
    (``CLIENT_HEADER``), trusted only with the run's token. Both headers are removed before the app
    sees the request, whoever sent them."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            token = client = None
            kept = []
            for k, v in scope["headers"]:
                if k == b"x-trailmark-internal":
                    token = v
                elif k == b"x-trailmark-client":
                    client = v
                else:
                    kept.append((k, v))
            if token is not None or client is not None:
                scope = dict(scope, headers=kept)
                if token is not None and client and hmac.compare_digest(token, self.token):
                    scope["client"] = (client.decode("latin-1"), 0)
        await self.app(scope, receive, send)


@dataclass
class Slot:
    """One collector process the supervisor keeps running."""

    index: int
    proc: asyncio.subprocess.Process | None = None
    private_url: str | None = None  # None until it said ready
    restarts: int = 0
    crashes_in_a_row: int = 0
    last_exit: int | None = None
    started_at: float = 0.0
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and self.private_url is not None


class Supervisor:
    """Starts ``count`` collector processes, restarts one that exits (counted), stops them all."""

    def __init__(self, settings: Settings, sites: list[Site], count: int, public: socket.socket, main_url: str) -> None:
        self.settings = settings
        self.sites = sites
        self.public = public
        self.main_url = main_url
        self.token = secrets.token_urlsafe(32)
        self.limits = SharedTable.create(settings.collector.rate_limit_max_tracked, settings.data_dir)
        self.slots = [Slot(i) for i in range(count)]
        self.stopping = False
        # called when a collector process has written to the event log (set by the main process's
        # app: it wakes the pipeline's consumer at once instead of at its next poll)
        self.on_written: Callable[[], None] = lambda: None
        self._metrics = httpx.AsyncClient(timeout=2.0, trust_env=False)
        UP.set(0)
        RESTARTS.inc(0)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "trailmark.cli", "collector-process"]

    async def start(self) -> None:
        """Start every collector process (``wait_up`` waits until they serve)."""
        for slot in self.slots:
            slot.task = asyncio.create_task(self._keep(slot), name=f"collector-{slot.index}")

    async def wait_up(self, timeout_s: float) -> None:
        """Wait until every collector process serves, at most ``timeout_s`` (/readyz says which does not)."""
        deadline = time.monotonic() + timeout_s
        while not all(s.up for s in self.slots) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def _spawn(self, slot: Slot) -> None:
        fds = (self.public.fileno(), self.limits.fd)
        spec = ProcessSpec(
            slot.index, len(self.slots), self.settings, self.sites, self.token, self.main_url, *fds, self.limits.slots
        )
        slot.private_url = None
        slot.started_at = time.monotonic()
        slot.proc = await asyncio.create_subprocess_exec(
            *self.command(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            pass_fds=fds,
            start_new_session=True,  # a terminal's Ctrl-C reaches the main process, which stops them in order
        )
        assert slot.proc.stdin is not None
        slot.proc.stdin.write(spec.encode() + b"\n")  # the pipe stays open: it is their lifeline
        await slot.proc.stdin.drain()

    async def _keep(self, slot: Slot) -> None:
        while not self.stopping:
            try:
                await self._spawn(slot)
            except OSError as exc:
                log.error("collector process %d cannot start: %s", slot.index, exc)
                slot.crashes_in_a_row += 1
                await asyncio.sleep(self._backoff(slot))
                continue
            proc = slot.proc
            assert proc is not None and proc.stdout is not None
            line = await proc.stdout.readline()
            if line.startswith(b"ready "):
                slot.private_url = f"http://127.0.0.1:{int(line.split()[1])}"
                UP.set(sum(s.up for s in self.slots))
            while await proc.stdout.readline():  # "written" lines until it exits (its stdout closes)
                self.on_written()
            code = await proc.wait()
            slot.last_exit = code
            slot.private_url = None
            UP.set(sum(s.up for s in self.slots))
            if self.stopping:
                return
            lived = time.monotonic() - slot.started_at
            slot.crashes_in_a_row = slot.crashes_in_a_row + 1 if lived < 30 else 1
            slot.restarts += 1
            RESTARTS.inc()
            delay = self._backoff(slot)
            log.error("collector process %d exited with %s; restarting in %.1f s", slot.index, code, delay)
            await asyncio.sleep(delay)

    def _backoff(self, slot: Slot) -> float:
        base = self.settings.health.restart_delay_s
        return float(min(base * 2 ** max(0, slot.crashes_in_a_row - 1), 10.0))

    def problems(self) -> dict[str, str]:
        """Why each collector process is not serving, for /readyz (empty when all serve)."""
        found = {}
        for s in self.slots:
            if s.up:
                continue
            name = f"collector-{s.index}"
            if s.crashes_in_a_row >= self.settings.health.crash_loop_restarts:
                found[name] = f"crash loop: exited {s.crashes_in_a_row} times in a row (last exit code {s.last_exit})"
            elif s.restarts:
                found[name] = f"restarting (exit code {s.last_exit}, {s.restarts} restarts)"
            else:
                found[name] = "starting"
        return found

    def status(self) -> list[dict[str, Any]]:
        """Each collector process, for /healthz."""
        return [
            {
                "slot": s.index,
                "pid": s.proc.pid if s.proc is not None and s.proc.returncode is None else None,
                "up": s.up,
                "restarts": s.restarts,
                "last_exit": s.last_exit,
            }
            for s in self.slots
        ]

    def terminate(self) -> None:
        """Ask every collector process to stop (SIGTERM: it finishes the requests it holds). Safe to
        call from a signal handler; no restart follows."""
        self.stopping = True
        for s in self.slots:
            if s.proc is not None and s.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    s.proc.send_signal(signal.SIGTERM)

    async def stop(self, timeout_s: float = 20.0) -> None:
        """Stop them all and wait; one still running after ``timeout_s`` is killed."""
        self.terminate()
        running = [s.proc for s in self.slots if s.proc is not None and s.proc.returncode is None]
        if running:
            waits = [asyncio.ensure_future(p.wait()) for p in running]
            _, pending = await asyncio.wait(waits, timeout=timeout_s)
            for p in running:
                if p.returncode is None:
                    log.warning("collector process %d did not stop in %.0f s; killing it", p.pid, timeout_s)
                    with contextlib.suppress(ProcessLookupError):
                        p.kill()
            if pending:
                await asyncio.wait(pending, timeout=5)
        for s in self.slots:
            if s.task is not None:
                s.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await s.task
        UP.set(0)
        await self._metrics.aclose()

    async def collector_metrics(self) -> list[str]:
        """The exposition text of every collector process that serves (one that does not answer in
        2 s is left out)."""

        async def one(url: str) -> str | None:
            try:
                r = await self._metrics.get(f"{url}{INTERNAL_PREFIX}metrics", headers={TOKEN_HEADER: self.token})
            except httpx.HTTPError:
                return None
            return r.text if r.status_code == 200 else None

        urls = [s.private_url for s in self.slots if s.up and s.private_url]
        return [t for t in await asyncio.gather(*(one(u) for u in urls)) if t is not None]


# what a collector process reports about itself (memory, CPU, GC) would be summed into nonsense
_OWN_PROCESS = ("process_", "python_")


class _Merged(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def merge_metrics(local: Iterable[Metric], others: Iterable[str]) -> bytes:
    """This process's metrics with every other process's samples added: counters, histograms and
    gauges of one name and labels are summed (``_created`` is this process's). Families of the
    other processes' own runtime (process_*, python_*) are left out."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for metric in local:
        families[metric.name] = metric
        values[metric.name] = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in metric.samples}
    for text in others:
        for metric in text_string_to_metric_families(text):
            # a counter's _created comes as a family of its own in this format: the local family has it
            if metric.name.startswith(_OWN_PROCESS) or metric.name.endswith("_created"):
                continue
            if metric.name not in families:
                families[metric.name] = metric
                values[metric.name] = {}
            into = values[metric.name]
            for s in metric.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                if not s.name.endswith("_created"):
                    into[key] = into.get(key, 0.0) + s.value
    merged = []
    for name, metric in families.items():
        out = Metric(name, metric.documentation, metric.type, metric.unit)
        for (sample, labels), value in values[name].items():
            out.add_sample(sample, dict(labels), value)
        merged.append(out)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(merged))
    return generate_latest(registry)


def add_merged_metrics(app: FastAPI, token: str | None, supervisor: Supervisor) -> None:
    """/metrics of the main process: its own families plus its collector processes' samples, behind
    the same optional Bearer token as ``trailmark.web.add_metrics``."""

    async def merged() -> bytes:
        others = await supervisor.collector_metrics()
        return merge_metrics(REGISTRY.collect(), others)

    add_metrics(app, token, merged)


__all__ = [
    "CLIENT_HEADER",
    "INTERNAL_PREFIX",
    "MainServer",
    "PROXIED_METHODS",
    "ForwardedClient",
    "ProcessSpec",
    "Proxy",
    "Supervisor",
    "TellingProducer",
    "TOKEN_HEADER",
    "collector_process_count",
    "internal_allowed",
    "loopback_socket",
    "add_merged_metrics",
    "merge_metrics",
    "public_socket",
    "tell_ready",
    "url_of",
    "watch_parent",
]


class MainServer(uvicorn.Server):
    """uvicorn for the main process: SIGTERM / SIGINT also stop the collector processes at once,
    before uvicorn waits for its own connections, so nothing new is accepted anywhere."""

    def __init__(self, config: uvicorn.Config, supervisor: Supervisor) -> None:
        super().__init__(config)
        self.supervisor = supervisor

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.supervisor.terminate()
        super().handle_exit(sig, frame)
