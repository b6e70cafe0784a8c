"""Real-broker fixture: the bootstrap of a running Kafka, never a mock.

``make test`` starts one with deploy/kafka/kafka.sh and exports TRAILMARK_TEST_KAFKA_BOOTSTRAP.
Without it, CI fails loudly (a silently skipped bus suite would hide a broken pipeline); a
developer gets a throwaway broker started here, or a skip when there is no java.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KAFKA_SH = ROOT / "deploy" / "kafka" / "kafka.sh"
ENV = "TRAILMARK_TEST_KAFKA_BOOTSTRAP"


def _run(cmd: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(KAFKA_SH), cmd], env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    given = os.environ.get(ENV, "").strip()
    if given:
        yield given
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(
            f"{ENV} is not set in CI: `make test` must start the broker with "
            f"`deploy/kafka/kafka.sh start` and export {ENV}=<its bootstrap> before pytest",
            pytrace=False,
        )
    if shutil.which("java") is None:
        pytest.skip(f"no java on PATH to run a local Kafka broker (and {ENV} is not set)")
    run_dir = tempfile.mkdtemp(prefix="trailmark-kafka-")
    env = {**os.environ, "KAFKA_RUN_DIR": run_dir}
    started = _run("start", env)
    if started.returncode != 0:
        pytest.fail(f"kafka.sh start failed:\n{started.stdout}\n{started.stderr}", pytrace=False)
    last = started.stdout.strip().splitlines()[-1]
    assert last.startswith("bootstrap="), started.stdout
    try:
        yield last.removeprefix("bootstrap=")
    finally:
        _run("stop", env)
        shutil.rmtree(run_dir, ignore_errors=True)
