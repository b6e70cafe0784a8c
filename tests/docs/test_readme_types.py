"""The README names the record types the code really passes between stages (issue 10, defect 6)."""

from __future__ import annotations

import re

import schemas
from tests.conftest import ROOT


def test_every_record_type_the_readme_names_exists_in_schemas() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"\b(Raw[A-Z]\w*|Enriched[A-Z]\w*|DeadLetter)\b", readme))
    assert {"RawBatch", "EnrichedEvent"} <= named
    missing = sorted(n for n in named if not hasattr(schemas, n))
    assert not missing, f"README names types schemas does not define: {missing}"


def test_the_readme_says_the_collector_publishes_raw_batches() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "collector → `RawBatch`" in readme
