"""Broker test parts: a private Mosquitto per test (so restarts and ACLs touch nobody else),
an in-process gateway, and a device that resends every event until it is acked."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlmodel import col

from anxin.broker import free_port, mosquitto_conf
from anxin.clock import Clock, SystemClock
from anxin.db import SessionMaker
from anxin.mqtt import BrokerAddress, MqttClient, MqttMessage
from anxin.schemas import event_json, topic
from device_sim.harness import InProcessPlatform as RunningPlatform
from device_sim.region.plan import DeviceSpec
from gateway.models import DeadLetter, Event
from gateway.worker import Gateway
from tests.support.harness import eventually, mosquitto_binary

TIMEZONE = "Asia/Shanghai"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Mosquitto:
    """A Mosquitto of our own on a free port: persistence on, queues raised (DESIGN.md)."""

    def __init__(
        self,
        workdir: Path,
        *,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        persistence: bool = True,
    ) -> None:
        self.binary = mosquitto_binary()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password_file = password_file
        self.acl_file = acl_file
        self.persistence = persistence
        self.process: subprocess.Popen[bytes] | None = None
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"

    def url(self, *, protocol: str = "5", user: str | None = None, password: str = "") -> str:
        auth = f"{user}:{password}@" if user else ""
        query = "?protocol=3.1.1" if protocol == "3.1.1" else ""
        return f"mqtt://{auth}127.0.0.1:{self.port}{query}"

    async def start(self) -> None:
        conf = mosquitto_conf(
            port=self.port,
            password_file=str(self.password_file) if self.password_file else None,
            acl_file=str(self.acl_file) if self.acl_file else None,
            persistence_dir=str(self.workdir) if self.persistence else None,
        )
        if os.geteuid() == 0:
            # Otherwise Mosquitto drops to the `mosquitto` user, who cannot write our tmp dir.
            conf += "user root\n"
        self.conf.write_text(conf)
        self.process = await asyncio.to_thread(self._spawn)
        for _ in range(200):
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            if await asyncio.to_thread(_port_open, self.port):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("mosquitto did not open its port")

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            return subprocess.Popen(
                [self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            await asyncio.to_thread(process.wait, 10)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait, 10)

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def kill_now(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@asynccontextmanager
async def running_gateway(
    sessions: SessionMaker,
    url: str,
    *,
    clock: Clock | None = None,
    client_id: str | None = None,
    shared_subscription: bool = True,
    **kwargs: Any,
) -> AsyncIterator[Gateway]:
    """An in-process gateway, subscribed before this yields."""
    gateway = Gateway(
        sessions,
        clock or SystemClock(),
        BrokerAddress.parse(url),
        timezone=TIMEZONE,
        client_id=client_id or f"gw-test-{uuid.uuid4().hex[:8]}",
        shared_subscription=shared_subscription,
        **kwargs,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    try:
        clients = (gateway.client, gateway.heartbeat_client, gateway.status_client)
        while not all(c.is_connected for c in clients):
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        await gateway.client.wait_subscribed(20)
        await gateway.heartbeat_client.wait_subscribed(20)
        await gateway.status_client.wait_subscribed(20)
        yield gateway
    finally:
        stop.set()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, 15)


@dataclass
class TestDevice:
    """A device per CONTRACT.md §1: its own login, its own ack topic, resends until acked."""

    __test__ = False  # not a pytest class

    address: BrokerAddress
    device_id: str
    will: bool = True
    client: MqttClient = field(init=False)
    acks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _pump: asyncio.Task[None] | None = None
    _new_ack: asyncio.Event = field(default_factory=asyncio.Event)
    _payloads: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        status = topic(self.device_id, "status")
        self.client = MqttClient(
            self.address,
            f"dev-{self.device_id}-{uuid.uuid4().hex[:6]}",
            will=(status, b"offline", 1, True) if self.will else None,
            birth=[(status, b"online", 1, True)] if self.will else None,
            keepalive=5,
        )
        self._ack_queue = self.client.subscribe(topic(self.device_id, "ack"), 1)

    async def connect(self) -> None:
        await self.client.connect()
        await self.client.wait_subscribed(10)
        self._pump = asyncio.create_task(self._read_acks())

    async def _read_acks(self) -> None:
        while True:
            msg: MqttMessage = await self._ack_queue.get()
            self.client.ack(msg)
            try:
                body = json.loads(msg.payload)
            except ValueError:
                continue
            self.acks.setdefault(str(body.get("event_id")), []).append(body)
            self._new_ack.set()

    async def publish(self, leaf: str, payload: bytes, qos: int = 1) -> None:
        await self.client.publish(topic(self.device_id, leaf), payload, qos)

    async def ack_for(self, event_id: str, timeout: float = 20) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while event_id not in self.acks:
            self._new_ack.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"no ack for {event_id} on {self.device_id}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_ack.wait(), remaining)
        return self.acks[event_id][-1]

    async def send_until_acked(
        self,
        events: list[tuple[str, bytes]],
        *,
        resend_after: float = 3.0,
        timeout: float = 90.0,
        window: int = 200,
    ) -> int:
        """Publish every event, resending each one that has no ack after `resend_after`
        seconds, until all are acked. At most `window` unacked at once. Returns resends."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sent_at: dict[str, float] = {}
        pending = list(events)
        resends = 0
        while True:
            now = loop.time()
            if now > deadline:
                missing = [e for e, _ in events if e not in self.acks]
                raise AssertionError(f"{len(missing)} events never acked, e.g. {missing[:5]}")
            unacked = [e for e in sent_at if e not in self.acks]
            if not pending and not unacked:
                return resends
            for event_id in unacked:
                if now - sent_at[event_id] > resend_after and self.client.is_connected:
                    self.client.publish_nowait(
                        topic(self.device_id, "event"), self._payloads[event_id], 1
                    )
                    sent_at[event_id] = now
                    resends += 1
            while pending and len(unacked) < window and self.client.is_connected:
                event_id, payload = pending.pop(0)
                self._payloads[event_id] = payload
                self.client.publish_nowait(topic(self.device_id, "event"), payload, 1)
                sent_at[event_id] = loop.time()
                unacked.append(event_id)
            self._new_ack.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_ack.wait(), 0.2)

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        await self.client.close()


@asynccontextmanager
async def connected_device(
    address: BrokerAddress, device_id: str, *, will: bool = True
) -> AsyncIterator[TestDevice]:
    device = TestDevice(address, device_id, will=will)
    await device.connect()
    try:
        yield device
    finally:
        await device.close()


def device_ids_of_kind(plan: Any, kind: str) -> Iterator[str]:
    return (d.device_id for d in plan.devices if d.kind == kind)


# --- a device pressing on a running platform ---------------------------------------------


async def press_sos(platform: RunningPlatform, device: DeviceSpec, event_id: str) -> int:
    """Publish an SOS as the device would and return the alert id from the platform's ack."""
    # A client id of its own, and only the ack of this event: a shared broker may still hold
    # acks of earlier runs for the same demo device.
    client = MqttClient(platform.mqtt, f"test-{device.device_id}-{event_id}-{uuid.uuid4().hex[:6]}")
    acks = client.subscribe(topic(device.device_id, "ack"), 1)
    await client.connect()
    try:
        await client.publish(topic(device.device_id, "event"), event_json(event_id, "sos"), 1)

        async def ack() -> dict[str, str] | None:
            while not acks.empty():
                body: dict[str, str] = json.loads(acks.get_nowait().payload)
                if body.get("event_id") == event_id:
                    return body
            return None

        body = await eventually(ack, what="device ack")
    finally:
        await client.close()
    assert body["status"] == "accepted"
    return int(body["alert_id"].removeprefix("A"))


async def press(platform: RunningPlatform, device_id: str, kind: str = "sos") -> dict[str, Any]:
    """Publish an event as the device would; what this platform did with it (from its own
    database: the CI broker is shared, and another test's platform may answer for the same demo
    device) and an ack from the broker saying the same."""
    event_id = f"rm-{uuid.uuid4().hex[:8]}"
    client = MqttClient(platform.mqtt, f"test-{device_id}-{event_id}")
    acks = client.subscribe(topic(device_id, "ack"), 1)
    await client.connect()
    try:
        await client.publish(topic(device_id, "event"), event_json(event_id, kind), 1)

        async def outcome() -> dict[str, Any] | None:
            async with platform.sessions() as session:
                # The event and its alert link commit together.
                stored = (
                    await session.execute(
                        select(col(Event.alert_id)).where(
                            col(Event.device_id) == device_id, col(Event.event_id) == event_id
                        )
                    )
                ).first()
                if stored is not None:
                    return {"status": "accepted", "alert_id": stored[0]}
                reason = await session.scalar(
                    select(col(DeadLetter.reason)).where(
                        col(DeadLetter.device_id) == device_id,
                        col(DeadLetter.payload).contains(event_id),
                    )
                )
                return {"status": "rejected", "reason": reason} if reason else None

        result = await eventually(outcome, what=f"{event_id} stored or refused")
        seen: list[dict[str, Any]] = []

        async def ack() -> bool:
            while not acks.empty():
                seen.append(json.loads(acks.get_nowait().payload))
            return any(
                a.get("event_id") == event_id
                and a.get("status") == result["status"]
                and a.get("reason") == result.get("reason")
                for a in seen
            )

        await eventually(ack, what=f"the device's ack of {event_id}")
        return result
    finally:
        await client.close()
