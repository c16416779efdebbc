"""Faults against real parts: the gateway killed (SIGKILL), Postgres stopped, Mosquitto
restarted. Devices resend until acked; nothing may be lost or stored twice. No timed asserts:
faults are injected on progress (acks seen), and every wait is a generous safety net."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from sqlalchemy import func, select, update
from sqlmodel import col

from anxin import auth
from anxin.clock import SystemClock
from anxin.db import SessionMaker, make_engine, make_sessionmaker, migrate, transaction
from anxin.models import Device
from anxin.mqtt import BrokerAddress, MqttClient
from anxin.schemas import event_json
from device_sim.harness import OwnPostgres
from device_sim.region.plan import RegionPlan
from device_sim.region.seed import seed_region
from gateway import service
from gateway.models import DeadLetter, Event
from tests.support.broker import (
    Mosquitto,
    TestDevice,
    connected_device,
    device_ids_of_kind,
    running_gateway,
)
from tests.support.harness import Seeded, eventually

EVENTS = 1000
REPO = Path(__file__).resolve().parents[2]


def _events(prefix: str, n: int = EVENTS) -> list[tuple[str, bytes]]:
    # `test` events: stored and acked like any other, without raising 1,000 alerts.
    return [(f"{prefix}-{i:04d}", event_json(f"{prefix}-{i:04d}", "test")) for i in range(n)]


async def _stored(sessions: SessionMaker, device_id: str, prefix: str) -> tuple[int, int]:
    """(rows, distinct event ids) stored for this device and prefix."""
    async with sessions() as session:
        row = (
            await session.execute(
                select(func.count(), func.count(func.distinct(col(Event.event_id)))).where(
                    col(Event.device_id) == device_id, col(Event.event_id).like(f"{prefix}-%")
                )
            )
        ).one()
    return int(row[0]), int(row[1])


async def _when_acked(device: TestDevice, n: int) -> None:
    async def enough() -> bool:
        return len(device.acks) >= n

    await eventually(enough, timeout=60, what=f"{n} acks")


def _assert_all_acked(device: TestDevice, events: list[tuple[str, bytes]]) -> None:
    for event_id, _ in events:
        statuses = {a["status"] for a in device.acks[event_id]}
        assert statuses <= {"accepted", "duplicate"}, (event_id, statuses)


class GatewayProcess:
    """`anxin run gateway` as a real process, so it can be SIGKILLed."""

    def __init__(self, database_url: str, mqtt_url: str, log: Path) -> None:
        self.env = {
            **os.environ,
            "ANXIN_DATABASE_URL": database_url,
            "ANXIN_MQTT_URL": mqtt_url,
            "ANXIN_LOG_LEVEL": "warning",
        }
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "anxin.cli", "run", "gateway", "--gateway-id", "gw-crash"],
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


async def test_gateway_killed_mid_flow_loses_and_doubles_nothing(
    region: Seeded, mosquitto: Mosquitto, database_url: str, tmp_path: Path
) -> None:
    device_id = next(device_ids_of_kind(region.plan, "sos_button"))
    events = _events("kill")
    gateway = GatewayProcess(database_url, mosquitto.url(), tmp_path / "gateway.log")
    gateway.start()
    try:
        async with connected_device(
            BrokerAddress.parse(mosquitto.url()), device_id, will=False
        ) as device:

            async def crash_and_restart() -> None:
                await _when_acked(device, 300)
                gateway.kill()  # mid-batch: commits and acks in flight are cut off
                killed_at = len(device.acks)
                await asyncio.sleep(0.5)  # the device keeps publishing into the broker
                gateway.start()
                assert killed_at < EVENTS, "the kill came too late to test anything"

            crash = asyncio.create_task(crash_and_restart())
            resends = await device.send_until_acked(events, resend_after=5.0, timeout=120)
            await crash
        _assert_all_acked(device, events)
        rows, distinct = await _stored(region.sessions, device_id, "kill")
        assert (rows, distinct) == (EVENTS, EVENTS)
        assert resends >= 0
        async with region.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(DeadLetter)) == 0
    finally:
        gateway.stop()


async def test_postgres_stopped_mid_flow_loses_and_doubles_nothing(
    mosquitto: Mosquitto, small_plan: RegionPlan, tmp_path: Path
) -> None:
    postgres = OwnPostgres(tmp_path / "pg")
    url = await postgres.start()
    await migrate(url)
    engine = make_engine(url)
    try:
        sessions = make_sessionmaker(engine)
        async with transaction(sessions) as session:
            await seed_region(session, small_plan, auth.hash_device_password, auth.hash_password)
        device_id = next(device_ids_of_kind(small_plan, "sos_button"))
        events = _events("pg")
        address = BrokerAddress.parse(mosquitto.url())
        async with (
            running_gateway(sessions, mosquitto.url()) as gateway,
            connected_device(address, device_id, will=False) as device,
        ):

            async def outage() -> None:
                await _when_acked(device, 300)
                await postgres.stop()
                stopped_at = len(device.acks)
                # Let the device publish into the outage and the gateway fail and back off.
                await asyncio.sleep(2.0)
                await postgres.start_again()
                assert stopped_at < EVENTS, "the outage came too late to test anything"

            down = asyncio.create_task(outage())
            await device.send_until_acked(events, resend_after=5.0, timeout=120)
            await down
            assert gateway.client.is_connected
        _assert_all_acked(device, events)
        assert await _stored(sessions, device_id, "pg") == (EVENTS, EVENTS)
    finally:
        await engine.dispose()
        with contextlib.suppress(Exception):
            await postgres.stop()


@contextlib.asynccontextmanager
async def _heartbeating(devices: list[TestDevice], every: float) -> AsyncIterator[None]:
    async def beat(device: TestDevice) -> None:
        while True:
            if device.client.is_connected:
                device.client.publish_nowait(
                    f"anxin/v1/dev/{device.device_id}/heartbeat", b'{"battery": 90}', 0
                )
            await asyncio.sleep(every)

    tasks = [asyncio.create_task(beat(d)) for d in devices]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_mosquitto_restart_while_devices_heartbeat_leaves_no_device_wrongly_offline(
    region: Seeded, mosquitto: Mosquitto
) -> None:
    ids = [d.device_id for d in region.plan.devices][:10]
    async with transaction(region.sessions) as session:
        # Short intervals so a wrong offline would show within the test: 3 x 5 s.
        await session.execute(
            update(Device).where(col(Device.id).in_(ids)).values(heartbeat_interval_s=5)
        )
    address = BrokerAddress.parse(mosquitto.url())

    async def all_online_since(when: datetime) -> bool:
        async with region.sessions() as session:
            rows = (await session.execute(select(Device).where(col(Device.id).in_(ids)))).scalars()
            return all(d.online and d.last_seen_at and d.last_seen_at > when for d in rows)

    async with running_gateway(
        region.sessions, mosquitto.url(), sweep_seconds=0.5, status_settle_s=3.0
    ) as gateway:
        devices = [TestDevice(address, i) for i in ids]
        try:
            for device in devices:
                await device.connect()
            async with _heartbeating(devices, every=0.5):
                await eventually(
                    lambda: all_online_since(datetime(2000, 1, 1, tzinfo=UTC)),
                    what="all online",
                )
                for _ in range(2):
                    clients = [gateway.client, gateway.heartbeat_client, gateway.status_client]
                    clients += [d.client for d in devices]
                    connects = [c.connect_count for c in clients]
                    await mosquitto.restart()

                    async def all_reconnected(
                        clients: list[MqttClient] = clients, connects: list[int] = connects
                    ) -> bool:
                        return all(
                            c.connect_count > n and c.is_connected
                            for c, n in zip(clients, connects, strict=True)
                        )

                    await eventually(all_reconnected, timeout=40, what="everyone reconnected")
                    reconnected = SystemClock().now()
                    await eventually(
                        partial(all_online_since, reconnected),
                        timeout=40,
                        what="every device heartbeating again after the restart",
                    )
                assert gateway.client.connect_count >= 3
                assert gateway.heartbeat_client.connect_count >= 3
                assert gateway.status_client.connect_count >= 3
                assert all(d.client.connect_count >= 3 for d in devices)
                # The sweeper (running every 0.5 s) finds none of them silent.
                async with transaction(region.sessions) as session:
                    assert await service.sweep_silent(session, SystemClock().now()) == []
                assert await all_online_since(reconnected)
                # And none was taken offline meanwhile: the wills Mosquitto publishes when it
                # shuts down are stale once the device says `online` again.
                async with region.sessions() as session:
                    offline_events = await session.scalar(
                        select(func.count())
                        .select_from(Event)
                        .where(col(Event.device_id).in_(ids), col(Event.type) == "offline")
                    )
                assert offline_events == 0
        finally:
            for device in devices:
                await device.close()


async def restart_broker_and_reconnect(mosquitto: Mosquitto, devices: list[TestDevice]) -> None:
    connects = [d.client.connect_count for d in devices]
    await mosquitto.restart()

    async def reconnected() -> bool:
        return all(
            d.client.connect_count > n and d.client.is_connected
            for d, n in zip(devices, connects, strict=True)
        )

    await eventually(reconnected, timeout=40, what="devices reconnected")


async def offline_events_and_online(sessions: SessionMaker, ids: list[str]) -> tuple[int, int]:
    """How many `offline` events these devices have, and how many of them are online."""
    async with sessions() as session:
        offline_events = await session.scalar(
            select(func.count())
            .select_from(Event)
            .where(col(Event.device_id).in_(ids), col(Event.type) == "offline")
        )
        online = await session.scalar(
            select(func.count())
            .select_from(Device)
            .where(col(Device.id).in_(ids), col(Device.online))
        )
    return int(offline_events or 0), int(online or 0)


async def test_a_broker_restart_takes_no_device_offline_that_says_online_again(
    region: Seeded, mosquitto: Mosquitto
) -> None:
    """Devices that do not heartbeat often (a hub: every 60 s) but say `online` on every
    connect, as the contract asks. The wills Mosquitto publishes for them when it stops reach
    the gateway in its settle window; their `online` arrives within it too and wins: no
    offline event, so no device-trouble alert for every home of the city on a broker restart."""
    ids = [d.device_id for d in region.plan.devices][:10]
    address = BrokerAddress.parse(mosquitto.url())
    async with running_gateway(
        region.sessions, mosquitto.url(), sweep_seconds=0.5, status_settle_s=3.0
    ) as gateway:
        devices = [TestDevice(address, i) for i in ids]
        try:
            for device in devices:
                await device.connect()

            async def statuses_handled(at_least: int) -> bool:
                return gateway.stats.statuses >= at_least

            await eventually(partial(statuses_handled, len(ids)), what="first `online`s")
            handled = gateway.stats.statuses
            await restart_broker_and_reconnect(mosquitto, devices)
            # The wills and the `online`s after them, handled (the settle window is 3 s).
            await eventually(
                partial(statuses_handled, handled + len(ids)), timeout=40, what="statuses"
            )
            assert await offline_events_and_online(region.sessions, ids) == (0, len(ids))
        finally:
            for device in devices:
                await device.close()


async def test_with_two_gateway_replicas_a_broker_restart_takes_no_device_offline(
    region: Seeded, mosquitto: Mosquitto
) -> None:
    """As above with two replicas sharing the event load. Each replica's persistent session
    kept the wills Mosquitto published as it stopped and hands them over on reconnecting, after
    the devices may already have said `online` to the other replica. Statuses are not shared
    out (every replica gets every device's, in order), so neither takes a device offline that
    is back; with a shared subscription a will and the `online` after it went to different
    replicas and the will was applied last (the fault suite's 500 `offline` alerts)."""
    ids = [d.device_id for d in region.plan.devices][:30]
    address = BrokerAddress.parse(mosquitto.url())
    group = f"anxin-test-{uuid.uuid4().hex[:6]}"
    async with (
        running_gateway(
            region.sessions, mosquitto.url(), share_group=group, status_settle_s=3.0
        ) as first,
        running_gateway(
            region.sessions, mosquitto.url(), share_group=group, status_settle_s=3.0
        ) as second,
    ):
        devices = [TestDevice(address, i) for i in ids]
        try:
            for device in devices:
                await device.connect()

            async def every_replica_handled(since: tuple[int, int]) -> bool:
                # Each replica gets every device's statuses (not a share of them).
                return all(
                    gateway.stats.statuses >= n + len(ids)
                    for gateway, n in zip((first, second), since, strict=True)
                )

            await eventually(partial(every_replica_handled, (0, 0)), what="first `online`s")
            before = (first.stats.statuses, second.stats.statuses)
            await restart_broker_and_reconnect(mosquitto, devices)
            # Both replicas have weighed the wills and the `online`s after them (each waits out
            # its 3 s settle window before applying an `offline`).
            await eventually(
                partial(every_replica_handled, before), timeout=40, what="statuses after restart"
            )
            assert await offline_events_and_online(region.sessions, ids) == (0, len(ids))
        finally:
            for device in devices:
                await device.close()
