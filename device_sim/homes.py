"""Simulated homes speaking CONTRACT.md §1: heartbeats, last will, events resent until acked.

A home is one MQTT connection (its hub's modem) carrying every device of the home; each device
publishes under its own topic prefix and reads its own `ack` topic.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from anxin.logging import get_logger
from anxin.mqtt import BrokerAddress
from anxin.schemas import event_json, topic
from device_sim.device_mqtt import DeviceMqtt

log = get_logger("device_sim.homes")
_seq = itertools.count(1)
RESEND_MAX_S = 60.0

# Which device of a home reports which event type.
DEVICE_FOR_EVENT: dict[str, str] = {
    "sos": "sos_button",
    "sos_cancel": "sos_button",
    "fall": "bed_sensor",
    "bed_exit": "bed_sensor",
    "bed_return": "bed_sensor",
    "vitals": "bed_sensor",
    "inactivity": "bed_sensor",
    "smoke": "smoke",
    "gas": "gas",
    "water_leak": "water",
    "door_open": "hub",
    "power_lost": "hub",
    "power_restored": "hub",
    "tamper": "sos_button",
    "low_battery": "sos_button",
    "test": "sos_button",
}


@dataclass(frozen=True)
class SimDevice:
    device_id: str
    kind: str
    password: str = ""
    heartbeat_interval_s: int = 60


@dataclass
class AckResult:
    event_id: str
    status: str
    alert_id: str | None
    sends: int
    seconds: float


@dataclass
class SimHome:
    """One home: one MQTT connection (its hub's), carrying every device of the home."""

    address: BrokerAddress
    devices: list[SimDevice]
    name: str = ""
    battery: dict[str, int] = field(default_factory=dict)
    resend_after_s: float = 3.0
    # Device clock for `ts` fields (epoch ms); a scenario on a fake clock passes its own.
    now_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))

    def __post_init__(self) -> None:
        # The hub holds the home's one connection, so the will speaks for it (a home without a
        # hub: its first device's modem).
        hub = next((d for d in self.devices if d.kind == "hub"), self.devices[0])
        self.client = DeviceMqtt(
            self.address,
            f"sim-{hub.device_id}-{next(_seq)}",
            will=(topic(hub.device_id, "status"), b"offline", 1, True),
            keepalive=60,
            on_message=self._on_message,
            on_reconnect=self._announce,
        )
        for d in self.devices:
            self.client.subscribe(topic(d.device_id, "ack"), 1)
        self._waiting: dict[tuple[str, str], asyncio.Future[dict[str, object]]] = {}
        self._beats: asyncio.Task[None] | None = None
        self.powered = False
        self._announce_on_connect = True
        for d in self.devices:
            self.battery.setdefault(d.device_id, 100)

    @property
    def device_ids(self) -> list[str]:
        return [d.device_id for d in self.devices]

    def device(self, kind: str) -> SimDevice:
        found = next((d for d in self.devices if d.kind == kind), None)
        if found is None:
            raise LookupError(f"home {self.name or self.devices[0].device_id} has no {kind}")
        return found

    def has(self, kind: str) -> bool:
        return any(d.kind == kind for d in self.devices)

    async def connect(self, *, announce: bool = True) -> None:
        """Connect; with `announce` each device says `online` (retained), as on power-up."""
        self._announce_on_connect = announce
        await self.client.connect()
        self.powered = True
        if announce:
            await self._announce()

    async def _announce(self) -> None:
        if not self._announce_on_connect:
            return
        for d in self.devices:
            self.client.publish_nowait(topic(d.device_id, "status"), b"online", 1, retain=True)

    def start_heartbeats(self, *, jitter: bool = True) -> None:
        self._beats = asyncio.create_task(self._heartbeat_loop(jitter))

    async def _heartbeat_loop(self, jitter: bool) -> None:
        interval = min(d.heartbeat_interval_s for d in self.devices)
        if jitter:
            await asyncio.sleep(random.uniform(0, interval))
        while True:
            self.heartbeat()
            await asyncio.sleep(interval)

    def heartbeat(self) -> int:
        """One heartbeat from every device of the home; returns how many were sent."""
        sent = 0
        for d in self.devices:
            # Batteries drain slowly; a sensor near empty reports it in its heartbeat.
            self.battery[d.device_id] = max(
                0, self.battery[d.device_id] - random.choice((0, 0, 0, 1))
            )
            body = json.dumps(
                {"ts": self.now_ms(), "battery": self.battery[d.device_id], "rssi": -70}
            )
            sent += self.client.publish_nowait(topic(d.device_id, "heartbeat"), body, 0)
        return sent

    def _on_message(self, message_topic: str, payload: bytes) -> None:
        try:
            ack = json.loads(payload)
        except ValueError:
            return
        if not isinstance(ack, dict):
            return
        device_id = message_topic.split("/")[-2]
        fut = self._waiting.get((device_id, str(ack.get("event_id"))))
        if fut is not None and not fut.done():
            fut.set_result(ack)

    async def send_event(
        self,
        device_id: str,
        type_: str,
        data: dict[str, object] | None = None,
        *,
        event_id: str | None = None,
        give_up_after_s: float = 120.0,
        on_first_send: Callable[[str], None] | None = None,
    ) -> AckResult:
        """Publish an event and resend the same event_id until the platform acks it."""
        event_id = event_id or f"{device_id}-{int(time.time() * 1000)}-{next(_seq)}"
        payload = event_json(event_id, type_, self.now_ms(), data)
        fut: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self._waiting[(device_id, event_id)] = fut
        started = time.monotonic()
        sends = 0
        try:
            while time.monotonic() - started < give_up_after_s:
                sends += 1
                self.client.publish_nowait(topic(device_id, "event"), payload, 1)
                if sends == 1 and on_first_send is not None:
                    on_first_send(event_id)
                # Back off while unacked (3 s, 6 s, 12 s … at most 60 s): a fleet resending at a
                # fixed pace would multiply the load on a platform that is already behind.
                wait = min(self.resend_after_s * 2 ** (sends - 1), RESEND_MAX_S)
                try:
                    ack = await asyncio.wait_for(asyncio.shield(fut), wait)
                    alert = ack.get("alert_id")
                    return AckResult(
                        event_id,
                        str(ack.get("status")),
                        str(alert) if alert else None,
                        sends,
                        time.monotonic() - started,
                    )
                except TimeoutError:
                    log.info("event_resend", device=device_id, event_id=event_id, sends=sends)
            raise TimeoutError(f"no ack for {event_id} after {give_up_after_s}s")
        finally:
            self._waiting.pop((device_id, event_id), None)

    async def event(
        self, type_: str, data: dict[str, object] | None = None, *, event_id: str | None = None
    ) -> AckResult:
        """An event from the device of this home that reports `type_` (sos → the SOS button)."""
        device = self.device(DEVICE_FOR_EVENT.get(type_, "sos_button"))
        return await self.send_event(device.device_id, type_, data, event_id=event_id)

    async def press_sos(self) -> AckResult:
        return await self.send_event(self.device("sos_button").device_id, "sos")

    async def close(self, *, lose_power: bool = False, say_offline: bool = True) -> None:
        """Disconnect. `say_offline` publishes a retained `offline` per device first (a home
        that never announced itself, as in the bench, has nothing to take back)."""
        if self._beats is not None:
            self._beats.cancel()
        self.powered = False
        if lose_power:
            self.client.abort()  # no DISCONNECT: the broker publishes the last will
            return
        for d in self.devices if say_offline else ():
            # Retained `offline`, so a gateway subscribing later is not told a stale `online`.
            self.client.publish_nowait(topic(d.device_id, "status"), b"offline", 1, retain=True)
        await self.client.close()
