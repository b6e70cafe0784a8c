"""What every benchmark needs: a free loopback port, a ``trailmark up`` of a checkout started and
ready, a process's CPU time, a percentile, the CPU's name, a checkout's commit, and the figures
printed and appended to bench/RESULTS.md."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (and its threads: chDB's), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def up(code: Path, data: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``trailmark up`` of checkout ``code`` on folder ``data``, on a free port: the process and its
    base URL, once /readyz says ready (up to two minutes: a large folder's first start takes a while)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "trailmark.cli", "up", "--port", str(port), "--data-dir", str(data)],
        cwd=code,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                return server, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.terminate()
    server.wait(60)
    raise RuntimeError(f"trailmark up of {code} on {data} was not ready in two minutes")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def commit_of(checkout: Path) -> str:
    """The short commit a checkout is at ("?" if it is not a git checkout)."""
    got = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return got.stdout.strip() or "?"


def report(text: str, record: bool) -> None:
    """Print a bench's section, and with ``record`` append it to bench/RESULTS.md."""
    print(text)
    if record:
        with open(RESULTS, "a") as f:
            f.write(text)
