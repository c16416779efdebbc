"""The patches to paho's private API (paho 2.x internals, pinned <3), each for a cost measured
on the gateway under load (docs/sizing.md). paho is kept otherwise as it is; every patch falls
back to paho's own code for anything but the usual case.

- `_BufferedSocket`: the broker socket read 64 KiB at a time. paho reads a packet in three or
  more `recv` calls (type byte, each length byte, body), a system call and a GIL release each.
- `_Client._packet_read`: whole packets sliced from that buffer instead of read byte by byte,
  ~a fifth of the gateway's CPU.
- `_Client._handle_publish`: the usual PUBLISH (QoS 0/1, no properties, UTF-8 topic) decoded
  into plain values; paho builds a message, an info with a Condition and a properties object
  per message, another fifth of the CPU.
- `_Client._handle_pubackcomp`: the usual PUBACK dropped with one shared reason code and
  properties object instead of building both per packet.
- `_Client.ack`: the manual broker ack less a debug-log call and two frames.
- `_Client.publish_qos1` with `_OutMessage` / `_PublishedInfo`: a fire-and-forget QoS 1
  publish (the device acks) with its packet built here, ~a seventh of the CPU; it sits in
  paho's `_out_messages` so paho still resends it with DUP after a reconnect.
- `_Client._handle_on_message`: straight to on_message (no per-filter callbacks are used).
- `_Client._create_socket`: TCP_NODELAY; with Nagle on, device acks waited ~40 ms for the
  broker's delayed ACK of the PUBACKs before them.
- `_Client._packet_queue` / `deferring_wakeup`: acks and publishes made in one burst on the
  event loop wake the network thread once, not once per packet.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode


class _BufferedSocket:
    """The broker socket, read 64 KiB at a time. paho reads a packet in three or more `recv`
    calls (type byte, each length byte, body): a system call and a release of the GIL each,
    most of what its network thread cost under load. paho asks `pending()` before it waits in
    select(), so bytes held here are never left waiting for more to arrive."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._data = b""
        self._pos = 0

    def recv(self, bufsize: int) -> bytes:
        if self._pos >= len(self._data):
            data = self._sock.recv(max(bufsize, 65536))
            if len(data) <= bufsize:
                self._data, self._pos = b"", 0
                return bytes(data)
            self._data, self._pos = data, 0
        chunk = self._data[self._pos : self._pos + bufsize]
        self._pos += len(chunk)
        return chunk

    def take_packet(self) -> tuple[int, bytearray] | None:
        """A whole MQTT packet (first byte, body) if the buffer holds one; else None and nothing
        taken (paho then reads it piecewise, as it does every packet)."""
        data, pos = self._data, self._pos
        end = len(data)
        if end - pos < 2:
            return None
        length, mult, i = 0, 1, pos + 1
        while True:
            if i >= end or i - pos > 4:
                return None  # incomplete header (or malformed: paho's reader reports it)
            byte = data[i]
            length += (byte & 0x7F) * mult
            mult *= 128
            i += 1
            if not byte & 0x80:
                break
        if end - i < length:
            return None
        self._pos = i + length
        return data[pos], bytearray(data[i : i + length])

    def pending(self) -> int:
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return len(self._data) - self._pos + int(inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _PublishedInfo:
    """Stands in for paho's MQTTMessageInfo (a Condition each) on a fire-and-forget publish:
    nobody waits on it."""

    rc = MQTTErrorCode.MQTT_ERR_SUCCESS

    def _set_as_published(self) -> None:
        pass


_NO_INFO = _PublishedInfo()


class _OutMessage:
    """An in-flight QoS 1 publish of `_Client.publish_qos1`, kept in paho's `_out_messages`
    with the fields paho reads to resend it (DUP set) after a reconnect, as it does its own."""

    __slots__ = (
        "dup",
        "info",
        "mid",
        "payload",
        "properties",
        "qos",
        "retain",
        "state",
        "timestamp",
        "topic",
    )

    def __init__(self, mid: int, topic: str, payload: bytes) -> None:
        self.mid = mid
        self.topic = topic
        self.payload = payload
        self.qos = 1
        self.retain = False
        self.dup = False
        self.properties = None
        self.state = paho.mqtt_ms_publish
        self.timestamp = 0.0
        self.info = _NO_INFO


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_PUBACK_HEADER = struct.Struct("!BBH")
_PUBLISH_QOS1 = b"\x32"  # PUBLISH, QoS 1, no DUP, no retain
_PUBACK_SUCCESS = ReasonCode(PacketTypes.PUBACK)
_PUBACK_NO_PROPERTIES = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]


class _Client(paho.Client):
    """paho's client with two costs taken off the hot path (paho 2.x internals, pinned <3):
    buffered socket reads, and one wake-up of the network thread per burst of acks and
    publishes from the event loop instead of one per packet."""

    _defer_thread: int | None = None
    _deferred = False

    # Set by MqttClient: takes (topic, payload, qos, retain, mid) of a received message.
    on_plain_message: Callable[[str, bytes, int, bool, int], None] | None = None

    def _handle_publish(self) -> MQTTErrorCode:
        """The usual PUBLISH (QoS 0 or 1, no MQTT 5 properties, a UTF-8 topic) is decoded here
        and handed on as plain values: paho builds a message, its info with a Condition and a
        properties object for each, a fifth of the gateway's CPU. Anything else, or paho
        logging on, goes through paho's own handler."""
        deliver = self.on_plain_message
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        if deliver is None or qos == 2 or self._logger is not None or self.on_log is not None:
            return super()._handle_publish()
        packet = self._in_packet["packet"]
        try:
            (length,) = struct.unpack_from("!H", packet, 0)
            pos = 2 + length
            if length == 0 or len(packet) < pos:
                return super()._handle_publish()
            topic = bytes(packet[2:pos]).decode("utf-8")
            mid = 0
            if qos:
                (mid,) = struct.unpack_from("!H", packet, pos)
                pos += 2
            if self._protocol == MQTTProtocolVersion.MQTTv5:
                if packet[pos] != 0:  # properties: paho's decoder
                    return super()._handle_publish()
                pos += 1
        except (struct.error, IndexError, UnicodeDecodeError):
            return super()._handle_publish()
        with self._in_callback_mutex:
            deliver(topic, bytes(packet[pos:]), qos, bool(header & 0x01), mid)
        if qos == 1 and not self._manual_ack:
            return self._send_puback(mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _packet_read(self) -> MQTTErrorCode:
        """Whole packets straight from the buffered socket: paho reads each with a `recv` call
        per byte of its header, ~a fifth of the gateway's CPU under load. A packet the buffer
        holds only part of, and the first after each `recv`, go through paho's reader."""
        sock = self._sock
        if type(sock) is _BufferedSocket and self._in_packet["command"] == 0:
            whole = sock.take_packet()
            if whole is not None:
                command, body = whole
                self._in_packet = {
                    "command": command,
                    "have_remaining": 1,
                    "remaining_count": [],
                    "remaining_mult": 1,
                    "remaining_length": len(body),
                    "packet": body,
                    "to_process": 0,
                    "pos": 0,
                }
                try:
                    rc = self._packet_handle()
                except MalformedPacket:
                    rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
                self._in_packet = {
                    "command": 0,
                    "have_remaining": 0,
                    "remaining_count": [],
                    "remaining_mult": 1,
                    "remaining_length": 0,
                    "packet": bytearray(b""),
                    "to_process": 0,
                    "pos": 0,
                }
                with self._msgtime_mutex:
                    self._last_bytes_received = time.monotonic()
                return rc
        return super()._packet_read()

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        if cmd != "PUBACK" or len(packet) != 2:
            return super()._handle_pubackcomp(cmd)
        # The usual PUBACK: a packet id and nothing else (success, no properties). paho would
        # build a reason code and a properties object for each; one shared pair does.
        (mid,) = struct.unpack("!H", packet)
        with self._out_message_mutex:
            out: dict[int, Any] = self._out_messages
            msg = out.get(mid)
            if msg is None:
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            if type(msg) is _OutMessage and self._max_inflight_messages == 0:
                # Nobody awaits it (no on_publish) and no queued message waits for its slot.
                del out[mid]
                self._inflight_messages -= 1
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            return self._do_on_publish(mid, _PUBACK_SUCCESS, _PUBACK_NO_PROPERTIES)

    def ack(self, mid: int, qos: int) -> MQTTErrorCode:
        """The broker ack of a QoS 1 message: paho's, less its debug-log call and two frames."""
        if qos == 1 and self._manual_ack:
            return self._packet_queue(paho.PUBACK, _PUBACK_HEADER.pack(paho.PUBACK, 2, mid), mid, 1)
        return super().ack(mid, qos)

    def publish_qos1(self, topic: str, payload: bytes) -> None:
        """A QoS 1 publish nobody awaits (the gateway's device acks), packet built here: paho's
        `publish` builds a message, an info with a Condition, validates and logs, ~a seventh
        of the gateway's CPU. The message goes into paho's `_out_messages` as paho's own do,
        so paho counts it in flight, resends it with DUP after a reconnect and drops it on its
        PUBACK. With an in-flight cap (queueing) it is paho's own publish."""
        topic_bytes = topic.encode("utf-8")
        if self._max_inflight_messages or not topic_bytes or len(topic_bytes) > 65535:
            super().publish(topic, payload, 1)
            return
        if b"+" in topic_bytes or b"#" in topic_bytes:
            raise ValueError("Publish topic cannot contain wildcards.")
        with self._out_message_mutex:
            out: dict[int, Any] = self._out_messages
            mid = self._mid_generate()
            tries = 1
            while mid in out:
                if tries == 65535:  # every id in flight: paho's publish refuses it, as before
                    super().publish(topic, payload, 1)
                    return
                mid, tries = self._mid_generate(), tries + 1
            msg = _OutMessage(mid, topic, payload)
            out[mid] = msg
            if self._sock is None:
                return  # not connected: sent on the next CONNACK (state: publish)
            self._inflight_messages += 1
            msg.state = paho.mqtt_ms_wait_for_puback
            v5 = self._protocol == MQTTProtocolVersion.MQTTv5
            body = len(topic_bytes).to_bytes(2, "big") + topic_bytes + mid.to_bytes(2, "big")
            if v5:
                body += b"\x00"  # no properties
            packet = _PUBLISH_QOS1 + _remaining_length(len(body) + len(payload)) + body + payload
            self._packet_queue(paho.PUBLISH, packet, mid, 1, None)

    def _handle_on_message(self, message: paho.MQTTMessage) -> None:
        # paho's own matches every topic against per-filter callbacks (message_callback_add),
        # which MqttClient never registers: straight to on_message.
        on_message = self.on_message
        if on_message is not None:
            with self._in_callback_mutex:
                on_message(self, self._userdata, message)

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        if self._transport == "websockets":
            return sock
        # No Nagle: a batch's PUBACKs and then its device acks go out as separate writes, and
        # with Nagle on the acks waited for the broker's delayed TCP ACK of the PUBACKs: ~40 ms
        # on every SOS → device ack.
        with contextlib.suppress(OSError):
            if isinstance(sock, socket.socket):  # ssl.SSLSocket too
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _BufferedSocket(sock)

    def _packet_queue(
        self,
        command: int,
        packet: bytes | bytearray,
        mid: int,
        qos: int,
        info: paho.MQTTMessageInfo | None = None,
    ) -> MQTTErrorCode:
        if self._defer_thread != threading.get_ident():
            return super()._packet_queue(command, packet, mid, qos, info)
        # Inside `MqttClient.burst()` on the loop's thread: queue only; the burst's end wakes
        # the network thread once (paho's own _packet_queue, less the wake-up byte).
        self._out_packet.append(
            {
                "command": command,
                "mid": mid,
                "qos": qos,
                "pos": 0,
                "to_process": len(packet),
                "packet": packet,
                "info": info,
            }
        )
        self._deferred = True
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    @contextlib.contextmanager
    def deferring_wakeup(self) -> Iterator[None]:
        self._defer_thread = threading.get_ident()
        try:
            yield
        finally:
            self._defer_thread = None
            if self._deferred:
                self._deferred = False
                wake = self._sockpairW
                if wake is not None:
                    with contextlib.suppress(BlockingIOError, OSError):
                        wake.send(b"0")
                self._call_socket_register_write()
