"""Trailmark's one error tree. Every adapter (Kafka, the embedded log, the spool, chDB, the ClickHouse
server) translates what its library raises into one of these at its boundary (``raise ... from exc``);
the stage runner and the HTTP layer act on the branch, never on a library's exception::

    TrailmarkError
    ├── Unavailable        a dependency cannot serve right now: retry, do not commit (HTTP 503)
    │   ├── BusUnavailable         (trailmark.bus.base)   broker or event log
    │   ├── StorageUnavailable     (trailmark.storage.base) ClickHouse / chDB
    │   ├── ReplayUnavailable      (trailmark.deadletters) no server and no direct access for a replay
    │   └── SourceFailed           (enrich.companies.errors) a company website, DNS or RDAP did not answer
    ├── Rejected           this record or query is at fault: dead-letter it (stages) or 400 (HTTP)
    │   ├── QueryError             (trailmark.storage.base) ClickHouse refused the statement
    │   ├── PoisonEvent            (enrich.errors) an event enrichment cannot process
    │   ├── TargetRefused          (enrich.companies.errors) not fetched: not a public address, robots.txt
    │   └── NotFound               (enrich.companies.errors) no such company domain or page
    ├── BadRequest         a client's request is invalid (HTTP 4xx with the reason)
    │   ├── SqlRefused             (journey_builder.sql_sandbox) not a query the SQL endpoint runs
    │   ├── BadQuery               (journey_builder.analytics) a read's parameters cannot be used
    │   ├── BadFilter              (trailmark.deadletters) a dead-letter filter cannot be used
    │   └── RequestRefused         (trailmark.deadletters) the server refused a CLI request
    └── ConfigError        settings or keys.json are unusable: the process stops with the reason
        ├── KeysError              (trailmark.keys)
        └── ClusterDDLError        (trailmark.storage.base) a DDL statement cannot be rendered for a cluster

``BusError`` and ``StorageError`` remain the bases of their adapters' errors for callers that only
care which dependency failed.
"""

from __future__ import annotations


class TrailmarkError(Exception):
    """Base of every error trailmark raises on purpose."""


class Unavailable(TrailmarkError):
    """A dependency (broker, log, database) cannot serve now; retry later, never dead-letter."""


class Rejected(TrailmarkError):
    """The record or statement itself is at fault; retrying cannot help."""


class BadRequest(TrailmarkError):
    """A client's request is invalid; the message says what to change."""

    status_code = 400


class ConfigError(TrailmarkError, ValueError):
    """Settings or the keys file are unusable."""


__all__ = ["BadRequest", "ConfigError", "Rejected", "TrailmarkError", "Unavailable"]
