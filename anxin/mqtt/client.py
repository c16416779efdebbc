"""The asyncio bridge on paho's network thread: `MqttClient`, one MQTT connection.

paho runs its own thread (loop_start) and hands every callback to the event loop, so nothing
here blocks the loop. The hand-over is batched: the paho thread appends to a mailbox and wakes
the loop (call_soon_threadsafe) once per burst, not once per message or PUBACK: a wake-up costs
more than the rest of a message's handling. Manual ack: a received QoS 1 message is
acknowledged to the broker only when the caller says so (after its row is committed).

Method names say which thread runs them: `_on_…` on paho's network thread, `_async_…` on the
event loop; public methods are called from the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from anxin.logging import get_logger
from anxin.mqtt.address import BrokerAddress
from anxin.mqtt.fastpath import _Client

log = get_logger("anxin.mqtt")
_client_seq = itertools.count(1)


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
    def _on_hand_over(self, fn: Any, *args: Any) -> None:
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
            loop.call_soon_threadsafe(self._async_drain_inbox)
        else:  # no loop yet, or it is gone: nobody to deliver to
            self._inbox.clear()
            self._inbox_scheduled = False

    def _async_drain_inbox(self) -> None:
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
            self._on_hand_over(
                lambda: log.warning("mqtt_connect_refused", client_id=self.client_id, reason=reason)
            )
            return
        # Resubscribe every time: a broker restart without persistence forgets subscriptions.
        mids = [mid for sub in self._subs if (mid := sub.send(client, self.address.mqtt5))]
        for birth_topic, payload, qos, retain in self._birth:
            client.publish(birth_topic, payload, qos, retain)
        self._on_hand_over(self._async_set_connected, True, mids)

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self._on_hand_over(self._async_set_connected, False)

    def _async_set_connected(self, up: bool, suback_mids: list[int] | None = None) -> None:
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
        self._on_hand_over(self._async_suback, mid)

    def _async_suback(self, mid: int) -> None:
        self._subacks_pending.discard(mid)
        if not self._subacks_pending and self._connected.is_set():
            self._subscribed.set()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        message = MqttMessage(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), msg.mid)
        self._on_hand_over(self._async_dispatch, message)

    def _on_plain_message(
        self, topic: str, payload: bytes, qos: int, retain: bool, mid: int
    ) -> None:
        self._on_hand_over(self._async_dispatch, MqttMessage(topic, payload, qos, retain, mid))

    def _async_dispatch(self, message: MqttMessage) -> None:
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
            self._on_hand_over(self._async_resolve_publish, mid)

    def _async_resolve_publish(self, mid: int) -> None:
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
