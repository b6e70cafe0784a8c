"""Erasure and retention on a ClickHouse cluster (``TRAILMARK_STORAGE__CLUSTER``): the statements an
erasure and a retention change run are rendered ON CLUSTER against the replicated ``_local`` tables
(a Distributed table takes no mutation), checked with ClickHouse's own parser (chDB). As for the
schema (test_render.py), no cluster runs here: what is proven is the text each node would receive.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest

from journey_builder import privacy
from tests.storage.backends import process_chdb
from trailmark.settings import StorageSettings
from trailmark.storage.base import LOCAL_SUFFIX, apply_migrations, rendered_migrations
from trailmark.storage.chdb_backend import ChdbStorage

CLUSTER = "analytics-eu"
ON = f"ON CLUSTER `{CLUSTER}`"


class Recorder(ChdbStorage):
    """A migrated single-node database on the process's chDB that records the statements it is
    asked to execute. No Keeper here: a statement rendered for the cluster runs as its single-node
    counterpart (the public table, no ON CLUSTER), so an erasure still does its work and finishes."""

    def __init__(self, inner: ChdbStorage, database: str) -> None:  # noqa: D107 (shares inner's sessions)
        self.__dict__.update(inner.__dict__)
        self.database = database
        self.executed: list[str] = []

    def execute(self, sql: str, params: object = None) -> None:
        self.executed.append(sql)
        single = re.sub(rf"^ALTER TABLE (\S+?)(?:{LOCAL_SUFFIX})? ON CLUSTER '{CLUSTER}'", r"ALTER TABLE \1", sql)
        if single.startswith("ALTER TABLE") and single.split()[2].endswith(LOCAL_SUFFIX):
            raise AssertionError(f"not rendered back: {sql}")
        if not (single != sql and "MODIFY COLUMN" in sql and f"{LOCAL_SUFFIX} ON CLUSTER" not in sql):
            super().execute(single, params)  # type: ignore[arg-type]  # (the Distributed copy is skipped)


@pytest.fixture
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorder]:
    chdb = process_chdb(tmp_path_factory)
    db = f"t_{uuid.uuid4().hex[:12]}"
    rec = Recorder(chdb, db)
    apply_migrations(rec, StorageSettings())
    rec.executed.clear()
    yield rec
    chdb.execute(f"DROP DATABASE IF EXISTS {db} SYNC")


def parsed(store: ChdbStorage, statement: str) -> str:
    text: str = store.query("SELECT formatQuerySingleLine({q:String}) AS q", {"q": statement})[0]["q"]
    return text


def target(text: str) -> str:
    m = re.match(r"ALTER TABLE (\S+) ", text)
    assert m, text
    return m[1]


def test_without_a_cluster_statements_are_unchanged() -> None:
    statement = "ALTER TABLE trailmark.events DELETE WHERE site_id = {s:String} SETTINGS mutations_sync = 2"
    assert privacy.on_cluster(statement, "") == [statement]


def test_an_erasures_deletes_run_on_the_local_tables_of_every_node(store: Recorder) -> None:
    subject = privacy.Subject("s1", "user:u-jane", {"user:u-jane"}, {"jane-laptop"}, {"u-jane"}, {"jane@acme.io"})
    # the public names are the same on a cluster (there: the Distributed tables)
    tables = privacy.erasable_tables(store)
    assert {"events", "sessions_data", "identities_data", "contacts_data"} <= {t for t, _ in tables}
    eraser = privacy.Eraser(store, subject, privacy.new_request("s1", "u-jane"), 0, 1, CLUSTER, tables)
    store.insert(
        "dead_letters",
        [
            {
                "stage": "journeys",
                "reason": "test",
                "payload": '{"user_id":"u-jane"}',
                "payload_encoding": "utf-8",
                "failed_at": "2026-11-02 09:30:00.000",
                "version": 1,
                "site_id": "s1",
                "kind": "build_failed",
            }
        ],
    )
    store.insert(
        "dead_letter_replays",
        [{"dead_letter_id": store.query(f"SELECT id FROM {store.database}.dead_letters")[0]["id"], "replay_id": "r"}],
    )
    privacy.begin(store, eraser)
    eraser.run(sleep=lambda _: None)
    assert eraser.progress.status == "done" and eraser.remaining() == 0

    mutations = [parsed(store, s) for s in store.executed]
    expected = {f"{store.database}.{t}{LOCAL_SUFFIX}" for t, _ in tables}
    expected |= {f"{store.database}.{t}{LOCAL_SUFFIX}" for t in ("dead_letters", "dead_letter_replays")}
    expected.add(f"{store.database}.saved_answers{LOCAL_SUFFIX}")  # the site's kept answers (migration 029)
    expected.add(f"{store.database}.erasure_subjects{LOCAL_SUFFIX}")  # the working copy, once done
    assert {target(m) for m in mutations} == expected
    for text in mutations:
        assert f" {ON} (DELETE WHERE " in text and text.endswith("SETTINGS mutations_sync = 2"), text
    # nothing was mutated through a public (Distributed) name
    assert not [m for m in mutations if not target(m).endswith(LOCAL_SUFFIX)]


def test_a_retention_change_runs_on_the_local_tables_and_the_column_default_on_both(store: Recorder) -> None:
    statements = privacy.retention_statements(store, {"s1": 90}, 0, CLUSTER)
    texts = [parsed(store, s) for s in statements]
    db = store.database
    for table in privacy.RETENTION_TABLES:
        mine = [t for t in texts if target(t).removesuffix(LOCAL_SUFFIX) == f"{db}.{table}"]
        modify = [t for t in mine if re.search(r"MODIFY COLUMN\s+`?retention_days", t)]
        update = [t for t in mine if re.search(r"UPDATE\s+`?retention_days", t)]
        # the column's DEFAULT on the local table and on the Distributed one (same columns), the rows on
        # the local table only
        assert sorted(target(t) for t in modify) == [f"{db}.{table}", f"{db}.{table}{LOCAL_SUFFIX}"], modify
        assert [target(t) for t in update] == [f"{db}.{table}{LOCAL_SUFFIX}"], update
        assert all(ON in t for t in mine)
        assert "mutations_sync = 2" in update[0]
    assert len(texts) == 3 * len(privacy.RETENTION_TABLES)
    # applied on a single node it changes the public tables themselves (what the tests of privacy run)
    assert privacy.retention_statements(store, {"s1": 90})[0].startswith(f"ALTER TABLE {db}.events MODIFY COLUMN")


def test_the_retention_ttl_of_migration_008_is_set_on_the_local_tables() -> None:
    statements = dict(rendered_migrations("trailmark", CLUSTER))["008_retention.sql"]
    ttl = [s for s in statements if "MODIFY TTL" in s]
    assert [s.split(" ON CLUSTER")[0].removeprefix("ALTER TABLE ") for s in ttl] == [
        f"trailmark.{t}{LOCAL_SUFFIX}"
        for t in privacy.RETENTION_TABLES[:4]  # 008's; later ones set their own
    ]
    assert all(f"ON CLUSTER '{CLUSTER}'" in s for s in statements)
