"""schemas.columns.as_columns: the one rows-to-columns step of the events insert and chDB's row inserts."""

from __future__ import annotations

import pytest

from schemas.columns import as_columns


def test_columns_follow_the_names_whatever_each_rows_key_order() -> None:
    rows = [{"a": 1, "b": "x", "c": [1]}, {"c": [], "a": 2, "b": "y"}]
    assert as_columns(["b", "a"], rows) == {"b": ["x", "y"], "a": [1, 2]}
    assert as_columns(["c"], rows) == {"c": [[1], []]}  # one name: still a list per column
    assert as_columns(["a", "b"], []) == {"a": [], "b": []}


def test_a_row_without_a_name_is_an_error_not_a_shifted_column() -> None:
    with pytest.raises(KeyError):
        as_columns(["a", "b"], [{"a": 1, "b": 2}, {"a": 3}])
