"""The ``trailmark`` command: run the pipeline (all stages or one) and query it."""

from __future__ import annotations

import csv
import gc
import io
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import orjson
import typer
import uvicorn
from rich.console import Console
from rich.table import Table
from rich.text import Text

from trailmark.app import ROLES, create_app
from trailmark.keys import KeysError, load_or_create
from trailmark.settings import Settings

app = typer.Typer(help="trailmark: website behaviour -> customer journeys in ClickHouse.", no_args_is_help=True)
console = Console()

Host = Annotated[str | None, typer.Option(help="listen address (default 127.0.0.1, env TRAILMARK_HOST)")]
Port = Annotated[int | None, typer.Option(help="listen port (default 8000, env PORT)")]
DataDir = Annotated[Path | None, typer.Option("--data-dir", help="data folder (default ./data, env DATA_DIR)")]
Bus = Annotated[str | None, typer.Option("--bus", help="embedded (default) or kafka")]
Kafka = Annotated[str | None, typer.Option("--kafka", help="Kafka bootstrap servers, host:port")]


def _settings(host: str | None, port: int | None, data_dir: Path | None, bus: str | None,
              kafka: str | None) -> Settings:
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
    if announce:
        site = sites[0]
        base = f"http://{s.host}:{s.port}"
        console.print(f"[bold]trailmark[/bold] {'created' if created else 'using'} {s.data_dir / 'keys.json'}")
        console.print(f"  site:      {site['site_id']}")
        console.print(f"  write key: {site['write_key']}")
        console.print(f"  read key:  {site['read_key']}")
        console.print("  script tag:")
        print(f'    <script defer src="{base}/t.js" data-key="{site["write_key"]}"></script>', flush=True)
        console.print(f"  journeys:  curl -H 'Authorization: Bearer {site['read_key']}' {base}/v1/journeys/ID")
        console.print(f"  bus: {s.bus.kind}   storage: {'ClickHouse server' if s.clickhouse_url else 'chDB'}")
    app_ = create_app(s, sites, roles)
    # Long-lived objects (routes, schemas, parsers) move out of the collector's way, and gen-0
    # collections run less often: request handling allocates many short-lived dicts.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    config = uvicorn.Config(app_, host=s.host, port=s.port, log_level="warning",
                            access_log=False, timeout_graceful_shutdown=15)
    uvicorn.Server(config).run()


@app.command()
def up(host: Host = None, port: Port = None, data_dir: DataDir = None, bus: Bus = None,
       kafka: Kafka = None) -> None:
    """Run collector + enrichment + journey builder in one process (embedded log + chDB by default)."""
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
        r = httpx.post(f"{url}/v1/sql", json={"query": query}, headers={"Authorization": f"Bearer {key}"},
                       timeout=120)
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


if __name__ == "__main__":
    app()
