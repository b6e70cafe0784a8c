"""segment-analytics-python 2.4.0, analytics-python 1.4 and rudder-sdk-python 2.1.9, unmodified,
against the real server: every call stored once, at the client's time, with the right person and
account; a bad write key makes the client stop at once (it reads ``code``/``message``)."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from typing import Any

import orjson
import pytest

from tests.clients.conftest import (
    HERE,
    PY14,
    PY14_REQUIREMENT,
    account,
    by_message_id,
    contact,
    need,
    parse_time,
    run_id,
    wait_stored,
)
from tests.conftest import Server

SDKS = {  # name -> (module, interpreter)
    "segment-analytics-python": ("segment.analytics", sys.executable),
    "rudder-sdk-python": ("rudderstack.analytics", sys.executable),
    "analytics-python-1.4": ("analytics", str(PY14)),
}


def drive(sdk: str, server: Server, *, sync: bool, gzip: bool, key: str | None = None) -> dict[str, Any]:
    module, python = SDKS[sdk]
    if python == str(PY14):
        need(PY14.exists(), f"{PY14_REQUIREMENT} is not installed in .cache/clients/py14 (make test does it)")
    else:
        try:
            __import__(module + ".client")
        except ImportError:
            need(False, f"{sdk} is not installed (pip install -e '.[dev]')")
    rid = run_id()
    args = {
        "module": module,
        "host": server.url,
        "write_key": key or server.site["write_key"],
        "run": rid,
        "sync": sync,
        "gzip": gzip,
    }
    proc = subprocess.run([python, str(HERE / "py_driver.py"), orjson.dumps(args).decode()], capture_output=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()[-4000:]
    out: dict[str, Any] = orjson.loads(proc.stdout.decode().strip().splitlines()[-1])
    out["run"] = rid
    return out


@pytest.mark.parametrize("sdk", sorted(SDKS))
@pytest.mark.parametrize("sync, gzip", [(False, True), (True, False)], ids=["batched-gzip", "unbatched"])
def test_every_call_is_stored_once_at_the_client_time(server: Server, sdk: str, sync: bool, gzip: bool) -> None:
    seen = drive(sdk, server, sync=sync, gzip=gzip)
    assert seen["errors"] == [] and all(s["ok"] for s in seen["sent"]), seen
    rid = seen["run"]
    sent = {s["messageId"]: s for s in seen["sent"]}
    rows = wait_stored(server, f"message_id IN ({', '.join(repr(m) for m in sent)})", len(sent))
    assert by_message_id(rows) == dict.fromkeys(sent, 1)
    assert sorted(r["type"] for r in rows) == ["alias", "group", "identify", "page", "screen", "track"]
    for r in rows:
        client_time = parse_time(sent[r["message_id"]]["timestamp"])
        assert abs(parse_time(r["timestamp"]) - client_time) < timedelta(seconds=1), (sdk, r)
        assert abs(parse_time(r["original_timestamp"]) - client_time) < timedelta(milliseconds=2), (sdk, r)
        assert r["user_id"] == f"u-{rid}"
    by_type = {r["type"]: r for r in rows}
    assert by_type["track"]["event"] == "Order Completed"
    assert orjson.loads(orjson.dumps(by_type["track"]["properties"])) == {"revenue": 42.5, "currency": "EUR"}
    assert by_type["track"]["extra"]["integrations"] == {"All": False, "Mixpanel": True}
    assert by_type["identify"]["context"]["locale"] == "de-DE" and by_type["identify"]["context"]["library"]["name"]
    assert by_type["page"]["page_path"] == "/docs/install"
    # the person comes from identify traits only; the group's traits describe the account
    person = contact(server, f"user:u-{rid}")
    assert (person["first_name"], person["last_name"], person["email"]) == ("Ann", "Lee", f"ann-{rid}@acme.io")
    acct = account(server, f"g-{rid}")
    assert (acct["name"], acct["domain"], acct["traits"]["employees"]) == ("Acme Inc", "acme.io", 120)
    members = server.sql(f"SELECT contact_id FROM trailmark.account_contacts WHERE group_id = 'g-{rid}'")
    assert {m["contact_id"] for m in members} == {f"user:u-{rid}"}
    journey = server.read(f"/v1/journeys/u-{rid}").json()
    assert [a["group_id"] for a in journey["accounts"]] == [f"g-{rid}"]
    assert journey["accounts"][0]["traits"]["website"] == "https://www.acme.io"


@pytest.mark.parametrize("sdk", sorted(SDKS))
def test_a_bad_write_key_stops_the_client(server: Server, sdk: str) -> None:
    seen = drive(sdk, server, sync=False, gzip=True, key="wk_not_a_key")
    # each batch (the client may cut the six calls into two) fails once with a 401 read as the API's
    # error (not a KeyError retried with backoff), and nothing is retried
    errors = seen["errors"]
    assert errors and sum(e["events"] for e in errors) == 6, errors
    for error in errors:
        assert (error["type"], error["status"], error["code"]) == ("APIError", 401, "unauthorized"), error
        assert "write key" in error["message"]
    assert seen["seconds"] < 8, seen  # ten retries with backoff would take far longer
