"""Dead-letter replay on a real ``trailmark up`` (embedded log + chDB): an event the journey builder
cannot store is dead-lettered, replayed after the cause is fixed, stored exactly once, and replaying
again stores nothing new. Through the server's admin routes and with ``--direct`` (server stopped)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import Server
from tests.deadletters.helpers import (
    ADD_CONSTRAINT,
    DROP_CONSTRAINT,
    POISON,
    alter_storage,
    cli,
    listed,
    replayed,
    track,
    wait,
)

pytestmark = pytest.mark.slow
TOKEN = "adm-" + "x" * 28


def stored(server: Server, message_id: str) -> int:
    rows = server.sql(f"SELECT count() AS n FROM trailmark.events WHERE message_id = '{message_id}'")
    return int(rows[0]["n"])


def test_admin_routes_take_the_admin_key_of_a_one_site_install_or_the_admin_token(tmp_path: Path) -> None:
    server = Server(tmp_path / "data").start()
    try:
        url = server.url + "/v1/admin/dead-letters"
        site = server.site
        assert httpx.get(url, timeout=10).status_code == 401
        for other in ("write_key", "read_key"):  # a replay writes: only the admin key opens these
            r = httpx.get(url, headers={"authorization": f"Bearer {site[other]}"}, timeout=10)
            assert r.status_code == 403, (other, r.text)
        ok = httpx.get(url, headers={"authorization": f"Bearer {site['admin_key']}"}, timeout=10)
        assert ok.status_code == 200 and ok.json() == {"rows": [], "total": 0, "next": None}
        bad = httpx.get(
            url, params={"since": "yesterday"}, timeout=10, headers={"authorization": f"Bearer {site['admin_key']}"}
        )
        assert bad.status_code == 400 and "ISO 8601" in bad.text
        refused = cli("list", "--url", server.url, "--token", "ak_wrong")  # the CLI says why, exits 1
        assert refused.returncode == 1 and "401: unknown admin key" in refused.stdout, refused.stdout
        assert listed("--url", server.url, "--data-dir", str(tmp_path / "data")) == []  # admin key from keys.json
    finally:
        server.stop()
    server = Server(tmp_path / "data", env={"TRAILMARK_ADMIN_TOKEN": TOKEN}).start()
    try:  # with a token set, only the token opens them
        url = server.url + "/v1/admin/dead-letters"
        for key in (site["read_key"], site["admin_key"]):
            assert httpx.get(url, headers={"authorization": f"Bearer {key}"}, timeout=10).status_code == 403
        assert httpx.get(url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=10).status_code == 200
    finally:
        server.stop()


def test_a_dead_lettered_event_is_replayed_after_the_fix_and_stored_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"TRAILMARK_ADMIN_TOKEN": TOKEN}
    server = Server(data, env=env).start()  # creates the schema
    server.stop()
    alter_storage(data, ADD_CONSTRAINT)  # the cause: storage refuses one event name
    server = Server(data, env=env).start()
    try:
        via = ("--url", server.url, "--data-dir", str(data))
        events = [track("v1", "ok-1", "Viewed"), track("v1", "bad-1", POISON), track("v1", "ok-2", "Viewed")]
        assert server.post("/v1/batch", {"batch": events}).status_code == 200
        server.wait_for("SELECT count() FROM trailmark.events WHERE message_id IN ('ok-1', 'ok-2')", 2)
        first = wait(lambda: listed(*via, "--stage", "journeys", env=env), "the dead letter")
        assert len(first) == 1 and first[0]["payload_type"] == "enriched_event", first
        assert "replay_test" in first[0]["reason"] and first[0]["replays"] == 0
        assert listed(*via, "--payload-type", "raw_batch", env=env) == []
        assert listed(*via, "--reason", "REPLAY_TEST", "--since", "1h", env=env) == first  # any case, a time range
        assert listed(*via, "--until", "2020-01-01T00:00:00Z", env=env) == []

        # replayed before the fix: it goes through the pipeline and fails again, as a new dead letter
        assert replayed(*via, env=env) == 1
        again = wait(lambda: [r for r in listed(*via, env=env) if r["id"] != first[0]["id"]], "a new dead letter")
        assert again[0]["payload_type"] == "enriched_event" and stored(server, "bad-1") == 0
        shown = cli("show", first[0]["id"], *via, env=env)
        assert shown.returncode == 0 and "replayed:" in shown.stdout and '"message_id": "bad-1"' in shown.stdout
    finally:
        server.stop()

    alter_storage(data, DROP_CONSTRAINT)  # the fix
    # server stopped: --direct opens the store and the embedded log itself; the next start replays it
    direct = ("--direct", "--data-dir", str(data))
    assert [r["replays"] for r in listed(*direct)] == [1, 0]
    assert replayed(*direct) == 1  # only the one never replayed
    server = Server(data, env=env).start()
    try:
        via = ("--url", server.url, "--data-dir", str(data))
        server.wait_for("SELECT count() FROM trailmark.events WHERE message_id = 'bad-1'", 1)
        assert replayed(*via, env=env) == 0  # every dead letter was replayed: nothing to do
        assert replayed(*via, "--again", env=env) == 2  # forced: sent again, and skipped by messageId
        # a later event of the same visitor is behind the replayed ones on the log: once it is stored, so
        # would they be
        assert server.post("/v1/batch", {"batch": [track("v1", "after-1", "Viewed")]}).status_code == 200
        server.wait_for("SELECT count() FROM trailmark.events WHERE message_id = 'after-1'", 1)
        assert stored(server, "bad-1") == 1
        assert stored(server, "ok-1") == 1 and stored(server, "ok-2") == 1
        assert len(listed(*via, env=env)) == 2  # nothing failed again
        assert [r["replays"] for r in listed(*via, "--replayed", env=env)] == [2, 2]
    finally:
        server.stop()
