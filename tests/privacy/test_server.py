"""Erase and export on a real ``trailmark up`` (embedded log + chDB), through the CLI as an operator
would: a contact stitched over three devices, with a dead letter, is erased; nothing of any of its
identifiers is left in any table or in the log; its late events are dropped; another contact is
untouched; the export holds exactly the stored events. Admin keys: added to an old keys.json, and
kept apart from read and write keys."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import ROOT, Server
from tests.deadletters.helpers import alter_storage, wait

pytestmark = pytest.mark.slow
JANE = ("u-jane", "jane@acme.io", "jane-laptop", "jane-phone", "jane-tablet")
POISON = "Poisoned Event"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAILMARK_")}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "trailmark.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def ev(kind: str, anon: str, minute: int, **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "anonymousId": anon,
        "messageId": f"{anon}-{kind}-{minute}",
        "timestamp": f"2026-11-02T09:{minute:02d}:00Z",
        "context": {"page": {"url": f"https://shop.example/p{minute}", "path": f"/p{minute}"}},
        **fields,
    }


def dump_tables(data_dir: Path) -> dict[str, list[str]]:
    """Every table of the trailmark database as rows of JSON text (the server must be stopped)."""
    code = (
        "import sys, orjson; from pathlib import Path; from trailmark.storage.chdb_backend import ChdbStorage\n"
        "s = ChdbStorage(Path(sys.argv[1]))\n"
        "names = [r['name'] for r in s.query(\"SELECT name FROM system.tables WHERE database = 'trailmark'"
        " AND engine NOT LIKE '%View'\")]\n"
        "out = {n: [orjson.dumps(r).decode() for r in s.query(f'SELECT * FROM trailmark.{n}')] for n in names}\n"
        "s.close(); sys.stdout.write(orjson.dumps(out).decode())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(data_dir / "clickhouse")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    tables: dict[str, list[str]] = orjson.loads(done.stdout)
    return tables


def mentions(tables: dict[str, list[str]], needles: tuple[str, ...]) -> dict[str, list[str]]:
    return {t: hits for t, rows in tables.items() if (hits := [r for r in rows if any(n in r for n in needles)])}


def test_admin_key_is_added_to_an_old_keys_file_and_opens_only_erase_and_export(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    old = {"site_id": "default", "write_key": "wk_" + "w" * 24, "read_key": "rk_" + "r" * 32, "origins": ["*"]}
    (data / "keys.json").write_bytes(orjson.dumps({"sites": [old]}))
    server = Server(data).start()
    try:
        site = server.site
        assert site["admin_key"].startswith("ak_") and {k: site[k] for k in old} == old
        assert stat.S_IMODE((data / "keys.json").stat().st_mode) == 0o600
        assert site["admin_key"] in server.tail()  # printed by `trailmark up` like the other keys
        url = f"{server.url}/v1/contacts/nobody"

        def status(method: str, u: str, key: str | None) -> int:
            headers = {"authorization": f"Bearer {key}"} if key else {}
            return httpx.request(method, u, headers=headers, timeout=10).status_code

        assert status("DELETE", url, None) == 401
        assert status("DELETE", url, "ak_wrong") == 401
        assert status("DELETE", url, site["read_key"]) == 403
        assert status("DELETE", url, site["write_key"]) == 403
        assert status("GET", url + "/export", site["read_key"]) == 403
        assert status("DELETE", url, site["admin_key"]) == 404  # authorised; no such contact
        assert status("GET", f"{server.url}/v1/journeys/nobody", site["admin_key"]) == 403
        assert status("GET", f"{server.url}/v1/erasures/abc", site["admin_key"]) == 404
    finally:
        server.stop()
    again = Server(data).start()  # a later start keeps the key it added
    try:
        assert again.site["admin_key"] == site["admin_key"]
    finally:
        again.stop()


def test_erase_a_stitched_contact_through_the_cli(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(data).start()  # creates the schema
    server.stop()
    # a CHECK constraint refuses one event name: the journey builder dead-letters that event of Jane's
    alter_storage(data, f"ALTER TABLE trailmark.events ADD CONSTRAINT IF NOT EXISTS poison CHECK event != '{POISON}'")
    server = Server(data).start()
    try:
        r = server.post(
            "/v1/batch",
            {
                "batch": [
                    ev("page", "jane-laptop", 0),
                    ev("identify", "jane-laptop", 1, userId="u-jane", traits={"email": "jane@acme.io"}),
                    ev("group", "jane-laptop", 2, userId="u-jane", groupId="acme", traits={"name": "Acme"}),
                    ev("page", "jane-phone", 10),
                    ev("identify", "jane-phone", 11, userId="u-jane"),
                    ev("page", "jane-tablet", 20),
                    ev("identify", "jane-tablet", 21, traits={"email": "jane@acme.io"}),
                    ev("track", "jane-tablet", 22, event="Order Completed", properties={"total": 42}),
                    ev("track", "jane-phone", 23, event=POISON),
                    ev("page", "bob-1", 5),
                    ev("identify", "bob-1", 6, userId="u-bob", traits={"email": "bob@globex.com"}),
                ]
            },
        )
        assert r.status_code == 200 and r.json()["accepted"] == 11, r.text
        server.wait_for("SELECT count() FROM trailmark.events", 10)
        wait(
            lambda: (
                server.sql("SELECT count() AS n FROM trailmark.dead_letters WHERE payload LIKE '%jane-phone%'")[0]["n"]
                == 1
            ),
            "the dead letter",
        )

        exported = tmp_path / "jane.json"
        done = cli("export", "u-jane", "-o", str(exported), "--url", server.url, "--data-dir", str(data))
        assert done.returncode == 0, done.stdout + done.stderr
        doc = orjson.loads(exported.read_bytes())
        stored = server.sql(
            "SELECT * FROM trailmark.events WHERE anonymous_id LIKE 'jane-%' ORDER BY timestamp, message_id"
        )
        for row in stored:
            for c in ("properties", "traits", "context", "extra"):
                row[c] = orjson.loads(row[c])
        assert len(stored) == 8 and doc["events"] == stored  # the export round-trips the stored events
        assert {i["anonymous_id"] for i in doc["identities"]} == {"jane-laptop", "jane-phone", "jane-tablet"}

        bob_before = server.sql("SELECT * FROM trailmark.events WHERE anonymous_id = 'bob-1' ORDER BY message_id")
        done = cli("erase", "jane@acme.io", "--url", server.url, "--data-dir", str(data))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "erasing" in done.stdout and "done: erased" in done.stdout, done.stdout
        request_id = done.stdout.split("erasure ", 1)[1].split(":", 1)[0]
        state = httpx.get(
            f"{server.url}/v1/erasures/{request_id}",
            timeout=10,
            headers={"authorization": f"Bearer {server.site['admin_key']}"},
        ).json()
        assert state["status"] == "done" and state["identifiers"] == 5

        # the log: its records of Jane are gone, bytes included (the server keeps running)
        for name in ("events.sqlite3", "events.sqlite3-wal"):
            path = data / "log" / name
            blob = path.read_bytes() if path.exists() else b""
            assert not [n for n in JANE if n.encode() in blob], name
        assert b"bob-1" in (data / "log" / "events.sqlite3").read_bytes()

        # late and replayed events of her identifiers are dropped; Bob's are stored
        r = server.post(
            "/v1/batch",
            {
                "batch": [
                    ev("page", "jane-phone", 40),
                    ev("identify", "new-device", 41, userId="u-jane"),
                    ev("page", "bob-1", 42),
                ]
            },
        )
        assert r.status_code == 200
        server.wait_for("SELECT count() FROM trailmark.events WHERE anonymous_id = 'bob-1'", 3)
        # dropped as early as enrichment (the embedded log runs enrichment and the builder as one stage);
        # the runner counts a batch's drops once its output is written and committed, a moment after
        # bob-1's row is visible
        dropped = 'trailmark_stage_dropped_total{reason="erased",stage="enrich+journeys"} 2.0'
        wait(lambda: dropped in httpx.get(f"{server.url}/metrics", timeout=10).text, "the erased events counted", 20)
        bob_after = server.sql(
            "SELECT * FROM trailmark.events WHERE anonymous_id = 'bob-1' AND minute(timestamp) < 40 ORDER BY message_id"
        )
        assert bob_after == bob_before
    finally:
        server.stop()
    tables = dump_tables(data)
    assert mentions(tables, JANE) == {}  # every table, views' base tables, dead letters, replays
    assert mentions(tables, ("u-bob", "bob@globex.com", "bob-1")).keys() >= {
        "events",
        "sessions_data",
        "identities_data",
        "contacts_data",
        "contact_handles",
        "contact_devices",
    }
    assert len(tables["suppressed_identifiers"]) == 5 and tables["erasure_requests"]


def test_an_erasure_the_server_died_in_resumes_after_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # a long settle time: the erasure cannot finish before the kill, which comes once it has begun deleting
    server = Server(data, env={"TRAILMARK_PRIVACY__ERASE_SETTLE_S": "300"}).start()
    admin = {"authorization": f"Bearer {server.site['admin_key']}"}
    try:
        r = server.post(
            "/v1/batch",
            {
                "batch": [
                    ev("page", "jane-laptop", 0),
                    ev("identify", "jane-laptop", 1, userId="u-jane", traits={"email": "jane@acme.io"}),
                    ev("page", "jane-phone", 10),
                    ev("identify", "jane-phone", 11, userId="u-jane"),
                    ev("page", "bob-1", 5),
                    ev("identify", "bob-1", 6, userId="u-bob", traits={"email": "bob@globex.com"}),
                ]
            },
        )
        assert r.status_code == 200, r.text
        server.wait_for("SELECT count() FROM trailmark.events", 6)
        started = httpx.delete(f"{server.url}/v1/contacts/u-jane", headers=admin, timeout=30)
        assert started.status_code == 202, started.text
        request_id = started.json()["request_id"]
        status_url = f"{server.url}/v1/erasures/{request_id}"

        def progress() -> dict[str, Any]:
            state: dict[str, Any] = httpx.get(status_url, headers=admin, timeout=30).json()
            return state

        wait(lambda: progress()["steps_done"] >= 2, "the erasure to begin deleting", timeout=60)
        server.kill()  # -9, between two steps or inside one
    finally:
        server.stop()

    server = Server(data, env={"TRAILMARK_PRIVACY__ERASE_SETTLE_S": "0.2"}).start()
    try:
        admin = {"authorization": f"Bearer {server.site['admin_key']}"}
        status_url = f"{server.url}/v1/erasures/{request_id}"
        first = httpx.get(status_url, headers=admin, timeout=30).json()
        assert first["status"] in ("running", "done"), first  # picked up again, not "interrupted"
        wait(lambda: httpx.get(status_url, headers=admin, timeout=30).json()["status"] == "done", "the erasure")
        done = httpx.get(status_url, headers=admin, timeout=30).json()
        assert done["detail"] == "erased" and done["steps_done"] == done["steps_total"]
    finally:
        server.stop()
    tables = dump_tables(data)
    assert mentions(tables, ("u-jane", "jane@acme.io", "jane-laptop", "jane-phone")) == {}
    assert mentions(tables, ("u-bob", "bob-1")).keys() >= {"events", "identities_data", "contacts_data"}
    assert tables["erasure_subjects"] == []
