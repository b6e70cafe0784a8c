"""Company lookups that hang, for bench/enrich.py --lookups-hang: the real lookup worker (in its own
thread and event loop, beside enrichment, as ``trailmark up`` runs it) asked for every company domain
of the mix, while every source it asks never answers: a TCP server on loopback that accepts and says
nothing (website, robots.txt, RDAP) and a UDP port that never replies (DNS). Storage is a real chDB
folder in a temporary directory."""

from __future__ import annotations

import asyncio
import socket
import tempfile
import threading
from pathlib import Path
from types import TracebackType

from enrich.companies import CompanyWorker, LookupRequests
from trailmark.settings import CompaniesSettings
from trailmark.storage.base import apply_migrations
from trailmark.storage.chdb_backend import ChdbStorage


class HungLookups:
    def __init__(self) -> None:
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.held: list[socket.socket] = []
        port, udp_port = self.tcp.getsockname()[1], self.udp.getsockname()[1]
        self.settings = CompaniesSettings(
            enabled=True,
            url_template=f"http://127.0.0.1:{port}/?domain={{domain}}",
            rdap_base_url=f"http://127.0.0.1:{port}/rdap",
            dns_nameserver=f"127.0.0.1:{udp_port}",
            ports=[port],
            allow_private_targets=["127.0.0.1/32"],
            timeout_s=3600,
            dns_timeout_s=3600,
            per_host_interval_s=0,
        )
        self.wanted = LookupRequests(self.settings.queue_size, self.settings.refresh_age_s)
        self._tmp = tempfile.TemporaryDirectory()
        self.storage = ChdbStorage(Path(self._tmp.name), "bench_companies", read_sessions=1)
        apply_migrations(self.storage)
        self.worker = CompanyWorker(self.settings, self.storage, self.wanted)
        self.loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            self.held.append(conn)  # read nothing, answer nothing

    def _run(self) -> None:
        self._task = self.loop.create_task(self.worker.run(poll_s=0.05))
        try:
            self.loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass

    def __enter__(self) -> HungLookups:
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._run, daemon=True).start()
        return self

    @property
    def hanging(self) -> int:
        """Connections the worker holds open to the silent server."""
        return len(self.held)

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._task is not None:
            self.loop.call_soon_threadsafe(self._task.cancel)
        self.tcp.close()
        self.udp.close()
        for conn in self.held:
            conn.close()
