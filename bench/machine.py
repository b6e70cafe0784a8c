"""What every benchmark needs: a free loopback port, a ``trailmark up`` of a checkout started and
ready, a process's CPU time and peak memory, a percentile, the CPU's name, a checkout's commit, a
native read's phases, and the figures printed and appended to bench/RESULTS.md."""

from __future__ import annotations

import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


def peak_rss_mib() -> int:
    """This process's peak resident memory (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return 0


class Phases:
    """A native read's phases in this process (bench/funnel_native.py, attribution_native.py):
    marks of wall time and CPU, trailmark/native's ``feed`` calls timed alone, and the end of a
    round's first stream (the shared devices' map) marked ``map``."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float, float]] = []
        self.fed: list[float] = []
        self.rounds: list[dict[str, tuple[float, float]]] = []
        self.feeds: list[float] = []

    def mark(self, what: str) -> None:
        self.marks.append((what, time.perf_counter(), process_cpu_s(os.getpid())))

    def counter(self, made: Callable[..., Any], counts: str, before: str, after: str) -> Callable[..., Any]:
        """The module's counter class ``made`` with its ``feed`` calls timed and its method ``counts``
        marked ``before`` and ``after``."""
        phases = self

        class Timed:
            def __init__(self, *a: Any) -> None:
                self.inner = made(*a)

            def __getattr__(self, name: str) -> Any:
                method = getattr(self.inner, name)
                if name != counts:
                    return method

                def marked(*a: Any) -> Any:
                    phases.mark(before)
                    out = method(*a)
                    phases.mark(after)
                    return out

                return marked

            def feed(self, block: bytes) -> None:
                t = time.thread_time()
                self.inner.feed(block)
                phases.fed.append(time.thread_time() - t)

        return Timed

    def streams(self, storage: Any) -> None:
        """``storage``'s streams, the end of a round's first marked ``map``."""
        streams = storage.native_blocks

        @contextmanager
        def timed_blocks(sql: str, params: Any, *, settings: Any) -> Iterator[Any]:
            with streams(sql, params, settings=settings) as blocks:
                yield blocks
            if self.marks[-1][0] == "start":
                self.mark("map")

        storage.native_blocks = timed_blocks

    def round(self, read: Callable[[], Any], phases: list[tuple[str, str, str]]) -> None:
        """One ``read``, kept as ``phases``: (name, the mark it starts at, the mark it ends at); the
        read starts at ``start`` and ends at ``done``."""
        self.marks.clear()
        self.fed.clear()
        self.mark("start")
        read()
        self.mark("done")
        at = {name: (t, c) for name, t, c in self.marks}
        self.rounds.append({name: (at[b][0] - at[a][0], at[b][1] - at[a][1]) for name, a, b in phases})
        self.feeds.append(sum(self.fed))

    def table(self) -> str:
        """Each phase's wall time and CPU (the median, then each round's), and the ``feed`` calls'
        CPU, as a markdown table."""
        lines = ["| phase | wall | CPU |", "| --- | ---: | ---: |"]
        for name in self.rounds[0]:
            walls = [r[name][0] for r in self.rounds]
            cpus = [r[name][1] for r in self.rounds]
            lines.append(
                f"| {name} | {statistics.median(walls):.2f} s ({', '.join(f'{w:.2f}' for w in walls)})"
                f" | {statistics.median(cpus):.2f} s ({', '.join(f'{c:.2f}' for c in cpus)}) |"
            )
        lines.append(f"| rows read into the module (its calls alone) | | {statistics.median(self.feeds):.2f} s |")
        return "\n".join(lines)


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
