"""The SQL endpoint's sandbox: what a read key may run, checked with ClickHouse's own parser.

A query goes through three steps, all on one ClickHouse session made for the request, on which
``readonly = 1`` and the limits below are set before the first (so no step can change a setting for
the next) and which is closed after the last:

1. ``formatQuerySingleLine`` parses it as exactly one statement (multi-statements fail here, before
   anything runs) and gives its normalized text; that text is what is checked and what runs.
2. ``EXPLAIN AST`` of the normalized text (with the request's parameters substituted, so an
   ``{x:Identifier}`` placeholder is checked as the table it names) gives ClickHouse's syntax tree,
   which :func:`check_ast` walks: one ``SELECT`` (``WITH``, ``UNION``, subqueries, joins), no
   ``SETTINGS``, ``FORMAT`` or ``INTO OUTFILE``, no table function but the value generators allowed
   in settings, no table outside the trailmark database but a few ``system`` ones, no scalar
   function that reads files, dictionaries, other tables or the server's configuration, or sleeps.
3. The query runs with ``readonly = 1`` set last (the query cannot change any setting), the limits
   from :class:`~trailmark.settings.SqlSettings`, and ``additional_table_filters`` on every table and
   view that has a ``site_id``, so each read key sees only its own site, whatever the query says.

``readonly = 1`` alone is not enough: ClickHouse still lets it read files with the scalar ``file()``
and other tables through ``merge()``; the AST check closes those.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from trailmark.errors import BadRequest
from trailmark.settings import SqlSettings
from trailmark.storage.base import IsolatedQuery, QueryError, Storage

QUERY_NODES = frozenset({"SelectWithUnionQuery", "SelectQuery", "SelectIntersectExceptQuery", "TablesInSelectQuery"})
IN_FUNCTIONS = frozenset(
    {"in", "notin", "globalin", "globalnotin", "nullin", "notnullin", "globalnullin", "globalnotnullin"}
)
# Scalar functions that reach outside the query's own data: files, dictionaries, other tables (by name),
# the server's configuration and network identity, models on disk, or time itself (sleep).
DENIED_FUNCTIONS = frozenset(
    {
        "file",
        "joinget",
        "joingetornull",
        "sleep",
        "sleepeachrow",
        "catboostevaluate",
        "modelevaluate",
        "naivebayesclassifier",
        "getmacro",
        "getserverport",
        "getserversetting",
        "getmergetreesetting",
        "filesystemavailable",
        "filesystemcapacity",
        "filesystemunreserved",
        "filesystemfree",
        "getclienthttpheader",
        "showcertificate",
        "currentprofiles",
        "currentroles",
        "enabledroles",
        "defaultroles",
        "input",
        "hostname",
        "fqdn",
        "tcpport",
        "getosinformation",
        "initialqueryid",
        "queryid",
        "__getscalar",
        "getsetting",
        "getsettingordefault",
    }
)
DENIED_PREFIXES = ("dict", "__")
_HEADER = re.compile(r"^(?P<kind>\S+)(?: (?P<rest>.*?))?(?: \(alias (?P<alias>.*?)\))?(?: \(children \d+\))?$")


class SqlRefused(BadRequest):
    """The query is not one the SQL endpoint runs; the message says what was refused."""


@dataclass
class Node:
    """One line of ``EXPLAIN AST``: its kind (``Function``, ``TableIdentifier``...), name, children."""

    kind: str
    name: str = ""
    alias: str = ""
    children: list[Node] = field(default_factory=list)

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            yield from child.walk()


def parse_explain_ast(text: str) -> Node:
    """The tree of ``EXPLAIN AST`` output: one node a line, one space of indent a level."""
    root: Node | None = None
    stack: list[tuple[int, Node]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip(" "))
        match = _HEADER.match(line.strip())
        if match is None:  # pragma: no cover - every line has a first word
            raise SqlRefused("the query could not be analysed")
        node = Node(match["kind"], (match["rest"] or "").strip(), match["alias"] or "")
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            stack[-1][1].children.append(node)
        elif root is None:
            root = node
        else:
            raise SqlRefused("only one statement is allowed")
        stack.append((depth, node))
    if root is None:
        raise SqlRefused("empty query")
    return root


@dataclass(frozen=True)
class Catalog:
    """What the sandbox lets a query name: trailmark tables and views with a ``site_id`` (filtered
    to the key's site), other trailmark objects (refused), and allowed ``system`` tables."""

    database: str
    site_tables: frozenset[str]
    other_tables: frozenset[str]
    system_tables: frozenset[str]
    table_functions: frozenset[str]


def _table_problem(name: str, catalog: Catalog) -> str | None:
    db, dot, table = name.partition(".")
    if not dot:  # unqualified: the session's database is trailmark, or a WITH name of the query
        return f"table {name} is not available" if name in catalog.other_tables else None
    if db == catalog.database and table in catalog.site_tables:
        return None
    if db == "system" and table in catalog.system_tables:
        return None
    return f"table {name} is not available (the {catalog.database} tables and views are; see docs/sql.md)"


def check_ast(root: Node, catalog: Catalog) -> None:
    """Raise :class:`SqlRefused` unless the tree is one plain SELECT over allowed tables."""
    if root.kind != "SelectWithUnionQuery":
        raise SqlRefused(f"only SELECT queries are allowed (got {root.kind.removesuffix('Query') or 'other'})")
    if len(root.children) != 1:
        raise SqlRefused("FORMAT and INTO OUTFILE are not allowed: the endpoint answers JSON rows")
    for node in root.walk():
        if node.kind == "Set":
            raise SqlRefused("SETTINGS is not allowed: limits are fixed by the server")
        if node.kind.endswith("Query") and node.kind not in QUERY_NODES:
            raise SqlRefused(f"{node.kind.removesuffix('Query')} is not allowed inside a SELECT")
        if node.kind == "TableExpression":
            for child in node.children:
                if child.kind == "TableIdentifier" and (problem := _table_problem(child.name, catalog)):
                    raise SqlRefused(problem)
                if child.kind == "Function" and child.name not in catalog.table_functions:
                    allowed = ", ".join(sorted(catalog.table_functions)) or "none"
                    raise SqlRefused(f"table function {child.name}() is not allowed (allowed: {allowed})")
        elif node.kind == "Function":
            lower = node.name.lower()
            if lower in DENIED_FUNCTIONS or lower.startswith(DENIED_PREFIXES):
                raise SqlRefused(f"function {node.name}() is not allowed")
            if lower in IN_FUNCTIONS:  # `x IN table` names a table without a TableExpression
                args = node.children[0].children if node.children else []
                if len(args) == 2 and args[1].kind == "Identifier" and "." in args[1].name:
                    if problem := _table_problem(args[1].name, catalog):
                        raise SqlRefused(problem)


def _message(exc: QueryError) -> str:
    """ClickHouse's reason without the version, stack or echoed SQL."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else "query failed"
    text = re.sub(r"^(Code: \d+\. DB::Exception: )+", "", text)
    text = re.sub(r"\s*\(version [^)]*\)", "", text)
    text = re.sub(r"(\. \(([A-Z_]+)\))+$", r" (\2)", text)  # the code name, once (it repeats per level)
    text = re.split(r"\.?\s*In scope ", text)[0]
    return text[:400]


class SqlSandbox:
    """Checks and runs data-team SQL for one site; stateless between requests."""

    def __init__(self, settings: SqlSettings, database: str) -> None:
        self.settings = settings
        self.database = database
        self._catalog: Catalog | None = None

    def catalog(self, storage: Storage) -> Catalog:
        if self._catalog is None:
            rows = storage.query(
                "SELECT table, countIf(name = 'site_id') > 0 AS has_site FROM system.columns"
                " WHERE database = {db:String} GROUP BY table",
                {"db": self.database},
                readonly=True,
            )
            self._catalog = Catalog(
                self.database,
                frozenset(r["table"] for r in rows if r["has_site"]),
                frozenset(r["table"] for r in rows if not r["has_site"]),
                frozenset(self.settings.system_tables),
                frozenset(self.settings.table_functions),
            )
        return self._catalog

    def query_settings(self, catalog: Catalog, site_id: str) -> dict[str, Any]:
        s = self.settings
        quoted = "'" + site_id.replace("\\", "\\\\").replace("'", "\\'") + "'"
        filters: dict[str, str] = {}
        for table in sorted(catalog.site_tables):
            filters[f"{self.database}.{table}"] = f"site_id = {quoted}"
        for table in ("columns", "tables"):
            filters[f"system.{table}"] = f"database = '{self.database}'"
        return {
            "max_execution_time": s.max_execution_s,
            "timeout_overflow_mode": "throw",
            "max_memory_usage": s.max_memory_bytes,
            "max_result_rows": s.max_result_rows + 1,  # one more than answered: tells truncation
            "max_result_bytes": s.max_result_bytes,
            "result_overflow_mode": "break",
            "max_threads": s.max_threads,
            "os_thread_priority": 10,  # the pipeline's threads win the CPU when both want it
            "additional_table_filters": filters,
            "readonly": 1,  # last: from here on nothing, including the query, changes a setting
        }

    def prepare(self, query: IsolatedQuery, catalog: Catalog, sql: str, params: Mapping[str, Any] | None) -> str:
        """The normalized query, checked on ``query`` (an isolated block under the query's
        settings); SqlRefused if not allowed."""
        try:
            rows = query("SELECT formatQuerySingleLine({q:String}) AS q", {"q": sql})
        except QueryError as exc:
            raise SqlRefused(_message(exc)) from None
        normalized: str = rows[0]["q"]
        try:
            explained = query(f"EXPLAIN AST {normalized}", params)
        except QueryError as exc:
            raise SqlRefused(_message(exc)) from None
        check_ast(parse_explain_ast("\n".join(r["explain"] for r in explained)), catalog)
        return normalized

    def run(
        self, storage: Storage, site_id: str, sql: str, params: Mapping[str, Any] | None, query_id: str
    ) -> tuple[list[dict[str, Any]], bool]:
        """(rows, truncated); SqlRefused for a refused or failed query. The checks and the query
        run in one isolated block (on chDB one session, set up once) under the query's settings."""
        catalog = self.catalog(storage)
        with storage.isolated(self.query_settings(catalog, site_id)) as query:
            normalized = self.prepare(query, catalog, sql, params)
            try:
                rows = query(normalized, params, query_id)
            except QueryError as exc:
                raise SqlRefused(_message(exc)) from None
        limit = self.settings.max_result_rows
        return rows[:limit], len(rows) > limit


__all__ = ["Catalog", "Node", "SqlRefused", "SqlSandbox", "check_ast", "parse_explain_ast"]
