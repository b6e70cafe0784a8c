"""All of the journey builder's SQL: what it reads back from ClickHouse and what it writes.

The builder (journey_builder/builder.py) holds the logic (sessions, identities, stages) and calls
these; each method is one query over a batch's keys (never one per event), and ``write`` inserts a
batch's rows, ``events`` last: its rows mark the batch as done, so a batch interrupted before them
is processed again and its derived rows are written again with a newer version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from trailmark.storage.base import Row, Storage

Keys = Sequence[tuple[str, str]]
# the fields of sessions_data that make a visitor's open session again (as in visitor_state)
LAST_SESSION_FIELDS = (
    "start", "end", "entry_page", "exit_page", "referrer_host", "channel", "source", "medium", "campaign",
    "click_id_type", "pageviews", "events", "conversions", "user_id", "device", "browser", "os", "country",
    "campaign_key",
)  # fmt: skip


class BuilderRepository:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.db = storage.database

    def _stored(self, what: str) -> str:
        """(site, visitor, ``what``) of the stored events of the visitors ``{v}``."""
        return (
            f"(SELECT site_id, anonymous_id, {what} FROM {self.db}.events"
            " WHERE (site_id, anonymous_id) IN {v:Array(Tuple(String, String))})"
        )

    def stored_visitors(
        self, visitors: Keys, message_ids: Sequence[str], table: str = "event_keys"
    ) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        """Which of ``visitors`` have stored events, and the (site, messageId) of ``message_ids``
        among them: one query on the primary key (site, visitor) of ``event_keys`` (migration 024:
        the messageIds of ``events`` in small granules), or of ``events`` itself."""
        rows = self.storage.query(
            # the set from a subquery is built once; a literal array's (over ~22k ids, measured on chDB
            # 4.4) was built again for each block read, 40k ids taking ~50 s of CPU instead of ~0.6 s
            "SELECT site_id, anonymous_id,"
            " groupArrayIf(message_id, message_id IN (SELECT arrayJoin({ids:Array(String)}))) AS seen"
            f" FROM {self.db}.{table} WHERE (site_id, anonymous_id) IN {{visitors:Array(Tuple(String, String))}}"
            " GROUP BY site_id, anonymous_id",
            {"visitors": list(visitors), "ids": list(message_ids)},
        )
        stored = {(r["site_id"], r["anonymous_id"]) for r in rows}
        return stored, {(r["site_id"], m) for r in rows for m in r["seen"]}

    def index_events(self, visitors: Keys, message_ids: Sequence[str]) -> None:
        """Copy these stored events' keys into ``event_keys`` (what its view did not write because
        the events insert was cut short)."""
        self.storage.execute(
            f"INSERT INTO {self.db}.event_keys SELECT site_id, anonymous_id, message_id, timestamp, retention_days"
            f" FROM {self.db}.events WHERE (site_id, anonymous_id) IN {{v:Array(Tuple(String, String))}}"
            " AND message_id IN (SELECT arrayJoin({ids:Array(String)}))",
            {"v": list(visitors), "ids": list(message_ids)},
        )

    def visitor_states(self, visitors: Keys) -> list[Row]:
        """The latest ``visitor_state`` row of each of ``visitors`` that has one."""
        return self.storage.query(
            f"SELECT * EXCEPT (retention_days) FROM {self.db}.visitor_state FINAL"
            " WHERE (site_id, anonymous_id) IN {v:Array(Tuple(String, String))}",
            {"v": list(visitors)},
        )

    def last_sessions(self, visitors: Keys) -> list[Row]:
        """Per visitor: sessions with stored events, the latest one's fields (tuple ``s``, in the
        order of ``LAST_SESSION_FIELDS``), and how many converted."""
        return self.storage.query(
            f"SELECT site_id, anonymous_id, count() AS n, argMax(session_id, end) AS last_session,"
            f" argMax(tuple({', '.join(LAST_SESSION_FIELDS)}), end) AS s, countIf(conversions > 0) AS converted"
            f" FROM {self.db}.sessions_data FINAL WHERE (site_id, anonymous_id) IN"
            " {v:Array(Tuple(String, String))} AND (site_id, anonymous_id, session_id) IN "
            + self._stored("session_id")
            + " GROUP BY site_id, anonymous_id",
            {"v": list(visitors)},
        )

    def session_event_counts(self, sessions: Sequence[tuple[str, str, str]]) -> list[Row]:
        """Stored events of these sessions, counted by type and name, with the latest page and user."""
        return self.storage.query(
            f"SELECT site_id, anonymous_id, session_id, type, event, count() AS n, max(timestamp) AS last_at,"
            f" maxIf(timestamp, type IN ('page', 'screen') AND page_path != '') AS page_at,"
            f" argMaxIf(page_path, timestamp, type IN ('page', 'screen') AND page_path != '') AS page,"
            f" maxIf(timestamp, user_id != '') AS user_at, argMaxIf(user_id, timestamp, user_id != '') AS last_user"
            f" FROM {self.db}.events WHERE (site_id, anonymous_id, session_id) IN"
            " {s:Array(Tuple(String, String, String))} GROUP BY site_id, anonymous_id, session_id, type, event",
            {"s": list(sessions)},
        )

    def visitor_contacts(self, visitors: Keys) -> list[Row]:
        return self.storage.query(
            f"SELECT site_id, anonymous_id, argMax(contact_id, last_seen) AS contact_id FROM {self.db}.identities_data"
            " WHERE (site_id, anonymous_id) IN {v:Array(Tuple(String, String))} GROUP BY site_id, anonymous_id",
            {"v": list(visitors)},
        )

    def visitor_stages(self, visitors: Keys) -> list[Row]:
        """Stages each visitor entered with a stored event."""
        return self.storage.query(
            f"SELECT site_id, anonymous_id, groupUniqArray(stage) AS stages FROM {self.db}.stage_transitions_data"
            " WHERE (site_id, anonymous_id) IN {v:Array(Tuple(String, String))} AND (site_id, anonymous_id,"
            " message_id) IN " + self._stored("message_id") + " GROUP BY site_id, anonymous_id",
            {"v": list(visitors)},
        )

    def email_contacts(self, emails: Keys) -> list[Row]:
        return self.storage.query(
            f"SELECT site_id, email, argMax(contact_id, version) AS contact_id FROM {self.db}.contacts_data"
            " WHERE (site_id, email) IN {v:Array(Tuple(String, String))} GROUP BY site_id, email",
            {"v": list(emails)},
        )

    def contacts(self, keys: Keys) -> list[Row]:
        return self.storage.query(
            f"SELECT * FROM {self.db}.contacts_data FINAL WHERE (site_id, contact_id) IN"
            " {v:Array(Tuple(String, String))}",
            {"v": list(keys)},
        )

    def accounts(self, keys: Keys) -> list[Row]:
        return self.storage.query(
            f"SELECT * FROM {self.db}.accounts_data FINAL WHERE (site_id, group_id) IN"
            " {v:Array(Tuple(String, String))}",
            {"v": list(keys)},
        )

    def anonymous_ids_of(self, site_id: str, contact_id: str) -> list[str]:
        rows = self.storage.query(
            f"SELECT DISTINCT anonymous_id FROM {self.db}.identities_data"
            " WHERE site_id = {s:String} AND contact_id = {c:String}",
            {"s": site_id, "c": contact_id},
        )
        return [r["anonymous_id"] for r in rows]

    def write(self, tables: Mapping[str, Sequence[Mapping[str, Any]]], events: Mapping[str, Sequence[Any]]) -> None:
        """One insert per table, in the order given, then ``events`` (given as columns) last."""
        for table, rows in tables.items():
            self.storage.insert(table, rows)
        self.storage.insert_columns("events", events)
