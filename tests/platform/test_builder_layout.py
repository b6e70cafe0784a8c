"""The journey builder's SQL lives in one module (journey_builder/repository.py); the builder
talks to ClickHouse only through it, and its logic (journey_builder/core.py) does no I/O at all."""

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


def test_the_core_does_no_io() -> None:
    """core.py imports no storage, repository, bus, network or file module, and names no storage:
    what it needs beyond the batch comes through its ``Lookups`` argument."""
    tree = ast.parse((ROOT / "journey_builder" / "core.py").read_text(encoding="utf-8"))
    imported = {
        name
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for name in ([n.module or ""] if isinstance(n, ast.ImportFrom) else [a.name for a in n.names])
    }
    io = {"trailmark.storage", "trailmark.bus", "journey_builder.repository", "httpx", "socket", "os", "pathlib"}
    assert not {m for m in imported if any(m == i or m.startswith(i + ".") for i in io)}, imported
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
    }
    assert not names & {"storage", "repo", "query", "insert", "open"}, names & {"storage", "repo", "query", "insert"}
