"""Scale-out through the broker: replicas share the load through `$share/anxin-gw/…` and never
double it; the broker honours the gateway's MQTT 5 Receive Maximum; a heartbeat backlog does
not hold up an SOS."""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy import func, select
from sqlmodel import col

from anxin.models import Device
from anxin.mqtt import BrokerAddress, MqttClient, MqttMessage
from anxin.schemas import event_json, topic
from gateway.models import Event
from tests.support.broker import Mosquitto, TestDevice, running_gateway
from tests.support.harness import Seeded, eventually


async def test_two_gateways_split_the_load_and_store_each_event_once(
    region: Seeded, mosquitto: Mosquitto
) -> None:
    ids = [d.device_id for d in region.plan.devices][:5]
    address = BrokerAddress.parse(mosquitto.url())
    async with (
        running_gateway(region.sessions, mosquitto.url(), client_id="gw-a") as gw_a,
        running_gateway(region.sessions, mosquitto.url(), client_id="gw-b") as gw_b,
    ):
        devices = [TestDevice(address, i, will=False) for i in ids]
        try:
            for device in devices:
                await device.connect()
            plans = [
                [
                    (f"s-{d.device_id}-{n}", event_json(f"s-{d.device_id}-{n}", "test"))
                    for n in range(200)
                ]
                for d in devices
            ]
            # No resend within the test: every event reaches exactly one replica once.
            resends = await asyncio.gather(
                *(
                    d.send_until_acked(plan, resend_after=60, timeout=60)
                    for d, plan in zip(devices, plans, strict=True)
                )
            )
        finally:
            for device in devices:
                await device.close()
        assert resends == [0] * len(devices)
        assert gw_a.stats.events > 0 and gw_b.stats.events > 0
        assert gw_a.stats.events + gw_b.stats.events == 1000
    for device in devices:
        assert all(
            len(acks) == 1 and acks[0]["status"] == "accepted" for acks in device.acks.values()
        )
    async with region.sessions() as session:
        stored = await session.scalar(
            select(func.count()).select_from(Event).where(col(Event.event_id).like("s-%"))
        )
    assert stored == 1000


async def _count(queue: asyncio.Queue[MqttMessage], n: int) -> bool:
    return queue.qsize() >= n


async def test_the_broker_honours_receive_maximum(mosquitto: Mosquitto) -> None:
    """Unacked, the gateway gets no more than its Receive Maximum; each ack lets one more in."""
    address = BrokerAddress.parse(mosquitto.url())
    consumer = MqttClient(address, "rm-consumer", manual_ack=True, receive_maximum=10)
    queue = consumer.subscribe("rm/test", 1)
    producer = MqttClient(address, "rm-producer")
    await consumer.connect()
    await consumer.wait_subscribed(10)
    await producer.connect()
    try:
        for n in range(40):
            await producer.publish("rm/test", str(n).encode(), 1)
        await eventually(lambda: _count(queue, 10), what="the first 10")
        # The other 30 are on the broker: a barrier through a second client shows the broker
        # has handled everything published so far, and still nothing more came.
        await asyncio.sleep(0.5)
        assert queue.qsize() == 10
        received: list[MqttMessage] = []
        while len(received) < 40:
            msg = await asyncio.wait_for(queue.get(), 20)
            received.append(msg)
            consumer.ack(msg)
        assert [int(m.payload) for m in received] == list(range(40))
    finally:
        await producer.close()
        await consumer.close()


async def test_a_heartbeat_backlog_does_not_hold_up_an_sos(
    region: Seeded, mosquitto: Mosquitto
) -> None:
    hub = next(d.device_id for d in region.plan.devices if d.kind == "hub")
    sos = next(d.device_id for d in region.plan.devices if d.kind == "sos_button")
    address = BrokerAddress.parse(mosquitto.url())
    async with running_gateway(region.sessions, mosquitto.url()) as gateway:
        flood = MqttClient(address, "hb-flood")
        await flood.connect()
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(flood.close)
            # Hold the hub's row: the heartbeat writer blocks on it, so the backlog cannot drain
            # however fast the machine is.
            blocker = await stack.enter_async_context(region.sessions())
            await stack.enter_async_context(blocker.begin())
            await blocker.execute(select(Device).where(col(Device.id) == hub).with_for_update())
            for _ in range(20_000 - 1):
                flood.publish_nowait(topic(hub, "heartbeat"), b'{"battery": 50}', 1)
            # In order on one connection: when the last is acked, the broker has them all.
            await flood.publish(topic(hub, "heartbeat"), b'{"battery": 50}', 1)
            device = TestDevice(address, sos, will=False)
            await device.connect()
            stack.push_async_callback(device.close)
            await device.publish("event", event_json("sos-behind-beats", "sos"))
            ack = await device.ack_for("sos-behind-beats", timeout=30)
            assert ack["status"] == "accepted"
            assert gateway.stats.heartbeats == 0  # all 20,000 still waiting behind the lock
            await blocker.rollback()

        async def drained() -> bool:
            return gateway.stats.heartbeats == 20_000

        await eventually(drained, timeout=60, what="the heartbeat backlog drained")
