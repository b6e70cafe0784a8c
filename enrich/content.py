"""Content groups from page paths: configurable (pattern, group) rules, first match wins."""

from __future__ import annotations

import fnmatch
import re
from functools import lru_cache


class ContentGrouper:
    """Globs (``/blog/*``) are translated to regexes once; results are cached per path."""

    def __init__(self, rules: list[tuple[str, str]], cache_size: int = 50000) -> None:
        self._rules: list[tuple[re.Pattern[str], str]] = []
        for pattern, group in rules:
            if pattern.startswith("re:"):
                rx = re.compile(pattern[3:])
            else:
                rx = re.compile(fnmatch.translate(pattern))
            self._rules.append((rx, group))
        self.group = lru_cache(maxsize=cache_size)(self._group)

    def _group(self, path: str) -> str:
        for rx, group in self._rules:
            if rx.match(path) if rx.pattern.endswith(r"\Z") else rx.search(path):
                return group
        return ""
