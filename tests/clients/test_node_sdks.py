"""@segment/analytics-node 3.1.0 and @rudderstack/rudder-sdk-node 3.0.13, unmodified, run by node
against the real server: every call stored once, at the client's time (RudderStack sends only
``originalTimestamp`` + ``sentAt``), with the right person and account; a bad write key stops them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.clients.conftest import account, by_message_id, contact, parse_time, run_id, run_node, wait_stored
from tests.conftest import Server


def drive(sdk: str, server: Server, batched: bool, key: str | None = None) -> dict[str, Any]:
    rid = run_id()
    seen = run_node("node_driver.mjs", {"sdk": sdk, "host": server.url, "writeKey": key or server.site["write_key"],
                                        "run": rid, "batched": batched})  # fmt: skip
    seen["run"] = rid
    return seen


@pytest.mark.parametrize("sdk", ["segment", "rudder"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_every_call_is_stored_once_at_the_client_time(server: Server, sdk: str, batched: bool) -> None:
    seen = drive(sdk, server, batched)
    assert seen["errors"] == [], seen
    rid = seen["run"]
    sent = {s["messageId"]: s for s in seen["sent"]}
    rows = wait_stored(server, f"message_id IN ({', '.join(repr(m) for m in sent)})", len(sent))
    assert by_message_id(rows) == dict.fromkeys(sent, 1)
    assert sorted(r["type"] for r in rows) == ["alias", "group", "identify", "page", "screen", "track"]
    for r in rows:
        client_time = parse_time(sent[r["message_id"]]["time"])
        assert abs(parse_time(r["timestamp"]) - client_time) < timedelta(seconds=1), (sdk, r)
        assert abs(parse_time(r["original_timestamp"]) - client_time) < timedelta(seconds=1), (sdk, r)
    if sdk == "segment" and batched:  # the SDK's own report of its requests: batches, not one per call
        assert 1 <= len(seen["requests"]) < len(sent), seen["requests"]
    by_type = {r["type"]: r for r in rows}
    assert by_type["track"]["properties"] == {"revenue": 42.5, "currency": "EUR"}
    assert by_type["track"]["extra"]["integrations"] == {"All": False, "Mixpanel": True}
    assert by_type["identify"]["context"]["library"]["name"]
    if sdk == "rudder":  # what RudderStack adds at the top level is kept too
        assert by_type["track"]["extra"]["channel"] == "server" and "_metadata" in by_type["track"]["extra"]
    person = contact(server, f"user:u-{rid}")
    assert (person["first_name"], person["last_name"], person["email"]) == ("Ann", "Lee", f"ann-{rid}@acme.io")
    acct = account(server, f"g-{rid}")
    assert (acct["name"], acct["domain"], acct["traits"]["employees"]) == ("Acme Inc", "acme.io", 120)
    journey = server.read(f"/v1/journeys/u-{rid}").json()
    assert [a["name"] for a in journey["accounts"]] == ["Acme Inc"]


@pytest.mark.parametrize("sdk", ["segment", "rudder"])
def test_a_bad_write_key_stops_the_client(server: Server, sdk: str) -> None:
    seen = drive(sdk, server, batched=True, key="wk_not_a_key")
    assert seen["errors"], seen
    if sdk == "rudder":
        assert {e["status"] for e in seen["errors"]} == {401}
        assert all(e["body"]["code"] == "unauthorized" for e in seen["errors"])
    else:
        assert all("401" in e["reason"] for e in seen["errors"]), seen["errors"]
        assert len(seen["requests"]) <= 2, seen["requests"]  # one per batch: no retries
    assert seen["seconds"] < 10, seen
