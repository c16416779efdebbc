"""Tiny builders for test data: a test says the values it relies on, not the product's defaults.

Not a test module and holds no fixture (fixtures live in the conftest.py files): plain
functions that any test, conftest or helper may import.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alert_service import intake, rules
from alert_service.models import Alert
from anxin.clock import FakeClock
from anxin.db import SessionMaker, transaction
from anxin.models import Elder, Region
from anxin.schemas import event_json
from device_sim.region.plan import DeviceSpec, ElderSpec, RegionPlan
from gateway import service
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
