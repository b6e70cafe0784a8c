"""What trailmark/native compiles (trailmark/compiled.py), where ``make native`` built it.

The reader of enriched run records: ``parse_enriched`` gives exactly what it gives reading every
record with orjson (the same events, keys, values and value types, the same failures), with the
strings a batch repeats in a field shared; records it does not read as orjson does are read by
orjson. Checked on the real enrichment stage's records and on hand-made and generated ones. And
``as_columns``: what ``schemas.columns.as_columns`` gives, on events of one layout or several."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.columns import as_columns
from tests.kafka.test_enriched_records import raw_record
from trailmark import compiled as native
from trailmark import runtime
from trailmark.bus.base import Message
from trailmark.results import Failed, Ok
from trailmark.runtime import EnrichStage, parse_enriched
from trailmark.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BUILT = native.read_runs is not None
needs_reader = pytest.mark.skipif(not BUILT, reason="trailmark/native is not built here (make native)")


def same(a: Any, b: Any) -> bool:
    """Equal, of the same types all the way down, dicts' keys in the same order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def both(records: list[Message], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """parse_enriched's results with the compiled reader, then with orjson alone."""
    compiled = parse_enriched(records)
    with monkeypatch.context() as m:
        m.setattr(runtime, "read_runs", None)
        python = parse_enriched(records)
    return compiled, python


def assert_same(compiled: Any, python: Any) -> None:
    assert [type(r) for r in compiled.ok] == [type(r) for r in python.ok] == [Ok] * len(python.ok)
    assert [r.key for r in compiled.ok] == [r.key for r in python.ok]
    for c, p in zip(compiled.ok, python.ok, strict=True):
        assert same(c.value, p.value), (c.value, p.value)
    assert [(f.key, f.kind, f.reason, f.payload) for f in compiled.failed] == [
        (f.key, f.kind, f.reason, f.payload) for f in python.failed
    ]
    assert all(isinstance(f, Failed) for f in compiled.failed)


def run_record(fields: list[str], rows: list[Any], key: bytes = b"s1:a") -> Message:
    return Message("trailmark.enriched", 0, 0, key, orjson.dumps({"fields": fields, "rows": rows}))


@needs_reader
def test_the_enrichers_records_read_the_same_and_the_reader_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    stage = EnrichStage(Settings(), {})
    raw = [
        raw_record("a", 3, properties={"plan": "pro", "quote": 'say "hi"\n', "n": 12345678901234, "x": 1.5e-7}),
        raw_record("b", 2, properties={"é": "日本語 😀", "nested": {"a": [1, 2, None, True]}}),
        raw_record("c", 1, userId="u-1", context={"consent": [1, 0, 1], "page": {"url": "https://x.test/?q=1"}}),
        raw_record("a", 4, first=3, event="Order Completed", properties={"revenue": -0.0, "big": 2**63 + 5}),
    ]
    out = stage.serialized(raw)
    assert out.failed == []
    records = [Message("trailmark.enriched", 0, i, o.key, o.value) for i, o in enumerate(out.ok)]
    assert native.read_runs is not None
    _, counts = native.read_runs([m.value for m in records], orjson.loads)
    assert all(n > 0 for n in counts), counts  # the compiled reader read every record itself
    compiled, python = both(records, monkeypatch)
    assert len(compiled.ok) == 10
    assert_same(compiled, python)


@needs_reader
def test_a_field_s_repeated_strings_are_one_object(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the reader is for: a batch of 20k events holds a few tens of thousands of distinct
    strings rather than a million, so the builder's passes over them touch less memory."""
    fields = ["type", "channel", "message_id", "geo_lat"]
    rows = [["page", "Direct", f"m{i}", 51.5] for i in range(300)]
    compiled, python = both([run_record(fields, rows[:150]), run_record(fields, rows[150:])], monkeypatch)
    assert_same(compiled, python)
    events = [o.value for o in compiled.ok]
    assert len({id(e["type"]) for e in events}) == 1
    assert len({id(e["channel"]) for e in events}) == 1
    assert len({id(e["geo_lat"]) for e in events}) == 1
    assert len({id(e["message_id"]) for e in events}) == 300
    assert len({id(o.value["type"]) for o in python.ok}) > 1  # orjson makes each anew


@needs_reader
def test_edge_values_read_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = ["s", "n", "f", "b", "z", "l", "o", "enrich_errors"]
    values = [
        ["plain", 0, 0.0, True, None, [], {}, []],
        ['q "uoted" \\ back\\slash / \t tab', -1, -0.0, False, None, [1, "a"], {"k": [None]}, ["geo: failed"]],
        ["\u0000\u001f control", 2**63 - 1, 1e300, True, None, [[]], {"": ""}, []],
        ["😀 pair", 2**63, 1.7976931348623157e308, False, None, [1.5], {"x": {"y": 1}}, []],
        ["", -(2**63), 5e-324, True, None, [], {}, ["a", "b"]],
        ["ünïcödé ", 2**64 - 1, 123.456, False, None, [], {}, []],
    ]
    escaped = b'{"fields":["s"],"rows":[["\\ud83d\\ude00 \\u00e9 \\n \\" \\/"],["\\u0041"]]}'
    records = [run_record(fields, values), Message("t", 0, 0, b"s1:a", escaped)]
    assert native.read_runs is not None
    assert native.read_runs([m.value for m in records], orjson.loads)[1] == [6, 2]  # read by the reader
    compiled, python = both(records, monkeypatch)
    assert_same(compiled, python)
    assert compiled.ok[-2].value["s"] == '\U0001f600 \u00e9 \n " /'
    assert compiled.ok[0].value["enrich_errors"] == ()  # an empty list as parse_enriched reads it (_errors_at)


@needs_reader
def test_records_the_reader_declines_are_read_by_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each of these is left to orjson (the reader's count is -1): a row of the wrong width (it
    is dead-lettered alone, the others kept), an integer over 64 bits, a float out of range, a
    lone surrogate, names that repeat, a key after the rows, a single event, an array of events,
    bytes that are not UTF-8 or not JSON. Whatever orjson makes of them, the results are the same."""
    fields = ["a", "b"]
    records = [
        run_record(fields, [["x", 1], ["y"], ["z", 3]]),
        Message("t", 0, 0, b"s1:a", b'{"fields":["a","b"],"rows":[["x",18446744073709551616]]}'),
        Message("t", 0, 0, b"s1:a", b'{"fields":["a","b"],"rows":[["x",1e999]]}'),
        Message("t", 0, 0, b"s1:a", b'{"fields":["a","b"],"rows":[["\\ud800",1]]}'),
        Message("t", 0, 0, b"s1:a", b'{"fields":["a","a"],"rows":[["x",1]]}'),
        Message("t", 0, 0, b"s1:a", b'{"fields":["a","b"],"rows":[["x",1]],"more":1}'),
        Message("t", 0, 0, b"s1:a", orjson.dumps({"site_id": "s1", "message_id": "m1"})),
        Message("t", 0, 0, b"s1:a", orjson.dumps([{"site_id": "s1", "message_id": "m2"}])),
        Message("t", 0, 0, b"s1:a", b'{"fields":["a","b"],"rows":[["\xff",1]]}'),
        Message("t", 0, 0, b"s1:a", b'{"fields":["a","b"],"rows":[["x",1]'),
        run_record(fields, [["ok", 2]]),
    ]
    assert native.read_runs is not None
    _, counts = native.read_runs([m.value for m in records], orjson.loads)
    assert counts == [-1] * 10 + [1]
    compiled, python = both(records, monkeypatch)
    assert_same(compiled, python)
    assert [f.reason for f in compiled.failed][:1] == ["not a row of 2 fields"]


JSON_SCALARS = (
    st.text(max_size=20)
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)  # orjson's range (beyond it: the test above)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.none()
)
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda v: st.lists(v, max_size=3) | st.dictionaries(st.text(max_size=5), v, max_size=3), max_leaves=6
)


@needs_reader
@settings(max_examples=150, deadline=None)
@given(
    width=st.integers(min_value=1, max_value=6),
    data=st.data(),
)
def test_generated_runs_read_the_same(width: int, data: st.DataObject) -> None:
    fields = [f"f{i}" for i in range(width)]
    records = []
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        rows = data.draw(
            st.lists(
                st.lists(JSON_VALUES | st.sampled_from(["page", "Direct", "", 1, 0.5]), min_size=width, max_size=width),
                max_size=5,
            )
        )
        records.append(run_record(fields, rows))
    with pytest.MonkeyPatch.context() as mp:
        compiled, python = both(records, mp)
    assert_same(compiled, python)


@needs_reader
def test_the_compiled_columns_are_schemas_columns() -> None:
    stage = EnrichStage(Settings(), {})
    out = stage.serialized([raw_record("a", 3), raw_record("b", 4, userId="u")])
    events = [o.value for o in parse_enriched([Message("t", 0, 0, o.key, o.value) for o in out.ok]).ok]
    names = [k for k in events[0] if k not in ("v", "extra")]
    assert native.as_columns is native.compiled_columns
    assert native.as_columns(names, events) == as_columns(names, events)
    # names equal to the keys but other objects, and rows of other layouts: read by name
    others = ["".join(n) for n in names]
    mixed = [dict(reversed(list(e.items()))) if i % 2 else e for i, e in enumerate(events)]
    mixed.append({**{"added": 1}, **events[0]})
    assert native.as_columns(others, mixed) == as_columns(others, mixed)
    assert native.as_columns(names[:1], events) == as_columns(names[:1], events)
    with pytest.raises(KeyError, match="site_id"):
        native.as_columns(names, [*events, {k: v for k, v in events[0].items() if k != "site_id"}])


@needs_reader
def test_the_compiled_columns_hold_each_value_once_and_give_it_back_on_an_error() -> None:
    """The transposer gathers borrowed references and hands them to the lists: every path (rows of
    the first row's layout, of another, a missing name) leaves each value's reference count as it
    was once the columns are gone."""
    import sys

    value = "".join(["a value", " of its own"])
    rows = [{"a": value, "b": i} for i in range(50)]
    shuffled = [*rows[:20], {"b": 0, "a": value}, *rows[20:]]
    lacking = [*rows, {"a": value}]
    held = sys.getrefcount(value)
    for names, of in ((["a", "b"], rows), (["a"], rows), (["a", "b"], shuffled)):
        cols = native.as_columns(names, of)
        assert sys.getrefcount(value) == held + len(of)  # one reference per row, in the list
        assert cols == as_columns(names, of)
        del cols
        assert sys.getrefcount(value) == held
    for names, of in ((["a", "b", "c"], rows), (["a", "b"], lacking)):
        with pytest.raises(KeyError):
            native.as_columns(names, of)
        assert sys.getrefcount(value) == held


def test_the_compiled_reader_counts_only_while_it_matches_its_sources(tmp_path: Path) -> None:
    def package(name: str, *, compiled: bool, built_from: bytes | None, source: bytes = b"fn main() {}") -> Path:
        d = tmp_path / name
        (d / "native" / "src").mkdir(parents=True)
        for f in native.SOURCES:
            (d / f).write_bytes(source if f.endswith(".rs") else b"x")
        if compiled:
            (d / "_native.abi3.so").write_bytes(b"\x7fELF")  # its presence is what counts here
        if built_from is not None:
            digest = hashlib.sha256(b"xx" + built_from).hexdigest()  # Cargo.toml, Cargo.lock, lib.rs
            (d / "_native.sha256").write_text(digest + "\n")
        return d

    src = b"fn main() {}"
    assert native.native_state(package("a", compiled=False, built_from=None)) == "absent"
    assert native.native_state(package("b", compiled=True, built_from=src)) == "compiled"
    assert native.native_state(package("c", compiled=True, built_from=src, source=b"// edited")) == "stale"
    assert native.native_state(package("d", compiled=True, built_from=None)) == "stale"
    assert native.native_state(package("e", compiled=False, built_from=src)) == "absent"


def test_make_native_compiled_the_reader_where_cargo_is() -> None:
    """``make native`` leaves records to orjson only for want of cargo. Where cargo is, a failed
    build is a fault to see, not a skip of the tests above."""
    record = ROOT / "trailmark" / "_native.sha256"
    if not record.exists() or shutil.which("cargo") is None:
        pytest.skip("make native has not run here, or no cargo")
    log = ROOT / ".cache" / "native-rust.log"
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no .cache/native-rust.log)"
    assert record.read_text().strip() != "none", f"make native failed with cargo present:\n{tail}"
    assert native.native_state() == "compiled" and BUILT
