"""Enriched events -> sessions, touchpoints, identities, contacts, stages, events in ClickHouse.

The builder is the single writer for its visitors (the bus keys records by site + visitor), so it
keeps each visitor's open session in memory and reloads it from ClickHouse after a restart or a
rebalance, as of the last batch whose events are stored: from the visitor's ``visitor_state`` row
(written with each batch, used only if that batch's events are stored), else rebuilt from its
stored events. Contacts, emails and accounts span
visitors (several builders of a group write them), so they are read fresh for every batch.
Write order makes redelivery harmless: derived tables first (versioned / replacing, so a re-derived
row collapses), ``events`` last; an event already in ``events`` (looked up by visitor + messageId on
the primary key of ``event_keys``, which a view fills from ``events``; for the first batches after a
start, a rebalance or a failure, in ``events`` itself, whose insert may have been cut short before
the view's) is skipped. So at-least-once delivery stores every event exactly once.

This module holds the batch's I/O and its order; the logic (sessions, stages, identities,
contacts, accounts) is ``journey_builder/core.py``, which does none, and every query is in
``journey_builder/repository.py``.

Not covered: a builder killed after writing identities of a batch, in which an email-only identify
is followed by a userId identify of the same visitor; the batch, redelivered, then finds the
later contact already linked and adds a link of the email to it. Two builders updating one
contact at once (two devices of a person on two partitions): the later write wins per contact.
A builder killed in the middle of an events insert whose records come back only after its
successor's first five batches (``CAUTIOUS_BATCHES``; they come first, from the last commit): those
its view had not copied to ``event_keys`` are stored again.
A builder killed in the middle of one events insert that spans three or more months, for a visitor
whose events of that batch span them all: its state row is checked by its first and last event only.
Events a site keeps only as consent aggregates are counted at least once (a redelivered batch
counts them again: they keep no messageId to check).
"""

from __future__ import annotations

import gc
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import orjson

from journey_builder.core import (
    GROUP,
    IDENTIFYING,
    BatchKeys,
    JourneyCore,
    Output,
    SessionState,
    VisitorState,
    batch_keys,
    blank_account,
    blank_contact,
    email_of,
    event_columns,
    event_document,
    is_conversion,
    visitor_from_state,
    visitor_id,
)
from journey_builder.privacy import AGGREGATE_TABLE, ConsentPolicies, Suppression, split_by_consent
from journey_builder.repository import LAST_SESSION_FIELDS, BuilderRepository
from journey_builder.stages import PURCHASE, StageRules
from schemas import EnrichedEvent
from schemas.columns import rows_as_columns
from schemas.times import epoch_ms, from_ch
from trailmark import compiled
from trailmark.compiled import RecordTexts
from trailmark.settings import JourneySettings
from trailmark.storage.base import JsonColumns, Row, Storage

__all__ = ["JourneyBuilder", "Output", "visitor_id"]


KEEP_ALL = ConsentPolicies()  # every site keeps events without analytics consent in full
# Batches after a start, a rebalance or a failed batch whose duplicate check reads ``events`` itself:
# an events insert cut short (a builder killed, a write that failed) can leave rows in ``events``
# whose keys its view never copied to ``event_keys``, and those records come again first.
CAUTIOUS_BATCHES = 5


_pause_lock = threading.Lock()
_pausing = 0  # gc_paused blocks running, in every thread of the process
_enable_after = False  # whether the GC was on when the first of them began


@contextmanager
def gc_paused() -> Iterator[None]:
    """The process's cyclic GC off while the block runs (a batch's build), on again once the last
    such block of any thread ends, if it was on when the first began.

    A batch makes tens of thousands of containers that live until its inserts are done (each
    event's build, the columns of ``events``, the other tables' rows): young collections started
    in the middle of it walk them all and free nothing. Measured in the Kafka builder
    (bench/builder.py --records --server --time-ordered, 200k events): 31 collections and
    0.60-0.74 s of its ~10 s of CPU; paused, with the ``events`` columns let go of once stored, 10
    collections (one after each batch) and 0.24-0.26 s (bench/RESULTS.md, 2026-12-06 "the cyclic
    GC held back while a batch is built"). What the batch keeps (its visitors' state) is walked by
    the first collection after it. Reference counting frees everything that is not a cycle
    meanwhile, in every thread: a build of 20k events holds the GC back about a second, and the
    stage runner allocates between batches, so a collection that is due runs there."""
    global _pausing, _enable_after
    with _pause_lock:
        if _pausing == 0:
            _enable_after = gc.isenabled()
            gc.disable()
        _pausing += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pausing -= 1
            if _pausing == 0 and _enable_after:
                gc.enable()


class JourneyBuilder:
    def __init__(self, storage: Storage, settings: JourneySettings, consent: ConsentPolicies = KEEP_ALL) -> None:
        self.repo = BuilderRepository(storage)
        self.settings = settings
        self.consent = consent
        self.core = JourneyCore(
            StageRules.load(settings.stages_file),
            settings.conversions,
            settings.session_timeout_s,
            settings.include_bots,
            (settings.analysis.nps_event, settings.analysis.csat_event),  # answers are touchpoints
            compiled.as_columns,  # trailmark/native's where make native built it
        )
        self.max_visitors = settings.max_visitors
        self.suppression = Suppression(storage)
        self.cautious = CAUTIOUS_BATCHES  # see _drop_seen

    @property
    def visitors(self) -> OrderedDict[tuple[str, str], VisitorState]:
        """This builder's visitors in memory (cleared by the runner after a rebalance)."""
        return self.core.visitors

    # ---- public -------------------------------------------------------------------------------

    def process(self, batch: Sequence[EnrichedEvent], raw: RecordTexts | None = None) -> Output:
        """Derive and write everything for one batch; returns what was written (for metrics/tests): its
        counters and the ``events``' messageIds (the rows are let go of once stored). The
        process's cyclic GC waits until the batch is done (``gc_paused``). ``raw``: the values of
        the batch's events as they came off the bus (``parse_enriched``), which the ``events`` rows
        are written from where the storage takes them so (``Storage.json_columns``)."""
        if raw is not None and not self.repo.storage.json_columns:
            batch, raw = compiled.whole(raw, list(batch)), None  # the rows are written from the dicts
        with gc_paused():
            out = self._process(batch, raw)
            out.let_go()  # freed before the GC runs again
            return out

    def _process(self, batch: Sequence[EnrichedEvent], raw: RecordTexts | None) -> Output:
        careful = self.cautious > 0  # a batch after a start, a rebalance or a failure (see _write)
        keys = batch_keys(batch)  # what the passes below read of each event, read once (see BatchKeys)
        new, stored, states = self._drop_seen(keys)
        out = Output(skipped_duplicates=len(batch) - len(new))
        if not new:
            return out
        fresh = list(batch) if len(new) == len(batch) else [batch[i] for i in new]
        if len(new) < len(batch):
            keys = keys.take(new)
        fresh = self._drop_erased(fresh, out)
        split = split_by_consent(fresh, self.consent)
        out.skipped_no_consent = split.dropped
        out.aggregated = split.aggregated
        if len(split.kept) < len(keys):  # erased, or kept only as counts: their keys are read again
            keys = batch_keys(split.kept)
        fresh = split.kept
        if fresh:
            order = keys.order()  # the events stay as they came: see batch_order
            core = self.core
            # Contacts, emails and accounts span visitors, so other builders of the group (other
            # partitions) change them too: read fresh for every batch. Visitors are this builder's own.
            core.contacts.clear()
            core.email_contacts.clear()
            core.accounts.clear()
            self._load_visitors(keys, stored, states)
            self._load_contacts([fresh[i] for i in keys.of_kind(IDENTIFYING)])
            self._load_accounts([fresh[i] for i in keys.of_kind(GROUP)])
            try:
                core.apply(fresh, self, out, order, columns=raw is None)
                events: Mapping[str, Sequence[Any]] | JsonColumns = out.events
                if raw is not None:
                    events = self._event_document(raw, fresh, keys, out)
                self._write(out, events, split.aggregates, careful)
            except BaseException:
                # the batch's visitors are half-updated in memory and the batch will come again (a
                # retry after ClickHouse was unavailable, or one event at a time after an error):
                # it must meet their state as stored, so they are reloaded
                for key in out.visitors:
                    core.drop(key)
                self.cautious = CAUTIOUS_BATCHES
                raise
        else:
            self._write(out, out.events, split.aggregates)
        self._evict()
        return out

    def _event_document(
        self, raw: RecordTexts, events: Sequence[EnrichedEvent], keys: BatchKeys, out: Output
    ) -> Mapping[str, Sequence[Any]] | JsonColumns:
        """The batch's ``events`` rows written from the values as they came (``event_document``), or
        as columns where they cannot be. ``out.events`` keeps the messageIds (``Output.event_count``)."""
        built, out.built = out.built, []
        transpose = self.core.transpose
        document = event_document(raw, events, [v for _, v in keys.visitors], built, transpose)
        if document is None:  # the rows are written from the dicts
            out.events = event_columns(compiled.whole(raw, list(events)), built, transpose)
            return out.events
        out.events = {"message_id": [m for _, m in keys.ids]}
        return JsonColumns(*document)

    def reset(self) -> None:
        """Forget every visitor (another builder may have written them: a rebalance); the next
        batches check duplicates against ``events`` itself."""
        self.core.clear()
        self.cautious = CAUTIOUS_BATCHES

    def forget(self, event: Mapping[str, Any]) -> None:
        """Drop the in-memory state of a failed event's visitor (it may be half-updated); the next
        batch reloads it from ClickHouse. Tolerates a malformed event, which is why it failed."""
        anon = event.get("anonymous_id") or f"user:{event.get('user_id', '')}"
        self.core.drop((event.get("site_id", ""), anon))

    # ---- Lookups (journey_builder.core): what the core asks beyond the batch's loaded state -----

    def contact(self, site_id: str, contact_id: str) -> dict[str, Any] | None:
        rows = self.repo.contacts([(site_id, contact_id)])
        return self._parsed(rows[0]) if rows else None

    def anonymous_ids_of(self, site_id: str, contact_id: str) -> list[str]:
        return self.repo.anonymous_ids_of(site_id, contact_id)

    # ---- dedup and state loading -------------------------------------------------------------

    def _drop_seen(self, keys: BatchKeys) -> tuple[list[int], set[tuple[str, str]], dict[tuple[str, str], Row]]:
        """Indexes of the batch's events (``keys``) without repeated or already stored messageIds;
        which of its visitors have stored events at all (only those have state to reload); and the
        stored ``visitor_state`` of those not in memory whose markers are stored (the row's batch was
        written whole). Queries by primary key: the batch's keys, then, only for visitors with stored
        events that are not in memory (returning after eviction or a restart), their state rows and
        those rows' markers. A batch of new visitors and visitors in memory takes one query."""
        firsts = keys.first_of_each()
        if not firsts:
            return [], set(), {}
        cautious = self.cautious > 0
        if cautious:
            self.cautious -= 1
        ids = keys.ids
        every = len(firsts) == len(ids)
        visitors = sorted(set(keys.visitors) if every else {keys.visitors[i] for i in firsts})
        stored, known = self._stored(visitors, [ids[i][1] for i in firsts], cautious)
        missing = [k for k in visitors if k in stored and k not in self.core.visitors]
        states = {(r["site_id"], r["anonymous_id"]): r for r in self.repo.visitor_states(missing)} if missing else {}
        if markers := sorted({m for k, r in states.items() for m in r["markers"] if (k[0], m) not in known}):
            known |= self._stored(sorted(states), markers, cautious)[1]
        held = {k: r for k, r in states.items() if all((k[0], m) in known for m in r["markers"])}
        return ([i for i in firsts if ids[i] not in known] if known else firsts), stored, held

    def _stored(
        self, visitors: list[tuple[str, str]], ids: list[str], cautious: bool
    ) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        """``repo.stored_visitors``; when ``cautious``, from ``events`` itself (the truth), and the
        keys its view missed are copied to ``event_keys``."""
        stored, known = self.repo.stored_visitors(visitors, ids)
        if cautious:
            stored, truth = self.repo.stored_visitors(visitors, ids, table="events")
            if missed := truth - known:
                self.repo.index_events(visitors, sorted(m for _, m in missed))
            known = truth
        return stored, known

    def _drop_erased(self, events: list[EnrichedEvent], out: Output) -> list[EnrichedEvent]:
        """Events carrying an erased identifier are dropped (late, retried or replayed events of an
        erased contact). After any new erasure every cached visitor and contact is dropped too: the
        next batch reloads them from ClickHouse, where the erased ones are gone."""
        if self.suppression.changed():
            self.core.clear()
        erased = self.suppression.erased(events)  # type: ignore[arg-type]  # TypedDicts are dicts
        kept = [ev for ev, gone in zip(events, erased, strict=True) if not gone]
        out.skipped_erased = len(events) - len(kept)  # counted by the runner (trailmark_stage_dropped_total)
        return kept

    def _load_visitors(
        self, keys: BatchKeys, stored: set[tuple[str, str]], states: Mapping[tuple[str, str], Row]
    ) -> None:
        """State of the visitors not in memory, as of the last batch whose events are stored: from
        their ``visitor_state`` rows (``states``, checked by ``_drop_seen``), else rebuilt from the
        stored events as follows.

        A builder that died between its inserts (kill -9, or a batch that failed halfway) leaves
        sessions, stage entries ... of a batch whose events are not stored; that batch is
        delivered again, here or to another builder of the group, and must meet the state from
        before it: sessions and stage entries count only with stored events, and the open
        session's counters are checked against them. The Purchase marker comes back with the
        sessions that converted. A visitor without stored events has no sessions or stages to
        reload, only (through an alias or a merge) a contact.
        """
        visitors = self.core.visitors
        # a lookup per visitor of the batch, not ``set - visitors.keys()``, which walks the whole cache
        # (7.5 ms a batch at 100k visitors, against 0.07 ms)
        missing = sorted({k for k in keys.visitors if k not in visitors})
        if not missing:
            return
        for key in missing:  # a held state row implies stored events (its markers are stored)
            row = states.get(key)
            visitors[key] = VisitorState() if row is None else visitor_from_state(row)
        with_events = [k for k in missing if k in stored and k not in states]
        converted: set[tuple[str, str]] = set()
        for r in self.repo.last_sessions(with_events) if with_events else ():
            key = (r["site_id"], r["anonymous_id"])
            last = dict(zip(LAST_SESSION_FIELDS, r["s"], strict=True))
            state = visitors[key] = visitor_from_state(
                {**last, "session_id": r["last_session"], "anonymous_id": key[1], "sessions": r["n"], "stages": ()}
            )
            assert state.session is not None
            if int(r["converted"]) > (state.session.conversions > 0):  # an earlier session converted
                converted.add((r["site_id"], r["anonymous_id"]))
        self._check_open_sessions([(k, s) for k in with_events if (s := visitors[k].session) is not None])
        for key in with_events:
            state = visitors[key]
            if key in converted or (state.session is not None and state.session.conversions > 0):
                state.stages.add(PURCHASE)
        for r in self.repo.visitor_contacts(missing):  # contacts change with other devices: read fresh
            self.core.link((r["site_id"], r["anonymous_id"]), r["contact_id"])
        for r in self.repo.visitor_stages(with_events) if with_events else ():
            visitors[(r["site_id"], r["anonymous_id"])].stages |= set(r["stages"])

    def _check_open_sessions(self, sessions: list[tuple[tuple[str, str], SessionState]]) -> None:
        """Counters of each reloaded open session recomputed from its stored events when they
        disagree (a batch that extended it was written but for its events)."""
        if not sessions:
            return
        conversions = self.core.conversions
        found: dict[tuple[str, str, str], dict[str, Any]] = {}
        for r in self.repo.session_event_counts(sorted((site, anon, s.session_id) for (site, anon), s in sessions)):
            n = int(r["n"])
            got = found.setdefault(
                (r["site_id"], r["anonymous_id"], r["session_id"]),
                {"events": 0, "pageviews": 0, "conversions": 0, "end": "", "page": ("", ""), "user": ("", "")},
            )
            got["events"] += n
            got["pageviews"] += n if r["type"] in ("page", "screen") else 0
            got["conversions"] += n if is_conversion(r["type"], r["event"], conversions) else 0
            got["end"] = max(got["end"], from_ch(r["last_at"]))
            if r["page"]:
                got["page"] = max(got["page"], (from_ch(r["page_at"]), r["page"]))
            if r["last_user"]:
                got["user"] = max(got["user"], (from_ch(r["user_at"]), r["last_user"]))
        for (site, anon), s in sessions:
            stored = found.get((site, anon, s.session_id))
            if stored is None or stored["events"] == s.events:
                continue
            s.events, s.pageviews, s.conversions = stored["events"], stored["pageviews"], stored["conversions"]
            s.end, s.end_ms = stored["end"], epoch_ms(stored["end"])
            s.exit_page = stored["page"][1] or s.exit_page
            s.user_id = stored["user"][1] or s.user_id

    def _load_contacts(self, identifying: Sequence[EnrichedEvent]) -> None:
        """Contacts this batch's ``identifying`` events (a userId or a person's email) may touch, in
        two queries (not one per contact)."""
        core = self.core
        if not identifying:
            return
        emails = sorted({(e["site_id"], email) for e in identifying if (email := email_of(e))})
        if emails:
            for r in self.repo.email_contacts(emails):
                core.email_contacts[(r["site_id"], r["email"])] = r["contact_id"]
        missing = core.contacts_wanted(identifying)
        for row in self.repo.contacts(missing):
            core.contacts[(row["site_id"], row["contact_id"])] = self._parsed(row)
        for site, cid in missing:
            core.contacts.setdefault((site, cid), blank_contact(site, cid))

    def _load_accounts(self, groups: Sequence[EnrichedEvent]) -> None:
        """The accounts this batch's ``groups`` (group calls naming a group) touch, in one query."""
        wanted = sorted({(e["site_id"], e["group_id"]) for e in groups})
        if not wanted:
            return
        accounts = self.core.accounts
        for row in self.repo.accounts(wanted):
            row["traits"] = orjson.loads(row["traits"] or "{}")
            accounts[(row["site_id"], row["group_id"])] = row
        for site, gid in wanted:
            accounts.setdefault((site, gid), blank_account(site, gid))

    @staticmethod
    def _parsed(row: dict[str, Any]) -> dict[str, Any]:
        row["traits"] = orjson.loads(row["traits"] or "{}")
        row["field_sources"] = orjson.loads(row["field_sources"] or "{}")
        return row

    # ---- writing --------------------------------------------------------------------------------

    def _write(
        self,
        out: Output,
        events: Mapping[str, Sequence[Any]] | JsonColumns,
        aggregates: list[dict[str, Any]],
        careful: bool = False,
    ) -> None:
        tables = out.tables(time.time_ns(), self.core.transpose)
        tables[AGGREGATE_TABLE] = rows_as_columns(aggregates) if aggregates else {}
        # shared_devices looks up the contacts the batch gave a new device to. A batch written before
        # up to its identities (a builder killed, a write that failed) comes again first after a start,
        # a rebalance or a failure, and its devices are then already their contacts' as stored: those
        # batches have every contact they link looked up
        grown = {(site, contact) for site, _, contact, _, _ in out.links} if careful else out.grown
        self.repo.write(tables, events, sorted(grown))  # events last: their presence marks the batch as done
        # the batch's largest objects (see gc_paused), freed as soon as they are stored; the messageIds
        # stay, for what the batch wrote (Output.event_count)
        out.events = {"message_id": out.events["message_id"]} if out.events else {}

    def _evict(self) -> None:
        self.core.evict(self.max_visitors)
