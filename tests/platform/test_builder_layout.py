"""The journey builder's SQL lives in one module (journey_builder/repository.py); the builder's
logic talks to ClickHouse only through it."""

from __future__ import annotations

import ast

from tests.conftest import ROOT


def test_the_builder_holds_no_sql_and_no_storage_calls() -> None:
    tree = ast.parse((ROOT / "journey_builder" / "builder.py").read_text(encoding="utf-8"))
    sql = [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant)
        and isinstance(n.value, str)
        and any(w in n.value for w in ("SELECT ", "INSERT ", " FROM ", "ALTER "))
    ]
    calls = [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute)
        and n.attr in ("query", "insert", "execute")
        and isinstance(n.value, ast.Attribute)
        and n.value.attr == "storage"
    ]
    assert not sql and not calls, f"SQL or storage calls in builder.py at lines {sql + calls}"
