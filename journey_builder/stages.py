"""Journey stages from readable rules (stages.toml), evaluated per event as the builder sees it."""

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

    def matches(self, *, event: str, path: str, sessions: int, entered: set[str], new_session: bool) -> bool:
        if self.events and event not in self.events:
            return False
        if self.path_contains:
            if not path:
                return False
            for p in self.path_contains:
                if p in path:
                    break
            else:
                return False
        if sessions < self.min_sessions:
            return False
        if self.after_stage and self.after_stage not in entered:
            return False
        return not (self.new_session and not new_session)


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

    def entered(self, *, event: str, path: str, sessions: int, entered: set[str], new_session: bool) -> list[Rule]:
        """Rules that put the visitor into a stage it has not entered yet (first rule per stage).

        Called for every event: a visitor who entered every stage a rule leads to costs one set
        test per rule, and ``matches`` runs only for the rules still open."""
        out: list[Rule] = []
        seen: set[str] | None = None
        for rule in self.rules:
            if rule.stage in entered or (seen is not None and rule.stage in seen):
                continue
            if rule.events and event not in rule.events:
                continue
            if rule.matches(event=event, path=path, sessions=sessions, entered=entered, new_session=new_session):
                out.append(rule)
                seen = seen or set()
                seen.add(rule.stage)
        return out
