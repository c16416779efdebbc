"""A small MQTT 3.1.1 client for simulated devices: pure asyncio, one socket, no thread.

Real SOS buttons and hubs run their own small MQTT stack on a modem; so does the simulator.
The platform's own client (anxin/mqtt/, paho with a network thread per connection) is right
for a handful of gateway connections but not for ten thousand homes in one process: here a
home costs one socket and two small tasks. Only what a device needs: CONNECT with a last will,
PUBLISH at QoS 0/1, SUBSCRIBE, PUBACK for what it receives, keepalive pings, and reconnecting
by itself (resubscribing, then telling the owner so it can announce itself again).

Delivery of events is the application's job (CONTRACT §1: resend the same event_id until the
platform acks), so QoS 1 publishes are not retried at the MQTT level.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
from collections.abc import Awaitable, Callable

from anxin.logging import get_logger
from anxin.mqtt import BrokerAddress

log = get_logger("device_sim.device_mqtt")

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14
# Past this much unsent data in the socket buffer, publishers wait for it to drain.
WRITE_HIGH_WATER = 256 * 1024

MessageHandler = Callable[[str, bytes], None]
ReconnectHandler = Callable[[], Awaitable[None]]


class MqttRefused(ConnectionError):
    """The broker answered CONNECT with a non-zero return code."""


def _utf8(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    length = len(body)
    encoded = bytearray()
    while True:
        digit, length = length % 128, length // 128
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            break
    return bytes([(kind << 4) | flags]) + bytes(encoded) + body


class DeviceMqtt:
    """One device-side MQTT connection. Call `connect()` once; it reconnects on its own."""

    def __init__(
        self,
        address: BrokerAddress,
        client_id: str,
        *,
        will: tuple[str, bytes, int, bool] | None = None,
        keepalive: int = 60,
        on_message: MessageHandler | None = None,
        on_reconnect: ReconnectHandler | None = None,
    ) -> None:
        self.address = address
        self.client_id = client_id
        self.will = will
        self.keepalive = keepalive
        self.on_message = on_message
        self.on_reconnect = on_reconnect
        self.subscriptions: list[tuple[str, int]] = []
        self.connect_count = 0
        self._ids = itertools.cycle(range(1, 65536))
        self._pubacks: dict[int, asyncio.Future[None]] = {}
        self._subacks: dict[int, asyncio.Future[None]] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._supervisor: asyncio.Task[None] | None = None

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe on every (re)connect; call before `connect()`."""
        self.subscriptions.append((topic, qos))

    async def connect(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            await self._open()
        self._supervisor = asyncio.create_task(self._stay_connected())

    async def _open(self) -> None:
        reader, writer = await asyncio.open_connection(
            self.address.host, self.address.port, ssl=True if self.address.tls else None
        )
        flags = 0x02  # clean session: a device has nothing the broker should keep
        payload = _utf8(self.client_id)
        if self.will is not None:
            will_topic, will_payload, will_qos, will_retain = self.will
            flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
            payload += _utf8(will_topic) + _utf8(will_payload)
        if self.address.username:
            flags |= 0x80
            payload += _utf8(self.address.username)
            if self.address.password is not None:
                flags |= 0x40
                payload += _utf8(self.address.password)
        header = _utf8("MQTT") + bytes([4, flags]) + struct.pack("!H", self.keepalive)
        writer.write(_packet(CONNECT, 0, header + payload))
        first = await reader.readexactly(2)
        body = await reader.readexactly(first[1])
        if first[0] >> 4 != CONNACK or body[1] != 0:
            writer.close()
            raise MqttRefused(f"broker refused {self.client_id}: return code {body[1]}")
        self._reader, self._writer = reader, writer
        self._tasks = [
            asyncio.create_task(self._read_loop(reader)),
            asyncio.create_task(self._ping_loop(writer)),
        ]
        waits = []
        for topic, qos in self.subscriptions:
            packet_id = next(self._ids)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._subacks[packet_id] = fut
            waits.append(fut)
            body = struct.pack("!H", packet_id) + _utf8(topic) + bytes([qos])
            writer.write(_packet(SUBSCRIBE, 0x02, body))
        self._connected.set()
        self.connect_count += 1
        await asyncio.gather(*waits)

    async def _stay_connected(self) -> None:
        """Reconnect with backoff whenever the connection drops (broker restart, network)."""
        while not self._closing:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._closing:
                return
            self._connected.clear()
            delay = 0.5
            while not self._closing:
                try:
                    await asyncio.wait_for(self._open(), 10)
                    break
                except (OSError, TimeoutError, asyncio.IncompleteReadError, MqttRefused) as exc:
                    log.debug("device_reconnect_failed", client=self.client_id, error=repr(exc))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
            if not self._closing and self.on_reconnect is not None:
                await self.on_reconnect()

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                first = await reader.readexactly(1)
                length, shift = 0, 0
                while True:
                    byte = (await reader.readexactly(1))[0]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                body = await reader.readexactly(length) if length else b""
                self._handle(first[0] >> 4, first[0] & 0x0F, body)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connection_lost()

    def _handle(self, kind: int, flags: int, body: bytes) -> None:
        if kind == PUBLISH:
            qos = (flags >> 1) & 0x03
            (topic_len,) = struct.unpack_from("!H", body)
            topic = body[2 : 2 + topic_len].decode()
            offset = 2 + topic_len
            if qos:
                (packet_id,) = struct.unpack_from("!H", body, offset)
                offset += 2
                self._write(_packet(PUBACK, 0, struct.pack("!H", packet_id)))
            if self.on_message is not None:
                self.on_message(topic, body[offset:])
        elif kind in (PUBACK, SUBACK):
            (packet_id,) = struct.unpack_from("!H", body)
            waiting = self._pubacks if kind == PUBACK else self._subacks
            fut = waiting.pop(packet_id, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    async def _ping_loop(self, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while True:
                await asyncio.sleep(self.keepalive * 0.75)
                writer.write(_packet(PINGREQ, 0, b""))

    def _connection_lost(self) -> None:
        self._connected.clear()
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        for waiting in (self._pubacks, self._subacks):
            for fut in waiting.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection lost"))
            waiting.clear()
        if self._writer is not None:
            self._writer.close()

    def _write(self, data: bytes) -> bool:
        writer = self._writer
        if writer is None or not self._connected.is_set() or writer.is_closing():
            return False
        writer.write(data)
        return True

    def _publish_packet(
        self, topic: str, payload: bytes | str, qos: int, retain: bool
    ) -> tuple[bytes, int | None]:
        data = payload.encode() if isinstance(payload, str) else payload
        body = _utf8(topic)
        packet_id = None
        if qos:
            packet_id = next(self._ids)
            body += struct.pack("!H", packet_id)
        flags = (qos << 1) | (1 if retain else 0)
        return _packet(PUBLISH, flags, body + data), packet_id

    def publish_nowait(
        self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False
    ) -> bool:
        """Send without waiting for the broker; False when not connected (nothing sent)."""
        packet, _ = self._publish_packet(topic, payload, qos, retain)
        return self._write(packet)

    async def publish(
        self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False
    ) -> None:
        """Send; for QoS 1 wait for the broker's PUBACK. Raises ConnectionError when down."""
        packet, packet_id = self._publish_packet(topic, payload, qos, retain)
        fut: asyncio.Future[None] | None = None
        if packet_id is not None:
            fut = asyncio.get_running_loop().create_future()
            self._pubacks[packet_id] = fut
        if not self._write(packet):
            if packet_id is not None:
                self._pubacks.pop(packet_id, None)
            raise ConnectionError(f"{self.client_id} is not connected")
        writer = self._writer
        if writer is not None and writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            await writer.drain()
        if fut is not None:
            await fut

    async def close(self) -> None:
        """A clean goodbye: DISCONNECT, so the broker does not publish the last will."""
        self._closing = True
        self._write(_packet(DISCONNECT, 0, b""))
        await self._shutdown()

    def abort(self) -> None:
        """Drop the socket without DISCONNECT, as a power cut would: the broker sends the will."""
        self._closing = True
        if self._writer is not None:
            self._writer.transport.abort()
        self._connection_lost()
        if self._supervisor is not None:
            self._supervisor.cancel()

    async def _shutdown(self) -> None:
        writer = self._writer
        if writer is not None:
            with contextlib.suppress(OSError, ConnectionError):
                await writer.drain()
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()
        self._connection_lost()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await asyncio.gather(*self._tasks, return_exceptions=True)
