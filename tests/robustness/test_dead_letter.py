"""Building a dead letter never fails, whatever the failed record and its reason hold."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from trailmark.runtime import MAX_DEAD_LETTER_PAYLOAD, dead_letter, dead_letter_row, minimal_row


def nested(depth: int) -> list[Any]:
    root: list[Any] = []
    node = root
    for _ in range(depth - 1):
        node.append([])
        node = node[0]
    return root


def test_an_object_json_cannot_write_is_kept_as_its_repr() -> None:
    for payload in ({"properties": {"a": nested(300)}}, {"n": 2**70}, {"s": "\ud800 lone surrogate"}):
        rec = orjson.loads(dead_letter("journeys", "TypeError: boom", payload))
        assert rec["payload_encoding"] == "utf-8"
        assert "repr" in rec["reason"] and rec["reason"].startswith("TypeError: boom")
        assert rec["payload"].startswith("{'"), rec["payload"][:50]


def test_a_reason_with_lone_surrogates_becomes_valid_text() -> None:
    rec = orjson.loads(dead_letter("enrich", "KeyError: '\udc80'", b"{}"))
    assert rec["reason"] == "KeyError: '\\udc80'"


def test_bytes_are_kept_as_text_or_base64_and_cut_to_the_bound() -> None:
    rec = orjson.loads(dead_letter("enrich", "bad", b"\xff\xfe"))
    assert (rec["payload_encoding"], base64.b64decode(rec["payload"])) == ("base64", b"\xff\xfe")
    big = orjson.loads(dead_letter("enrich", "big", b"x" * (MAX_DEAD_LETTER_PAYLOAD + 10)))
    assert len(big["payload"]) == MAX_DEAD_LETTER_PAYLOAD and "payload cut" in big["reason"]


def test_an_object_that_cannot_even_be_shown_still_gives_a_dead_letter() -> None:
    class Opaque:
        def __repr__(self) -> str:
            raise ValueError("no")

    rec = orjson.loads(dead_letter("enrich", "", Opaque()))
    assert rec["payload"] == "<a Opaque that cannot be shown>" and rec["reason"]


def test_any_topic_record_becomes_a_row_of_the_table_shape() -> None:
    shape = {
        "stage": str,
        "reason": str,
        "payload": str,
        "payload_encoding": str,
        "failed_at": str,
        "version": int,
        "kind": str,
        "site_id": str,
    }
    records = [
        b"",
        b"\xff",
        b"null",
        b"[1]",
        b'{"stage": 1, "version": -1, "failed_at": 5}',
        b'{"payload": ' + b"[" * 600 + b"]" * 600 + b"}",
        dead_letter("enrich", "ok", b"p"),
    ]
    for value in records:
        row = dead_letter_row(value)
        assert {k: type(v) for k, v in row.items()} == shape, (value[:40], row)
        assert 0 <= row["version"] < 2**32
    assert dead_letter_row(b"[1]")["payload"] == "[1]"
    assert dead_letter_row(dead_letter("enrich", "ok", b"p"))["stage"] == "enrich"


def test_a_minimal_row_is_ascii_and_keeps_the_refused_row() -> None:
    row = dead_letter_row(dead_letter("ench\u00e9", "r\u00e9ason", b"p\u00e4yload"))
    small = minimal_row(row, ValueError("refused \u2603"))
    assert all(v.isascii() for v in small.values() if isinstance(v, str))
    assert orjson.loads(base64.b64decode(small["payload"])) == row
