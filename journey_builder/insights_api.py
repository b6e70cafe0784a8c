"""Routes of the journey-method reads: ``/v1/retention``, ``/v1/personas``, ``/v1/kpis`` and
``/v1/moments``, with response models so OpenAPI (``/docs``) documents every field.

``read_api.read_router`` includes this router and lends it its read-key dependency and its ``run``
(errors become 400s without echoing our SQL), so every read here is site-scoped and rate-limited
like the others. The personas file is read and checked once, when the router is built.
"""

# no ``from __future__ import annotations``: FastAPI reads the parameters' annotations at run time,
# and their bounds come from the settings (``conf.max_periods``), local to insights_router
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from journey_builder import cohorts, kpis, moments, personas
from journey_builder.insights import names
from journey_builder.saved import SavedAnswers
from schemas import Site
from trailmark.settings import JourneySettings

Run = Callable[..., Awaitable[dict[str, Any]]]
Persona = Annotated[str | None, Query(max_length=64, description="only contacts of this persona (/v1/personas)")]


class RetentionRow(BaseModel):
    cohort: str = Field(description="first day of the cohort's week (Monday) or month")
    group: str = Field(description="channel of first touch or persona with by=; '' otherwise")
    size: int = Field(description="contacts whose first start event fell in the cohort")
    retained: list[int | None] = Field(description="contacts back (return event) in period 0, 1, ...; null: not over")
    rate: list[float | None] = Field(description="retained / size")


class Retention(BaseModel):
    cohort: str
    periods: int
    start_event: str
    return_event: str
    by: str
    persona: str
    rows: list[RetentionRow]


class PersonaSummary(BaseModel):
    name: str
    description: str
    contacts: int
    converted: int = Field(description="contacts with a conversion event")
    conversion_rate: float | None
    median_hours_to_convert: float | None = Field(description="first event to first conversion")
    stages: dict[str, int] = Field(description="contacts per current (furthest) stage; '' for none")
    channels: dict[str, int] = Field(description="contacts per channel of first touch")


class PersonaList(BaseModel):
    default: str = Field(description="the persona of contacts no rule matches")
    conversions: list[str]
    personas: list[PersonaSummary]


class Flow(BaseModel):
    entered: int = Field(description="contacts entering the stage (first entry)")
    moved_on: int = Field(description="of those, contacts that later entered a later stage")
    drop_off: int
    conversion_rate: float | None = Field(description="moved_on / entered")
    median_hours_in_stage: float | None
    p90_hours_in_stage: float | None
    purchases: int = Field(description="purchases made while in the stage")
    revenue: float = Field(description="sum of the purchases' revenue property")
    buyers: int
    repeat_buyers: int = Field(description="buyers with a purchase that was not their first")
    repeat_purchase_rate: float | None


class WeekKpi(Flow):
    week: str = Field(description="Monday of the week")


class StageKpi(Flow):
    stage: str
    trend: list[WeekKpi]


class Money(BaseModel):
    purchases: int
    revenue: float
    buyers: int
    repeat_buyers: int
    repeat_purchase_rate: float | None


class ScoreRow(BaseModel):
    stage: str | None = None
    channel: str | None = None
    persona: str | None = None
    answers: int
    promoters: int | None = None
    passives: int | None = None
    detractors: int | None = None
    nps: float | None = Field(None, description="% promoters (9-10) - % detractors (0-6)")
    satisfied: int | None = None
    csat: float | None = Field(None, description="% of answers 4 or 5")
    mean: float | None


class Score(ScoreRow):
    event: str = Field(description="the event name answers are sent as (properties.score)")
    by_stage: list[ScoreRow]
    by_channel: list[ScoreRow]
    by_persona: list[ScoreRow]


class Feedback(BaseModel):
    nps: Score
    csat: Score


class Kpis(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from", description="first day (Monday) of the window")
    to: str = Field(description="first day after the window")
    weeks: list[str]
    persona: str
    stages: list[StageKpi]
    totals: Money
    feedback: Feedback


class Moment(BaseModel):
    kind: str = Field(description="page, event or channel (of a session entry)")
    name: str
    with_: int = Field(alias="with", description="contacts of the stage with the moment (before converting)")
    with_converted: int
    without: int
    without_converted: int
    rate_with: float
    rate_without: float
    lift: float = Field(description="rate_with / rate_without")
    ci_low: float
    ci_high: float


class StageMoments(BaseModel):
    stage: str
    moments: list[Moment]


class Moments(BaseModel):
    conversions: list[str]
    min_support: int
    confidence: float
    persona: str
    computed_at: str = Field(
        description="when these counts were computed (UTC): an answer is kept for analysis.moments_max_age_s"
        " (default 300 s), then computed again in the background; fresh=true computes it now"
    )
    stages: list[StageMoments]


def insights_router(run: Run, site: Callable[..., Site], settings: JourneySettings) -> APIRouter:
    """The four routes; ``site`` is the read-key dependency, ``run`` the read API's runner."""
    router = APIRouter(tags=["reads"])
    conf = settings.analysis
    known = personas.load(conf)
    kept_moments = SavedAnswers("moments", conf.moments_max_age_s)
    Key = Annotated[Site, Depends(site)]

    def conversions(text: str | None) -> list[str]:
        return names(text.split(","), "conversion") if text else list(settings.conversions)

    @router.get("/v1/retention", summary="Cohort retention: cohort x period matrix", response_model=Retention)
    async def retention(
        s: Key,
        cohort: Annotated[str, Query(pattern="^(week|month)$")] = "week",
        start_event: Annotated[str, Query(max_length=200, description="page path or event; '' any")] = "",
        return_event: Annotated[str, Query(max_length=200, description="page path or event; '' any")] = "",
        periods: Annotated[int, Query(ge=1, le=conf.max_periods)] = 8,
        by: Annotated[str, Query(pattern="^(|channel|persona)$")] = "",
        persona: Persona = None,
        since: Annotated[str | None, Query(alias="from", description="cohorts from (ISO date)")] = None,
        until: Annotated[str | None, Query(alias="to", description="cohorts before (ISO date)")] = None,
    ) -> dict[str, Any]:
        return await run(
            cohorts.retention,
            s["site_id"],
            known,
            conf,
            cohort=cohort,
            start_event=start_event,
            return_event=return_event,
            periods=periods,
            by=by,
            persona=persona,
            since=since,
            until=until,
        )

    @router.get(
        "/v1/personas",
        summary="Personas side by side: contacts, stages, channels, conversion",
        response_model=PersonaList,
    )
    async def persona_list(
        s: Key,
        compare: Annotated[
            str | None, Query(max_length=300, description="up to three persona names, comma-separated")
        ] = None,
        conversion: Annotated[
            str | None, Query(max_length=2000, description="conversion events, comma-separated")
        ] = None,
    ) -> dict[str, Any]:
        chosen = names(compare.split(","), "compare", 3) if compare else []
        return await run(personas.compare, s["site_id"], known, conf, chosen, conversions(conversion))

    @router.get(
        "/v1/kpis",
        summary="Stage KPIs per week (revenue, repeat purchases, time in stage), NPS and CSAT",
        response_model=Kpis,
    )
    async def stage_kpis(
        s: Key,
        weeks: Annotated[int, Query(ge=1, le=conf.max_periods)] = 12,
        until: Annotated[str | None, Query(alias="to", description="a day in the last week (ISO date)")] = None,
        persona: Persona = None,
    ) -> dict[str, Any]:
        return await run(kpis.kpis, s["site_id"], known, conf, weeks=weeks, until=until, persona=persona)

    @router.get(
        "/v1/moments",
        summary="Moments of truth: lift on converting per stage, with counts and interval",
        response_model=Moments,
    )
    async def moments_of_truth(
        s: Key,
        conversion: Annotated[
            str | None, Query(max_length=2000, description="conversion events, comma-separated")
        ] = None,
        min_support: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
        limit: Annotated[int, Query(ge=1, le=conf.max_rows)] = 20,
        persona: Persona = None,
        fresh: Annotated[bool, Query(description="compute now instead of serving a kept answer")] = False,
    ) -> dict[str, Any]:
        return await run(
            moments.moments,
            s["site_id"],
            known,
            conf,
            conversions=conversions(conversion),
            min_support=min_support,
            limit=limit,
            persona=persona,
            saved=kept_moments,
            fresh=fresh,
        )

    return router
