"""Journey stages from readable rules (stages.toml); ``journey_builder.core`` evaluates them per event
(``entered_rules``), as the builder sees it."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

STAGES = ("Awareness", "Consideration", "Decision", "Retention", "Advocacy")
PURCHASE = "Purchase"  # internal marker: the contact converted; feeds the Retention rule


@dataclass(frozen=True)
class Rule:
    stage: str
    name: str
    events: frozenset[str] = frozenset()
    path_contains: tuple[str, ...] = ()
    min_sessions: int = 0
    after_stage: str = ""
    new_session: bool = False


@dataclass
class StageRules:
    rules: list[Rule] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path | None = None) -> StageRules:
        text = path.read_text() if path else (resources.files("journey_builder") / "stages.toml").read_text()
        data: dict[str, Any] = tomllib.loads(text)
        rules = []
        for stage in data.get("stage", []):
            for r in stage.get("rules", []):
                rules.append(
                    Rule(
                        stage=stage["name"],
                        name=r.get("name", stage["name"]),
                        events=frozenset(r.get("events", [])),
                        path_contains=tuple(r.get("path_contains", [])),
                        min_sessions=int(r.get("min_sessions", 0)),
                        after_stage=r.get("after_stage", ""),
                        new_session=bool(r.get("new_session", False)),
                    )
                )
        return cls(rules)
