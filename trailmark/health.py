"""Whether a stage is doing its work: read by /readyz, exported to /metrics."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge

from trailmark.results import describe
from trailmark.settings import HealthSettings

HEALTHY = Gauge("trailmark_stage_healthy", "1 while a stage makes progress, 0 when it crash-loops or stalls", ["stage"])
RESTARTS = Counter("trailmark_stage_restarts_total", "Times a stage crashed and was restarted", ["stage"])


class StageHealth:
    """Whether a stage is doing its work; read by /readyz, exported as ``trailmark_stage_healthy``.

    Unhealthy when the stage crash-loops (``crash_loop_restarts`` restarts without progress in
    between) or stalls: a batch in flight, polls failing or records waiting, and no progress for
    ``stall_after_s``. Progress is a committed batch, or a poll that found nothing to do.
    """

    def __init__(self, stage: str, settings: HealthSettings) -> None:
        self.stage = stage
        self.settings = settings
        self.crashes_in_a_row = 0
        self.last_error = ""
        self.last_progress = time.monotonic()
        self.busy_since: float | None = None  # a batch taken and not committed yet
        self.poll_failing = False
        self.lag = 0

    def export(self) -> None:
        """Export this stage's gauge and restart counter (only for stages this process runs)."""
        HEALTHY.labels(self.stage).set_function(lambda: 0.0 if self.problem() else 1.0)
        RESTARTS.labels(self.stage)

    def progressed(self) -> None:
        self.last_progress = time.monotonic()
        self.crashes_in_a_row = 0
        self.busy_since = None
        self.poll_failing = False

    def busy(self) -> None:
        self.busy_since = time.monotonic()

    def crashed(self, exc: BaseException) -> None:
        self.crashes_in_a_row += 1
        self.last_error = describe(exc)[:300]
        self.busy_since = None
        RESTARTS.labels(self.stage).inc()

    def problem(self) -> str | None:
        """Why the stage is not healthy, or None."""
        if self.crashes_in_a_row >= self.settings.crash_loop_restarts:
            return f"crash-looping: {self.crashes_in_a_row} restarts without progress; last error: {self.last_error}"
        stuck = time.monotonic() - self.last_progress
        if stuck <= self.settings.stall_after_s:
            return None
        if self.busy_since is not None:
            return f"no progress for {stuck:.0f} s: a batch is still being written (a dependency is unavailable?)"
        if self.poll_failing:
            return f"no progress for {stuck:.0f} s: cannot poll the bus"
        if self.lag > 0:
            return f"no progress for {stuck:.0f} s with {self.lag} records waiting"
        return None
