"""Property: whatever JSON-shaped events reach the log, no stage crashes, every event is either
stored (``trailmark.events``, by messageId) or dead-lettered with a reason (on the dead-letter
topic), and another visitor's
events in the same poll are stored.

The events go straight into the server's embedded log (as an older version or another producer
could have left them), past the collector's limits: nesting up to 1,100 levels, integers over
64 bits, NaN and lone surrogates (escaped, or as invalid UTF-8), wrong types in every known field,
empty keys, odd unicode. The real ``trailmark up`` runs enrichment, journeys and the dead-letter
sink on chDB.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import Server
from tests.robustness.helpers import KEEP_LOG, RAW, append, dead_letters_on_log, metric, raw_record, readyz

ODD_TEXT = [
    "NaN",
    "Infinity",
    "-Infinity",
    "-0",
    "1e999",
    "0x1F",
    "",
    " ",
    "null",
    "true",
    "\x00",
    "\u202e",
    "\ufeff",
    "\U0001d54f",
    "e\u0301",
    "9999-12-31T23:59:59Z",
    "0000-00-00T00:00:00Z",
    "1970-01-01",
    "2026-11-02T10:00:00+14:00",
    "yesterday",
    "@deep@",
    "@nan@",
    "@bigint@",
    "../../etc/passwd",
    "'; DROP TABLE trailmark.events; --",
    "{db}",
    "%s%n",
    "\\u0000",
]
# every unicode category, lone surrogates (Cs) included
text = st.text(
    st.characters(codec=None, categories=["Lu", "Ll", "Nd", "Zs", "Cc", "Cf", "Cs", "Co", "So", "Mn"]), max_size=12
) | st.sampled_from(ODD_TEXT)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**64 + 2)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=10
)


def field(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A known field: usually a plausible value, often anything at all."""
    return st.one_of(plausible, plausible, values)


urls = st.sampled_from(
    [
        "https://shop.example.com/pricing?utm_source=news&gclid=1",
        "http://[::1",
        "javascript:x",
        "https://xn--80ak6aa92e.com/\u202e",
        "",
        "/relative",
        "https://a.b/" + "x" * 3000,
    ]
)
times = st.sampled_from(
    [
        "2026-11-02T10:00:00Z",
        "2026-11-02T10:00:00.123456789+02:00",
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "1e10",
        "",
    ]
)
context = st.fixed_dictionaries(
    {},
    optional={
        "page": field(
            st.fixed_dictionaries(
                {}, optional={"url": field(urls), "path": field(text), "referrer": field(urls), "title": field(text)}
            )
        ),
        "userAgent": field(st.sampled_from(["Mozilla/5.0 (X11; Linux x86_64)", "Googlebot/2.1", "", "\x00"])),
        "ip": field(st.sampled_from(["81.2.69.142", "::1", "999.1.1.1", "", "2001:db8::1"])),
        "campaign": field(st.dictionaries(st.sampled_from(["source", "medium", "name", ""]), text, max_size=3)),
        "traits": values,
        "locale": field(text),
        "timezone": field(text),
    },
)
traits = st.fixed_dictionaries(
    {},
    optional={
        "email": field(st.sampled_from(["a@b.co", "x@", "@", "A@GMAIL.COM"])),
        "phone": field(st.sampled_from(["+44 20 7946 0958", "0", "+"])),
        "name": field(text),
        "company": values,
    },
)
kinds = st.sampled_from(["track", "page", "screen", "identify", "alias", "group"])
event = st.fixed_dictionaries(
    {"type": st.one_of(kinds, kinds, kinds, st.just("launch"), values)},
    optional={
        "event": field(text),
        "name": field(text),
        "anonymousId": field(text),
        "userId": field(text),
        "previousId": field(text),
        "groupId": field(text),
        "timestamp": field(times),
        "sentAt": field(times),
        "originalTimestamp": field(times),
        "properties": field(st.dictionaries(text, values, max_size=4)),
        "traits": field(traits),
        "context": field(context),
        "integrations": values,
        "": values,
    },
)


@st.composite
def hostile_bodies(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """A raw record body (bytes as a client could send them) and the messageIds to account for."""
    shape = draw(st.sampled_from(["events"] * 8 + ["junk item", "junk body"]))
    if shape == "junk body":  # not a batch at all
        body: Any = draw(values)
    else:
        body = {"batch": draw(st.lists(event, min_size=1, max_size=3))}
        if draw(st.booleans()):
            body["sentAt"] = draw(field(times))
        if shape == "junk item":  # one item that is not an event among them
            body["batch"].insert(draw(st.integers(0, len(body["batch"]))), draw(values))
    ids = []
    for ev in body.get("batch", []) if isinstance(body, dict) else []:
        if isinstance(ev, dict):
            ev["messageId"] = mid = str(uuid.uuid4())  # the handle to find it again, stored or dead
            ids.append(mid)
    if ids and draw(st.booleans()):  # nesting no serializer of the pipeline can write
        target = body["batch"][draw(st.integers(0, len(body["batch"]) - 1))]
        if isinstance(target, dict):
            target[draw(st.sampled_from(["properties", "traits", "context"]))] = {"a": "@deep@"}
    ascii_only = draw(st.booleans())  # lone surrogates escaped (\ud800), or raw: invalid UTF-8
    text = json.dumps(body, ensure_ascii=ascii_only)
    depth = draw(st.one_of(st.integers(1, 64), st.integers(250, 1100)))
    text = (
        text.replace('"@deep@"', "[" * depth + "]" * depth).replace('"@nan@"', "NaN").replace('"@bigint@"', str(2**70))
    )
    return text.encode("utf-8", "surrogatepass"), ids


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("props") / "data", env=KEEP_LOG).start()
    yield server
    server.stop()


def quoted(ids: list[str]) -> str:
    return ", ".join(f"'{i}'" for i in ids)


def accounted(server: Server, ids: list[str], timeout: float = 20) -> tuple[set[str], dict[str, str]]:
    """Wait until every id is stored or dead-lettered; (stored ids, reason by dead-lettered id)."""
    deadline = time.time() + timeout
    while True:
        stored = {
            r["message_id"]
            for r in server.sql(f"SELECT message_id FROM trailmark.events WHERE message_id IN ({quoted(ids)})")
        }
        rest = [i for i in ids if i not in stored]
        dead: dict[str, str] = {}
        if rest:  # read keys cannot see the dead_letters table: the dead-letter topic in the log
            records = dead_letters_on_log(server)
            dead = {i: d["reason"] for i in rest for d in records if i in d["payload"]}
        if len(stored) + len(dead) == len(ids) or time.time() > deadline:
            return stored, dead
        time.sleep(0.15)


@settings(
    max_examples=30,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
@given(hostile=hostile_bodies())
def test_any_events_are_stored_or_dead_lettered_and_others_keep_flowing(
    srv: Server, hostile: tuple[bytes, list[str]]
) -> None:
    body, ids = hostile
    sid = srv.site["site_id"]
    normal_anon, normal_id = f"normal-{uuid.uuid4()}", str(uuid.uuid4())
    normal = json.dumps(
        {
            "batch": [
                {
                    "type": "page",
                    "anonymousId": normal_anon,
                    "messageId": normal_id,
                    "context": {"page": {"url": "https://shop.example.com/"}},
                }
            ]
        }
    ).encode()
    append(
        srv,
        RAW,
        [
            (f"{sid}:hostile".encode(), raw_record(sid, body)),
            (f"{sid}:{normal_anon}".encode(), raw_record(sid, normal)),
        ],
    )

    stored, dead = accounted(srv, [normal_id, *ids])
    assert normal_id in stored, f"another visitor's event was not stored\n{srv.tail()}"
    lost = [i for i in ids if i not in stored and i not in dead]
    assert not lost, f"neither stored nor dead-lettered: {lost} of {body[:2000]!r}\n{srv.tail()}"
    assert all(dead.values()), f"a dead letter without a reason: {dead}"
    status, health = readyz(srv)
    assert status == 200, health
    assert metric(srv, "trailmark_stage_restarts_total") == 0, srv.tail()
