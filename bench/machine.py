"""What every benchmark needs: a free loopback port, the CPU's name, a checkout's commit, and the
figures printed and appended to bench/RESULTS.md."""

from __future__ import annotations

import platform
import socket
import subprocess
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
