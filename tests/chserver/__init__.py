"""The chDB-backed ClickHouse HTTP endpoint for tests (see server.py for what it covers), run as its
own process, and the pytest fixtures that give its URL.

``clickhouse_url`` is ``CLICKHOUSE_URL`` when set (a real server), else the shared endpoint's URL;
``ClickHouseEndpoint`` can be stopped and started again on the same port and data path (outage
tests use their own instance, so the shared one never goes down under other tests).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest

from tests.conftest import ROOT, free_port, wait_until_up


class ClickHouseEndpoint:
    """``python -m tests.chserver.server`` on a free port with its own chDB data path."""

    def __init__(self, path: Path, port: int | None = None) -> None:
        self.path = path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = path.parent / f"chserver-{self.port}.log"

    def start(self, timeout: float = 60) -> Self:
        self.path.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRAILMARK_")}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.chserver.server", "--port", str(self.port), "--path", str(self.path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )
        wait_until_up(self.proc, f"{self.url}/ping", timeout, "chserver", self.tail, interval=0.05)
        return self

    def stop(self, kill: bool = False, timeout: float = 20) -> None:
        """SIGTERM (uvicorn finishes the requests in flight), or SIGKILL with ``kill=True``."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


# One shared endpoint for the whole session, whichever conftest or module asks for it first: the
# fixture is imported into several conftest files (each import is its own fixture definition), and
# the endpoint stops when the last of them is torn down.
_SHARED: list[ClickHouseEndpoint] = []
_USERS: list[int] = [0]


@pytest.fixture(scope="session")
def clickhouse_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseEndpoint]:
    """The shared chDB-backed ClickHouse HTTP endpoint."""
    if not _SHARED:
        _SHARED.append(ClickHouseEndpoint(tmp_path_factory.mktemp("chserver") / "data").start())
    _USERS[0] += 1
    yield _SHARED[0]
    _USERS[0] -= 1
    if not _USERS[0]:
        _SHARED.pop().stop()


@pytest.fixture(scope="session")
def clickhouse_url(request: pytest.FixtureRequest) -> str:
    """``CLICKHOUSE_URL`` (a real server) when set, else the shared endpoint's URL."""
    url = os.environ.get("CLICKHOUSE_URL", "")
    if url:
        return url
    endpoint: ClickHouseEndpoint = request.getfixturevalue("clickhouse_endpoint")
    return endpoint.url
