"""Tiny builders for test data: a test says the values it relies on, not the product's defaults.

Not a test module and holds no fixture (fixtures live in the conftest.py files): plain
functions that any test, conftest or helper may import.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alert_service import intake, rules, watcher
from alert_service import ladder as alert_ladder
from alert_service.models import Alert, AlertTimelineEntry, DispatchAttempt
from anxin import auth
from anxin.clock import FakeClock
from anxin.db import SessionMaker, transaction
from anxin.models import Device, Elder, OperatorUser, Region, Responder, ServiceCentre
from anxin.schemas import event_json
from device_sim.region.plan import DeviceSpec, ElderSpec, RegionPlan
from dispatcher.models import SmsMessage
from gateway import service
from gateway.models import DeadLetter
from tests.support.harness import Seeded

# Every rung spelt out: the ladder the seeded world runs and most ladder tests assume. Changing
# the product's default (`rules.Ladder`) breaks only the test about the default, not these.
LADDER_VALUES: dict[str, Any] = {
    "respond_minutes": 15,
    "accept_timeout_s": 180,
    "max_aides": 3,
    "at_risk_s": 480,
    "centre_answer_s": 180,
    "reminder_grace_s": 120,
    "notify_guardians": True,
    # No voice call-outs unless a test asks for them (issue 19: `voice_priorities=(1,)`).
    "voice_priorities": (),
    "voice_after_s": 60,
    "voice_at_night": True,
}


def ladder(**changes: Any) -> rules.Ladder:
    """A ladder with every value given (LADDER_VALUES, then `changes`)."""
    unknown = set(changes) - set(LADDER_VALUES)
    assert not unknown, f"not a ladder setting: {sorted(unknown)}"
    return rules.Ladder(**(LADDER_VALUES | changes))


def region_ladder(**changes: Any) -> dict[str, Any]:
    """`regions.ladder` settings for `ladder(**changes)`; the window stays the region's own
    `response_minutes`, as in production."""
    settings = ladder(**changes).snapshot()
    del settings["respond_minutes"]
    return settings


async def sos(session: AsyncSession, elder_code: str, now: datetime) -> Alert:
    """An SOS from this elder, raised (or joined) as the gateway does, in `session`."""
    elder = (await session.execute(select(Elder).where(col(Elder.code) == elder_code))).scalar_one()
    return await intake.raise_or_join(
        session, elder, rules.RaiseAlert("sos", rules.P1), None, now, "test"
    )


async def login(http: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    """The bearer header of an operator, from POST /api/auth/token."""
    res = await http.post("/api/auth/token", data={"username": username, "password": password})
    assert res.status_code == 200, res.text
    return {"Authorization": f"Bearer {res.json()['access_token']}"}


async def operator_token(http: httpx.AsyncClient, username: str) -> dict[str, str]:
    """The bearer header of a seeded operator (password `anxin-<username>`)."""
    return await login(http, username, f"anxin-{username}")


async def region_id(region: Seeded, code: str) -> int:
    """The id of the seeded region with this code."""
    async with region.sessions() as session:
        found = (
            await session.execute(select(col(Region.id)).where(col(Region.code) == code))
        ).scalar_one()
    assert found is not None
    return found


async def gateway_sos(sessions: SessionMaker, clock: FakeClock, device_id: str) -> int:
    """An SOS from this device stored as the gateway stores it; the alert id of its ack."""
    async with transaction(sessions) as session:
        acks = await service.store_events(
            session,
            [
                service.Incoming(
                    f"anxin/v1/dev/{device_id}/event",
                    device_id,
                    event_json(f"sos-{device_id}", "sos"),
                )
            ],
            clock.now(),
            "Asia/Shanghai",
        )
    assert acks[0].alert_id is not None
    return int(acks[0].alert_id.removeprefix("A"))


# --- the seeded county's plan ------------------------------------------------------------


def village_codes(region: Seeded, township: str) -> set[str]:
    return {v.code for v in region.plan.villages if v.parent_code == township}


def sos_button_in(plan: RegionPlan, township_code: str) -> tuple[ElderSpec, DeviceSpec]:
    """An elder of this township and their SOS button."""
    villages = {v.code for v in plan.villages if v.parent_code == township_code}
    elder = next(e for e in plan.elders if e.village_code in villages)
    device = next(d for d in plan.devices if d.elder_code == elder.code and d.kind == "sos_button")
    return elder, device


async def raise_sos(region: Seeded, clock: FakeClock, township: str) -> Alert:
    """An SOS from the first seeded elder of this township, raised as the gateway does."""
    elder_code = next(
        e.code for e in region.plan.elders if e.village_code in village_codes(region, township)
    )
    async with transaction(region.sessions) as session:
        return await sos(session, elder_code, clock.now())


# --- history for the figures -------------------------------------------------------------


async def seed_closed_alerts(
    session: AsyncSession, now: datetime, months: int = 5, per_township: int = 8, seed: int = 7
) -> int:
    """Closed P1 alerts over the last `months` months; returns how many were breached."""
    rng = random.Random(seed)
    village = Region.__table__.alias("village")  # type: ignore[attr-defined]
    rows = list(
        await session.execute(
            select(Elder, village.c.parent_id)
            .join(village, village.c.id == col(Elder.village_id))
            .order_by(col(Elder.id))
        )
    )
    townships = sorted({township_id for _, township_id in rows})
    county_id = (await session.get(Region, townships[0])).parent_id  # type: ignore[union-attr]
    breached = 0
    for month in range(1, months + 1):
        for township_id in townships:
            elders = [e for e, t in rows if t == township_id]
            for i in range(per_township):
                elder = elders[i % len(elders)]
                raised = now - timedelta(days=30 * month, hours=i * 7)
                accept_s = rng.uniform(40, 240)
                on_scene_s = accept_s + rng.uniform(
                    300, 1000 if township_id != townships[-1] else 1300
                )
                late = on_scene_s > 15 * 60
                breached += late
                session.add(
                    Alert(
                        elder_id=elder.id,
                        village_id=elder.village_id,
                        township_id=township_id,
                        county_id=county_id,
                        kind="sos",
                        priority=1,
                        status="resolved",
                        raised_at=raised,
                        respond_by=raised + timedelta(minutes=15),
                        accepted_at=raised + timedelta(seconds=accept_s),
                        on_scene_at=raised + timedelta(seconds=on_scene_s),
                        resolved_at=raised + timedelta(seconds=on_scene_s + 900),
                        resolved_by="responder:1",
                        outcome="handled",
                        last_trigger_at=raised,
                        breached=late,
                    )
                )
    return breached


# --- alerts in the database: a home, its events, reading them back, driving the watcher ---


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


async def tick_at(sessions: SessionMaker, clock: FakeClock, when: datetime) -> int:
    """Move the clock to `when` and let the watcher do everything due; how many rows it did."""
    clock.set(when)
    handled = 0
    while (n := await watcher.tick(sessions, clock, TZ)) > 0:
        handled += n
    return handled


# --- two townships for the scope tests: what a T01 operator may touch, what is T02's ------


@dataclass
class Township:
    id: int
    region_ids: set[int]
    village: int
    alert: int
    alerts: set[int]
    elder: int
    elders: set[int]
    device: str
    devices: set[str]
    aide: int
    responders: set[int]
    centre: int
    centres: set[int]


async def township(region: Seeded, code: str) -> Township:
    tid = await region_id(region, code)
    async with region.sessions() as session:
        scope = await auth.regions_under(session, tid)
        village = min(
            r
            for r in (
                await session.execute(
                    select(col(Region.id)).where(
                        col(Region.parent_id) == tid, col(Region.level) == "village"
                    )
                )
            ).scalars()
            if r is not None
        )
        elders = {
            e
            for e in (
                await session.execute(select(col(Elder.id)).where(col(Elder.village_id).in_(scope)))
            ).scalars()
            if e is not None
        }
        devices = set(
            (
                await session.execute(
                    select(col(Device.id)).where(col(Device.elder_id).in_(elders))
                )
            ).scalars()
        )
        centres = {
            c
            for c in (
                await session.execute(
                    select(col(ServiceCentre.id)).where(col(ServiceCentre.region_id).in_(scope))
                )
            ).scalars()
            if c is not None
        }
        aides = {
            r
            for r in (
                await session.execute(
                    select(col(Responder.id)).where(col(Responder.village_id).in_(scope))
                )
            ).scalars()
            if r is not None
        }
        duty = {
            r
            for r in (
                await session.execute(
                    select(col(Responder.id)).where(col(Responder.centre_id).in_(centres))
                )
            ).scalars()
            if r is not None
        }
        alerts = {
            a
            for a in (
                await session.execute(select(col(Alert.id)).where(col(Alert.village_id).in_(scope)))
            ).scalars()
            if a is not None
        }
    assert elders and devices and aides and centres and alerts, f"{code} is not seeded"
    return Township(
        id=tid,
        region_ids=scope,
        village=village,
        alert=min(alerts),
        alerts=alerts,
        elder=min(elders),
        elders=elders,
        device=min(devices),
        devices=devices,
        aide=min(aides),
        responders=aides | duty,
        centre=min(centres),
        centres=centres,
    )


async def two_townships(region: Seeded, clock: FakeClock) -> tuple[Township, Township]:
    """T01 (the operator's own) and T02 (someone else's), each with an open SOS alert, and a
    dead letter from a T02 device."""
    await raise_sos(region, clock, "T01")
    await raise_sos(region, clock, "T02")
    mine, theirs = await township(region, "T01"), await township(region, "T02")
    async with transaction(region.sessions) as session:
        session.add(
            DeadLetter(
                received_at=clock.now(),
                topic=f"anxin/v1/dev/{theirs.device}/event",
                device_id=theirs.device,
                reason="invalid_json",
                payload="{not json",
            )
        )
    return mine, theirs


async def second_county(region: Seeded) -> None:
    """Another county with its own county operator `c2` (password `anxin-c2`): the demo county
    is outside their region."""
    async with transaction(region.sessions) as session:
        county = Region(
            code="C2", name="第二县", level="county", lat=33.0, lon=110.0, ladder=region_ladder()
        )
        session.add(county)
        await session.flush()
        assert county.id is not None
        session.add(
            OperatorUser(
                username="c2",
                display_name="第二县值班员",
                password_hash=auth.hash_password("anxin-c2"),
                role="county_operator",
                region_id=county.id,
            )
        )


async def snapshot(region: Seeded, place: Township) -> str:
    """Every row of a township (regions, centres, elders, devices, responders, alerts) as text:
    equal snapshots mean nothing there changed."""
    rows: list[dict[str, Any]] = []
    async with region.sessions() as session:
        tables: list[tuple[Any, Any, set[Any]]] = [
            (Region, Region.id, place.region_ids),
            (ServiceCentre, ServiceCentre.id, place.centres),
            (Elder, Elder.id, place.elders),
            (Device, Device.id, place.devices),
            (Responder, Responder.id, place.responders),
            (Alert, Alert.id, place.alerts),
        ]
        for model, key, ids in tables:
            found = (await session.execute(select(model).where(col(key).in_(ids)))).scalars()
            rows.extend(r.model_dump() for r in found)
    return json.dumps(rows, default=str, sort_keys=True)
