"""The platform's downtime is not the devices' fault: after no gateway was listening (the demo
stopped for 25 minutes, a gateway role restarted), devices get their missed-beats grace from the
restart before the sweeper may take them offline; open alerts keep their age and record the gap
once on their timeline. On a fake clock, through the real Postgres (and a real broker for the
gateway's own restart)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlmodel import col

from alert_service.models import Alert, AlertTimelineEntry
from anxin.app import create_app
from anxin.clock import FakeClock
from anxin.db import SessionMaker, transaction
from anxin.models import Device
from anxin.mqtt import BrokerAddress
from anxin.schemas import Heartbeat
from anxin.settings import Settings
from gateway import service
from gateway.models import Event
from tests.builders import gateway_sos
from tests.support.broker import Mosquitto, connected_device, device_ids_of_kind, running_gateway
from tests.support.harness import Seeded, ServeApp, eventually

GAP = timedelta(minutes=25)


async def _device(sessions: SessionMaker, device_id: str) -> Device:
    async with sessions() as session:
        device = await session.get(Device, device_id)
    assert device is not None
    return device


async def _count(sessions: SessionMaker, what: Any, *where: Any) -> int:
    async with sessions() as session:
        return int(
            (await session.execute(select(func.count()).select_from(what).where(*where))).scalar()
            or 0
        )


async def _offline_events(sessions: SessionMaker) -> int:
    return await _count(sessions, Event, col(Event.type) == "offline")


async def _alerts(sessions: SessionMaker) -> int:
    return await _count(sessions, Alert)


async def _max_alert_id(sessions: SessionMaker) -> int:
    async with sessions() as session:
        return int((await session.execute(select(func.max(col(Alert.id))))).scalar() or 0)


async def _alive(
    sessions: SessionMaker, clock: FakeClock, gateway_id: str, *, resuming: bool, shared: bool
) -> service.Gap | None:
    async with transaction(sessions) as session:
        return await service.gateway_alive(
            session, gateway_id=gateway_id, now=clock.now(), shared=shared, resuming=resuming
        )


async def _sweep(sessions: SessionMaker, clock: FakeClock) -> list[str]:
    async with transaction(sessions) as session:
        return await service.sweep_silent(session, clock.now())


async def _beat(sessions: SessionMaker, clock: FakeClock, ids: list[str]) -> None:
    async with transaction(sessions) as session:
        await service.record_heartbeats(
            session, {i: (Heartbeat(), clock.now()) for i in ids}, clock.now()
        )


async def test_after_the_platform_was_down_devices_that_beat_within_the_grace_raise_nothing(
    region: Seeded,
) -> None:
    clock = FakeClock()
    sessions = region.sessions
    ids = [d.device_id for d in region.plan.devices]
    assert await _alive(sessions, clock, "gw-1", resuming=True, shared=False) is None
    await _beat(sessions, clock, ids)  # every home online, beating
    alerts_before = await _max_alert_id(sessions)

    # The platform stops for 25 minutes: every device's deadline passes meanwhile.
    clock.advance(GAP)
    resumed = clock.now()
    gap = await _alive(sessions, clock, "gw-1", resuming=True, shared=False)
    assert gap == service.Gap(resumed - GAP, resumed)
    swept: list[str] = []
    while batch := await _sweep(sessions, clock):
        swept += batch
    assert swept == []
    assert await _offline_events(sessions) == 0
    assert await _max_alert_id(sessions) == alerts_before  # no P3, no alert code used
    interval = (await _device(sessions, ids[0])).heartbeat_interval_s
    graced = await _device(sessions, ids[0])
    assert graced.online
    assert graced.offline_after == resumed + timedelta(seconds=3 * interval)

    # Every home but one beats within its grace; that one stays silent through it.
    dead, alive = ids[0], ids[1:]
    clock.advance(interval)
    await _beat(sessions, clock, alive)
    clock.set(resumed + timedelta(seconds=3 * interval - 1))
    assert await _sweep(sessions, clock) == []
    clock.advance(1)
    assert await _sweep(sessions, clock) == [dead]  # a dead device is still caught
    assert not (await _device(sessions, dead)).online
    assert await _offline_events(sessions) == 1
    async with sessions() as session:
        raised = (
            await session.execute(select(Alert).where(col(Alert.id) > alerts_before))
        ).scalars()
        assert [(a.kind, a.priority) for a in raised] == [("offline", 3)]
    assert all([(await _device(sessions, i)).online for i in alive[:5]])


async def test_an_open_alert_keeps_its_age_and_records_the_platform_gap_once(
    region: Seeded, serve_app: ServeApp
) -> None:
    clock = FakeClock()  # 02:00 UTC, 10:00 in Asia/Shanghai
    sessions = region.sessions
    buttons = list(device_ids_of_kind(region.plan, "sos_button"))
    await _alive(sessions, clock, "gw-1", resuming=True, shared=True)
    await _alive(sessions, clock, "gw-2", resuming=True, shared=True)
    open_id = await gateway_sos(sessions, clock, buttons[0])
    closed_id = await gateway_sos(sessions, clock, buttons[1])
    async with transaction(sessions) as session:
        await session.execute(
            update(Alert).where(col(Alert.id) == closed_id).values(status="resolved")
        )

    # Both replicas were stopped; they come back 25 minutes later, one after the other.
    clock.advance(GAP)
    first = await _alive(sessions, clock, "gw-1", resuming=True, shared=True)
    second = await _alive(sessions, clock, "gw-2", resuming=True, shared=True)
    assert first is not None and second is None
    clock.advance(2)
    assert await _alive(sessions, clock, "gw-1", resuming=True, shared=True) is None

    async with sessions() as session:
        gaps = (
            await session.execute(
                select(AlertTimelineEntry).where(col(AlertTimelineEntry.action) == "platform_gap")
            )
        ).scalars()
        entries = [(e.alert_id, e.actor, e.detail) for e in gaps]
    assert entries == [
        (
            open_id,
            "system",
            {
                "minutes": 25,
                "since": "2026-11-23T02:00:00+00:00",
                "until": "2026-11-23T02:25:00+00:00",
            },
        )
    ]

    # The operator's API shows the alert as old as it is: raised before the gap, overdue.
    app = create_app(Settings(), sessions, clock)
    async with serve_app(app) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        token = await http.post(
            "/api/auth/token", data={"username": "admin", "password": "anxin-admin"}
        )
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        alert = (await http.get(f"/api/alerts/{open_id}", headers=headers)).json()
    assert alert["raised_at"].startswith("2026-11-23T02:00:00")
    assert alert["seconds_left"] == -(25 - 15) * 60 - 2
    assert [e["action"] for e in alert["timeline"]].count("platform_gap") == 1


async def test_a_shared_replica_away_holds_the_sweep_until_it_is_back_or_its_session_ends(
    region: Seeded,
) -> None:
    """Heartbeats reach shared replicas in turns, and the broker holds an away replica's turns
    for its session: the others' silence is not the devices'. Not a platform gap either."""
    clock = FakeClock()
    sessions = region.sessions
    ids = [d.device_id for d in region.plan.devices if d.heartbeat_interval_s == 60][:20]
    await _alive(sessions, clock, "gw-a", resuming=True, shared=True)
    await _alive(sessions, clock, "gw-b", resuming=True, shared=True)
    await _beat(sessions, clock, ids)
    interval = (await _device(sessions, ids[0])).heartbeat_interval_s

    # gw-b is gone; gw-a keeps listening past every device's deadline.
    clock.advance(3 * interval + 1)
    await _alive(sessions, clock, "gw-a", resuming=False, shared=True)
    assert await _sweep(sessions, clock) == []
    assert await _offline_events(sessions) == 0

    # gw-b is back: devices that beat after it live on, a silent one goes after its grace.
    clock.advance(60)
    back = clock.now()
    await _alive(sessions, clock, "gw-a", resuming=False, shared=True)
    assert await _alive(sessions, clock, "gw-b", resuming=True, shared=True) is None
    clock.advance(interval)
    await _beat(sessions, clock, ids[1:])
    clock.set(back + timedelta(seconds=3 * interval + 1))
    await _alive(sessions, clock, "gw-a", resuming=False, shared=True)
    await _alive(sessions, clock, "gw-b", resuming=False, shared=True)
    assert await _sweep(sessions, clock) == [ids[0]]
    gaps = col(AlertTimelineEntry.action) == "platform_gap"
    assert await _count(sessions, AlertTimelineEntry, gaps) == 0  # gw-a listened throughout

    # gw-b leaves for good: the hold lasts while the broker keeps its session (300 s).
    gone = clock.now()
    await _beat(sessions, clock, ids[1:])
    clock.set(gone + timedelta(seconds=300 + 3 * interval - 1))
    await _alive(sessions, clock, "gw-a", resuming=False, shared=True)
    assert await _sweep(sessions, clock) == []
    clock.advance(2)
    await _alive(sessions, clock, "gw-a", resuming=False, shared=True)
    assert sorted(await _sweep(sessions, clock)) == sorted(ids[1:])


async def test_replicas_that_each_hear_every_device_hold_nothing_while_one_is_away(
    region: Seeded,
) -> None:
    clock = FakeClock()
    sessions = region.sessions
    ids = [d.device_id for d in region.plan.devices if d.heartbeat_interval_s == 60][:20]
    await _alive(sessions, clock, "gw-x", resuming=True, shared=False)
    await _alive(sessions, clock, "gw-y", resuming=True, shared=False)
    await _beat(sessions, clock, ids)
    interval = (await _device(sessions, ids[0])).heartbeat_interval_s
    clock.advance(3 * interval)
    await _alive(sessions, clock, "gw-x", resuming=False, shared=False)
    assert sorted(await _sweep(sessions, clock)) == sorted(ids)


async def test_a_gateway_restarted_after_downtime_graces_the_devices_it_could_not_hear(
    region: Seeded, mosquitto: Mosquitto
) -> None:
    """The gateway itself, its sweeper and the broker: stopped, 25 minutes pass, started again
    with the same id. Its first sweeps take no device offline; one that stays silent through
    its grace still goes."""
    clock = FakeClock()
    sessions = region.sessions
    address = BrokerAddress.parse(mosquitto.url())
    beating, silent = list(device_ids_of_kind(region.plan, "sos_button"))[:2]
    interval = (await _device(sessions, beating)).heartbeat_interval_s
    async with (
        connected_device(address, beating, will=False) as a,
        connected_device(address, silent, will=False) as b,
    ):
        async with running_gateway(sessions, mosquitto.url(), clock=clock, client_id="gw-1"):
            for device in (a, b):
                await device.publish("heartbeat", json.dumps({"battery": 80}).encode())

            async def both_online() -> bool:
                return all([(await _device(sessions, d)).online for d in (beating, silent)])

            await eventually(both_online, what="both devices online")

        clock.advance(GAP)
        resumed = clock.now()
        grace_end = resumed + timedelta(seconds=3 * interval)
        async with running_gateway(
            sessions, mosquitto.url(), clock=clock, client_id="gw-1", sweep_seconds=0.05
        ):

            async def graced() -> bool:
                return all(
                    [
                        (await _device(sessions, d)).offline_after == grace_end
                        for d in (beating, silent)
                    ]
                )

            await eventually(graced, what="the sweeper gives both devices their grace")
            assert all([(await _device(sessions, d)).online for d in (beating, silent)])
            assert await _offline_events(sessions) == 0
            assert await _alerts(sessions) == 0

            clock.advance(interval)
            await a.publish("heartbeat", json.dumps({"battery": 79}).encode())

            async def beat_stored() -> bool:
                return (await _device(sessions, beating)).battery == 79

            await eventually(beat_stored, what="the heartbeat after the restart")
            clock.set(grace_end + timedelta(seconds=1))

            async def silent_offline() -> bool:
                return not (await _device(sessions, silent)).online

            await eventually(silent_offline, what="the silent device taken offline")
            assert (await _device(sessions, beating)).online
            assert await _offline_events(sessions) == 1
