"""A 100M-event data folder for bench/journeys.py, made from a 10M one by replication.

    .venv/bin/python bench/replicate.py --source /work/bench-data/10m --target /work/bench-data/100m \
        [--copies 10]

Loading 100M events through the journey builder on this 2-core machine would take 5+ hours (10M took
1,870 s at ~5.3k events/s then; ~18k events per CPU second now). Instead the folder of a
``bench/journeys.py --keep`` load is copied and every table the builder writes (events, sessions,
touchpoints, identities, contacts, stage transitions, ...) gets ``copies - 1`` more copies of its
rows, each with every identifier suffixed ``~<copy>`` (visitor, user, contact, email, session,
message and touchpoint ids, the same way in every table, so the copies join as the original does).
The materialized views fill their tables (event keys, funnel steps, track events, device days,
interests, stage entries, session touches, contact handles and devices) from those inserts, as they
do for the builder's. The result: ``copies`` times the visitors, contacts and events, with the
original's distributions (the same times, channels, pages and conversions per visitor).

What it is not: a load through the builder (no load time of the builder at 100M is measured here;
the replication time is given for what it is), nor data with 10x the distinct pages or times.
Writes ``load.json`` (events, visitors, sample users and visitors of every copy) for
``bench/journeys.py --data``.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trailmark.storage import apply_migrations  # noqa: E402
from trailmark.storage.chdb_backend import ChdbStorage  # noqa: E402

# Columns that hold an identifier of a visitor, person, session, event or touchpoint.
ID_COLUMNS = {"anonymous_id", "user_id", "contact_id", "email", "session_id", "message_id", "touchpoint_id"}


def remap(column: str) -> str:
    return f"if(`{column}` = '', '', concat(`{column}`, '~', toString(c.number)))"


def base_tables(st: ChdbStorage) -> list[str]:
    """MergeTree tables with rows that no materialized view writes (the builder's own), events first."""
    views = st.query(
        "SELECT create_table_query AS q FROM system.tables WHERE database = {d:String} AND engine = 'MaterializedView'",
        {"d": st.database},
    )
    targets = {m.group(1) for v in views if (m := re.search(r"\bTO\s+\w+\.`?(\w+)`?", v["q"]))}
    rows = st.query(
        "SELECT name FROM system.tables WHERE database = {d:String} AND engine LIKE '%MergeTree'"
        " AND total_rows > 0 AND name != 'schema_migrations' ORDER BY name = 'events' DESC, name",
        {"d": st.database},
    )
    return [r["name"] for r in rows if r["name"] not in targets]


def replicate(st: ChdbStorage, table: str, copies: int) -> float:
    columns = st.query(
        "SELECT name FROM system.columns WHERE database = {d:String} AND table = {t:String}"
        " AND default_kind IN ('', 'DEFAULT') ORDER BY position",
        {"d": st.database, "t": table},
    )
    names = [c["name"] for c in columns]
    select = ", ".join(remap(n) if n in ID_COLUMNS else f"`{n}`" for n in names)
    started = time.perf_counter()
    st.execute(
        f"INSERT INTO {st.database}.{table} ({', '.join(f'`{n}`' for n in names)})"
        f" SELECT {select} FROM {st.database}.{table} CROSS JOIN numbers(1, {copies - 1}) AS c"
        " SETTINGS max_threads = 2, max_insert_threads = 2"
    )
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", type=Path, required=True, help="a bench/journeys.py --keep folder")
    ap.add_argument("--target", type=Path, required=True)
    ap.add_argument("--copies", type=int, default=10)
    args = ap.parse_args()
    if args.target.exists():
        raise SystemExit(f"{args.target} exists")
    started = time.perf_counter()
    shutil.copytree(args.source, args.target, symlinks=True)
    st = ChdbStorage(args.target / "clickhouse", "trailmark")
    apply_migrations(st)
    info: dict[str, Any] = orjson.loads((args.source / "load.json").read_bytes())
    took = {t: round(replicate(st, t, args.copies), 1) for t in base_tables(st)}
    insert_s = time.perf_counter() - started
    events = st.query("SELECT count() AS n FROM trailmark.events")[0]["n"]
    rng = random.Random(11)
    users = [u if k == 0 else f"{u}~{k}" for u in info["users"] for k in [rng.randrange(args.copies)]]
    sample = "SELECT any(anonymous_id) AS a FROM trailmark.events GROUP BY cityHash64(anonymous_id) % 997"
    anons = [r["a"] for r in st.query(sample)]
    load = {
        "events": events,
        "visitors": info["visitors"] * args.copies,
        "users": users,
        "anons": anons,
        "load_s": info["load_s"],
        "replicated_from": str(args.source),
        "copies": args.copies,
        "replicate_s": round(insert_s, 1),
        "tables_s": took,
    }
    (args.target / "load.json").write_bytes(orjson.dumps(load))
    size = subprocess.run(["du", "-sh", str(args.target)], capture_output=True, text=True).stdout.split()[0]
    print(orjson.dumps({k: v for k, v in load.items() if k not in ("users", "anons")} | {"disk": size}).decode())


if __name__ == "__main__":
    main()
