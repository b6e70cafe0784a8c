"""Running ``trailmark dead-letters`` as a user would, and breaking (then fixing) the journey builder's
storage in a way only some events hit: a CHECK constraint on ``trailmark.events`` that refuses one
event name. The builder's insert fails for that event alone (the batch is split until it is alone),
so it is dead-lettered; dropping the constraint is the fix, after which a replay stores it.

chDB opens a data folder in one process only: the constraint is added and dropped by a short
subprocess while the process that owns the folder is stopped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from tests.conftest import ROOT

POISON = "Poisoned Event"
ADD_CONSTRAINT = f"ALTER TABLE trailmark.events ADD CONSTRAINT IF NOT EXISTS replay_test CHECK event != '{POISON}'"
DROP_CONSTRAINT = "ALTER TABLE trailmark.events DROP CONSTRAINT IF EXISTS replay_test"


def alter_storage(data_dir: Path, statement: str) -> None:
    """Run one statement on the chDB store of a stopped trailmark process."""
    code = (
        "import sys; from pathlib import Path; from trailmark.storage.chdb_backend import ChdbStorage; "
        "s = ChdbStorage(Path(sys.argv[1])); s.execute(sys.argv[2]); s.close()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(data_dir / "clickhouse"), statement],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``trailmark dead-letters ARGS`` in a subprocess with a clean environment plus ``env``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("TRAILMARK_")}
    full.update(env or {})
    full["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "trailmark.cli", "dead-letters", *args],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def listed(*args: str, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    done = cli("list", "--format", "json", "--limit", "1000", *args, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    rows: list[dict[str, Any]] = orjson.loads(done.stdout)
    return rows


def replayed(*args: str, env: dict[str, str] | None = None) -> int:
    """Replay; the number of dead letters it sent (from its summary line)."""
    done = cli("replay", *args, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "replaying" in done.stdout, done.stdout  # the progress bar
    line = next(x for x in done.stdout.splitlines() if x.startswith("replayed "))
    return int(line.split()[1])


def wait(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll until ``check()`` is truthy; its value."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def track(visitor: str, message_id: str, name: str) -> dict[str, Any]:
    return {
        "type": "track",
        "anonymousId": visitor,
        "messageId": message_id,
        "event": name,
        "timestamp": "2026-11-02T09:00:00Z",
        "properties": {"n": 1},
    }
