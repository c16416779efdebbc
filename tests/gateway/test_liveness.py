"""Heartbeats in batches, offline after 3 missed intervals or within seconds of the last will
(`WILL_GRACE_S`: a stopping broker's wills are not believed at once), and back
online: the transitions are events the alert service sees (P3 device trouble)."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import select, update
from sqlmodel import col

from alert_service.models import Alert
from anxin.clock import FakeClock
from anxin.db import SessionMaker, transaction
from anxin.models import Device
from anxin.mqtt import BrokerAddress
from anxin.schemas import Heartbeat
from gateway import service
from gateway.models import Event
from tests.support.broker import Mosquitto, connected_device, device_ids_of_kind, running_gateway
from tests.support.harness import Seeded, eventually


async def _device(sessions: SessionMaker, device_id: str) -> Device:
    async with sessions() as session:
        device = await session.get(Device, device_id)
    assert device is not None
    return device


async def _events(sessions: SessionMaker, device_id: str) -> list[str]:
    async with sessions() as session:
        rows = await session.execute(
            select(col(Event.type)).where(col(Event.device_id) == device_id).order_by(col(Event.id))
        )
        return [str(t) for t in rows.scalars()]


async def _alerts(sessions: SessionMaker, device_id: str) -> list[Alert]:
    """The alerts of the device's elder (one open alert per elder and kind: devices share)."""
    async with sessions() as session:
        device = await session.get(Device, device_id)
        assert device is not None
        rows = await session.execute(select(Alert).where(col(Alert.elder_id) == device.elder_id))
        return list(rows.scalars())


async def test_heartbeats_update_a_whole_batch_and_silence_goes_offline_after_three_intervals(
    region: Seeded,
) -> None:
    clock = FakeClock()
    ids = [d.device_id for d in region.plan.devices][:50]
    beats = {
        device_id: (Heartbeat(battery=40 + n % 50, rssi=-70), clock.now())
        for n, device_id in enumerate(ids)
    }
    async with transaction(region.sessions) as session:
        back = await service.record_heartbeats(session, beats, clock.now())
    assert sorted(back) == sorted(ids)  # all were offline since seeding: now back online
    for n, device_id in enumerate(ids[:5]):
        device = await _device(region.sessions, device_id)
        assert device.online and device.battery == 40 + n % 50 and device.rssi == -70
        assert device.last_seen_at == clock.now()
        assert device.offline_after == clock.now() + timedelta(
            seconds=3 * device.heartbeat_interval_s
        )

    # A heartbeat without fields keeps the last known battery.
    first = ids[0]
    async with transaction(region.sessions) as session:
        assert (
            await service.record_heartbeats(
                session, {first: (Heartbeat(), clock.now())}, clock.now()
            )
            == []
        )
    assert (await _device(region.sessions, first)).battery == 40

    interval = (await _device(region.sessions, first)).heartbeat_interval_s
    clock.advance(3 * interval - 1)
    async with transaction(region.sessions) as session:
        silent = await service.sweep_silent(session, clock.now())
    assert first not in silent  # two and a bit missed beats: still online
    clock.advance(1)
    async with transaction(region.sessions) as session:
        silent = await service.sweep_silent(session, clock.now())
    assert first in silent
    device = await _device(region.sessions, first)
    assert not device.online
    assert "offline" in await _events(region.sessions, first)
    offline_alerts = [a for a in await _alerts(region.sessions, first) if a.kind == "offline"]
    assert offline_alerts and offline_alerts[0].priority == 3

    # Swept once only: a second sweep finds nothing new.
    async with transaction(region.sessions) as session:
        assert first not in await service.sweep_silent(session, clock.now())

    # Back online on its next heartbeat: a transition event the alert service sees.
    clock.advance(30)
    async with transaction(region.sessions) as session:
        back = await service.record_heartbeats(
            session, {first: (Heartbeat(battery=77), clock.now())}, clock.now()
        )
    assert back == [first]
    device = await _device(region.sessions, first)
    assert device.online and device.battery == 77
    assert (await _events(region.sessions, first))[-1] == "online"


async def test_the_sweeper_takes_only_silent_devices_in_bounded_batches(region: Seeded) -> None:
    clock = FakeClock()
    ids = [d.device_id for d in region.plan.devices]
    async with transaction(region.sessions) as session:
        await service.record_heartbeats(
            session, {i: (Heartbeat(), clock.now()) for i in ids}, clock.now()
        )
        # Half of them keep beating.
        await session.execute(
            update(Device)
            .where(col(Device.id).in_(ids[::2]))
            .values(offline_after=clock.now() + timedelta(hours=1))
        )
    clock.advance(timedelta(minutes=16))  # past every device's 3 intervals (5 min at most)
    swept: list[str] = []
    while True:
        async with transaction(region.sessions) as session:
            batch = await service.sweep_silent(session, clock.now(), limit=20)
        if not batch:
            break
        assert len(batch) <= 20
        swept += batch
    assert sorted(swept) == sorted(ids[1::2])


async def test_last_will_marks_offline_within_seconds_and_reconnect_brings_it_back(
    region: Seeded, mosquitto: Mosquitto
) -> None:
    device_id = next(device_ids_of_kind(region.plan, "hub"))
    address = BrokerAddress.parse(mosquitto.url())
    async with running_gateway(region.sessions, mosquitto.url(), status_settle_s=1.0) as gateway:
        async with connected_device(address, device_id) as device:

            async def online() -> bool:
                return (await _device(region.sessions, device_id)).online

            await eventually(online, what="online from the birth message")
            await device.publish("heartbeat", json.dumps({"battery": 55, "rssi": -80}).encode())

            async def battery_55() -> bool:
                return (await _device(region.sessions, device_id)).battery == 55

            await eventually(battery_55, what="heartbeat stored")
            assert gateway.stats.heartbeats >= 1

            # The connection drops without a DISCONNECT: the broker publishes the last will.
            device.client.abort()

            async def offline() -> bool:
                return not (await _device(region.sessions, device_id)).online

            await eventually(offline, timeout=30, what="offline from the last will")
        events = await _events(region.sessions, device_id)
        assert events[-1] == "offline"
        assert any(a.kind == "offline" for a in await _alerts(region.sessions, device_id))

        # It comes back: `online` on connect is a back-online transition.
        async with connected_device(address, device_id):
            await eventually(online, what="back online")
        # A clean DISCONNECT sends no will: the device stays online until it goes silent.
        assert (await _events(region.sessions, device_id))[-1] == "online"


async def test_a_heartbeat_just_before_the_power_goes_does_not_outlive_the_last_will(
    region: Seeded, mosquitto: Mosquitto
) -> None:
    """A hub that heartbeats and loses power a moment later: the heartbeat reached the gateway
    before the will, so the will is still believed (a heartbeat batch gathering for half a
    second must not count as the device having spoken after its will)."""
    device_id = next(device_ids_of_kind(region.plan, "hub"))
    address = BrokerAddress.parse(mosquitto.url())
    async with running_gateway(region.sessions, mosquitto.url(), status_settle_s=1.0) as gateway:
        async with connected_device(address, device_id) as device:

            async def online() -> bool:
                return (await _device(region.sessions, device_id)).online

            await eventually(online, what="online from the birth message")
            await device.publish("heartbeat", json.dumps({"battery": 41, "rssi": -80}).encode())
            device.client.abort()

            async def offline_after_its_beat() -> bool:
                stored = await _device(region.sessions, device_id)
                return stored.battery == 41 and not stored.online

            await eventually(offline_after_its_beat, timeout=30, what="offline from the last will")
        assert gateway.stats.heartbeats >= 1
        assert (await _events(region.sessions, device_id))[-1] == "offline"


async def test_a_power_cut_batch_of_last_wills_and_returns_is_applied_device_by_device(
    region: Seeded,
) -> None:
    """One batch of statuses, as a township's power cut brings them: each will takes its device
    offline unless the device was heard from after it, each `online` brings its device back,
    and every transition is an event of its own device."""
    clock = FakeClock()
    ids = [d.device_id for d in region.plan.devices][:40]
    async with transaction(region.sessions) as session:
        await service.record_heartbeats(
            session, {i: (Heartbeat(), clock.now()) for i in ids}, clock.now()
        )
    will_at = clock.now()
    clock.advance(timedelta(seconds=5))
    stale, quiet = ids[0], ids[1:30]
    async with transaction(region.sessions) as session:
        # `stale` beat after its will was received: the will is old news.
        await service.record_heartbeats(session, {stale: (Heartbeat(), clock.now())}, clock.now())
        gone, back = await service.mark_statuses(
            session, {i: (b"offline", will_at) for i in [stale, *quiet]}, clock.now()
        )
    assert sorted(gone) == sorted(quiet) and back == []
    assert (await _device(region.sessions, stale)).online
    for device_id in quiet[:3]:
        assert not (await _device(region.sessions, device_id)).online
        assert (await _events(region.sessions, device_id))[-1] == "offline"

    clock.advance(timedelta(minutes=1))
    steady = await _events(region.sessions, ids[35])
    async with transaction(region.sessions) as session:
        gone, back = await service.mark_statuses(
            session, {i: (b"online", clock.now()) for i in [*quiet[:10], ids[35]]}, clock.now()
        )
    assert gone == [] and sorted(back) == sorted(quiet[:10])  # ids[35] never went offline
    for device_id in quiet[:3]:
        device = await _device(region.sessions, device_id)
        assert device.online and device.last_seen_at == clock.now()
        assert (await _events(region.sessions, device_id))[-2:] == ["offline", "online"]
    assert await _events(region.sessions, ids[35]) == steady  # no transition: it was online
