"""Reading and driving alerts in the database, for the alert service's tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import col

from alert_service import intake
from alert_service import ladder as alert_ladder
from alert_service.models import Alert, AlertTimelineEntry, DispatchAttempt
from anxin.db import SessionMaker, transaction
from anxin.models import Device, Elder, Responder
from dispatcher.models import SmsMessage

TZ = "Asia/Shanghai"


@dataclass(frozen=True)
class Home:
    elder: Elder
    devices: dict[str, Device]  # by kind

    @property
    def elder_id(self) -> int:
        assert self.elder.id is not None
        return self.elder.id


async def home(sessions: SessionMaker, *, living_alone: bool | None = None, index: int = 0) -> Home:
    """The index-th elder of the seeded county (optionally only those living alone)."""
    async with sessions() as session:
        query = select(Elder).order_by(col(Elder.id))
        if living_alone is not None:
            query = query.where(col(Elder.living_alone).is_(living_alone))
        elder = (await session.execute(query.offset(index).limit(1))).scalars().one()
        devices = (
            (await session.execute(select(Device).where(col(Device.elder_id) == elder.id)))
            .scalars()
            .all()
        )
    return Home(elder, {d.kind: d for d in devices})


async def event(
    sessions: SessionMaker,
    where: Home,
    event_type: str,
    now: datetime,
    *,
    device_kind: str = "sos_button",
    data: dict[str, Any] | None = None,
    previous_vitals: str = "normal",
) -> int | None:
    """What the gateway does with a stored event (apply it in its own transaction), then what
    the watcher it NOTIFYs does next: start the response of an alert it raised."""
    device = where.devices.get(device_kind) or next(iter(where.devices.values()))
    async with transaction(sessions) as session:
        elder = await session.get(Elder, where.elder_id)
        assert elder is not None
        alert_id = await intake.apply_event(
            session,
            device=device,
            elder=elder,
            event_type=event_type,
            data=data or {},
            now=now,
            timezone=TZ,
            previous_vitals=previous_vitals,
        )
    if alert_id is not None:
        await start_response(sessions, alert_id, now)
    return alert_id


async def start_response(sessions: SessionMaker, alert_id: int, now: datetime) -> None:
    """The watcher's part for one alert the gateway raised: ranking, guardians and step 0."""
    async with transaction(sessions) as session:
        found = await alert_ladder.lock_alert(session, alert_id)
        if found is not None and alert_ladder.needs_start(found):
            await alert_ladder.advance(session, found, now)


async def alert(sessions: SessionMaker, alert_id: int) -> Alert:
    async with sessions() as session:
        found = await session.get(Alert, alert_id)
    assert found is not None
    return found


async def open_alerts(sessions: SessionMaker, elder_id: int) -> list[Alert]:
    async with sessions() as session:
        rows = await session.execute(
            select(Alert).where(col(Alert.elder_id) == elder_id).order_by(col(Alert.id))
        )
        return list(rows.scalars())


async def attempts(sessions: SessionMaker, alert_id: int) -> list[DispatchAttempt]:
    async with sessions() as session:
        rows = await session.execute(
            select(DispatchAttempt)
            .where(col(DispatchAttempt.alert_id) == alert_id)
            .order_by(col(DispatchAttempt.step))
        )
        return list(rows.scalars())


async def outbox(
    sessions: SessionMaker, alert_id: int, purpose: str | None = None
) -> list[SmsMessage]:
    async with sessions() as session:
        query = select(SmsMessage).where(col(SmsMessage.alert_id) == alert_id)
        if purpose is not None:
            query = query.where(col(SmsMessage.purpose) == purpose)
        rows = await session.execute(query.order_by(col(SmsMessage.id)))
        return list(rows.scalars())


async def timeline(sessions: SessionMaker, alert_id: int) -> list[AlertTimelineEntry]:
    async with sessions() as session:
        rows = await session.execute(
            select(AlertTimelineEntry)
            .where(col(AlertTimelineEntry.alert_id) == alert_id)
            .order_by(col(AlertTimelineEntry.id))
        )
        return list(rows.scalars())


async def steps(sessions: SessionMaker, alert_id: int) -> list[tuple[datetime, str, str]]:
    """The timeline as (at, actor, action), for exact comparisons."""
    return [(t.at, t.actor, t.action) for t in await timeline(sessions, alert_id)]


async def phone_of(sessions: SessionMaker, responder_id: int) -> str:
    async with sessions() as session:
        responder = await session.get(Responder, responder_id)
    assert responder is not None
    return responder.phone


async def act(
    sessions: SessionMaker, alert_id: int, what: str, responder_id: int, now: datetime
) -> None:
    """A responder's reply as the dispatcher applies it: accept / decline / on_scene."""
    async with transaction(sessions) as session:
        locked = await alert_ladder.lock_alert(session, alert_id)
        assert locked is not None
        actor = f"responder:{responder_id}"
        if what == "accept":
            assert await alert_ladder.accept(session, locked, responder_id, now, actor)
        elif what == "decline":
            await alert_ladder.decline(session, locked, responder_id, now, actor)
        elif what == "on_scene":
            await alert_ladder.on_scene(session, locked, now, actor)
        elif what == "failed":
            await alert_ladder.attempt_failed(session, locked, responder_id, now, "undelivered")
        else:
            raise AssertionError(what)
