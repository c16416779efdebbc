"""The gateway's device acks are QoS 1 PUBLISH packets built by anxin/mqtt/fastpath.py, not by paho's
`publish`: they must reach the device in order over MQTT 5 and 3.1.1, leave nothing in flight
once PUBACKed, and be resent (DUP) after the connection drops before their PUBACK, as paho
resends its own."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from anxin.mqtt import BrokerAddress, MqttClient, MqttMessage
from tests.support.broker import Mosquitto
from tests.support.harness import eventually


async def _receive(queue: asyncio.Queue[MqttMessage], n: int) -> list[MqttMessage]:
    got = []
    for _ in range(n):
        got.append(await asyncio.wait_for(queue.get(), 30))
    return got


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_acks_reach_the_device_in_order_and_leave_nothing_in_flight(
    mosquitto: Mosquitto, protocol: str
) -> None:
    address = BrokerAddress.parse(mosquitto.url(protocol=protocol))
    device = MqttClient(address, "device-1")
    gateway = MqttClient(address, "gw-acks", max_inflight=0)
    inbox = device.subscribe("anxin/v1/dev/+/ack", 1)
    await device.connect()
    await device.wait_subscribed(10)
    await gateway.connect()
    try:
        payloads = [f'{{"event_id": "e{n}", "status": "accepted"}}'.encode() for n in range(300)]
        # Big enough for a two-byte remaining length too.
        payloads.append(b'{"event_id": "big", "pad": "' + b"x" * 300 + b'"}')
        with gateway.burst():
            for payload in payloads[:150]:
                gateway.publish_nowait("anxin/v1/dev/d-1/ack", payload, 1)
        for payload in payloads[150:]:
            gateway.publish_nowait("anxin/v1/dev/d-1/ack", payload, 1)
        got = await _receive(inbox, len(payloads))
        assert [m.payload for m in got] == payloads
        assert {m.topic for m in got} == {"anxin/v1/dev/d-1/ack"}
        assert all(m.qos == 1 for m in got)
        out = gateway._client._out_messages
        await eventually(lambda: asyncio.sleep(0, not out), what="every PUBACK")
        assert gateway._client._inflight_messages == 0
    finally:
        await gateway.close()
        await device.close()


async def test_acks_without_their_puback_are_resent_after_a_reconnect(
    mosquitto: Mosquitto,
) -> None:
    address = BrokerAddress.parse(mosquitto.url())
    device = MqttClient(address, "device-1", persistent_session=True)
    gateway = MqttClient(address, "gw-acks", max_inflight=0)
    inbox = device.subscribe("anxin/v1/dev/+/ack", 1)
    # Published before the gateway ever connected: sent on its CONNACK.
    gateway.publish_nowait("anxin/v1/dev/d-1/ack", b"before-connect", 1)
    await device.connect()
    await device.wait_subscribed(10)
    await gateway.connect()
    try:
        assert (await _receive(inbox, 1))[0].payload == b"before-connect"
        out = gateway._client._out_messages
        await eventually(lambda: asyncio.sleep(0, not out), what="its PUBACK")
        # The broker stops answering: the ack is written but never PUBACKed; then it dies.
        assert mosquitto.process is not None
        os.kill(mosquitto.process.pid, signal.SIGSTOP)
        gateway.publish_nowait("anxin/v1/dev/d-1/ack", b"in-flight", 1)
        assert len(out) == 1
        (pending,) = out.values()
        mosquitto.kill_now()
        await mosquitto.start()
        # paho marks it DUP on the reconnect and sends it again; the new broker PUBACKs it.
        await eventually(lambda: asyncio.sleep(0, gateway.connect_count >= 2), what="reconnect")
        await eventually(lambda: asyncio.sleep(0, not out), timeout=30, what="the resend's PUBACK")
        assert pending.dup
        assert gateway._client._inflight_messages == 0
    finally:
        await gateway.close()
        await device.close()


class _Chunks:
    """A socket that hands out the given chunks, one per recv."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def recv(self, _n: int) -> bytes:
        return self.chunks.pop(0)


def test_whole_packets_are_sliced_from_the_buffer_and_partial_ones_left_to_paho() -> None:
    from anxin.mqtt.fastpath import _BufferedSocket

    big = bytes(range(256)) * 2  # 512 bytes: a two-byte remaining length
    stream = b"\x40\x02\x00\x07" + b"\x30\x80\x04" + big + b"\x40\x02\x00"
    sock = _BufferedSocket(_Chunks([stream, b"\x08"]))
    assert sock.take_packet() is None  # nothing read yet: paho's reader does the first recv
    assert sock.recv(1) == b"\x40"  # as paho reads: byte by byte, then the body
    assert sock.recv(1) == b"\x02" and sock.recv(2) == b"\x00\x07"
    assert sock.take_packet() == (0x30, bytearray(big))
    assert sock.take_packet() is None  # a PUBACK cut short: left in place
    assert sock.recv(1) == b"\x40" and sock.recv(1) == b"\x02"
    assert sock.recv(2) == b"\x00"
    assert sock.recv(1) == b"\x08"
