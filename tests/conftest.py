"""Shared fixtures: a real ``trailmark up`` server in a subprocess (chDB allows one data path per
process, so the server, not pytest, owns the store), and a clean environment for every test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import httpx
import orjson
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROME_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(
    proc: subprocess.Popen[bytes], url: str, timeout: float, name: str, tail: Callable[[], str], interval: float = 0.1
) -> None:
    """Wait until ``url`` answers 200; RuntimeError with the process's log if it exits or is too slow."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited {proc.returncode}:\n{tail()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    raise RuntimeError(f"{name} not ready in {timeout}s:\n{tail()}")


class TrailmarkProcess:
    """One ``trailmark <command>`` process on a free port with its own data dir; can be killed -9,
    stopped with SIGTERM and started again."""

    def __init__(self, command: list[str], data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.command = command
        self.data_dir = data_dir
        self.env = env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"{command[0]}-{self.port}.log"

    def start_unready(self, timeout: float = 60) -> Self:
        """Start and return once it answers /healthz (it may still say not ready)."""
        return self.start(timeout, until="/healthz")

    def start(self, timeout: float = 60, until: str = "/readyz") -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRAILMARK_")}
        env.update(self.env)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "trailmark.cli",
                    *self.command,
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )
        wait_until_up(self.proc, f"{self.url}{until}", timeout, str(self.command), self.tail)
        return self

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> float:
        """SIGTERM; returns the seconds until the process exited (kills it after ``timeout``)."""
        started = time.monotonic()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return time.monotonic() - started


class Server(TrailmarkProcess):
    """``trailmark up`` (everything in one process), with helpers to post, read and query."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, args: list[str] | None = None) -> None:
        super().__init__(["up", *(args or [])], data_dir, env)

    @property
    def site(self) -> dict[str, Any]:
        site: dict[str, Any] = orjson.loads((self.data_dir / "keys.json").read_bytes())["sites"][0]
        return site

    def stop(self) -> None:
        self.terminate(20)

    def post(self, path: str, body: Any, key: str | None = None, **kw: Any) -> httpx.Response:
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        headers = {"content-type": "application/json", "user-agent": CHROME_UA, **kw.pop("headers", {})}
        auth = (key if key is not None else self.site["write_key"], "")
        return httpx.post(self.url + path, content=content, headers=headers, auth=auth, timeout=30, **kw)

    def read(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(
            self.url + path, headers={"authorization": f"Bearer {self.site['read_key']}"}, timeout=30, **kw
        )

    def sql(self, query: str) -> list[dict[str, Any]]:
        r = httpx.post(
            self.url + "/v1/sql",
            json={"query": query},
            headers={"authorization": f"Bearer {self.site['read_key']}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        rows: list[dict[str, Any]] = r.json()["rows"]
        return rows

    def wait_for(self, query: str, expected: Any, timeout: float = 20) -> list[dict[str, Any]]:
        """Poll a SQL query until its first value equals ``expected`` (the pipeline is async)."""
        deadline = time.time() + timeout
        rows: list[dict[str, Any]] = []
        while time.time() < deadline:
            rows = self.sql(query)
            if rows and next(iter(rows[0].values())) == expected:
                return rows
            time.sleep(0.2)
        raise AssertionError(f"{query!r} never gave {expected!r}; last: {rows}")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("TRAILMARK_") and key != "TRAILMARK_TEST_KAFKA_BOOTSTRAP":
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One embedded server for the tests that only post and read (fresh ids per test)."""
    srv = Server(tmp_path_factory.mktemp("shared") / "data").start()
    yield srv
    srv.stop()
