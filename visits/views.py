"""Care visits through the API: a region's visit plan, an operator's phone or home visit, a
major change, an elder's visits, and the month's visit rate (JSON and the .xlsx the county
sends upward). Thin: scope to the operator's region, `audit`, call `visits.service`."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlmodel import col

from anxin.db import transaction
from anxin.models import Elder, Region, Responder, pk
from anxin.schemas import OperatorRole, ResponderKind
from anxin.web import Ctx, CurrentOperator, RowId, Session, Text, audit, invalid
from visits import schedule, service
from visits.export import figures_xlsx
from visits.models import MajorChange, RejectReason, Visit, VisitChannel, VisitMode

router = APIRouter(prefix="/api", tags=["visits"])

NOT_FOUND_ELDER = "没有这位老人 / no such elder"
NOT_FOUND_REGION = "没有这个地区 / no such region"

# What a rejected report answers (it is stored all the same, for the record).
REJECTED: dict[RejectReason, tuple[int, str]] = {
    RejectReason.same_day: (
        status.HTTP_409_CONFLICT,
        "这位老人今天已记录过探访，本次未重复计入 / already visited today, not counted twice",
    ),
    RejectReason.future: (
        422,
        "探访时间晚于现在 / the visit time is in the future",
    ),
    RejectReason.archived: (
        status.HTTP_409_CONFLICT,
        "这位老人已不在册 / the elder has left the registry",
    ),
}


class VisitPlanIn(BaseModel):
    """The settings this region sets itself; a field left out (or null) is inherited."""

    model_config = ConfigDict(extra="forbid")

    high_every: schedule.Frequency | None = None
    key_every: schedule.Frequency | None = None
    other_every: schedule.Frequency | None = None
    high_categories: list[str] | None = Field(None, max_length=20)
    key_categories: list[str] | None = Field(None, max_length=20)
    major_change_hours: int | None = Field(None, ge=1, le=168)


class VisitPlanOut(BaseModel):
    region_id: int
    own: dict[str, Any]
    effective: dict[str, Any]
    can_edit: bool


class VisitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: VisitMode  # home 上门探视 / phone 通讯探访
    note: Text = Field("", max_length=500)
    concern: bool = False
    urgent: bool = False
    visited_at: datetime | None = None  # default: now


class VisitOut(BaseModel):
    id: int
    elder_id: int | None
    visited_at: datetime
    local_date: str
    mode: str
    channel: str
    status: str
    reject_reason: str | None
    responder_id: int | None
    operator_id: int | None
    note: str
    concern: bool
    alert_id: int | None

    @classmethod
    def of(cls, visit: Visit) -> VisitOut:
        return cls.model_validate({**visit.model_dump(), "local_date": str(visit.local_date)})


class MajorChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: Text = Field(min_length=1, max_length=500)


class MajorChangeOut(BaseModel):
    id: int
    elder_id: int
    marked_at: datetime
    due_by: datetime
    note: str

    @classmethod
    def of(cls, change: MajorChange) -> MajorChangeOut:
        return cls.model_validate(change.model_dump())


class ElderVisitsOut(BaseModel):
    elder_id: int
    tier: str
    every: str
    period_start: str | None
    period_end: str | None
    visited_this_period: str | None
    last_visit: str | None  # the last counted visit (within the last half year)
    due_by: str | None  # the current period's last day, while it still needs its visit
    overdue: bool
    overdue_since: str | None
    major_change_due_by: datetime | None
    owner_id: int | None
    visits: list[VisitOut]


def _may_change(operator: CurrentOperator) -> bool:
    """As the ladder: township operators read the plan, county operators and admins change it."""
    return operator.can_act and operator.user.role in (
        OperatorRole.admin,
        OperatorRole.county_operator,
    )


def _may_act(operator: CurrentOperator) -> None:
    if not operator.can_act:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "只读账号 / read-only account")


async def _scoped_region(session: Session, operator: CurrentOperator, region_id: int) -> Region:
    region = await session.get(Region, region_id)
    if region is None or region_id not in operator.region_ids:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND_REGION)
    return region


async def _scoped_elder(session: Session, operator: CurrentOperator, elder_id: int) -> Elder:
    elder = await session.get(Elder, elder_id)
    if elder is None or elder.village_id not in operator.region_ids:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND_ELDER)
    return elder


async def _plan_out(session: Session, operator: CurrentOperator, region_id: int) -> VisitPlanOut:
    plans = await service.effective_plans(session, village_ids={region_id})
    return VisitPlanOut(
        region_id=region_id,
        own=await service.region_plan(session, region_id=region_id),
        effective=plans.get(region_id, schedule.VisitPlan()).snapshot(),
        can_edit=_may_change(operator),
    )


@router.get("/regions/{region_id}/visit-plan", response_model=VisitPlanOut)
async def read_visit_plan(
    region_id: RowId, ctx: Ctx, session: Session, operator: CurrentOperator
) -> VisitPlanOut:
    await _scoped_region(session, operator, region_id)
    audit(session, operator, ctx.clock.now(), "read_visit_plan", "region", region_id)
    return await _plan_out(session, operator, region_id)


@router.put("/regions/{region_id}/visit-plan", response_model=VisitPlanOut)
async def change_visit_plan(
    region_id: RowId, body: VisitPlanIn, ctx: Ctx, session: Session, operator: CurrentOperator
) -> VisitPlanOut:
    await _scoped_region(session, operator, region_id)
    if not _may_change(operator):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "仅县级操作员可修改 / only county operators may change this"
        )
    before = await service.region_plan(session, region_id=region_id)
    now = ctx.clock.now()
    try:
        after = await service.set_region_plan(
            session, region_id=region_id, changes=body.model_dump(mode="json"), now=now
        )
    except ValueError as error:
        key = str(error).split(":", 1)[0]
        raise invalid("body", key, f"探访计划设置有误 / bad visit plan: {error}") from None
    audit(
        session, operator, now, "change_visit_plan", "region", region_id, before=before, after=after
    )
    return await _plan_out(session, operator, region_id)


@router.post(
    "/elders/{elder_id}/visits", response_model=VisitOut, status_code=status.HTTP_201_CREATED
)
async def record_visit(
    elder_id: RowId, body: VisitIn, ctx: Ctx, session: Session, operator: CurrentOperator
) -> VisitOut:
    """An operator's phone visit (通讯探访) or home visit (上门探视). A report the rate cannot
    count (a second the same day, a time in the future) is stored and answered 409 / 422."""
    _may_act(operator)
    await _scoped_elder(session, operator, elder_id)
    now = ctx.clock.now()
    # Its own transaction: a rejected report is kept although the answer is an error.
    async with transaction(ctx.sessions) as own:
        result = await service.record_visit(
            own,
            channel=VisitChannel.console,
            now=now,
            timezone=ctx.settings.timezone,
            elder_id=elder_id,
            visited_at=body.visited_at,
            mode=body.mode,
            operator_id=operator.id,
            note=body.note,
            concern=body.concern,
            urgent=body.urgent,
        )
        audit(
            own,
            operator,
            now,
            "record_visit",
            "elder",
            elder_id,
            visit=result.visit.id,
            status=result.visit.status,
            reason=result.visit.reject_reason,
        )
        out = VisitOut.of(result.visit)
    if result.reason is not None:
        code, message = REJECTED.get(result.reason, (422, str(result.reason)))
        if code == 422:  # FastAPI's documented 422 shape, next to the field, with the reason
            where = {"loc": ["body", "visited_at"], "msg": message, "type": "value_error"}
            raise HTTPException(422, [{**where, "reason": result.reason, "visit": out.id}])
        raise HTTPException(code, {"message": message, "reason": result.reason, "visit": out.id})
    return out


@router.post(
    "/elders/{elder_id}/major-change",
    response_model=MajorChangeOut,
    status_code=status.HTTP_201_CREATED,
)
async def mark_major_change(
    elder_id: RowId, body: MajorChangeIn, ctx: Ctx, session: Session, operator: CurrentOperator
) -> MajorChangeOut:
    """A hospital stay, a death in the family: a visit is due within the plan's hours (24)."""
    _may_act(operator)
    await _scoped_elder(session, operator, elder_id)
    now = ctx.clock.now()
    change = await service.mark_major_change(
        session, elder_id=elder_id, note=body.note, operator_id=operator.id, now=now
    )
    audit(session, operator, now, "mark_major_change", "elder", elder_id, change=change.id)
    return MajorChangeOut.of(change)


class VisitOwnerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    responder_id: RowId | None  # an aide of the elder's village; null: the village's first aide


@router.put("/elders/{elder_id}/visit-owner", response_model=ElderVisitsOut)
async def change_visit_owner(
    elder_id: RowId, body: VisitOwnerIn, ctx: Ctx, session: Session, operator: CurrentOperator
) -> ElderVisitsOut:
    """Who owns the elder's visits (whose `访` SMS counts): an aide of the elder's village."""
    _may_act(operator)
    elder = await _scoped_elder(session, operator, elder_id)
    if body.responder_id is not None:
        aide = await session.get(Responder, body.responder_id)
        if aide is None or aide.kind != ResponderKind.aide or aide.village_id != elder.village_id:
            raise invalid(
                "body", "responder_id", "应为本村的助老员 / an aide of the elder's village"
            )
    now = ctx.clock.now()
    await service.set_owner(session, elder_id=elder_id, responder_id=body.responder_id, now=now)
    audit(session, operator, now, "change_visit_owner", "elder", elder_id, to=body.responder_id)
    return await elder_visits(elder_id, ctx, session, operator)


@router.get("/elders/{elder_id}/visits", response_model=ElderVisitsOut)
async def elder_visits(
    elder_id: RowId, ctx: Ctx, session: Session, operator: CurrentOperator
) -> ElderVisitsOut:
    """Where the elder's visits stand now and the last 50 reports (rejected ones too)."""
    elder = await _scoped_elder(session, operator, elder_id)
    now = ctx.clock.now()
    rows = await service.elder_statuses(
        session, village_ids={elder.village_id}, now=now, timezone=ctx.settings.timezone
    )
    mine = next((r for r in rows if pk(r.elder) == elder_id), None)
    if mine is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND_ELDER)  # archived
    s = mine.status
    audit(session, operator, now, "read_elder_visits", "elder", elder_id)
    visits = await service.elder_visits(session, elder_id=elder_id)
    return ElderVisitsOut(
        elder_id=elder_id,
        tier=s.tier,
        every=s.every.value,
        period_start=str(s.period.start) if s.period else None,
        period_end=str(s.period.end) if s.period else None,
        visited_this_period=str(s.visited_this_period) if s.visited_this_period else None,
        last_visit=str(s.last_visit) if s.last_visit else None,
        due_by=str(s.due_by) if s.due_by else None,
        overdue=s.overdue,
        overdue_since=str(s.overdue_since) if s.overdue_since else None,
        major_change_due_by=s.major_change_due_by,
        owner_id=mine.owner_id,
        visits=[VisitOut.of(v) for v in visits],
    )


async def _figures(
    ctx: Ctx, session: Session, operator: CurrentOperator, month: str | None, region: str | None
) -> tuple[str, list[service.RegionVisitRate]]:
    now = ctx.clock.now()
    tz = ctx.settings.timezone
    month = month or schedule.local_date(now, tz).strftime("%Y-%m")
    scope = operator.region_ids
    if region:
        found = (
            (await session.execute(select(Region).where(col(Region.code) == region)))
            .scalars()
            .first()
        )
        if found is None or pk(found) not in scope:
            raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND_REGION)
        from anxin.auth import regions_under

        scope = scope & await regions_under(session, pk(found))
    try:
        rows = await service.month_figures(
            session, region_ids=scope, month=month, now=now, timezone=tz
        )
    except ValueError as error:
        raise invalid("query", "month", f"月份应为 YYYY-MM / month is YYYY-MM: {error}") from None
    audit(session, operator, now, "read_visit_figures", "figures", month, region=region)
    return month, rows


Month = Query(None, pattern=r"^\d{4}-\d{2}$", description="YYYY-MM, local; default this month")
RegionCode = Query(None, max_length=32, description="a county, township or village code")


@router.get("/figures/visits")
async def visit_figures(
    ctx: Ctx,
    session: Session,
    operator: CurrentOperator,
    month: str | None = Month,
    region: str | None = RegionCode,
) -> list[dict[str, Any]]:
    """The month's visit rate per village, township and county: visited ÷ due, who was missed
    and why (`reason`: no_aide, late, rejected, not_visited)."""
    _, rows = await _figures(ctx, session, operator, month, region)
    return [asdict(r) for r in rows]


@router.get("/figures/visits.xlsx")
async def visit_figures_xlsx(
    ctx: Ctx,
    session: Session,
    operator: CurrentOperator,
    month: str | None = Month,
    region: str | None = RegionCode,
    lang: Literal["zh", "en"] = "zh",
) -> Response:
    """The same as a workbook: a sheet of rates, a sheet of who was missed and why."""
    month, rows = await _figures(ctx, session, operator, month, region)
    return Response(
        figures_xlsx(rows, english=lang == "en"),
        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        headers={"Content-Disposition": f'attachment; filename="visits-{month}.xlsx"'},
    )


class OverdueOut(BaseModel):
    elder_id: int
    elder_code: str
    elder_name: str
    village_id: int
    village_name: str
    tier: str
    owner_id: int | None
    owner_name: str | None
    last_visit: str | None
    due_date: str
    days_overdue: int
    major_change: bool


@router.get("/visits/overdue", response_model=list[OverdueOut])
async def overdue_visits(ctx: Ctx, session: Session, operator: CurrentOperator) -> list[OverdueOut]:
    """The overdue visits in the operator's region (the console's 逾期探访 tab, apart from the
    emergencies), longest overdue first: the elder, village, owning aide, the day the visit was
    due by and how many days ago."""
    now = ctx.clock.now()
    rows = await service.overdue_visits(
        session, village_ids=set(operator.region_ids), now=now, timezone=ctx.settings.timezone
    )
    audit(session, operator, now, "list_overdue_visits", "visit", count=len(rows))
    return [
        OverdueOut.model_validate(
            {
                **asdict(r),
                "last_visit": str(r.last_visit) if r.last_visit else None,
                "due_date": str(r.due_date),
            }
        )
        for r in rows
    ]
