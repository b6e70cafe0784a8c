"""The journey core's cost of a contact merge with many visitors in memory, optionally side by side
with another checkout (``--baseline DIR``, e.g. a ``git worktree`` of an older commit), alternating.

    .venv/bin/python bench/merge_cost.py [--visitors 100000] [--merges 200] [--repeat 2] [--baseline DIR]

A merge: a device identifies as a user with the email of an email-only contact, whose devices in
memory then belong to the user (``JourneyCore._identify``). The core is driven directly, with no
storage (its lookups answer from memory), so the figure is the core's own CPU per merge: ``--visitors``
page views of as many visitors fill the cache, ``--merges`` of them identify by email, then
``--merges`` new devices identify as users with those emails. Unique messageIds. Prints the figures;
nothing is appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def child(visitors: int, merges: int) -> str:
    """Run in the checkout under test (its directory first on sys.path); prints one result line."""
    import time

    from journey_builder.core import JourneyCore, Output
    from journey_builder.stages import StageRules
    from schemas import ENRICHED_DEFAULTS

    class Lookups:
        def contact(self, site_id: str, contact_id: str) -> dict[str, Any] | None:
            return None

        def anonymous_ids_of(self, site_id: str, contact_id: str) -> list[str]:
            return []

    def event(kind: str, anon: str, clock: str, msg: str, **fields: Any) -> dict[str, Any]:
        ts = f"2026-11-02T{clock}Z"
        ev: dict[str, Any] = {
            "v": 1, "site_id": "s1", "message_id": msg, "type": kind, "anonymous_id": anon, "user_id": "",
            "previous_id": "", "group_id": "", "event": "", "properties": {}, "traits": {}, "context": {},
            "timestamp": ts, "original_timestamp": ts, "sent_at": ts, "received_at": ts, "ip": "203.0.113.0",
            "user_agent": "", **ENRICHED_DEFAULTS,
        }  # fmt: skip
        ev.update(fields)
        return ev

    def apply(core: JourneyCore, events: list[dict[str, Any]]) -> None:
        core.contacts.clear()
        core.email_contacts.clear()
        core.apply(events, Lookups(), Output())  # type: ignore[arg-type]  # TypedDicts are dicts

    core = JourneyCore(StageRules.load(), ("Order Completed",), 1800, False)
    apply(core, [event("page", f"v{i}", "09:00:00.000", f"p{i}") for i in range(visitors)])
    apply(core, [event("identify", f"v{i}", "09:10:00.000", f"e{i}", email=f"p{i}@c.example") for i in range(merges)])
    core.email_contacts.update({("s1", f"p{i}@c.example"): f"email:p{i}@c.example" for i in range(merges)})
    users = [
        event("identify", f"w{i}", "09:20:00.000", f"u{i}", user_id=f"u{i}", email=f"p{i}@c.example")
        for i in range(merges)
    ]
    start = time.process_time()
    core.apply(users, Lookups(), Output())  # type: ignore[arg-type]
    spent = time.process_time() - start
    moved = sum(1 for i in range(merges) if core.visitors[("s1", f"v{i}")].contact_id == f"user:u{i}")
    assert moved == merges, f"{moved} of {merges} merged devices moved"
    return f"{len(core.visitors)} {merges} {spent}"


def run(checkout: Path, visitors: int, merges: int) -> tuple[int, float]:
    code = (
        f"import sys; sys.path.insert(0, {str(checkout)!r}); sys.path.insert(1, {str(ROOT / 'bench')!r});"
        f" import merge_cost; print(merge_cost.child({visitors}, {merges}))"
    )
    line = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    return int(line[0]), float(line[2])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--visitors", type=int, default=100_000)
    ap.add_argument("--merges", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--baseline", type=Path, help="another checkout, run alternately")
    a = ap.parse_args()
    checkouts = [("this", ROOT)] + ([("baseline", a.baseline.resolve())] if a.baseline else [])
    print("| checkout | visitors in memory | merges | CPU per merge (each run) |\n| --- | ---: | ---: | ---: |")
    results: dict[str, list[float]] = {name: [] for name, _ in checkouts}
    cached = 0
    for _ in range(a.repeat):
        for name, path in checkouts:
            cached, spent = run(path, a.visitors, a.merges)
            results[name].append(spent / a.merges * 1000)
    for name, path in checkouts:
        each = ", ".join(f"{ms:.3f} ms" for ms in results[name])
        print(f"| {name} ({path.name}) | {cached:,} | {a.merges} | {each} |")


if __name__ == "__main__":
    main()
