"""Personas from readable rules (personas.toml), compiled into one ClickHouse query.

Each contact gets one persona: the first whose rules match, else the default ("Other"). A rule holds
conditions over a contact's profile, all of which must hold; a persona matches when any of its rules
does. The profile is one ``GROUP BY contact`` over the site's events (identity-stitched), so personas
are computed where the data is, at 10M events too, and never copied into Python.

Why compile rather than evaluate in Python: a persona filter (``persona=`` on every read) is a
``contact_id IN (...)`` subquery ClickHouse runs next to the read; pulling every contact's profile into
Python first would move hundreds of thousands of rows per request.

The file is the operator's, but it is still checked: unknown keys, wrong types, too many or too long
values stop the start with a ``ConfigError``; every value reaches ClickHouse as a query parameter,
and only our own column names and numbers we formatted are part of the SQL text.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from journey_builder.analytics import BadQuery, _contact, _join
from journey_builder.insights import STAGE_LIST, epoch, query, stage_history
from trailmark.errors import ConfigError
from trailmark.settings import AnalysisSettings
from trailmark.storage.base import Storage

MAX_PERSONAS = 20
MAX_VALUES = 100
MAX_TEXT = 200
LISTS = {  # rule key -> the profile column its values are matched against
    "country": "country",
    "device": "device",
    "first_channel": "first_channel",
    "company_domains": "company_domain",
}
BEHAVIOUR = ("pages", "events")  # any page path containing one of these / any of these events
FLAGS = {"free_mail": "free_mail", "company": "company_domain != ''"}
COUNTS = {
    "min_purchases": "purchases >= {}",
    "max_purchases": "purchases <= {}",
    "min_sessions": "sessions >= {}",
}
RULE_KEYS = frozenset([*LISTS, *BEHAVIOUR, *FLAGS, *COUNTS, "traits"])


@dataclass(frozen=True)
class Persona:
    """A named persona and its rules (each a dict of conditions, already checked)."""

    name: str
    description: str
    rules: tuple[dict[str, Any], ...]


def _text_list(where: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not value or len(value) > MAX_VALUES:
        raise ConfigError(f"{where}: a list of 1 to {MAX_VALUES} strings")
    for v in value:
        if not isinstance(v, str) or not v or len(v) > MAX_TEXT:
            raise ConfigError(f"{where}: every value a non-empty string of at most {MAX_TEXT} characters")
    return list(value)


def _check_rule(where: str, rule: Any) -> dict[str, Any]:
    if not isinstance(rule, dict) or not rule:
        raise ConfigError(f"{where}: a rule is a table with at least one condition")
    unknown = set(rule) - RULE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown condition(s) {sorted(unknown)}; use {sorted(RULE_KEYS)}")
    out: dict[str, Any] = {}
    for key, value in rule.items():
        w = f"{where}.{key}"
        if key in LISTS or key in BEHAVIOUR:
            out[key] = _text_list(w, value)
        elif key in FLAGS:
            if not isinstance(value, bool):
                raise ConfigError(f"{w}: true or false")
            out[key] = value
        elif key in COUNTS:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000:
                raise ConfigError(f"{w}: a whole number from 0 to 1000000")
            out[key] = value
        else:  # traits: {name = value}, compared with the contact's latest value of that trait
            if not isinstance(value, dict) or not value or len(value) > MAX_VALUES:
                raise ConfigError(f"{w}: a table of 1 to {MAX_VALUES} trait = value pairs")
            for k, v in value.items():
                if not k or len(k) > MAX_TEXT or not isinstance(v, str | int | bool) or len(str(v)) > MAX_TEXT:
                    raise ConfigError(f"{w}.{k}: a string, whole number or true/false")
            out[key] = dict(value)
    return out


@dataclass(frozen=True)
class Personas:
    """The personas of a site, in match order, and the name of everyone else."""

    personas: tuple[Persona, ...]
    default: str = "Other"

    @classmethod
    def load(cls, path: Path | None = None) -> Personas:
        """Read and check a personas file (the packaged personas.toml when ``path`` is None)."""
        try:
            text = path.read_text() if path else (resources.files("journey_builder") / "personas.toml").read_text()
            data: dict[str, Any] = tomllib.loads(text)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"personas file {path}: {exc}") from exc
        return cls.parse(data)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Personas:
        """Check a parsed personas document (see personas.toml for its shape)."""
        unknown = set(data) - {"default", "persona"}
        if unknown:
            raise ConfigError(f"personas: unknown key(s) {sorted(unknown)}")
        default = data.get("default", "Other")
        items = data.get("persona", [])
        if not isinstance(items, list) or len(items) > MAX_PERSONAS:
            raise ConfigError(f"personas: at most {MAX_PERSONAS} [[persona]] tables")
        out: list[Persona] = []
        seen = set()
        for i, item in enumerate(items):
            if not isinstance(item, dict) or set(item) - {"name", "description", "rules"}:
                raise ConfigError(f"persona {i + 1}: keys are name, description and rules")
            name, rules = item.get("name"), item.get("rules")
            if not isinstance(name, str) or not name.strip() or len(name) > 64 or name in seen:
                raise ConfigError(f"persona {i + 1}: a unique name of 1 to 64 characters")
            if not isinstance(rules, list) or not 1 <= len(rules) <= MAX_VALUES:
                raise ConfigError(f"persona {name!r}: rules is a list of 1 to {MAX_VALUES} rules")
            seen.add(name)
            checked = tuple(_check_rule(f"persona {name!r} rule {j + 1}", r) for j, r in enumerate(rules))
            out.append(Persona(name, str(item.get("description", ""))[:500], checked))
        if not isinstance(default, str) or not default or len(default) > 64 or default in seen:
            raise ConfigError("personas: default is a name of 1 to 64 characters no persona uses")
        return cls(tuple(out), default)

    @property
    def names(self) -> list[str]:
        """Every persona a contact can be in, the default last."""
        return [p.name for p in self.personas] + [self.default]

    def check(self, name: str) -> str:
        """A ``persona=`` parameter, or a 400 naming the personas there are."""
        if name not in self.names:
            raise BadQuery(f"unknown persona {name!r}; use one of {', '.join(self.names)}")
        return name

    def profile_sql(self, db: str, conf: AnalysisSettings, p: dict[str, Any], extra: str = "", within: str = "") -> str:
        """One row per contact of site ``{s:String}``: ``contact_id``, ``persona`` and the profile
        columns (``first_channel``, ``first_at``, ``purchases``, ...), plus ``extra`` aggregates
        over ``e`` (the contact's events). Values are added to ``p``. ``within``: a subquery of
        contact ids; only their devices' events are read (every contact of the site otherwise)."""
        p["pp_buy"] = list(conf.purchase_events)
        aggregates: list[str] = []
        cases: list[str] = []
        for i, persona in enumerate(self.personas):
            alternatives = [self._rule_sql(f"{i}_{j}", r, p, aggregates) for j, r in enumerate(persona.rules)]
            p[f"pp_name{i}"] = persona.name
            cases.append(f"({' OR '.join(alternatives)}), {{pp_name{i}:String}}")
        p["pp_default"] = self.default
        which = f"multiIf({', '.join(cases)}, {{pp_default:String}})" if cases else "{pp_default:String}"
        columns = "".join(f", {a}" for a in aggregates) + (f", {extra}" if extra else "")
        scope = (
            f" AND (e.anonymous_id IN (SELECT anonymous_id FROM {db}.identities_data WHERE site_id = {{s:String}}"
            f" AND contact_id IN ({within})) OR concat('anon:', e.anonymous_id) IN ({within}))"
            if within
            else ""
        )
        return (
            f"SELECT *, {which} AS persona FROM ("
            f"SELECT {_contact('e')} AS contact_id,"
            " argMin(e.geo_country, e.timestamp) AS country, argMin(e.ua_device_type, e.timestamp) AS device,"
            " if(argMinIf(e.channel, e.timestamp, e.channel NOT IN ('', 'Internal')) = '', 'Direct',"
            " argMinIf(e.channel, e.timestamp, e.channel NOT IN ('', 'Internal'))) AS first_channel,"
            " max(e.email_free) AS free_mail,"
            " argMaxIf(e.company_domain, e.timestamp, e.company_domain != '') AS company_domain,"
            " countIf(e.type = 'track' AND e.event IN {pp_buy:Array(String)}) AS purchases,"
            " uniqExactIf(e.session_id, e.session_id != '') AS sessions, min(e.timestamp) AS first_at"
            f"{columns}"
            f" FROM (SELECT * FROM {db}.events AS e WHERE e.site_id = {{s:String}} AND NOT e.is_bot{scope}) AS e"
            f"{_join(db, 'e')} GROUP BY contact_id)"
        )

    @staticmethod
    def _rule_sql(tag: str, rule: dict[str, Any], p: dict[str, Any], aggregates: list[str]) -> str:
        conds: list[str] = []
        for key, value in rule.items():
            name = f"pp_{tag}_{key}"
            if key in LISTS:
                p[name] = value
                conds.append(f"{LISTS[key]} IN {{{name}:Array(String)}}")
            elif key == "pages":
                p[name] = value
                aggregates.append(
                    f"countIf(e.type IN ('page', 'screen') AND multiSearchAny(e.page_path, {{{name}:Array(String)}}))"
                    f" > 0 AS b_{tag}_pages"
                )
                conds.append(f"b_{tag}_pages")
            elif key == "events":
                p[name] = value
                aggregates.append(
                    f"countIf(e.type = 'track' AND e.event IN {{{name}:Array(String)}}) > 0 AS b_{tag}_events"
                )
                conds.append(f"b_{tag}_events")
            elif key in FLAGS:
                conds.append(f"({FLAGS[key]}) = {int(value)}")
            elif key in COUNTS:
                conds.append(COUNTS[key].format(int(value)))
            else:
                for k, (trait, v) in enumerate(sorted(value.items())):
                    p[f"{name}{k}_k"], p[f"{name}{k}_v"] = trait, orjson.dumps(v).decode()
                    col = f"t_{tag}_{k}"
                    aggregates.append(
                        f"argMaxIf(JSONExtractRaw(e.traits, {{{name}{k}_k:String}}), e.timestamp,"
                        f" JSONHas(e.traits, {{{name}{k}_k:String}})) AS {col}"
                    )
                    conds.append(f"{col} = {{{name}{k}_v:String}}")
        return "(" + " AND ".join(conds) + ")"

    def contacts_sql(self, db: str, conf: AnalysisSettings, p: dict[str, Any], persona: str) -> str:
        """A subquery of the ids of the contacts of site ``{s:String}`` in ``persona`` (checked)."""
        p["pp_only"] = self.check(persona)
        return f"SELECT contact_id FROM ({self.profile_sql(db, conf, p)}) WHERE persona = {{pp_only:String}}"

    def filter_sql(self, db: str, conf: AnalysisSettings, p: dict[str, Any], persona: str | None, col: str) -> str:
        """`` AND col IN (contacts of the persona)``, or nothing when ``persona`` is empty."""
        return f" AND {col} IN ({self.contacts_sql(db, conf, p, persona)})" if persona else ""

    def only(self, conf: AnalysisSettings, persona: str | None) -> Chosen | None:
        """The ``persona=`` of an analytics read (``analytics.ContactSet``), checked now: an unknown
        name is a 400 naming the personas there are; None when no persona is asked for."""
        return Chosen(self, conf, self.check(persona)) if persona else None


@dataclass(frozen=True)
class Chosen:
    """One persona of a site as the contact set the analytics reads narrow to (``analytics.ContactSet``)."""

    known: Personas
    conf: AnalysisSettings
    name: str

    def sql(self, db: str, p: dict[str, Any]) -> str:
        """The persona's contacts, a subquery; its values are added to ``p``."""
        return self.known.contacts_sql(db, self.conf, p, self.name)


def load(conf: AnalysisSettings) -> Personas:
    """The site's personas: ``conf.personas_file``, else the packaged personas.toml."""
    return Personas.load(conf.personas_file)


def compare(
    storage: Storage, site_id: str, known: Personas, conf: AnalysisSettings, chosen: list[str], conversions: list[str]
) -> dict[str, Any]:
    """Each persona (or the ``chosen`` ones, at most three) with its contacts, conversion, median time
    to convert, current stages and channels of first touch: the map page's side-by-side view."""
    if len(chosen) > 3:
        raise BadQuery("compare: at most three personas")
    for name in chosen:
        known.check(name)
    db = storage.database
    p: dict[str, Any] = {"s": site_id, "pc_conv": conversions, "pc_names": chosen or known.names}
    extra = (
        f"minIf({epoch('e.timestamp')}, e.type = 'track' AND e.event IN {{pc_conv:Array(String)}}) AS conv_s,"
        f" min({epoch('e.timestamp')}) AS first_s"
    )
    rows = query(
        storage,
        conf,
        f"SELECT persona, count() AS contacts, countIf(conv_s > 0) AS converted,"
        f" quantileExactInclusiveIf(0.5)(conv_s - first_s, conv_s > 0) AS to_convert,"
        f" sumMap([arrayElement(arrayPushFront({STAGE_LIST}, ''), h.idx + 1)], [toUInt64(1)]) AS stages,"
        " sumMap([pr.first_channel], [toUInt64(1)]) AS channels"
        f" FROM ({known.profile_sql(db, conf, p, extra)}) AS pr"
        f" LEFT JOIN (SELECT contact_id, arrayMax(arrayMap(x -> x.2, arrayPushBack(hist, (0., toUInt8(0)))))"
        f"  AS idx FROM ({stage_history(db)})) AS h ON h.contact_id = pr.contact_id"
        " WHERE persona IN {pc_names:Array(String)} GROUP BY persona",
        p,
    )
    found = {r["persona"]: r for r in rows}
    descriptions = {x.name: x.description for x in known.personas}
    out = []
    for name in chosen or known.names:
        r = found.get(name, {})
        n, conv = int(r.get("contacts", 0)), int(r.get("converted", 0))
        out.append(
            {
                "name": name,
                "description": descriptions.get(name, ""),
                "contacts": n,
                "converted": conv,
                "conversion_rate": round(conv / n, 4) if n else None,
                "median_hours_to_convert": round(float(r["to_convert"]) / 3600, 3) if conv else None,
                "stages": _pairs(r.get("stages")),
                "channels": _pairs(r.get("channels")),
            }
        )
    return {"default": known.default, "conversions": conversions, "personas": out}


def _pairs(summed: Any) -> dict[str, int]:
    """``sumMap``'s (keys, values) as a dict."""
    if not summed:
        return {}
    keys, values = summed
    return {str(k): int(v) for k, v in zip(keys, values, strict=True)}
