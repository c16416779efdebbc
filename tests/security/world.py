"""Two townships' worth of ids for the security tests: what a T01 operator may touch, and what
belongs to T02 (or, for region-admin routes, to the demo county as seen from a second county)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlmodel import col

from alert_service.models import Alert
from anxin import auth
from anxin.clock import FakeClock
from anxin.db import transaction
from anxin.models import Device, Elder, OperatorUser, Region, Responder, ServiceCentre
from gateway.models import DeadLetter
from tests.builders import raise_sos, region_id, region_ladder
from tests.support.harness import Seeded


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
