"""The schema rendered for a ClickHouse cluster (``TRAILMARK_STORAGE__CLUSTER``), checked with
ClickHouse's own parser (chDB's ``formatQuery``), and the single-node form unchanged on chDB.

No cluster runs here (no Keeper, no second server): what is proven is that every rendered statement
parses, carries ON CLUSTER, uses a Replicated engine or a Distributed one with a sharding key, and
keeps the public names the builder, the read API and data-team SQL use.
"""

from __future__ import annotations

import re
import uuid
from importlib import resources

import pytest

from tests.storage.backends import process_chdb
from trailmark.settings import StorageSettings
from trailmark.storage.base import (
    LOCAL_SUFFIX,
    SHARD_KEYS,
    ClusterDDLError,
    ClusterRenderer,
    apply_migrations,
    migrations,
    rendered_migrations,
)
from trailmark.storage.chdb_backend import ChdbStorage

DB = "trailmark"
CLUSTER = "analytics-eu"


def legacy_split(sql: str, database: str) -> list[str]:
    """split_statements as it was before cluster rendering existed: installs must run the same text."""
    out = []
    for chunk in sql.replace("{db}", database).split("\n;\n"):
        body = "\n".join(line for line in chunk.splitlines() if not line.lstrip().startswith("--"))
        if body.strip():
            out.append(body.strip())
    return out


@pytest.fixture(scope="module")
def chdb(tmp_path_factory: pytest.TempPathFactory) -> ChdbStorage:
    return process_chdb(tmp_path_factory)


def parse(store: ChdbStorage, statement: str) -> str:
    """ClickHouse's normalized text of one statement (raises QueryError when it does not parse)."""
    rows = store.query("SELECT formatQuerySingleLine({q:String}) AS q", {"q": statement})
    text: str = rows[0]["q"]
    return text


def single_node() -> dict[str, list[str]]:
    return dict(rendered_migrations(DB))


def cluster() -> dict[str, list[str]]:
    return dict(rendered_migrations(DB, CLUSTER))


def test_single_node_statements_are_byte_identical_to_what_installs_ran() -> None:
    files = migrations()
    assert [n for n, _ in files][:4] == [
        "001_init.sql",
        "002_accounts.sql",
        "003_session_campaign_key.sql",
        "004_dead_letter_replays.sql",
    ]
    assert single_node() == {name: legacy_split(sql, DB) for name, sql in files}


def test_every_cluster_statement_parses_and_runs_on_the_cluster(chdb: ChdbStorage) -> None:
    statements = [s for st in cluster().values() for s in st]
    assert len(statements) > len([s for st in single_node().values() for s in st])
    for statement in statements:
        text = parse(chdb, statement)
        if text.startswith("INSERT INTO "):  # a backfill: once, from one node (test_backfills_...)
            continue
        assert re.match(r"(CREATE|ALTER) ", text), text
        assert f" ON CLUSTER `{CLUSTER}`" in text or f" ON CLUSTER {CLUSTER}" in text, text


def test_backfills_read_and_write_the_distributed_tables(chdb: ChdbStorage) -> None:
    """A summary table's backfill (INSERT ... SELECT) has no ON CLUSTER: run once over the public
    names, it reads every shard's rows and writes each to its visitor's shard, where the table's
    materialized view writes that visitor's later rows."""
    backfills = [s for st in cluster().values() for s in st if s.startswith("INSERT INTO ")]
    assert backfills == [s for st in single_node().values() for s in st if s.startswith("INSERT INTO ")]
    for statement in backfills:
        text = parse(chdb, statement)
        target = re.match(rf"INSERT INTO {DB}\.(\w+) SELECT ", text)
        assert target and LOCAL_SUFFIX not in text, text
        assert SHARD_KEYS[target[1]] == "cityHash64(site_id, anonymous_id)", target[1]
    assert {"device_days", "track_events"} <= {s.split()[2].split(".")[1] for s in backfills}


def _tables(statements: list[str], store: ChdbStorage) -> dict[str, str]:
    """name -> ENGINE clause of every CREATE TABLE, from ClickHouse's normalized text."""
    out = {}
    for statement in statements:
        text = parse(store, statement)
        if m := re.match(rf"CREATE TABLE IF NOT EXISTS {DB}\.(\w+) ", text):
            engine = re.search(r"ENGINE = (\w+)(?:\((.*?)\))?(?: (?:PARTITION|ORDER|SETTINGS|PRIMARY) |$)", text)
            assert engine, text
            out[m[1]] = f"{engine[1]}({engine[2] or ''})"
    return out


def test_merge_tree_tables_become_replicated_local_tables_under_distributed_public_names(chdb: ChdbStorage) -> None:
    plain = _tables([s for st in single_node().values() for s in st], chdb)
    assert set(plain) >= {"events", "sessions_data", "contacts_data", "dead_letters", "dead_letter_replays"}
    rendered = _tables([s for st in cluster().values() for s in st], chdb)
    assert set(rendered) == set(plain) | {t + LOCAL_SUFFIX for t in plain}
    for table, engine in plain.items():
        family = engine.split("(")[0]
        assert family.endswith("MergeTree"), engine
        local = rendered[table + LOCAL_SUFFIX]
        assert local.startswith(f"Replicated{family}("), (table, local)
        path = f"'/clickhouse/tables/{{shard}}/{DB}/{table}{LOCAL_SUFFIX}', '{{replica}}'"
        assert local.split("(", 1)[1].startswith(path), local
        if "(" in engine and engine.split("(", 1)[1].rstrip(")"):  # engine arguments (a version column) kept
            assert local.rstrip(")").endswith(", " + engine.split("(", 1)[1].rstrip(")")), (engine, local)
        dist = rendered[table]
        assert dist == f"Distributed('{CLUSTER}', '{DB}', '{table}{LOCAL_SUFFIX}', {SHARD_KEYS[table]})", dist


def test_one_visitors_rows_share_a_shard() -> None:
    visitor = "cityHash64(site_id, anonymous_id)"
    for table in (
        "events",
        "sessions_data",
        "touchpoints_data",
        "identities_data",
        "stage_transitions_data",
        "account_links_data",
    ):
        assert SHARD_KEYS[table] == visitor, table
    # each ReplacingMergeTree's rows of one key land on one shard, so FINAL per shard is FINAL
    assert SHARD_KEYS["contacts_data"] == "cityHash64(site_id, contact_id)"
    assert SHARD_KEYS["accounts_data"] == "cityHash64(site_id, group_id)"


def test_views_keep_their_names_and_materialized_views_work_on_local_tables(chdb: ChdbStorage) -> None:
    def views(statements: list[str]) -> dict[str, str]:
        out = {}
        for s in statements:
            text = parse(chdb, s)
            if m := re.match(rf"CREATE (?:MATERIALIZED )?VIEW IF NOT EXISTS {DB}\.(\w+) ", text):
                out[m[1]] = text
        return out

    plain = views([s for st in single_node().values() for s in st])
    rendered = views([s for st in cluster().values() for s in st])
    assert (
        set(rendered)
        == set(plain)
        >= {
            "sessions",
            "touchpoints",
            "contacts",
            "identities",
            "identity_map",
            "stage_transitions",
            "accounts",
            "account_contacts",
            "contact_handles_mv",
        }
    )
    for name, text in rendered.items():
        if name.endswith("_mv"):  # inserts reach each shard's local tables: the MV must fire there
            assert re.search(rf"TO {DB}\.\w+{LOCAL_SUFFIX} ", text), text
            assert re.search(rf"FROM {DB}\.\w+{LOCAL_SUFFIX}\b", text), text  # the local table it watches
        else:  # plain views read the Distributed tables: every shard's rows
            assert LOCAL_SUFFIX not in text, text


def test_column_alters_change_the_local_and_the_distributed_table() -> None:
    statements = cluster()["003_session_campaign_key.sql"]
    targets = [s.split(" ON CLUSTER")[0].removeprefix("ALTER TABLE ") for s in statements]
    assert targets == [
        f"{DB}.sessions_data_local",
        f"{DB}.sessions_data",
        f"{DB}.events_local",
        f"{DB}.events",
        f"{DB}.events_local",
        f"{DB}.events",
    ]


def test_merge_settings_change_the_local_tables_only() -> None:
    statements = dict(rendered_migrations(DB, "c1"))["030_merge_selector.sql"]
    assert statements and all(
        re.match(rf"ALTER TABLE {DB}\.\w+{LOCAL_SUFFIX} ON CLUSTER 'c1' MODIFY SETTING merge_selector_base = 10$", s)
        for s in statements
    ), statements


def test_the_merge_at_rest_changes_the_local_tables_only() -> None:
    statements = dict(rendered_migrations(DB, "c1"))["032_compact_at_rest.sql"]
    assert len(statements) == 10 and all(
        re.match(
            rf"ALTER TABLE {DB}\.\w+{LOCAL_SUFFIX} ON CLUSTER 'c1' MODIFY SETTING"
            r" min_age_to_force_merge_seconds = 3600, min_age_to_force_merge_on_partition_only = 1$",
            s,
        )
        for s in statements
    ), statements


def test_every_table_has_a_sharding_key_and_unknown_shapes_are_refused() -> None:
    created = {m[1] for _, sql in migrations() for m in re.finditer(r"CREATE TABLE IF NOT EXISTS \{db\}\.(\w+)", sql)}
    assert created <= set(SHARD_KEYS), created - set(SHARD_KEYS)
    renderer = ClusterRenderer(CLUSTER, StorageSettings().replication_path)
    with pytest.raises(ClusterDDLError, match="no sharding key"):
        renderer.render(f"CREATE TABLE IF NOT EXISTS {DB}.mystery (a String) ENGINE = MergeTree ORDER BY a")
    with pytest.raises(ClusterDDLError, match="MergeTree-family"):
        renderer.render(f"CREATE TABLE IF NOT EXISTS {DB}.events (a String) ENGINE = Log")
    with pytest.raises(ClusterDDLError, match="not a known DDL shape"):
        renderer.render(f"DROP TABLE {DB}.events")
    with pytest.raises(ClusterDDLError, match="cluster name"):
        ClusterRenderer("x' ; DROP", "/p")


class Recorder(ChdbStorage):
    """The process's chDB store, recording the statements it executes."""

    def __init__(self, inner: ChdbStorage, database: str) -> None:  # noqa: D107 (shares inner's sessions)
        self.__dict__.update(inner.__dict__)
        self.database = database
        self.executed: list[str] = []

    def execute(self, sql: str, params: object = None) -> None:
        self.executed.append(sql)
        super().execute(sql)


def test_the_single_node_form_runs_on_chdb_as_before(chdb: ChdbStorage) -> None:
    db = f"t_{uuid.uuid4().hex[:12]}"
    store = Recorder(chdb, db)
    try:
        assert apply_migrations(store, StorageSettings()) == [n for n, _ in migrations()]
        expected = [s for _, sql in migrations() for s in legacy_split(sql, db)]
        assert store.executed[2:] == expected  # after the database and schema_migrations
        assert apply_migrations(store, StorageSettings()) == []  # recorded by name: nothing runs twice
        tables = {
            r["name"]: r["engine"]
            for r in store.query("SELECT name, engine FROM system.tables WHERE database = {d:String}", {"d": db})
        }
        assert tables["events"] == "MergeTree" and tables["dead_letter_replays"] == "MergeTree"
        assert not any(t.endswith(LOCAL_SUFFIX) for t in tables)
        cols = {
            r["name"]: r["default_kind"]
            for r in store.query(
                "SELECT name, default_kind FROM system.columns WHERE database = {d:String} AND table = 'dead_letters'",
                {"d": db},
            )
        }
        assert cols["id"] == "ALIAS"
    finally:
        chdb.execute(f"DROP DATABASE IF EXISTS {db} SYNC")


def test_ddl_files_are_packaged() -> None:
    names = {f.name for f in (resources.files("schemas") / "ddl").iterdir()}
    assert "004_dead_letter_replays.sql" in names
