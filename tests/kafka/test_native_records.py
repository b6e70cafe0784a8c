"""What trailmark/native compiles (trailmark/compiled.py), where ``make native`` built it.

The reader of enriched run records: ``parse_enriched`` gives exactly what it gives reading every
record with orjson (the same events, keys, values and value types, the same failures), with the
strings a batch repeats in a field shared; records it does not read as orjson does are read by
orjson. Checked on the real enrichment stage's records and on hand-made and generated ones. And
``as_columns``: what ``schemas.columns.as_columns`` gives, on events of one layout or several."""

from __future__ import annotations

import functools
import hashlib
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journey_builder import core
from journey_builder.privacy import consent_of
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
    _, counts, _ = native.read_runs([m.value for m in records], orjson.loads)
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
    _, counts, _ = native.read_runs([m.value for m in records], orjson.loads)
    assert counts == [-1] * 10 + [1]
    compiled, python = both(records, monkeypatch)
    assert_same(compiled, python)
    assert [f.reason for f in compiled.failed][:1] == ["not a row of 2 fields"]


@needs_reader
def test_records_repeating_the_names_before_in_any_form_read_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader scans only the rows of a record whose names are the record before's, byte for byte;
    the same names in another form (spaces, the rows first, more whitespace around the record), other
    names after them, or more after the rows are read as a whole record is, or left to orjson."""
    first = b'{"fields":["a","b"],"rows":[["x",1]]}'
    forms = [
        b'{"fields":["a","b"],"rows":[["y",2],["z",3]]}',  # the common record: its names not scanned
        b'{"fields":["a","b"],"rows":[["y",2]] }',
        b'{"fields":["a","b"],"rows": [["y",2]]}',
        b'{"fields":["a","b"],"rows":[["y",2]]}\n',
        b'{ "fields":["a","b"],"rows":[["y",2]]}',
        b'{"fields":["a", "b"],"rows":[["y",2]]}',
        b'{"fields":["b","a"],"rows":[["y",2]]}',
        b'{"rows":[["y",2]],"fields":["a","b"]}',
        b'{"fields":["a","b"],"rows":[]}',
        b'{"fields":["a","b"],"rows":[["y",2]],"rows":[["w",4]]}',
        b'{"fields":["a","b"],"rows":[["y",2]],"more":1}',
        b'{"fields":["a","b"],"rows":[["y",2]]}}',
        b'{"fields":["a","b"],"rows":[["y"]]}',
        b'{"fields":["a","b"],"fields":["b","a"],"rows":[["y",2]]}',
    ]
    for form in forms:
        records = [Message("t", 0, 0, b"s1:a", first), Message("t", 0, 1, b"s1:a", form)]
        compiled, python = both(records, monkeypatch)
        assert_same(compiled, python)
        assert native.read_runs is not None
        counts = native.read_runs([first, form], orjson.loads)[1]
        try:
            whole = orjson.loads(form)
        except orjson.JSONDecodeError:
            whole = None
        readable = (
            isinstance(whole, dict)
            and list(whole) in (["fields", "rows"], ["rows", "fields"])
            and form.count(b'"rows"') == form.count(b'"fields"') == 1
            and all(len(r) == 2 for r in whole["rows"])
        )
        assert counts == [1, len(whole["rows"]) if readable else -1], form  # type: ignore[index]


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
            # Cargo.toml and Cargo.lock, then each Rust source, as make native reads them
            read = b"".join(built_from if f.endswith(".rs") else b"x" for f in native.SOURCES)
            digest = hashlib.sha256(read).hexdigest()
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


# ---- the events rows as they came (RecordTexts, journey_builder.core.event_document) -------------------------


def enriched(raw: list[Message]) -> list[Message]:
    """The enrichment stage's records of ``raw`` requests, as the journey builder polls them."""
    out = EnrichStage(Settings(), {}).serialized(raw)
    assert out.failed == []
    return [Message("trailmark.enriched", 0, i, o.key, o.value) for i, o in enumerate(out.ok)]


def built_of(events: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    """What ``JourneyCore.apply`` derives for each event's row (its session, contact and consent)."""
    return [(f"session-{i}", f"contact-{i % 3}", consent_of(e["context"])) for i, e in enumerate(events)]


def document(raw: Any, events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The events' ``JSONColumns`` document as the builder writes it, read back; None if declined."""
    made = core.event_document(raw, events, [core.visitor_id(e) for e in events], built_of(events), native.as_columns)
    if made is None:
        return None
    names, body = made
    columns = orjson.loads(body)
    assert list(columns) == names  # the insert names its columns in the document's order
    return dict(columns)


def columns_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The same rows as ``event_columns`` makes them (what the insert sent before), as JSON reads them."""
    return dict(orjson.loads(orjson.dumps(core.event_columns(events, built_of(events), as_columns))))


@functools.cache
def _page() -> tuple[tuple[str, ...], tuple[Any, ...]]:
    (event,) = read(enriched([raw_record("a", 1)]))[0]
    return tuple(event), tuple(event.values())


def enriched_event() -> dict[str, Any]:
    """An enriched event (its fields in order), as the enricher writes it: a new dict each time."""
    return dict(zip(*_page(), strict=True))


def read(records: list[Message]) -> tuple[list[dict[str, Any]], Any]:
    assert native.read_runs is not None
    events, _, raw = native.read_runs([m.value for m in records], orjson.loads)
    return events, raw


@needs_reader
def test_the_events_document_holds_the_rows_the_columns_hold() -> None:
    """Written from the values as they came, the events rows are those ``event_columns`` makes: the
    enricher's fields, the derived visitor, session, contact and consent, JSON fields as text, an
    absent time as the epoch, a group call's person fields blank; for every event and for some."""
    records = enriched(
        [
            raw_record("a", 3, properties={"quote": 'say "hi"\n', "é": "日本語 😀", "n": 2**63 + 5}),
            raw_record("b", 2, userId="u-1", timestamp="2026-12-01T09:59:00Z", context={"consent": [1, 0, 1]}),
            raw_record("c", 1, type="group", groupId="g-1", traits={"email": "ceo@acme.io", "phone": "+14155552671"}),
            raw_record("d", 1, type="identify", traits={"email": "x@acme.io", "first_name": "X"}),
        ]
    )
    events, raw = read(records)
    assert raw is not None and len(raw) == len(events) == 7
    assert sorted(e["type"] for e in events) == ["group", "identify", "track", "track", "track", "track", "track"]
    for some in (events, events[1::2], events[-1:]):
        assert document(raw, some) == columns_of(some)
    doc = document(raw, events)
    assert doc is not None and "x@acme.io" in doc["email"]
    assert set(doc["original_timestamp"]) > {"1970-01-01 00:00:00.000"}


@needs_reader
def test_the_events_document_writes_odd_values_as_the_columns_do() -> None:
    """Values of an enriched event another producer may send: JSON fields null, times empty or null,
    a group call's type escaped, strings with escapes and any characters, numbers of every kind."""
    template = enriched_event()
    odd = [
        {"properties": None, "traits": None, "context": None, "original_timestamp": "", "sent_at": None},
        {"type": "group", "email": "a@b.io", "phone_e164": "+1", "email_free": True, "page_path": '\u0000\t"\\/'},
        {"page_title": "EMOJI \u00e9", "geo_lat": 1e300, "geo_lon": -0.0, "screen_width": 2**64 - 1},
    ]
    names = list(template)
    rows = [[{**template, **o, "message_id": f"m{i}"}[n] for n in names] for i, o in enumerate(odd)]
    text = orjson.dumps({"fields": names, "rows": rows}).replace(b'"group"', b'"gr\\u006fup"')
    text = text.replace(b"EMOJI", b"\\ud83d\\ude00")  # escaped as a surrogate pair
    events, raw = read([Message("t", 0, 0, b"s1:a", text)])
    assert raw is not None and events[1]["type"] == "group"
    assert document(raw, events) == columns_of(events)


@needs_reader
@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(["page", "track", "group", "identify"]),
                "page_path": st.text(max_size=12),
                "email": st.text(max_size=8),
                "properties": st.none() | st.sampled_from(["{}", '{"a":[1,"\\u00e9"]}']),
                "original_timestamp": st.none() | st.sampled_from(["", "2026-12-01T10:00:00.000Z"]),
                "geo_lat": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**63), 2**64 - 1),
            }
        ),
        min_size=1,
        max_size=6,
    ),
    keep=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_generated_events_documents_hold_the_rows_the_columns_hold(
    values: list[dict[str, Any]], keep: list[bool]
) -> None:
    base = enriched_event()
    names = list(base)
    rows = [[{**base, **v, "message_id": f"m{i}"}[n] for n in names] for i, v in enumerate(values)]
    events, raw = read(
        [run_record(names, rows[:3]), run_record(names, rows[3:])] if len(rows) > 3 else [run_record(names, rows)]
    )
    kept = [e for e, k in zip(events, keep, strict=False) if k] or events
    assert document(raw, kept) == columns_of(kept)


@needs_reader
def test_the_events_document_is_declined_where_it_cannot_be_written_as_it_came() -> None:
    """Then the builder writes ``event_columns`` instead: events the reader did not make (a copy, a
    record it left to orjson) or not in its order, a JSON field or a time of another JSON type, rows
    of a record whose field list is not the first record's."""
    records = enriched([raw_record("a", 2), raw_record("b", 2)])
    events, raw = read(records)
    assert document(raw, events) is not None
    assert document(raw, [events[0], dict(events[1])]) is None
    assert document(raw, [events[1], events[0]]) is None
    template = enriched_event()
    names = list(template)
    for field, value in (("properties", {"a": 1}), ("context", 5), ("original_timestamp", 0), ("sent_at", [])):
        row = [{**template, field: value}[n] for n in names]
        evs, raw = read([run_record(names, [row])])
        assert raw is not None and document(raw, evs) is None, field
    # a record the reader leaves to orjson (a row of another width beside a whole one) is not among
    # the RecordTexts' events
    whole = [{**template, "message_id": "whole"}[n] for n in names]
    mixed = [records[0], run_record(names, [whole, whole[:3]]), records[1]]
    parsed = parse_enriched(mixed)
    assert [o.value["message_id"] for o in parsed.ok][2] == "whole" and len(parsed.failed) == 1
    evs = [o.value for o in parsed.ok]
    raw = runtime.raw_source(parsed.ok)
    assert raw is None  # the builder is given none: not every event was read by the reader
    assert native.read_runs is not None
    made, counts, raw = native.read_runs([m.value for m in mixed], orjson.loads)
    assert counts == [2, -1, 2] and raw is not None and len(raw) == len(made) == 4
    assert document(raw, made) == columns_of(made)
    assert document(raw, evs) is None
    # two field lists in one read: the rows of the first are written, those of another are not
    other = run_record([*names, "added"], [[*[template[n] for n in names], 1]])
    made, counts, raw = native.read_runs([m.value for m in [records[0], other]], orjson.loads)
    assert counts == [2, 1] and raw is not None and raw.names == names
    assert document(raw, made[:2]) == columns_of(made[:2])
    assert document(raw, made) is None and document(raw, made[2:]) is None


@needs_reader
def test_the_events_documents_texts_outlive_their_read_and_are_given_back() -> None:
    """The document is made from the texts its RecordTexts kept, whatever became of the records; reads
    after a RecordTexts is gone (its buffers reused) make their own documents right."""
    first = enriched([raw_record("a", 3, properties={"p": "first"})])
    events, raw = read([Message(m.topic, m.partition, m.offset, m.key, bytes(m.value)) for m in first])
    expected = columns_of(events)
    import gc

    gc.collect()
    assert document(raw, events) == expected
    del raw
    for n in range(3):
        evs, again = read(enriched([raw_record("z", 2 + n, properties={"p": f"read {n}"})]))
        assert document(again, evs) == columns_of(evs)


@needs_reader
def test_dicts_without_the_stored_only_fields_are_made_whole_as_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read with ``skip`` (the Kafka builder on a server: ``STORED_ONLY``), the dicts hold the other
    fields, the values and types a whole read gives, in its order; ``RecordTexts.full`` gives the whole
    dicts, as orjson reads them; not for an event it did not make."""
    records = enriched(
        [
            raw_record("a", 3, properties={"quote": 'say "hi"\n', "n": 2**63 + 5}),
            raw_record("b", 2, userId="u-1", traits={"email": "b@acme.io"}, context={"consent": [1, 0, 1]}),
        ]
    )
    whole, python = both(records, monkeypatch)
    assert_same(whole, python)
    slim = parse_enriched(records, skip=core.STORED_ONLY)
    raw = runtime.raw_source(slim.ok)
    assert raw is not None and raw.slim and len(raw) == len(slim.ok) == 5
    for s, w in zip(slim.ok, whole.ok, strict=True):
        assert same(s.value, {k: v for k, v in w.value.items() if k not in core.STORED_ONLY})
        assert "page_url" in w.value and "page_url" not in s.value
    events = [o.value for o in slim.ok]
    expected = [o.value for o in python.ok]
    for some, want in ((events, expected), (events[1::2], expected[1::2])):
        made = raw.full(some)
        assert made is not None and all(same(m, e) for m, e in zip(made, want, strict=True))
    assert all(same(m, o.value) for m, o in zip(runtime.whole_events(slim.ok), python.ok, strict=True))
    assert raw.full([dict(events[0])]) is None and raw.full([events[1], events[0]]) is None


@needs_reader
def test_values_the_dicts_leave_out_are_still_checked_as_read() -> None:
    """Which records the reader leaves to orjson does not depend on the fields the dicts hold: a value
    it would not read is checked where it is skipped too, and its record is read by Python."""
    fields = ["keep", "skip"]
    bad = [
        b"18446744073709551616",
        b"1e999",
        b'"\\ud800"',
        b'{"n":"\\udfff"}',
    ]
    good = [
        b'{"n":18446744073709551616}',
        b'"\\u00e9 \\n"',
        b"-0.0",
        b"18446744073709551615",
        b'{"a":[1,{"b":null}]}',
        b"[]",
        b"true",
    ]
    assert native.read_runs is not None
    for value in bad + good:
        record = b'{"fields":["keep","skip"],"rows":[["x",' + value + b"]]}"
        as_whole = native.read_runs([record], orjson.loads)[1]
        as_slim = native.read_runs([record], orjson.loads, ["skip"])[1]
        assert as_whole == as_slim == ([-1] if value in bad else [1]), value
    events, _, raw = native.read_runs([run_record(fields, [["x", {"a": [1.5, None]}]]).value], orjson.loads, ["skip"])
    assert events == [{"keep": "x"}] and raw is not None
    assert raw.full(events) == [{"keep": "x", "skip": {"a": [1.5, None]}}]


@needs_reader
@settings(max_examples=200, deadline=None)
@given(parts=st.lists(st.text(max_size=40), min_size=3, max_size=3))
def test_the_compiled_session_ids_are_uuid5s(parts: list[str]) -> None:
    """trailmark/native's session id is uuid5(namespace, site|visitor|messageId), as the core's Python
    makes it; a text UTF-8 cannot hold fails as it does in Python."""
    import uuid

    assert native.session_id is not None
    expected = str(uuid.uuid5(uuid.UUID(bytes=core._NS), "|".join(parts)))
    assert native.session_id(core._NS, *parts) == expected
    assert core.session_id_for(*parts) == expected
    with pytest.raises(UnicodeEncodeError):
        native.session_id(core._NS, parts[0], "\ud800", parts[2])
    with pytest.raises(ValueError, match="namespace"):
        native.session_id(b"short", *parts)
