"""Settings are built once and reach every stage: the read API answers with the configured journey
settings, not defaults of its own (issue 10, defect 3)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Server


def test_attribution_uses_the_configured_lookback(tmp_path: Path) -> None:
    srv = Server(
        tmp_path / "data",
        env={"TRAILMARK_JOURNEYS__LOOKBACK_DAYS": "3", "TRAILMARK_JOURNEYS__TIME_DECAY_HALF_LIFE_DAYS": "2"},
    ).start()
    try:
        r = srv.read("/v1/attribution", params={"conversion": "Order Completed", "model": "time_decay"})
        assert r.status_code == 200, r.text
        assert r.json()["lookback_days"] == 3
        assert r.json()["half_life_days"] == 2
        explicit = srv.read("/v1/attribution", params={"lookback_days": 10}).json()
        assert explicit["lookback_days"] == 10
    finally:
        srv.stop()
