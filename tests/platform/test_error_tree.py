"""One error tree: every exception class the project defines sits under TrailmarkError, on the
branch that says what its callers must do (retry, dead-letter, answer 4xx, stop)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from enrich.errors import PoisonEvent
from journey_builder.sql_sandbox import SqlRefused
from trailmark.bus.base import BusUnavailable
from trailmark.errors import BadRequest, ConfigError, Rejected, TrailmarkError, Unavailable
from trailmark.keys import KeysError
from trailmark.storage.base import QueryError, StorageUnavailable
from trailmark.upstream import UpstreamError

PACKAGES = ["schemas", "ingest", "enrich", "journey_builder", "trailmark"]


@pytest.mark.parametrize(
    ("error", "branch"),
    [
        (BusUnavailable, Unavailable),
        (StorageUnavailable, Unavailable),
        (QueryError, Rejected),
        (PoisonEvent, Rejected),
        (SqlRefused, BadRequest),
        (KeysError, ConfigError),
        (UpstreamError, Unavailable),
    ],
)
def test_each_adapter_error_is_on_its_branch(error: type[Exception], branch: type[Exception]) -> None:
    assert issubclass(error, branch)
    others = {Unavailable, Rejected, BadRequest, ConfigError} - {branch}
    assert not any(issubclass(error, o) for o in others), f"{error.__name__} is on two branches"


def test_every_exception_the_project_defines_is_in_the_tree() -> None:
    strays = []
    for package in PACKAGES:
        pkg = importlib.import_module(package)
        names = [package] + [m.name for m in pkgutil.walk_packages(pkg.__path__, package + ".")]
        for name in names:
            if name in ("trailmark.cli", "trailmark.__main__"):
                continue
            module = importlib.import_module(name)
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if obj.__module__ == name and issubclass(obj, BaseException) and not issubclass(obj, TrailmarkError):
                    strays.append(f"{name}.{obj.__name__}")
    assert not strays, f"exceptions outside trailmark.errors' tree: {strays}"


def test_settings_cannot_change_after_they_are_built() -> None:
    from pydantic import ValidationError

    from trailmark.settings import Settings

    s = Settings(port=9001)
    with pytest.raises(ValidationError):
        s.port = 1  # type: ignore[misc]
    with pytest.raises(ValidationError):
        s.bus.kind = "kafka"  # type: ignore[misc]
