"""The ``trailmark`` command: run the pipeline (all stages or one) and query it."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import orjson
import typer
import uvicorn
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from journey_builder import core_form
from schemas import Site as SiteRecord
from trailmark.app import ROLES, create_app, create_collector_app, make_bus
from trailmark.deadletters import DeadLetterSource, Filter, HttpDeadLetters, direct_source, replay_filter
from trailmark.errors import TrailmarkError
from trailmark.keys import KeysError, load_or_create, secure_data_dir
from trailmark.processes import (
    MainServer,
    ProcessSpec,
    Supervisor,
    collector_process_count,
    loopback_socket,
    public_socket,
    url_of,
    watch_parent,
)
from trailmark.runtime import trim_memory_every, tune_gc
from trailmark.settings import Settings

app = typer.Typer(help="trailmark: website behaviour -> customer journeys in ClickHouse.", no_args_is_help=True)
console = Console()

Host = Annotated[str | None, typer.Option(help="listen address (default 127.0.0.1, env TRAILMARK_HOST)")]
Port = Annotated[int | None, typer.Option(help="listen port (default 8000, env PORT)")]
DataDir = Annotated[Path | None, typer.Option("--data-dir", help="data folder (default ./data, env DATA_DIR)")]
Bus = Annotated[str | None, typer.Option("--bus", help="embedded (default) or kafka")]
Kafka = Annotated[str | None, typer.Option("--kafka", help="Kafka bootstrap servers, host:port")]


def _settings(
    host: str | None, port: int | None, data_dir: Path | None, bus: str | None, kafka: str | None
) -> Settings:
    """The one Settings of this process: the environment, with the command line on top (built once,
    never changed afterwards; every stage gets its section from it)."""
    if bus is not None and bus not in ("embedded", "kafka"):
        raise typer.BadParameter("--bus must be embedded or kafka")
    given = {"host": host, "port": port, "data_dir": data_dir, "kafka_bootstrap": kafka}
    overrides: dict[str, Any] = {k: v for k, v in given.items() if v}
    if bus or kafka:
        overrides["bus"] = {"kind": bus or "kafka"}  # merged into TRAILMARK_BUS__*, not replacing it
    return Settings(**overrides)


def _serve(s: Settings, roles: frozenset[str], announce: bool) -> None:
    logging.basicConfig(level=s.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # during an outage these log a traceback per retry; trailmark's own warning says it once per attempt
    for noisy in ("clickhouse_connect", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        sites, created = load_or_create(s.data_dir)
    except KeysError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if "journeys" in roles and not announce:
        logging.getLogger(__name__).info("journey builder core: %s", core_form())
    if announce:
        site = sites[0]
        base = f"http://{s.host}:{s.port}"
        console.print(f"[bold]trailmark[/bold] {'created' if created else 'using'} {s.data_dir / 'keys.json'}")
        console.print(f"  site:      {site['site_id']}")
        console.print(f"  write key: {site['write_key']}")
        console.print(f"  read key:  {site['read_key']}")
        console.print(f"  admin key: {site['admin_key']}  (erase / export contacts only)")
        console.print("  script tag:")
        print(f'    <script defer src="{base}/t.js" data-key="{site["write_key"]}"></script>', flush=True)
        console.print(f"  journeys:  curl -H 'Authorization: Bearer {site['read_key']}' {base}/v1/journeys/ID")
        console.print(
            f"  bus: {s.bus.kind}   storage: {'ClickHouse server' if s.clickhouse_url else 'chDB'}"
            f"   journey builder core: {core_form()}"
        )
    processes = collector_process_count(s) if roles == ROLES else 0
    if processes:
        _serve_split(s, sites, processes, announce)
        return
    app_ = create_app(s, sites, roles)
    _tune_memory(s)
    config = uvicorn.Config(
        app_, host=s.host, port=s.port, log_level="warning", access_log=False, timeout_graceful_shutdown=15
    )
    uvicorn.Server(config).run()


def _tune_memory(s: Settings) -> None:
    """A serving process's memory settings, once start-up is done: what it allocated is frozen out
    of GC collections, and freed C-heap pages go back to the system every few seconds."""
    tune_gc(s.gc_threshold)
    trim_memory_every(s.memory_trim_interval_s)


def _serve_split(s: Settings, sites: list[SiteRecord], processes: int, announce: bool) -> None:
    """``trailmark up`` with collector processes (trailmark/processes.py): this process binds the
    public port for them and serves everything but the collector on a loopback port of its own."""
    try:
        public = public_socket(s.host, s.port)
    except OSError as exc:
        console.print(Text(f"cannot listen on {s.host}:{s.port}: {exc}", style="red"))
        raise typer.Exit(2) from None
    internal = loopback_socket()
    if announce:
        console.print(f"  collector: {processes} process(es) on port {s.port}; the rest on {url_of(internal)}")
    supervisor = Supervisor(s, sites, processes, public, url_of(internal))
    app_ = create_app(s, sites, ROLES - {"collector"}, supervisor)
    _tune_memory(s)
    config = uvicorn.Config(app_, log_level="warning", access_log=False, timeout_graceful_shutdown=15)
    MainServer(config, supervisor).run(sockets=[internal])


@app.command("collector-process", hidden=True)
def collector_process() -> None:
    """One collector process of ``trailmark up`` (started by it: settings and sites on stdin)."""
    spec = ProcessSpec.decode(sys.stdin.buffer.readline())
    watch_parent(sys.stdin.buffer)
    s = spec.collector_settings()
    logging.basicConfig(
        level=s.log_level.upper(), format=f"%(asctime)s %(levelname)s collector-{spec.slot}: %(message)s"
    )
    secure_data_dir(s.data_dir)  # this process's umask: files it creates (a spool) are private too
    public = socket.socket(fileno=spec.public_fd)
    private = loopback_socket()
    app_ = create_collector_app(spec, s, private.getsockname()[1])
    _tune_memory(s)
    config = uvicorn.Config(app_, log_level="warning", access_log=False, timeout_graceful_shutdown=15)
    uvicorn.Server(config).run(sockets=[public, private])


@app.command()
def up(host: Host = None, port: Port = None, data_dir: DataDir = None, bus: Bus = None, kafka: Kafka = None) -> None:
    """Run collector + enrichment + journey builder (embedded log + chDB by default); the collector in
    processes of its own (TRAILMARK_COLLECTOR_PROCESSES, 0: everything in one process)."""
    _serve(_settings(host, port, data_dir, bus, kafka), ROLES, announce=True)


@app.command()
def collector(host: Host = None, port: Port = None, data_dir: DataDir = None, kafka: Kafka = None) -> None:
    """Run only the collector (HTTP -> Kafka raw topic)."""
    _serve(_settings(host, port, data_dir, "kafka", kafka), frozenset({"collector"}), announce=False)


@app.command()
def enricher(host: Host = None, port: Port = None, data_dir: DataDir = None, kafka: Kafka = None) -> None:
    """Run only the enrichment stage (raw topic -> enriched topic); serves /metrics and /healthz."""
    _serve(_settings(host, port, data_dir, "kafka", kafka), frozenset({"enricher"}), announce=False)


@app.command("journey-builder")
def journey_builder(host: Host = None, port: Port = None, data_dir: DataDir = None, kafka: Kafka = None) -> None:
    """Run only the journey builder (enriched topic -> ClickHouse) and the read API."""
    _serve(_settings(host, port, data_dir, "kafka", kafka), frozenset({"journeys"}), announce=False)


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="one read-only ClickHouse query")],
    url: Annotated[str, typer.Option(envvar="TRAILMARK_URL", help="the running server")] = "http://127.0.0.1:8000",
    key: Annotated[str | None, typer.Option(envvar="TRAILMARK_READ_KEY", help="read key (default: keys.json)")] = None,
    data_dir: DataDir = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
) -> None:
    """Run a read-only query against the running server (chDB allows one process per data path)."""
    if key is None:
        sites, _ = load_or_create(data_dir or Settings().data_dir)
        key = sites[0]["read_key"]
    try:
        r = httpx.post(f"{url}/v1/sql", json={"query": query}, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach {url}: {exc}[/red]")
        raise typer.Exit(2) from None
    if r.status_code != 200:
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text
        console.print(Text(f"{r.status_code}: {detail}", style="red"))  # server text is data, not markup
        raise typer.Exit(1)
    rows = r.json()["rows"]
    _print_rows(rows, fmt)  # type: ignore[arg-type]


def _print_rows(rows: list[dict[str, object]], fmt: Literal["table", "csv", "json"]) -> None:
    if fmt == "json":
        sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    columns = list(rows[0].keys()) if rows else []
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row[c] for c in columns])
        sys.stdout.write(out.getvalue())
        return
    # Text(), not str: a value like "[bold]x" or "[link=...]" is data and is printed as it is
    table = Table()
    for c in columns:
        table.add_column(Text(c))
    for row in rows:
        table.add_row(*(Text(str(row[c])) for c in columns))
    console.print(table)
    console.print(f"{len(rows)} row(s)")


# --- trailmark dead-letters list|show|replay ----------------------------------------------------------

dead_letters_app = typer.Typer(
    help="List, show and replay dead letters (records a stage could not process).", no_args_is_help=True
)
app.add_typer(dead_letters_app, name="dead-letters")

Url = Annotated[str, typer.Option(envvar="TRAILMARK_URL", help="the running server")]
Token = Annotated[
    str | None, typer.Option(envvar="TRAILMARK_ADMIN_TOKEN", help="admin token (default: the admin key from keys.json)")
]
Direct = Annotated[
    bool,
    typer.Option(
        "--direct", help="no server: open storage and the bus of --data-dir / TRAILMARK_CLICKHOUSE_URL yourself"
    ),
]
Stage = Annotated[str | None, typer.Option(help="enrich, journeys, unknown")]
Kind = Annotated[
    str | None,
    typer.Option(help="the failure: unreadable, invalid, enrich_failed, unserializable, build_failed, unknown"),
]
PayloadType = Annotated[str | None, typer.Option(help="raw_batch, raw_event, enriched_event, none (not replayable)")]
Site = Annotated[str | None, typer.Option(help="site id")]
Reason = Annotated[str | None, typer.Option(help="substring of the reason (any case)")]
Since = Annotated[str | None, typer.Option(help="failed at or after: ISO time or 30m / 24h / 7d ago")]
Until = Annotated[str | None, typer.Option(help="failed before: ISO time or 30m / 24h / 7d ago")]
DEFAULT_URL = "http://127.0.0.1:8000"


@asynccontextmanager
async def _dead_letter_source(
    url: str,
    token: str | None,
    data_dir: Path | None,
    direct: bool,
    bus: str | None,
    kafka: str | None,
    with_bus: bool = False,
) -> AsyncIterator[DeadLetterSource]:
    if direct:
        s = _settings(None, None, data_dir, bus, kafka)
        async with direct_source(s, make_bus, with_bus) as local:
            yield local
        return
    if token is None:
        token = load_or_create(data_dir or Settings().data_dir)[0][0]["admin_key"]
    remote = HttpDeadLetters(url, token)
    try:
        yield remote
    finally:
        await remote.close()


def _run_dead_letters(work: Coroutine[Any, Any, None]) -> None:
    try:
        asyncio.run(work)
    except TrailmarkError as exc:  # KeysError included
        console.print(Text(str(exc), style="red"))
        raise typer.Exit(1) from None


@dead_letters_app.command("list")
def dead_letters_list(
    stage: Stage = None,
    kind: Kind = None,
    reason: Reason = None,
    since: Since = None,
    until: Until = None,
    payload_type: PayloadType = None,
    site: Site = None,
    replayed: Annotated[bool | None, typer.Option("--replayed/--not-replayed", help="replayed before or not")] = None,
    limit: Annotated[int, typer.Option(help="rows per page")] = 50,
    after: Annotated[str | None, typer.Option(help="the cursor a previous page printed")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
    url: Url = DEFAULT_URL,
    token: Token = None,
    data_dir: DataDir = None,
    direct: Direct = False,
) -> None:
    """Dead letters, oldest first (no payloads: `show ID` prints one)."""

    async def work() -> None:
        async with _dead_letter_source(url, token, data_dir, direct, None, None) as source:
            flt = Filter(stage, kind, reason, since, until, replayed, payload_type, site)
            page = await source.list(flt, after, limit)
        rows = page["rows"]
        if fmt == "table":  # the columns that fit a terminal; csv and json have every field
            rows = [
                {
                    "id": r["id"],
                    "failed_at": r["failed_at"],
                    "stage": r["stage"],
                    "kind": r["kind"],
                    "payload": r["payload_type"],
                    "replays": r["replays"],
                    "reason": r["reason"][:120],
                }
                for r in rows
            ]
        _print_rows(rows, fmt)  # type: ignore[arg-type]
        if fmt == "table":
            more = f"; next page: --after '{page['next']}'" if page["next"] else ""
            console.print(f"{page['total']} matching{more}")

    _run_dead_letters(work())


@dead_letters_app.command("show")
def dead_letters_show(
    dead_letter_id: Annotated[str, typer.Argument(metavar="ID", help="the id `list` printed")],
    fmt: Annotated[str, typer.Option("--format", help="text or json")] = "text",
    url: Url = DEFAULT_URL,
    token: Token = None,
    data_dir: DataDir = None,
    direct: Direct = False,
) -> None:
    """One dead letter: stage, kind, payload type, reason, payload and its replays."""

    async def work() -> None:
        async with _dead_letter_source(url, token, data_dir, direct, None, None) as source:
            found = await source.show(dead_letter_id)
        if found is None:
            console.print(Text(f"no dead letter {dead_letter_id!r}", style="red"))
            raise typer.Exit(1)
        if fmt == "json":
            sys.stdout.write(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode() + "\n")
            return
        for field in (
            "id",
            "failed_at",
            "site_id",
            "stage",
            "kind",
            "payload_type",
            "reason",
            "payload_encoding",
            "version",
        ):
            console.print(Text(f"{field + ':':<18}{found[field]}"))
        for r in found["replays"]:
            console.print(
                Text(
                    f"{'replayed:':<18}{r['replayed_at']} to {r['topic']} ({r['records']} record(s),"
                    f" replay {r['replay_id']})"
                )
            )
        payload = found["payload"]
        if found["payload_encoding"] == "utf-8":
            try:
                payload = orjson.dumps(orjson.loads(payload), option=orjson.OPT_INDENT_2).decode()
            except orjson.JSONDecodeError:
                pass
        console.print("payload:")
        sys.stdout.write(payload + "\n")

    _run_dead_letters(work())


@dead_letters_app.command("replay")
def dead_letters_replay(
    stage: Stage = None,
    kind: Kind = None,
    reason: Reason = None,
    since: Since = None,
    until: Until = None,
    payload_type: PayloadType = None,
    site: Site = None,
    again: Annotated[bool, typer.Option("--again", help="also dead letters replayed before")] = False,
    batch: Annotated[int, typer.Option(help="dead letters per request")] = 100,
    url: Url = DEFAULT_URL,
    token: Token = None,
    data_dir: DataDir = None,
    direct: Direct = False,
    bus: Bus = None,
    kafka: Kafka = None,
) -> None:
    """Send matching dead letters through the pipeline again (idempotent by messageId; recorded in
    trailmark.dead_letter_replays). Those replayed before are skipped unless --again."""
    flt = Filter(stage, kind, reason, since, until, None, payload_type, site)
    replay_id = uuid.uuid4().hex

    async def work() -> None:
        async with _dead_letter_source(url, token, data_dir, direct, bus, kafka, with_bus=True) as source:
            total = (await source.list(replay_filter(flt, again), None, 1))["total"]
            replayed = records = 0
            skipped: list[dict[str, str]] = []
            after: str | None = None
            with Progress(
                TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
            ) as progress:
                task = progress.add_task("replay", total=total)
                while True:
                    page = await source.replay(flt, after, batch, again, replay_id)
                    replayed, records = replayed + page["replayed"], records + page["records"]
                    skipped += page["skipped"]
                    progress.advance(task, page["selected"])
                    after = page["next"]
                    if after is None:
                        break
        console.print(f"replayed {replayed} dead letter(s), {records} record(s)")
        console.print(f"replay id: {replay_id}", soft_wrap=True)
        for s in skipped[:20]:
            console.print(Text(f"skipped {s['id']}: {s['reason']}", style="yellow"))
        if len(skipped) > 20:
            console.print(f"... and {len(skipped) - 20} more skipped")

    _run_dead_letters(work())


# --- trailmark erase | export (through the running server, with the site's admin key) ------------------

AdminKey = Annotated[
    str | None, typer.Option("--key", envvar="TRAILMARK_ADMIN_KEY", help="the site's admin key (default: keys.json)")
]


def _admin_call(method: str, url: str, key: str | None, data_dir: Path | None) -> httpx.Response:
    if key is None:
        key = load_or_create(data_dir or Settings().data_dir)[0][0]["admin_key"]
    try:
        r = httpx.request(method, url, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    except httpx.HTTPError as exc:
        console.print(Text(f"cannot reach {url}: {exc}", style="red"))
        raise typer.Exit(2) from None
    if r.status_code >= 400:
        console.print(Text(f"{r.status_code}: {r.text[:500]}", style="red"))  # server text is data, not markup
        raise typer.Exit(1)
    return r


@app.command()
def erase(
    contact: Annotated[str, typer.Argument(help="a userId, email, contact id or anonymousId")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="follow the erasure until it ends")] = True,
    url: Url = DEFAULT_URL,
    key: AdminKey = None,
    data_dir: DataDir = None,
) -> None:
    """Erase a contact and every identity linked to it (events, journeys, dead letters, the log);
    later events of its identifiers are dropped. Prints the request id and follows its progress."""
    started = _admin_call("DELETE", f"{url}/v1/contacts/{contact}", key, data_dir).json()
    request_id = started["request_id"]
    console.print(f"erasure {request_id}: {started['identifiers']} identifier(s)", soft_wrap=True)
    if not wait:
        return
    with Progress(
        TextColumn("erasing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("", total=None)
        while True:
            state = _admin_call("GET", f"{url}/v1/erasures/{request_id}", key, data_dir).json()
            progress.update(
                task,
                completed=state["steps_done"],
                total=state["steps_total"] or None,
                description=Text(state["detail"]).plain,
            )
            if state["status"] != "running":
                break
            time.sleep(0.5)
    console.print(Text(f"{state['status']}: {state['detail']}", style="green" if state["status"] == "done" else "red"))
    if state["status"] != "done":
        raise typer.Exit(1)


@app.command()
def export(
    contact: Annotated[str, typer.Argument(help="a userId, email, contact id or anonymousId")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="file to write (default: stdout)")] = None,
    url: Url = DEFAULT_URL,
    key: AdminKey = None,
    data_dir: DataDir = None,
) -> None:
    """Everything stored about a contact as one JSON document (streamed to the file or stdout)."""
    if key is None:
        key = load_or_create(data_dir or Settings().data_dir)[0][0]["admin_key"]
    out = output.open("wb") if output is not None else sys.stdout.buffer
    written = 0
    try:
        with httpx.stream(
            "GET", f"{url}/v1/contacts/{contact}/export", timeout=120, headers={"Authorization": f"Bearer {key}"}
        ) as r:
            if r.status_code != 200:
                console.print(Text(f"{r.status_code}: {r.read().decode('utf-8', 'replace')[:500]}", style="red"))
                raise typer.Exit(1)
            for chunk in r.iter_bytes():
                out.write(chunk)
                written += len(chunk)
    except httpx.HTTPError as exc:
        console.print(Text(f"cannot reach {url}: {exc}", style="red"))
        raise typer.Exit(2) from None
    finally:
        if output is not None:
            out.close()
    if output is not None:
        console.print(f"wrote {written} bytes to {output}")


if __name__ == "__main__":
    app()
