"""The one module that imports paho. An asyncio face on paho's network thread.

paho runs its own thread (loop_start) and hands every callback to the event loop, so nothing
here blocks the loop. The hand-over is batched: the paho thread appends to a mailbox and wakes
the loop (call_soon_threadsafe) once per burst, not once per message or PUBACK: a wake-up costs
more than the rest of a message's handling. Manual ack: a received QoS 1 message is
acknowledged to the broker only when the caller says so (after its row is committed).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from anxin.logging import get_logger

log = get_logger("anxin.mqtt")
_client_seq = itertools.count(1)


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    # MQTT 5 unless the URL says `?protocol=3.1.1` (the in-process broker speaks 3.1.1 only).
    mqtt5: bool = True

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(
                f"unsupported MQTT URL scheme {parts.scheme!r} (use mqtt:// or mqtts://)"
            )
        tls = parts.scheme in ("mqtts", "ssl")
        query = parse_qs(parts.query)
        version = (query.get("protocol") or ["5"])[0]
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            mqtt5=version not in ("3", "3.1.1", "311", "4"),
        )

    def with_credentials(self, username: str, password: str) -> BrokerAddress:
        return BrokerAddress(self.host, self.port, username, password, self.tls, self.mqtt5)


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


class MqttMessage(NamedTuple):
    """A received message (a tuple: built on paho's thread for every message, so cheap)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int


@dataclass
class _Subscription:
    topic: str
    qos: int
    queue: asyncio.Queue[MqttMessage] = field(default_factory=asyncio.Queue)
    skip_retained: bool = False  # MQTT 5 only: no retained messages when subscribing

    def send(self, client: paho.Client, mqtt5: bool) -> int | None:
        """SUBSCRIBE on this connection; the packet id of the SUBACK to wait for."""
        if mqtt5 and self.skip_retained:
            options = SubscribeOptions(
                qos=self.qos, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND
            )
            return client.subscribe(self.topic, options=options)[1]
        return client.subscribe(self.topic, self.qos)[1]


class MqttClient:
    """One MQTT connection. Reconnects by itself; resubscribes on every reconnect."""

    def __init__(
        self,
        address: BrokerAddress,
        client_id: str | None = None,
        *,
        persistent_session: bool = False,
        session_expiry_s: int = 24 * 3600,
        manual_ack: bool = False,
        receive_maximum: int | None = None,
        max_inflight: int = 1000,
        will: tuple[str, bytes, int, bool] | None = None,
        birth: list[tuple[str, bytes, int, bool]] | None = None,
        keepalive: int = 30,
    ) -> None:
        self.address = address
        self.client_id = client_id or f"anxin-{next(_client_seq)}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = asyncio.Event()
        self._subs: list[_Subscription] = []
        self._route: dict[str, _Subscription] = {}
        self._pending_pubs: dict[int, asyncio.Future[None]] = {}
        self._receive_maximum = receive_maximum
        # Published on every (re)connect, e.g. a retained `online` status: a broker restart may
        # have published the last will meanwhile.
        self._birth = list(birth or [])
        self._inbox: deque[tuple[Any, tuple[Any, ...]]] = deque()
        self._inbox_scheduled = False
        self._subacks_pending: set[int] = set()
        self._subscribed = asyncio.Event()
        protocol = MQTTProtocolVersion.MQTTv5 if address.mqtt5 else MQTTProtocolVersion.MQTTv311
        kwargs: dict[str, Any] = {}
        if not address.mqtt5:
            kwargs["clean_session"] = not persistent_session
        self._persistent = persistent_session
        self._session_expiry_s = session_expiry_s
        # Publishes awaited right now: only then are PUBACKs handed over to the event loop.
        self._publish_waiters = 0
        self._client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=protocol,
            manual_ack=manual_ack,
            **kwargs,
        )
        # What this client publishes unacknowledged at once (0: no limit). With a limit, paho
        # walks every in-flight message on each PUBACK, which costs a busy publisher (the
        # gateway's device acks) more than all else; Mosquitto takes an unlimited client.
        self._client.max_inflight_messages_set(max_inflight)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        if address.username:
            self._client.username_pw_set(address.username, address.password)
        if address.tls:
            self._client.tls_set_context(ssl.create_default_context())
        if will is not None:
            self._client.will_set(will[0], will[1], will[2], will[3])
        self._keepalive = keepalive
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_plain_message = self._on_plain_message
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe
        self.connect_count = 0
        # Event-loop time of the latest successful connect (None before the first).
        self.connected_at: float | None = None

    # -- paho thread → event loop -------------------------------------------------------------
    def _call(self, fn: Any, *args: Any) -> None:
        """Run fn(*args) on the event loop, in order. Calls are queued in a mailbox and the loop
        is woken once per burst: under load the loop drains hundreds per wake-up.

        No lock: deque appends and pops are atomic, and the drain clears the flag before it
        reads the mailbox, so a call appended meanwhile is either drained now or schedules a
        drain of its own (at worst one wake-up finds the mailbox empty)."""
        self._inbox.append((fn, args))
        if self._inbox_scheduled:
            return
        self._inbox_scheduled = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._drain_inbox)
        else:  # no loop yet, or it is gone: nobody to deliver to
            self._inbox.clear()
            self._inbox_scheduled = False

    def _drain_inbox(self) -> None:
        self._inbox_scheduled = False
        inbox = self._inbox
        for _ in range(len(inbox)):
            fn, args = inbox.popleft()
            try:
                fn(*args)
            except Exception:
                # One failing callback must not drop the rest of the burst.
                log.exception("mqtt_callback_failed", client_id=self.client_id)

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure:
            reason = str(rc)
            self._call(
                lambda: log.warning("mqtt_connect_refused", client_id=self.client_id, reason=reason)
            )
            return
        # Resubscribe every time: a broker restart without persistence forgets subscriptions.
        mids = [mid for sub in self._subs if (mid := sub.send(client, self.address.mqtt5))]
        for birth_topic, payload, qos, retain in self._birth:
            client.publish(birth_topic, payload, qos, retain)
        self._call(self._set_connected, True, mids)

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self._call(self._set_connected, False)

    def _set_connected(self, up: bool, suback_mids: list[int] | None = None) -> None:
        if up:
            self.connect_count += 1
            if self._loop is not None:
                self.connected_at = self._loop.time()
            self._subacks_pending = set(suback_mids or [])
            if self._subacks_pending:
                self._subscribed.clear()
            else:
                self._subscribed.set()
            self._connected.set()
        else:
            self._connected.clear()
            self._subscribed.clear()

    def _on_subscribe(self, _c: paho.Client, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        self._call(self._suback, mid)

    def _suback(self, mid: int) -> None:
        self._subacks_pending.discard(mid)
        if not self._subacks_pending and self._connected.is_set():
            self._subscribed.set()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        message = MqttMessage(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), msg.mid)
        self._call(self._dispatch, message)

    def _on_plain_message(
        self, topic: str, payload: bytes, qos: int, retain: bool, mid: int
    ) -> None:
        self._call(self._dispatch, MqttMessage(topic, payload, qos, retain, mid))

    def _dispatch(self, message: MqttMessage) -> None:
        sub = self._route.get(message.topic)
        if sub is None:
            # paho's matcher builds a trie per call: remember the answer per topic instead
            # (a device has a handful of topics; the bound keeps a flood of names in check).
            sub = next(
                (
                    s
                    for s in self._subs
                    if paho.topic_matches_sub(_strip_share(s.topic), message.topic)
                ),
                None,
            )
            if sub is not None:
                if len(self._route) > 200_000:
                    self._route.clear()
                self._route[message.topic] = sub
        if sub is not None:
            sub.queue.put_nowait(message)
            return
        # No matching subscription here (e.g. a retained message for an old one): ack and drop.
        self.ack(message)

    def _on_publish(self, _c: paho.Client, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        # A burst of fire-and-forget publishes (the gateway's device acks) costs no hand-over.
        # The counter goes up before `publish` hands paho the message, so no PUBACK of an
        # awaited publish can slip past it.
        if self._publish_waiters:
            self._call(self._resolve_publish, mid)

    def _resolve_publish(self, mid: int) -> None:
        fut = self._pending_pubs.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    # -- public API ---------------------------------------------------------------------------
    async def connect(self, timeout: float = 10.0) -> None:
        self._loop = asyncio.get_running_loop()
        props: Properties | None = None
        kwargs: dict[str, Any] = {}
        if self.address.mqtt5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if self._persistent:
                props.SessionExpiryInterval = self._session_expiry_s
            if self._receive_maximum:
                props.ReceiveMaximum = self._receive_maximum
            kwargs["clean_start"] = not self._persistent
        await asyncio.to_thread(
            self._client.connect,
            self.address.host,
            self.address.port,
            self._keepalive,
            properties=props,
            **kwargs,
        )
        self._client.loop_start()
        await asyncio.wait_for(self._connected.wait(), timeout)

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def wait_subscribed(self, timeout: float | None = None) -> None:
        """Until the broker has granted every subscription of the current connection."""
        await asyncio.wait_for(self._subscribed.wait(), timeout)

    def subscribe(
        self, topic: str, qos: int = 1, *, skip_retained: bool = False
    ) -> asyncio.Queue[MqttMessage]:
        """Subscribe (now and after every reconnect); messages arrive on the returned queue.
        `skip_retained`: with MQTT 5, the broker sends no retained messages on subscribing
        (Retain Handling 2); MQTT 3.1.1 has no such option."""
        sub = _Subscription(topic, qos, skip_retained=skip_retained)
        self._subs.append(sub)
        self._route.clear()
        if self.is_connected:
            mid = sub.send(self._client, self.address.mqtt5)
            if mid is not None:
                self._subacks_pending.add(mid)
                self._subscribed.clear()
        return sub.queue

    def unsubscribe(self, topic: str) -> None:
        """UNSUBSCRIBE a filter a persistent session may still hold from an earlier run (if
        connected; nothing is kept for later)."""
        self._subs = [s for s in self._subs if s.topic != topic]
        self._route.clear()
        if self.is_connected:
            self._client.unsubscribe(topic)

    def ack(self, message: MqttMessage) -> None:
        if message.qos > 0:
            self._client.ack(message.mid, message.qos)

    async def publish(
        self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish; for QoS ≥ 1 wait until the broker has acknowledged it."""
        if qos == 0:
            self._client.publish(topic, payload, qos, retain)
            return
        self._publish_waiters += 1
        try:
            info = self._client.publish(topic, payload, qos, retain)
            if info.is_published():
                return
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._pending_pubs[info.mid] = fut
            if info.is_published():  # raced with the paho thread
                self._pending_pubs.pop(info.mid, None)
                return
            await fut
        finally:
            self._publish_waiters -= 1

    @contextlib.contextmanager
    def burst(self) -> Iterator[None]:
        """Acks and publishes made inside (on the loop's thread, without awaiting) wake paho's
        network thread once at the end, not once each."""
        with self._client.deferring_wakeup():
            yield

    def publish_nowait(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        """Queue a publish without waiting for the broker (paho resends QoS 1 on reconnect)."""
        if qos == 1 and isinstance(payload, bytes):
            self._client.publish_qos1(topic, payload)
        else:
            self._client.publish(topic, payload, qos, False)

    async def close(self) -> None:
        await asyncio.to_thread(self._client.disconnect)
        await asyncio.to_thread(self._client.loop_stop)
        self._connected.clear()
        for fut in self._pending_pubs.values():
            if not fut.done():
                fut.cancel()

    def abort(self) -> None:
        """Drop the connection without a DISCONNECT so the broker sends the last will (tests, faults)."""
        sock = self._client.socket()
        self._client.loop_stop()
        if sock is not None:
            sock.close()


def _strip_share(topic: str) -> str:
    # `$share/group/a/b` matches messages on `a/b`.
    if topic.startswith("$share/"):
        return topic.split("/", 2)[2]
    return topic
