"""Operators' HTTP API (CONTRACT.md §4) and the minimal live page. Thin: the work is in service."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.responses import HTMLResponse, StreamingResponse
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alert_service import compliance as alert_compliance
from alert_service import figures, intake
from alert_service import ladder as alert_ladder
from alert_service.models import (
    OPEN_STATUSES,
    Alert,
    AlertStatus,
    AlertTimelineEntry,
    DispatchAttempt,
)
from alert_service.regions import region_chain
from anxin import auth, login_throttle
from anxin.models import Elder, Region, Responder, ServiceCentre, pk
from anxin.web import (
    STREAM_PATH,
    CurrentOperator,
    Int32,
    Operator,
    RowId,
    Session,
    Text,
    audit,
    context,
    invalid,
)
from dispatcher.models import SmsMessage

router = APIRouter()
PAGE = Path(__file__).with_name("index.html")


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    display_name: str
    role: str


class AskedOut(BaseModel):
    responder: str
    role: str
    answer: str


class AlertOut(BaseModel):
    id: int
    code: str
    elder_id: int
    kind: str
    priority: int
    status: str
    elder: str
    village: str
    raised_at: datetime
    respond_by: datetime | None
    seconds_left: float | None
    accepted_by: str | None
    trigger_count: int
    at_risk: bool
    breached: bool
    cancel_requested: bool
    call_120: bool
    outcome: str | None
    # "device", "phone_in" (代报警) or "text_in": the queue and the timeline say how it came.
    source: str = "device"
    # Who was asked, in order, and what they answered: the queue shows it at a glance.
    asked: list[AskedOut] = Field(default_factory=list)


class TimelineOut(BaseModel):
    at: datetime
    actor: str
    action: str
    detail: dict[str, Any]


class AttemptOut(BaseModel):
    responder_id: int
    responder: str
    role: str
    step: int
    asked_at: datetime
    eta_minutes: float | None
    answer: str


class SmsOut(BaseModel):
    id: int
    direction: str
    to_phone: str
    from_phone: str
    body: str
    status: str
    purpose: str
    created_at: datetime


class AlertDetail(AlertOut):
    # The operator's closing note in full (the timeline keeps its first 200 characters).
    note: str = ""
    # A phone-in's caller (elder, relative, neighbour, hotline, other) and their number.
    caller_role: str | None = None
    caller_phone: str | None = None
    timeline: list[TimelineOut]
    attempts: list[AttemptOut]
    ranking: list[dict[str, Any]]
    sms: list[SmsOut]


class AcceptIn(BaseModel):
    responder_id: RowId


class ResolveIn(BaseModel):
    outcome: Literal["handled", "false_alarm", "hospital", "elder_cancelled"]
    note: Text = Field(default="", max_length=1000)
    verified_by_phone: bool = False


@router.post("/api/auth/token", response_model=Token, tags=["auth"])
async def login(form: Annotated[OAuth2PasswordRequestForm, Depends()], request: Request) -> Token:
    # No request-wide session: each step takes one connection for a moment and none is held
    # while the password is checked (anxin/login_throttle.py).
    ctx = context(request)
    now = ctx.clock.now()
    attempt = await login_throttle.admit(ctx.sessions, form.username, now)
    if not attempt.admitted:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "尝试次数过多，请稍后再试 / too many failed attempts, try again later",
        )
    user = attempt.user
    if not await asyncio.to_thread(login_throttle.password_matches, user, form.password):
        await login_throttle.record_failure(ctx.sessions, user, now)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "用户名或密码错误 / wrong username or password"
        )
    assert user is not None and user.id is not None
    await login_throttle.record_success(ctx.sessions, user, now)
    token = auth.make_token(
        ctx.settings.secret_key.get_secret_value(), user.id, now, ctx.settings.token_minutes
    )
    return Token(access_token=token, display_name=user.display_name, role=user.role)


async def _alert_rows(
    session: AsyncSession,
    operator: Operator,
    now: datetime,
    *,
    open_only: bool,
    status_filter: str | None = None,
    priority: int | None = None,
    region: int | None = None,
) -> list[AlertOut]:
    query = (
        select(Alert, col(Elder.name), col(Region.name), col(Responder.name))
        .join(Elder, col(Elder.id) == col(Alert.elder_id))
        .join(Region, col(Region.id) == col(Alert.village_id))
        .outerjoin(Responder, col(Responder.id) == col(Alert.accepted_by))
        .where(col(Alert.village_id).in_(operator.region_ids))
    )
    if open_only:
        query = query.where(col(Alert.status).in_(OPEN_STATUSES))
    if status_filter:
        query = query.where(col(Alert.status) == status_filter)
    if priority:
        query = query.where(col(Alert.priority) == priority)
    if region:
        query = query.where(
            (col(Alert.village_id) == region)
            | (col(Alert.township_id) == region)
            | (col(Alert.county_id) == region)
        )
    rows = await session.execute(query.order_by(col(Alert.raised_at).desc()).limit(500))
    out = [_alert_out(alert, elder, village, taker, now) for alert, elder, village, taker in rows]
    by_alert = await _asked(session, [a.id for a in out])
    for row in out:
        row.asked = by_alert.get(row.id, [])
    # Most urgent first: least time left on the 15-minute clock, then priority.
    out.sort(
        key=lambda a: (
            a.status == "resolved",
            a.seconds_left is None,
            a.seconds_left or 0,
            a.priority,
        )
    )
    return out


async def _asked(session: AsyncSession, alert_ids: list[int]) -> dict[int, list[AskedOut]]:
    """Who was asked for each alert, in ladder order, and what they answered (queue and detail
    show the same)."""
    asked = await session.execute(
        select(DispatchAttempt, col(Responder.name))
        .join(Responder, col(Responder.id) == col(DispatchAttempt.responder_id))
        .where(col(DispatchAttempt.alert_id).in_(alert_ids))
        .order_by(col(DispatchAttempt.step))
    )
    by_alert: dict[int, list[AskedOut]] = {}
    for attempt, name in asked:
        by_alert.setdefault(attempt.alert_id, []).append(
            AskedOut(responder=name, role=attempt.role, answer=attempt.answer)
        )
    return by_alert


def _alert_out(
    alert: Alert, elder: str, village: str, taker: str | None, now: datetime
) -> AlertOut:
    assert alert.id is not None
    left = None
    if alert.respond_by is not None and alert.on_scene_at is None and alert.status != "resolved":
        left = (alert.respond_by - now).total_seconds()
    return AlertOut(
        id=alert.id,
        code=alert.code,
        elder_id=alert.elder_id,
        kind=alert.kind,
        priority=alert.priority,
        status=alert.status,
        elder=elder,
        village=village,
        raised_at=alert.raised_at,
        respond_by=alert.respond_by,
        seconds_left=left,
        accepted_by=taker,
        trigger_count=alert.trigger_count,
        at_risk=alert.at_risk,
        breached=alert.breached,
        cancel_requested=alert.cancel_requested,
        call_120=alert.call_120,
        outcome=alert.outcome,
        source=alert.source,
    )


@router.get("/api/alerts", response_model=list[AlertOut], tags=["alerts"])
async def list_alerts(
    session: Session,
    operator: CurrentOperator,
    request: Request,
    alert_status: Annotated[AlertStatus | None, Query(alias="status")] = None,
    priority: Int32 | None = None,
    region: RowId | None = None,
    open_only: bool = False,
) -> list[AlertOut]:
    now = context(request).clock.now()
    rows = await _alert_rows(
        session,
        operator,
        now,
        open_only=open_only,
        status_filter=alert_status,
        priority=priority,
        region=region,
    )
    # Alerts name elders and where they are (PIPL): a list read is on the record too.
    given = {"status": alert_status, "priority": priority, "region": region, "open_only": open_only}
    filters = {k: v for k, v in given.items() if v not in (None, False)}
    audit(session, operator, now, "list_alerts", "alert", "", count=len(rows), filters=filters)
    return rows


async def _scoped_alert(
    session: AsyncSession, operator: Operator, alert_id: int, *, lock: bool
) -> Alert:
    alert = await (
        alert_ladder.lock_alert(session, alert_id) if lock else session.get(Alert, alert_id)
    )
    # Outside the operator's region looks exactly like not there.
    if alert is None or alert.village_id not in operator.region_ids:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "没有这个警报 / no such alert")
    return alert


async def _detail(session: AsyncSession, alert: Alert, now: datetime) -> AlertDetail:
    elder = await session.get(Elder, alert.elder_id)
    village = await session.get(Region, alert.village_id)
    taker = await session.get(Responder, alert.accepted_by) if alert.accepted_by else None
    timeline = (
        await session.execute(
            select(AlertTimelineEntry)
            .where(col(AlertTimelineEntry.alert_id) == alert.id)
            .order_by(col(AlertTimelineEntry.at), col(AlertTimelineEntry.id))
        )
    ).scalars()
    attempts = await session.execute(
        select(DispatchAttempt, col(Responder.name))
        .join(Responder, col(Responder.id) == col(DispatchAttempt.responder_id))
        .where(col(DispatchAttempt.alert_id) == alert.id)
        .order_by(col(DispatchAttempt.step))
    )
    sms = (
        await session.execute(
            select(SmsMessage)
            .where(col(SmsMessage.alert_id) == alert.id)
            .order_by(col(SmsMessage.id))
        )
    ).scalars()
    base = _alert_out(
        alert,
        elder.name if elder else "",
        village.name if village else "",
        taker.name if taker else None,
        now,
    )
    base.asked = (await _asked(session, [pk(alert)])).get(pk(alert), [])
    return AlertDetail(
        **base.model_dump(),
        note=alert.note or "",
        caller_role=alert.caller_role,
        caller_phone=alert.caller_phone,
        timeline=[
            TimelineOut(at=t.at, actor=t.actor, action=t.action, detail=t.detail) for t in timeline
        ],
        attempts=[
            AttemptOut(
                responder_id=a.responder_id,
                responder=name,
                role=a.role,
                step=a.step,
                asked_at=a.asked_at,
                eta_minutes=a.eta_minutes,
                answer=a.answer,
            )
            for a, name in attempts
        ],
        ranking=alert.ranking,
        sms=[
            SmsOut(
                id=s.id or 0,
                direction=s.direction,
                to_phone=s.to_phone,
                from_phone=s.from_phone,
                body=s.body,
                status=s.status,
                purpose=s.purpose,
                created_at=s.created_at,
            )
            for s in sms
        ],
    )


@router.get("/api/alerts/{alert_id}", response_model=AlertDetail, tags=["alerts"])
async def get_alert(
    alert_id: RowId, session: Session, operator: CurrentOperator, request: Request
) -> AlertDetail:
    now = context(request).clock.now()
    alert = await _scoped_alert(session, operator, alert_id, lock=False)
    audit(session, operator, now, "read_alert", "alert", alert_id)
    return await _detail(session, alert, now)


async def responder_for(
    session: AsyncSession, operator: Operator, alert: Alert, responder_id: int
) -> Responder | None:
    """The responder, if this operator may have them act on this alert: one of the operator's
    own (an aide of their villages, a centre of their regions) or one the alert's ranking
    already names (the county centre, for a township operator). None otherwise: a responder
    outside the operator's region looks exactly like no responder."""
    responder = await session.get(Responder, responder_id)
    if responder is None:
        return None
    if any(int(c["responder_id"]) == responder_id for c in alert.ranking):
        return responder
    if responder.village_id is not None and responder.village_id in operator.region_ids:
        return responder
    if responder.centre_id is not None:
        centre = await session.get(ServiceCentre, responder.centre_id)
        if centre is not None and centre.region_id in operator.region_ids:
            return responder
    return None


def _require_actor(operator: Operator) -> None:
    if not operator.can_act:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "只读账号 / viewers cannot act")


class PhoneInIn(BaseModel):
    """A phone-in (代报警): for a registered elder (`elder_id`), or for a caller not in the
    registry at a village and a free-text address (`village_id`, `address`)."""

    elder_id: RowId | None = None
    village_id: RowId | None = None
    address: Text = Field(default="", max_length=128)
    kind: Literal["fall", "illness", "fire", "missing", "other"] = Field(
        description="跌倒 fall, 突发疾病 illness, 火情/燃气 fire, 走失 missing, 其他 other"
    )
    caller: Literal["elder", "relative", "neighbour", "hotline", "other"]
    caller_phone: str | None = Field(default=None, pattern=r"^\+?[0-9]{3,19}$", max_length=20)
    note: Text = Field(default="", max_length=500)


class PhoneInOut(BaseModel):
    joined: bool  # the elder was already in an open alert: the call joined it
    message: str
    alert: AlertDetail


async def _phone_in_elder(
    session: AsyncSession, operator: Operator, body: PhoneInIn, now: datetime
) -> Elder:
    """The elder the call is about: a registered one of the operator's villages, or a row of
    its own for a caller not in the registry (`intake.unregistered_caller`)."""
    if body.elder_id is not None:
        if body.village_id is not None:
            raise invalid("body", "village_id", "已选老人时不填村 / give elder_id or village_id")
        elder = await session.get(Elder, body.elder_id)
        if elder is None or elder.village_id not in operator.region_ids:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "没有这位老人 / no such elder")
        if elder.archived_at is not None:
            raise invalid("body", "elder_id", "该老人已移出名册 / this elder is archived")
        return elder
    if body.village_id is None:
        raise invalid("body", "elder_id", "请选择老人或村 / give elder_id or village_id")
    village = await session.get(Region, body.village_id)
    if village is None or village.level != "village" or pk(village) not in operator.region_ids:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "没有这个村 / no such village")
    if not body.address.strip():
        raise invalid("body", "address", "请填写地址 / an address is needed without an elder")
    chain = await region_chain(session, pk(village))
    placeholder = await intake.unregistered_caller(session, chain, body.address.strip(), now)
    if placeholder is None:
        raise invalid("body", "village_id", "该村及上级均无位置 / the village has no position")
    return placeholder


@router.post(
    "/api/alerts",
    response_model=PhoneInOut,
    status_code=201,
    responses={200: {"model": PhoneInOut, "description": "joined the elder's open alert"}},
    tags=["alerts"],
)
async def phone_in(
    body: PhoneInIn,
    session: Session,
    operator: CurrentOperator,
    request: Request,
    response: Response,
) -> PhoneInOut:
    """代报警: an operator raises an alert for a caller. The 15-minute clock starts now (the
    call); the alert runs the same ladder as a device's. 201 raised; 200 when the elder was
    already in an open alert, which the call joins."""
    _require_actor(operator)
    ctx = context(request)
    now = ctx.clock.now()
    elder = await _phone_in_elder(session, operator, body, now)
    call = intake.PhoneIn(
        kind=body.kind, caller_role=body.caller, caller_phone=body.caller_phone, note=body.note
    )
    alert, joined = await intake.raise_phone_in(
        session, elder, call, now, operator.actor, timezone=ctx.settings.timezone
    )
    audit(
        session,
        operator,
        now,
        "phone_in",
        "alert",
        pk(alert),
        elder_id=pk(elder),
        kind=body.kind,
        caller=body.caller,
        joined=joined,
    )
    if joined:
        response.status_code = status.HTTP_200_OK
        message = f"该老人已有进行中的警报 {alert.code}，本次来电已并入 / joined open alert"
    else:
        message = f"已报警 {alert.code} / alert raised"
    return PhoneInOut(joined=joined, message=message, alert=await _detail(session, alert, now))


@router.post("/api/alerts/{alert_id}/accept", response_model=AlertDetail, tags=["alerts"])
async def accept_for_aide(
    alert_id: RowId, body: AcceptIn, session: Session, operator: CurrentOperator, request: Request
) -> AlertDetail:
    """An aide phoned in: the operator records the accept for them."""
    _require_actor(operator)
    now = context(request).clock.now()
    alert = await _scoped_alert(session, operator, alert_id, lock=True)
    if await responder_for(session, operator, alert, body.responder_id) is None:
        raise invalid("body", "responder_id", "没有这个助老员 / no such responder")
    if not await alert_ladder.accept(session, alert, body.responder_id, now, operator.actor):
        raise HTTPException(status.HTTP_409_CONFLICT, "已由他人接单 / already taken")
    audit(session, operator, now, "accept", "alert", alert_id, responder_id=body.responder_id)
    return await _detail(session, alert, now)


@router.post("/api/alerts/{alert_id}/on-scene", response_model=AlertDetail, tags=["alerts"])
async def record_on_scene(
    alert_id: RowId, session: Session, operator: CurrentOperator, request: Request
) -> AlertDetail:
    _require_actor(operator)
    now = context(request).clock.now()
    alert = await _scoped_alert(session, operator, alert_id, lock=True)
    await alert_ladder.on_scene(session, alert, now, operator.actor)
    audit(session, operator, now, "on_scene", "alert", alert_id)
    return await _detail(session, alert, now)


@router.post("/api/alerts/{alert_id}/resolve", response_model=AlertDetail, tags=["alerts"])
async def resolve_alert(
    alert_id: RowId, body: ResolveIn, session: Session, operator: CurrentOperator, request: Request
) -> AlertDetail:
    _require_actor(operator)
    now = context(request).clock.now()
    alert = await _scoped_alert(session, operator, alert_id, lock=True)
    await alert_ladder.resolve(
        session,
        alert,
        now,
        actor=operator.actor,
        outcome=body.outcome,
        note=body.note,
        verified_by_phone=body.verified_by_phone,
    )
    audit(
        session, operator, now, "resolve", "alert", alert_id, outcome=body.outcome, note=body.note
    )
    return await _detail(session, alert, now)


class FiguresOut(BaseModel):
    region_id: int
    region: str
    level: str
    month: str
    alerts: int
    urgent: int
    decided: int
    on_scene_in_time: int
    on_scene_in_time_share: float | None
    accept_p50_s: float | None
    accept_p90_s: float | None
    on_scene_p50_s: float | None
    on_scene_p90_s: float | None
    breaches: int
    false_alarms_by_device_kind: dict[str, int]


# Years 1000-2999: a month the calendar (and Postgres' timestamps) can hold.
MONTH = r"^[12]\d{3}-(0[1-9]|1[0-2])$"


@router.get("/api/figures", response_model=list[FiguresOut], tags=["figures"])
async def compliance_figures(
    session: Session,
    operator: CurrentOperator,
    request: Request,
    month_from: Annotated[str | None, Query(pattern=MONTH, description="YYYY-MM")] = None,
    month_to: Annotated[str | None, Query(pattern=MONTH, description="YYYY-MM")] = None,
    source: Annotated[
        Literal["device", "phone_in", "text_in"] | None,
        Query(description="only alerts that came this way (device, phone_in 代报警, text_in)"),
    ] = None,
) -> list[FiguresOut]:
    """The 15-minute rule per township and county and month (in the deployment's time zone):
    share on scene in time, time to accept and to on-scene (p50/p90), breaches, and false
    alarms by device kind. Only the operator's own regions."""
    ctx = context(request)
    now = ctx.clock.now()
    tz = ctx.settings.timezone
    first = month_from or month_to or figures.month_of(now, tz)
    last = month_to or first
    start, _ = figures.month_bounds(first, tz)
    _, end = figures.month_bounds(last, tz)
    if end <= start:
        raise invalid("query", "month_to", "月份范围无效 / month_to is before month_from")
    rows = await alert_compliance.compliance(
        session, operator.region_ids, start, end, tz, now, source=source
    )
    regions = {
        r.id: r
        for r in (
            await session.execute(
                select(Region).where(col(Region.id).in_({f.region_id for f in rows}))
            )
        ).scalars()
    }
    audit(
        session,
        operator,
        now,
        "read_figures",
        "figures",
        "",
        month_from=first,
        month_to=last,
        **({"source": source} if source else {}),
    )
    return [
        FiguresOut(
            region=regions[f.region_id].name,
            level=regions[f.region_id].level,
            **dataclasses.asdict(f),
        )
        for f in rows
    ]


@router.get(STREAM_PATH, tags=["alerts"])
async def alert_stream(
    session: Session, operator: CurrentOperator, request: Request
) -> StreamingResponse:
    """Server-sent events: the open queue, pushed when it changes (the page does not poll)."""
    ctx = context(request)
    # One audit row per stream opened (its pushes are the same read, kept up to date).
    audit(session, operator, ctx.clock.now(), "list_alerts", "alert", "", stream=True)

    async def events() -> AsyncIterator[str]:
        last = ""
        while not await request.is_disconnected():
            async with ctx.sessions() as session:
                rows = await _alert_rows(session, operator, ctx.clock.now(), open_only=False)
            payload = json.dumps(
                [r.model_dump(mode="json") for r in rows[:200]], ensure_ascii=False
            )
            if payload != last:
                last = payload
                yield f"event: alerts\ndata: {payload}\n\n"
            else:
                # An event, not a comment line (a page never sees those): the console's "the
                # data of HH:MM:SS" banner says when the server last confirmed the list.
                yield "event: alive\ndata: 1\n\n"
            await asyncio.sleep(1)

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> HTMLResponse:
    return HTMLResponse(PAGE.read_text(encoding="utf-8"))
