"""compose.yaml and the Dockerfile, checked statically (no Docker engine here): every TRAILMARK_*
variable is a real setting and takes effect, every command is a real CLI command, the image runs
``trailmark`` as a non-root user, and the services are wired to each other."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import typer.main
import yaml
from pydantic import BaseModel

from trailmark.cli import app
from trailmark.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
STAGES = {name: s for name, s in SERVICES.items() if s.get("image", "").startswith("trailmark")}
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def setting_path(var: str) -> list[str]:
    """TRAILMARK_BUS__TOPIC_RAW -> ["bus", "topic_raw"]; fails if any part is not a field."""
    assert var.startswith("TRAILMARK_"), var
    model: type[BaseModel] = Settings
    parts = var.removeprefix("TRAILMARK_").lower().split("__")
    path: list[str] = []
    for i, part in enumerate(parts):
        fields = model.model_fields
        assert part in fields, f"{var}: {'.'.join(path) or 'Settings'} has no field {part!r}"
        path.append(part)
        annotation = fields[part].annotation
        if i < len(parts) - 1:
            assert isinstance(annotation, type) and issubclass(annotation, BaseModel), (
                f"{var}: {'.'.join(path)} is not a section"
            )
            model = annotation
    return path


def value_at(settings: Settings, path: list[str]) -> Any:
    obj: Any = settings
    for part in path:
        obj = getattr(obj, part)
    return obj


def test_the_three_stages_and_their_dependencies_are_there() -> None:
    commands = {name: s["command"][0] for name, s in STAGES.items()}
    assert sorted(commands.values()) == ["collector", "enricher", "journey-builder"]
    assert {"kafka", "clickhouse"} <= SERVICES.keys()
    for name, service in SERVICES.items():
        for dep in service.get("depends_on") or {}:
            assert dep in SERVICES, f"{name} depends on unknown service {dep}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_trailmark_variable_is_a_real_setting_and_takes_effect(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = env_of(STAGES[name])
    assert env, f"{name} sets no environment"
    for var, raw in env.items():
        assert var.startswith("TRAILMARK_"), f"{name}: {var} is not a trailmark setting"
        monkeypatch.setenv(var, raw)
    settings = Settings()
    for var, raw in env.items():
        value = value_at(settings, setting_path(var))
        shown = value if not isinstance(value, Path) else str(value)
        if isinstance(value, bool):
            assert value == (raw.lower() in ("1", "true", "yes", "on")), (var, raw, value)
        else:
            assert str(shown) == raw, f"{name}: {var}={raw!r} gave {value!r}"
    assert settings.bus.kind == "kafka"


def test_stages_share_one_bus_and_one_clickhouse() -> None:
    envs = [env_of(s) for s in STAGES.values()]
    shared = (
        "TRAILMARK_KAFKA_BOOTSTRAP",
        "TRAILMARK_CLICKHOUSE_URL",
        "TRAILMARK_BUS__TOPIC_RAW",
        "TRAILMARK_BUS__TOPIC_ENRICHED",
        "TRAILMARK_BUS__TOPIC_DEAD_LETTER",
        "TRAILMARK_BUS__PARTITIONS",
    )
    for var in shared:
        assert len({e.get(var) for e in envs}) == 1, f"{var} differs between stages"
    host, _, port = envs[0]["TRAILMARK_KAFKA_BOOTSTRAP"].partition(":")
    assert host == "kafka"
    kafka = env_of(SERVICES["kafka"])
    assert f"PLAINTEXT://kafka:{port}" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"] and "broker" in kafka["KAFKA_PROCESS_ROLES"]  # KRaft
    assert "KAFKA_ZOOKEEPER_CONNECT" not in kafka
    ch = urlparse(envs[0]["TRAILMARK_CLICKHOUSE_URL"])
    assert ch.hostname == "clickhouse" and ch.port == 8123
    ch_env = env_of(SERVICES["clickhouse"])
    assert (ch.username, ch.password) == (ch_env["CLICKHOUSE_USER"], ch_env["CLICKHOUSE_PASSWORD"])


def test_every_command_is_a_real_cli_command() -> None:
    click_app = typer.main.get_command(app)
    known = set(click_app.commands)  # type: ignore[attr-defined]
    assert {"up", "collector", "enricher", "journey-builder", "sql"} <= known
    for name, service in STAGES.items():
        command = service["command"]
        assert command[0] in known, f"{name}: {command[0]!r} is not a trailmark command"
        options = {p.opts[0] for p in click_app.commands[command[0]].params}  # type: ignore[attr-defined]
        for arg in command[1:]:
            if arg.startswith("--"):
                assert arg.split("=")[0] in options, f"{name}: {arg} is not an option of {command[0]}"
    default = json.loads(re.search(r"^CMD (\[.*\])$", DOCKERFILE, re.M).group(1))  # type: ignore[union-attr]
    assert default[0] in known


def test_the_image_runs_trailmark_as_a_non_root_user() -> None:
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", DOCKERFILE, re.M).group(1))  # type: ignore[union-attr]
    assert entry == ["trailmark"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["trailmark"] == "trailmark.cli:app"
    bases = re.findall(r"^FROM (\S+)", DOCKERFILE, re.M)
    assert bases and all(re.fullmatch(r"python:3\.1[1-9]-slim", b) for b in bases), bases
    users = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0"), "the final stage must not run as root"
    # The image holds every package the wheel ships, the committed tracker included.
    for package in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        top = package.rstrip("*")
        assert re.search(rf"^COPY {top} {top}$", DOCKERFILE, re.M), f"Dockerfile does not copy {top}/"
    tracked = subprocess.run(
        ["git", "ls-files", "ingest/static/t.js"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked == ["ingest/static/t.js"], "the tracker must be committed for the image to serve it"


def test_the_image_and_make_native_hash_the_compiled_module_s_sources_in_order() -> None:
    """trailmark/compiled.py uses the Rust module where its record is the SHA-256 of SOURCES, in
    order (or where the sources are not shipped, as in the image's wheel): the image's build hashed
    three of them from 29b49b5 to 12-08, a record true of no sources. Both builds must hash the
    list compiled.py checks."""
    from trailmark.compiled import SOURCES

    wanted = [f"trailmark/{f}" for f in SOURCES]
    hashed = re.search(r"&& cat ((?:trailmark/native/\S+[\s\\]+)+)\| sha256sum", DOCKERFILE)
    assert hashed, "the Dockerfile does not hash the module's sources"
    assert hashed.group(1).replace("\\", " ").split() == wanted
    makefile = (ROOT / "Makefile").read_text()
    listed = re.search(r"^RUST_SRC := ((?:.*\\\n)*.*)$", makefile, re.M)
    assert listed, "the Makefile lists no RUST_SRC"
    assert listed.group(1).replace("\\", " ").replace("$(RUST)", "trailmark/native").split() == wanted


def test_healthchecks_and_ports_match_the_listen_port() -> None:
    for name, service in STAGES.items():
        port = env_of(service)["TRAILMARK_PORT"]
        assert f":{port}/readyz" in " ".join(service["healthcheck"]["test"]), name
        for mapping in service.get("ports") or []:
            assert str(mapping).endswith(f":{port}"), f"{name}: {mapping} does not reach port {port}"
        assert env_of(service)["TRAILMARK_HOST"] == "0.0.0.0", f"{name} must listen beyond loopback"
    # Each collector has its own spool volume, outside the shared keys volume.
    collector = SERVICES["collector"]
    spool = env_of(collector)["TRAILMARK_BUS__SPOOL_DIR"]
    assert any(str(v).endswith(":" + spool) for v in collector["volumes"])
    assert spool in DOCKERFILE, "the image must create the spool dir for the non-root user"
