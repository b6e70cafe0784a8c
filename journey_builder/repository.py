"""All of the journey builder's SQL: what it reads back from ClickHouse and what it writes.

The builder (journey_builder/builder.py) holds the logic (sessions, identities, stages) and calls
these; each method is one query over a batch's keys (never one per event), and ``write`` inserts a
batch's rows, ``events`` last: its rows mark the batch as done, so a batch interrupted before them
is processed again and its derived rows are written again with a newer version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from trailmark.storage.base import JsonColumns, Row, Storage

Keys = Sequence[tuple[str, str]]
# the fields of sessions_data that make a visitor's open session again (as in visitor_state)
LAST_SESSION_FIELDS = (
    "start", "end", "entry_page", "exit_page", "referrer_host", "channel", "source", "medium", "campaign",
    "click_id_type", "pageviews", "events", "conversions", "user_id", "device", "browser", "os", "country",
    "campaign_key",
)  # fmt: skip


def key_set(name: str, of: str = "Tuple(String, String)") -> str:
    """A set of keys given as one JSON text parameter (see ``keys_param``), for ``x IN`` it.

    A batch's keys (thousands of visitors, tens of thousands of messageIds) as an ``Array(...)``
    parameter cost ClickHouse more to parse than the query costs to run (chDB 4.4, 3.3k visitors and
    20k messageIds: 110 ms as arrays against 45 ms as JSON text); one String parameter is read
    whole and parsed by the JSON parser. The set of a subquery is built once per query."""
    return f"(SELECT arrayJoin(JSONExtract({{{name}:String}}, 'Array({of})')))"


def keys_param(keys: Sequence[Any]) -> str:
    """The value of a ``key_set`` parameter."""
    return orjson.dumps(list(keys)).decode()


class BuilderRepository:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.db = storage.database

    def _stored(self, what: str) -> str:
        """(site, visitor, ``what``) of the stored events of the visitors ``{v}``."""
        return (
            f"(SELECT site_id, anonymous_id, {what} FROM {self.db}.events"
            " WHERE (site_id, anonymous_id) IN " + key_set("v") + ")"
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
            f" groupArrayIf(message_id, message_id IN {key_set('ids', 'String')}) AS seen"
            f" FROM {self.db}.{table} WHERE (site_id, anonymous_id) IN {key_set('v')}"
            " GROUP BY site_id, anonymous_id",
            {"v": keys_param(visitors), "ids": keys_param(message_ids)},
        )
        stored = {(r["site_id"], r["anonymous_id"]) for r in rows}
        return stored, {(r["site_id"], m) for r in rows for m in r["seen"]}

    def index_events(self, visitors: Keys, message_ids: Sequence[str]) -> None:
        """Copy these stored events' keys into ``event_keys`` (what its view did not write because
        the events insert was cut short)."""
        self.storage.execute(
            f"INSERT INTO {self.db}.event_keys SELECT site_id, anonymous_id, message_id, timestamp, retention_days"
            f" FROM {self.db}.events WHERE (site_id, anonymous_id) IN {key_set('v')}"
            f" AND message_id IN {key_set('ids', 'String')}",
            {"v": keys_param(visitors), "ids": keys_param(message_ids)},
        )

    def visitor_states(self, visitors: Keys) -> list[Row]:
        """The latest ``visitor_state`` row of each of ``visitors`` that has one."""
        return self.storage.query(
            f"SELECT * EXCEPT (retention_days) FROM {self.db}.visitor_state FINAL"
            " WHERE (site_id, anonymous_id) IN " + key_set("v"),
            {"v": keys_param(visitors)},
        )

    def last_sessions(self, visitors: Keys) -> list[Row]:
        """Per visitor: sessions with stored events, the latest one's fields (tuple ``s``, in the
        order of ``LAST_SESSION_FIELDS``), and how many converted."""
        return self.storage.query(
            f"SELECT site_id, anonymous_id, count() AS n, argMax(session_id, end) AS last_session,"
            f" argMax(tuple({', '.join(LAST_SESSION_FIELDS)}), end) AS s, countIf(conversions > 0) AS converted"
            f" FROM {self.db}.sessions_data FINAL WHERE (site_id, anonymous_id) IN {key_set('v')}"
            " AND (site_id, anonymous_id, session_id) IN "
            + self._stored("session_id")
            + " GROUP BY site_id, anonymous_id",
            {"v": keys_param(visitors)},
        )

    def session_event_counts(self, sessions: Sequence[tuple[str, str, str]]) -> list[Row]:
        """Stored events of these sessions, counted by type and name, with the latest page and user."""
        return self.storage.query(
            f"SELECT site_id, anonymous_id, session_id, type, event, count() AS n, max(timestamp) AS last_at,"
            f" maxIf(timestamp, type IN ('page', 'screen') AND page_path != '') AS page_at,"
            f" argMaxIf(page_path, timestamp, type IN ('page', 'screen') AND page_path != '') AS page,"
            f" maxIf(timestamp, user_id != '') AS user_at, argMaxIf(user_id, timestamp, user_id != '') AS last_user"
            f" FROM {self.db}.events WHERE (site_id, anonymous_id, session_id) IN"
            f" {key_set('s', 'Tuple(String, String, String)')} GROUP BY site_id, anonymous_id, session_id, type, event",
            {"s": keys_param(sessions)},
        )

    def visitor_contacts(self, visitors: Keys) -> list[Row]:
        return self.storage.query(
            f"SELECT site_id, anonymous_id, argMax(contact_id, last_seen) AS contact_id FROM {self.db}.identities_data"
            " WHERE (site_id, anonymous_id) IN " + key_set("v") + " GROUP BY site_id, anonymous_id",
            {"v": keys_param(visitors)},
        )

    def visitor_stages(self, visitors: Keys) -> list[Row]:
        """Stages each visitor entered with a stored event."""
        return self.storage.query(
            f"SELECT site_id, anonymous_id, groupUniqArray(stage) AS stages FROM {self.db}.stage_transitions_data"
            " WHERE (site_id, anonymous_id) IN " + key_set("v") + " AND (site_id, anonymous_id,"
            " message_id) IN " + self._stored("message_id") + " GROUP BY site_id, anonymous_id",
            {"v": keys_param(visitors)},
        )

    def email_contacts(self, emails: Keys) -> list[Row]:
        return self.storage.query(
            f"SELECT site_id, email, argMax(contact_id, version) AS contact_id FROM {self.db}.contacts_data"
            " WHERE (site_id, email) IN " + key_set("v") + " GROUP BY site_id, email",
            {"v": keys_param(emails)},
        )

    def contacts(self, keys: Keys) -> list[Row]:
        return self.storage.query(
            f"SELECT * FROM {self.db}.contacts_data FINAL WHERE (site_id, contact_id) IN {key_set('v')}",
            {"v": keys_param(keys)},
        )

    def accounts(self, keys: Keys) -> list[Row]:
        return self.storage.query(
            f"SELECT * FROM {self.db}.accounts_data FINAL WHERE (site_id, group_id) IN {key_set('v')}",
            {"v": keys_param(keys)},
        )

    def anonymous_ids_of(self, site_id: str, contact_id: str) -> list[str]:
        rows = self.storage.query(
            f"SELECT DISTINCT anonymous_id FROM {self.db}.identities_data"
            " WHERE site_id = {s:String} AND contact_id = {c:String}",
            {"s": site_id, "c": contact_id},
        )
        return [r["anonymous_id"] for r in rows]

    def write(
        self,
        tables: Mapping[str, Mapping[str, Sequence[Any]]],
        events: Mapping[str, Sequence[Any]] | JsonColumns,
        grown: Keys = (),
    ) -> None:
        """One insert per table (each given as columns), in the order given, then ``events`` last
        (columns, or one ``JSONColumns`` document); after the identities, shared_devices is kept
        (``share_devices``; ``grown``: the contacts that may have a new device)."""
        for table, columns in tables.items():
            self.storage.insert_columns(table, columns)
            if table == "identities_data" and columns:
                self.share_devices(columns, grown)
        if isinstance(events, JsonColumns):
            self.storage.insert_json_columns("events", events)
        else:
            self.storage.insert_columns("events", events)

    def share_devices(self, links: Mapping[str, Sequence[Any]], grown: Keys) -> None:
        """Keep shared_devices (migration 031) once the identities ``links`` (columns) are stored: for
        the contacts of ``grown`` that have two or more devices now, every link of each of their
        devices; for the devices of ``links`` already there, every link of each again (its new one may
        make it another contact's now). Links read from identities_data, after its insert: of two
        builders linking two devices of one contact at once, the later sees both. One query on the
        primary keys; a link to a contact that already had the device cannot make it shared, so
        ``grown`` leaves out a logged-in user's every event (at 100M events, looking up every
        link's contact cost 50-130 ms of CPU for 800 links)."""
        devices = sorted(set(zip(links["site_id"], links["anonymous_id"], strict=True)))
        self.storage.execute(
            f"INSERT INTO {self.db}.shared_devices (site_id, anonymous_id, contact_id, last_seen)"
            f" SELECT site_id, anonymous_id, contact_id, max(last_seen) FROM {self.db}.identities_data"
            " WHERE (site_id, anonymous_id) IN ("
            f"  SELECT site_id, anonymous_id FROM {self.db}.contact_devices WHERE (site_id, contact_id) IN ("
            f"   SELECT site_id, contact_id FROM {self.db}.contact_devices"
            f"   WHERE (site_id, contact_id) IN {key_set('c')}"
            "    GROUP BY site_id, contact_id HAVING min(anonymous_id) != max(anonymous_id))"
            f"  UNION ALL SELECT site_id, anonymous_id FROM {self.db}.shared_devices"
            f"  WHERE (site_id, anonymous_id) IN {key_set('v')})"
            " GROUP BY site_id, anonymous_id, contact_id",
            {"c": keys_param(grown), "v": keys_param(devices)},
        )
