"""The ASGI app for any set of roles: collector, enricher, journeys (builder + read API).

``trailmark up`` runs all three in one process; the scale-out commands run one role each. The same
code path serves both: only the bus (embedded log or Kafka) and the storage backend change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.routing import Route

from enrich.companies import CompanyWorker, LookupRequests
from ingest.app import Collector, collector_router
from ingest.sites import SiteKeys
from journey_builder.privacy import apply_retention
from journey_builder.privacy_api import privacy_router
from journey_builder.read_api import read_router
from schemas import Site
from trailmark import __version__
from trailmark.bus.base import BusUnavailable, EventBus, Producer
from trailmark.bus.spool import SpoolingProducer
from trailmark.deadletters import admin_router
from trailmark.errors import BadRequest, Unavailable
from trailmark.processes import (
    INTERNAL_PREFIX,
    PROXIED_METHODS,
    ForwardedClient,
    ProcessSpec,
    Proxy,
    Supervisor,
    TellingProducer,
    add_merged_metrics,
    internal_allowed,
    tell_ready,
)
from trailmark.ratelimit import EdgeLimits
from trailmark.runtime import StageRunner, dead_letter_sink, embedded_runner, enrich_runner, journey_runner
from trailmark.settings import Settings
from trailmark.shared_buckets import SharedTable, share
from trailmark.storage import Storage, StorageUnavailable, apply_migrations, open_storage
from trailmark.web import NoSniff, add_docs, add_metrics, openapi_errors_as_400

log = logging.getLogger("trailmark")
ROLES = frozenset({"collector", "enricher", "journeys"})


def make_bus(settings: Settings) -> EventBus:
    if settings.bus.kind == "kafka":
        from trailmark.bus.kafka import KafkaBus

        return KafkaBus(settings.kafka_bootstrap, settings.bus, request_timeout_s=settings.bus.request_timeout_s)
    from trailmark.bus.embedded import EmbeddedBus

    return EmbeddedBus(settings.data_dir / "log" / "events.sqlite3")


class Runtime:
    """What the lifespan starts and stops; exposed on ``app.state.runtime`` for health checks."""

    def __init__(self, settings: Settings, roles: frozenset[str], sites: list[Site]) -> None:
        self.settings = settings
        self.roles = roles
        self.sites = sites
        self.bus: EventBus = make_bus(settings)
        self.spool: SpoolingProducer | None = None
        b = settings.bus
        if b.kind == "kafka" and b.spool and "collector" in roles:
            self.spool = SpoolingProducer(
                self.bus.producer(),
                (b.spool_dir or settings.data_dir / "spool") / "spool.sqlite3",
                [b.topic_raw],
                spool_after_s=b.spool_after_s,
                max_bytes=b.spool_max_bytes,
            )
        if b.kind == "kafka":
            from trailmark.bus.kafka import PRODUCE_ERRORS

            for topic in (b.topic_raw, b.topic_enriched, b.topic_dead_letter):  # exported at 0 from the start
                for kind in ("unavailable", "timeout", "error"):
                    PRODUCE_ERRORS.labels(topic, kind)
        self.storage: Storage | None = None
        self.runners: list[StageRunner[Any]] = []
        self.tasks: list[asyncio.Task[None]] = []  # stage supervisors: one ending means not ready
        self.aux: list[asyncio.Task[None]] = []  # connect retries, log truncation: cancelled on stop
        self.ready = False
        self.connected = False  # the bus is started and its topics exist
        self.stopping = asyncio.Event()

    def producer(self) -> Producer:
        """The collector's producer: the spool-backed one on Kafka, else the bus's own."""
        return self.spool if self.spool is not None else self.bus.producer()

    def log_written(self) -> None:
        """Another process has written to the embedded log: wake this process's consumers now."""
        from trailmark.bus.embedded import EmbeddedBus

        if isinstance(self.bus, EmbeddedBus):  # Kafka consumers are woken by the broker
            self.bus.wake()

    def storage_or_fail(self) -> Storage:
        if self.storage is None:
            raise StorageUnavailable("ClickHouse is not reachable yet; retrying in the background")
        return self.storage

    async def start(self) -> None:
        """Bring up the bus, then storage (with its migrations), then the stages. A Kafka broker or a
        ClickHouse server that is down at start is retried in the background: meanwhile the collector
        accepts events (into the embedded log, or the spool on Kafka) and /readyz says not ready."""
        if self.spool is not None:
            await self.spool.start()
        try:
            await self._bring_up()
        except Unavailable as exc:
            if not self._retryable(exc):
                raise
            log.warning(
                "%s; retrying in the background%s",
                exc,
                " (the collector spools meanwhile)" if self.spool is not None else "",
            )
            self.aux.append(asyncio.create_task(self._bring_up_later(), name="connect"))
            self.ready = self.spool is not None and self.roles == {"collector"}
            return
        self._start_stages()

    def _retryable(self, exc: Unavailable) -> bool:
        """Kafka and a ClickHouse server come back; a chDB folder another process holds does not."""
        if isinstance(exc, BusUnavailable):
            return self.settings.bus.kind == "kafka"
        return isinstance(exc, StorageUnavailable) and bool(self.settings.clickhouse_url)

    async def _bring_up(self) -> None:
        if not self.connected:
            b = self.settings.bus
            try:
                await self.bus.start()
                topics = [b.topic_raw, b.topic_enriched, b.topic_dead_letter]
                if b.kind == "kafka" and self.settings.companies.enabled:
                    topics.append(b.topic_lookups)
                await self.bus.ensure_topics(topics)
            except BusUnavailable as exc:
                raise BusUnavailable(f"kafka at {self.settings.kafka_bootstrap} unreachable ({exc})") from exc
            self.connected = True
        if "journeys" in self.roles and self.storage is None:
            storage = await asyncio.to_thread(open_storage, self.settings)
            await asyncio.to_thread(apply_migrations, storage, self.settings.storage)
            retention = {s["site_id"]: s["retention_days"] for s in self.sites if "retention_days" in s}
            days, cluster = self.settings.privacy.retention_days, self.settings.storage.cluster
            await asyncio.to_thread(apply_retention, storage, retention, days, cluster)
            self.storage = storage

    async def _bring_up_later(self) -> None:
        delay = 1.0
        while not self.stopping.is_set():
            await asyncio.sleep(delay)
            try:
                await self._bring_up()
            except Unavailable as exc:
                log.warning("still waiting: %s", exc)
                delay = min(delay * 2, 10.0)
                continue
            log.warning("dependencies reachable; starting stages")
            self._start_stages()
            return

    def _start_stages(self) -> None:
        sites = {s["site_id"]: s for s in self.sites}
        fused = self.settings.bus.kind == "embedded" and {"enricher", "journeys"} <= self.roles
        if fused:  # one process, one log file: enrichment feeds the builder in memory
            storage = self.storage_or_fail()
            self.runners.append(embedded_runner(self.bus, self.settings, sites, storage, self._company_lookups()))
            self.runners.append(dead_letter_sink(self.bus, self.settings, storage))
        else:
            if "journeys" in self.roles:
                storage = self.storage_or_fail()
                self.runners.append(journey_runner(self.bus, self.settings, sites, storage))
                self.runners.append(dead_letter_sink(self.bus, self.settings, storage))
                if "enricher" not in self.roles:
                    self._company_lookups()  # the worker, fed by the enrichers over the bus
            if "enricher" in self.roles:
                # with the journeys role in this process too, it drops erased identifiers' events early
                lookups = self._company_lookups()
                self.runners.append(enrich_runner(self.bus, self.settings, sites, self.storage, lookups))
        for runner in self.runners:
            runner.health.export()
            self.tasks.append(asyncio.create_task(self._supervise(runner), name=runner.stage))
        if self.settings.bus.kind == "embedded" and {"enricher", "journeys"} <= self.roles:
            self.aux.append(asyncio.create_task(self._truncate_log(), name="truncate"))
        self.ready = True

    def _company_lookups(self) -> LookupRequests | None:
        """Company profiles (enrich/companies): the enricher asks, a worker task looks up and stores.

        The worker runs where the storage is: in the process with the journeys role. An enricher
        process without it (Kafka, one process per stage) hands the domains it wants to the
        ``topic_lookups`` topic, and the journeys processes (their consumer group) take them from
        there; with both roles in one process (``trailmark up``) the hand-over stays in memory."""
        c = self.settings.companies
        if not c.enabled:
            return None
        wanted = LookupRequests(c.queue_size, c.refresh_age_s)
        if "journeys" not in self.roles:
            self.aux.append(asyncio.create_task(self._send_lookups(wanted), name="company-lookups-out"))
            return wanted
        worker = CompanyWorker(c, self.storage_or_fail(), wanted)
        self.aux.append(asyncio.create_task(worker.run(), name="company-lookups"))
        if self.settings.bus.kind == "kafka" and "enricher" not in self.roles:
            self.aux.append(asyncio.create_task(self._take_lookups(wanted), name="company-lookups-in"))
        return wanted

    async def _send_lookups(self, wanted: LookupRequests) -> None:
        """Enricher side on Kafka: the wanted (site, domain) pairs, as records keyed by domain (one
        builder of the group looks a domain up for every site). A pair that cannot be sent now is
        kept for the next round; an ask is cheap to lose (the next event naming the domain asks
        again), so no spool."""
        topic = self.settings.bus.topic_lookups
        producer = self.bus.producer()
        while not self.stopping.is_set():
            pairs = wanted.take(500)
            if not pairs:
                await asyncio.sleep(0.5)
                continue
            records = [(d.encode(), orjson.dumps({"site_id": s, "domain": d})) for s, d in pairs]
            try:
                await producer.send_batch(topic, records)
            except Unavailable as exc:
                log.warning("company lookups: cannot hand %d domains over (%s); retrying", len(pairs), exc)
                wanted.again(pairs)
                await asyncio.sleep(2.0)

    async def _take_lookups(self, wanted: LookupRequests) -> None:
        """Journeys side on Kafka: the enrichers' asks, into this process's worker."""
        b = self.settings.bus
        consumer = self.bus.consumer(b.topic_lookups, b.group_lookups)
        try:
            while not self.stopping.is_set():
                try:
                    messages = await consumer.poll(500, 1.0)
                    for m in messages:
                        ask = orjson.loads(m.value) if m.value.startswith(b"{") else None
                        if isinstance(ask, dict) and isinstance(ask.get("site_id"), str):
                            domain = ask.get("domain")
                            if isinstance(domain, str) and 0 < len(domain) <= 253:
                                wanted.want(ask["site_id"], domain.lower())
                    if messages:
                        await consumer.commit()
                except Unavailable as exc:
                    log.warning("company lookups: cannot read asks (%s); retrying", exc)
                    await asyncio.sleep(2.0)
                except orjson.JSONDecodeError:
                    await consumer.commit()  # not an ask of ours: skip it
        finally:
            await consumer.close()

    async def _supervise(self, runner: StageRunner[Any]) -> None:
        """Restart a crashed stage; its health counts the restarts (a crash loop makes it unready)."""
        delay = self.settings.health.restart_delay_s
        while not runner.stopping.is_set():
            try:
                await runner.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                runner.health.crashed(exc)
                log.exception(
                    "stage %s crashed (%d in a row); restarting in %.1f s",
                    runner.stage,
                    runner.health.crashes_in_a_row,
                    delay,
                )
                await runner.pause(delay)

    def problems(self) -> dict[str, str]:
        """Why each unhealthy stage is unhealthy (empty when all are well); read by /readyz."""
        found = {r.stage: p for r in self.runners if (p := r.health.problem()) is not None}
        for task in self.tasks:
            if task.done():
                found[task.get_name()] = "stopped"
        return found

    async def _truncate_log(self) -> None:
        from trailmark.bus.embedded import EmbeddedBus

        b = self.settings.bus
        assert isinstance(self.bus, EmbeddedBus)
        groups = {
            b.topic_raw: [b.group_enrich],
            b.topic_enriched: [b.group_journeys],
            b.topic_dead_letter: [b.group_dead_letters],
        }
        while True:
            await asyncio.sleep(b.truncate_interval_s)
            for topic, gs in groups.items():
                await asyncio.to_thread(self.bus.truncate_consumed, topic, gs)

    async def stop(self) -> None:
        """Graceful: each runner finishes and commits its batch (bounded), then the bus closes."""
        self.ready = False
        self.stopping.set()
        started = time.monotonic()
        for runner in self.runners:
            runner.stopping.set()
        for task in self.aux:
            task.cancel()
        if self.tasks:
            _, pending = await asyncio.wait(self.tasks, timeout=8)
            for task in pending:
                log.warning("stage %s did not stop in 8 s; cancelling (its batch is redelivered)", task.get_name())
                task.cancel()
        for task in [*self.tasks, *self.aux]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.spool is not None:
            await self.spool.stop()
        await self.bus.stop()
        log.info("stopped %s in %.1f s", ",".join(sorted(self.roles)), time.monotonic() - started)


def _error_handlers(app: FastAPI) -> None:
    """The error tree decides the status: a dependency that is down is 503 + Retry-After (clients
    retry), a request the server refuses is 400 with the reason."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return JSONResponse({"error": "invalid request", "detail": errors}, status_code=400)

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        return JSONResponse({"error": "unavailable", "detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"error": "bad request", "detail": str(exc)}, status_code=exc.status_code)


def create_app(
    settings: Settings, sites: list[Site], roles: frozenset[str] = ROLES, supervisor: Supervisor | None = None
) -> FastAPI:
    """The app of one process with ``roles``. With a ``supervisor`` (``trailmark up`` with collector
    processes) this is the main process: the supervisor's processes serve the collector, this one
    reads the client's address from their proxy, answers /healthz and /readyz for all of them and
    adds their counters to /metrics."""
    runtime = Runtime(settings, roles, sites)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if supervisor is not None:  # they take events while storage starts
            await supervisor.start()
        try:
            await runtime.start()
            if supervisor is not None:
                await supervisor.wait_up(60.0)
            yield
        finally:
            if supervisor is not None:  # first: what they acknowledged is in the log before the stages stop
                await supervisor.stop()
            await runtime.stop()

    app = FastAPI(
        title="trailmark",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        description="Collector (Segment-compatible), customer journeys and read-only SQL.",
    )
    app.state.runtime = runtime
    app.add_middleware(NoSniff)
    if supervisor is not None:
        app.add_middleware(ForwardedClient, token=supervisor.token)
    add_docs(app)
    openapi_errors_as_400(app)
    _error_handlers(app)

    limits = EdgeLimits.from_settings(settings.collector)  # one allowance for wrong write and read keys
    if supervisor is not None:  # ... and for every process of the run
        share(limits, supervisor.limits)
        supervisor.on_written = runtime.log_written
    # with collector processes their routes are mounted here too: the OpenAPI document lists them
    # (the public port never reaches them here: those processes answer collector paths themselves)
    if "collector" in roles or supervisor is not None:
        keys = SiteKeys.of(sites)
        collector = Collector(keys, runtime.producer, settings.bus.topic_raw, settings.collector, limits)
        app.include_router(collector_router(collector))
    if "journeys" in roles:
        app.include_router(admin_router(runtime.storage_or_fail, runtime.bus.producer, settings, sites, limits))
        app.include_router(privacy_router(runtime.storage_or_fail, runtime, sites, settings, limits))
        app.include_router(
            read_router(
                runtime.storage_or_fail, sites, settings.journeys, settings.sql, settings.storage.database, limits
            )
        )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, Any]:
        if supervisor is None:
            return {"status": "ok", "version": __version__}
        return {"status": "ok", "version": __version__, "collector_processes": supervisor.status()}

    served = roles | {"collector"} if supervisor is not None else roles

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        problems = runtime.problems()
        if supervisor is not None:
            problems |= supervisor.problems()
        alive = runtime.ready and not problems
        return JSONResponse(
            {"ready": alive, "roles": sorted(served), "problems": problems}, status_code=200 if alive else 503
        )

    if supervisor is not None:
        add_merged_metrics(app, settings.metrics_token, supervisor)
    else:
        add_metrics(app, settings.metrics_token)
    return app


def create_collector_app(spec: ProcessSpec, settings: Settings, private_port: int) -> FastAPI:
    """The app of one collector process of ``trailmark up`` (trailmark/processes.py): the collector's
    routes on the event log, its own counters for the main process on ``INTERNAL_PREFIX``, and every
    other request streamed to the main process."""
    runtime = Runtime(settings, frozenset({"collector"}), spec.sites)
    proxy = Proxy(spec.main_url, spec.token)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await runtime.start()
            tell_ready(private_port)
            yield
        finally:
            await runtime.stop()
            await proxy.close()

    app = FastAPI(title="trailmark collector", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runtime = runtime
    app.add_middleware(NoSniff)
    _error_handlers(app)
    limits = share(EdgeLimits.from_settings(settings.collector), SharedTable(spec.limits_fd, spec.limit_slots))
    telling: list[TellingProducer] = []

    def producer() -> Producer:  # the runtime's (spool-backed on Kafka), once it is started
        if not telling:
            telling.append(TellingProducer(runtime.producer()))
        return telling[0]

    collector = Collector(SiteKeys.of(spec.sites), producer, settings.bus.topic_raw, settings.collector, limits)
    app.include_router(collector_router(collector))

    async def own_metrics(request: Request) -> Response:
        if not internal_allowed(request, spec.token):
            return await proxy.handle(request)  # not ours: the main process answers (404)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.router.routes.append(Route(f"{INTERNAL_PREFIX}metrics", own_metrics, methods=["GET"]))
    app.router.routes.append(Route("/{path:path}", proxy.handle, methods=list(PROXIED_METHODS)))
    return app
