"""The gateway role: MQTT in, Postgres, then the acks (to the broker, then to the device).

Events and heartbeats have separate subscriptions and separate loops, so a heartbeat backlog
never delays an SOS. Nothing is acked before its batch is committed; while the database is
down the batch is retried with backoff and stays unacked, so a crash here means redelivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from anxin import metrics
from anxin.clock import Clock
from anxin.db import SessionMaker, transaction
from anxin.logging import get_logger
from anxin.mqtt import BrokerAddress, MqttClient, MqttMessage
from anxin.schemas import TOPIC_ROOT, Ack, Heartbeat, RejectReason, topic
from gateway import ingest, service
from gateway.models import DeadLetter

log = get_logger("gateway.worker")
SHARE_GROUP = "anxin-gw"
# How long the broker keeps a stopped replica's session (MQTT 5): long enough for a restart.
SESSION_EXPIRY_S = 300
# Heartbeats per batched UPDATE (and the heartbeat connection's Receive Maximum).
HEARTBEAT_BATCH = 2000
# Device statuses applied per transaction (see Gateway._store_statuses), and the pause after
# each transition they make: a township's last wills become device-trouble alerts (welfare
# checks, guardian SMS, call-outs) at 10 a second per gateway rather than all in one moment (a
# city's 10,000 in about 17 minutes: P3, with a 2-hour welfare check at most).
STATUS_CHUNK = 5
TRANSITION_PACE_S = 0.1
# After the gateway (re)connects, an `offline` waits this long for the device to say `online`
# again (see Gateway._settle_delay). After a broker restart, the fault suite's 500 homes were
# back 2–15 s after the gateways (a device's reconnect can wait on a CONNACK that never came
# from the stopping broker); with 10 s a quarter of them were taken offline first.
STATUS_SETTLE_S = 30.0
# Outside that window, a last will takes effect this long after it came (see
# Gateway._wait_before_offline), unless the device has spoken since.
WILL_GRACE_S = 3.0
# Statuses one gateway may hold unacked in that window (MQTT 5's largest Receive Maximum).
STATUS_RECEIVE_MAXIMUM = 65535
T = TypeVar("T")


@dataclass
class GatewayStats:
    """Counters a metrics endpoint can read (the rejected ones by reason)."""

    events: int = 0
    rejected: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    heartbeats: int = 0
    statuses: int = 0


_gc_tuned = False


def _tune_gc() -> None:
    """Every message allocates a few dozen short-lived objects (paho's message and its
    Condition, the row, the ack). At the default threshold the cyclic collector ran every ~700
    allocations and walked all that was imported and cached each time: a third of the gateway's
    CPU (docs/sizing.md). What is alive once the gateway is up stays (modules, mappers): it is
    frozen out of the collector's walks, and the young generation is collected less often.
    Once per process (tests start many gateways)."""
    global _gc_tuned
    if _gc_tuned:
        return
    _gc_tuned = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(max(gc.get_threshold()[0], 50_000), 20, 100)


def _refused(exc: BaseException) -> bool:
    """The database refused the data itself (it would refuse it again), as opposed to being
    unreachable or failing over: those are retried until they pass."""
    return isinstance(exc, sa_exc.DataError | sa_exc.IntegrityError) and not getattr(
        exc, "connection_invalidated", False
    )


async def _first_message(
    queue: asyncio.Queue[MqttMessage], stop: asyncio.Event
) -> MqttMessage | None:
    """Block for a message; None once `stop` is set."""
    while True:
        try:
            return await asyncio.wait_for(queue.get(), 0.5)
        except TimeoutError:
            if stop.is_set():
                return None


async def _gather_after(
    queue: asyncio.Queue[MqttMessage], first: MqttMessage, size: int, wait_s: float
) -> list[MqttMessage]:
    """`first` and more messages, gathered for at most `wait_s`."""
    loop = asyncio.get_running_loop()
    batch = [first]
    deadline = loop.time() + wait_s
    while len(batch) < size:
        try:
            batch.append(queue.get_nowait())
            continue
        except asyncio.QueueEmpty:
            pass
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            batch.append(await asyncio.wait_for(queue.get(), remaining))
        except TimeoutError:
            break
    return batch


async def _take_batch(
    queue: asyncio.Queue[MqttMessage], size: int, wait_s: float, stop: asyncio.Event
) -> list[MqttMessage]:
    """Block for the first message, then gather more for at most `wait_s`."""
    first = await _first_message(queue, stop)
    return [] if first is None else await _gather_after(queue, first, size, wait_s)


def _latest_statuses(
    messages: list[MqttMessage], received: datetime
) -> dict[str, tuple[bytes, datetime]]:
    """The latest `online`/`offline` of each device: a flap inside one batch is no transition."""
    latest: dict[str, tuple[bytes, datetime]] = {}
    for msg in messages:
        parts = ingest.parse_topic(msg.topic)
        state = msg.payload.strip().lower()
        if parts is not None and state in (b"online", b"offline"):
            latest.pop(parts.device_id, None)
            latest[parts.device_id] = (state, received)
    return latest


class Gateway:
    def __init__(
        self,
        sessions: SessionMaker,
        clock: Clock,
        address: BrokerAddress,
        *,
        timezone: str,
        client_id: str = "anxin-gateway",
        shared_subscription: bool = True,
        share_group: str = SHARE_GROUP,
        batch_size: int = 500,
        batch_ms: int = 20,
        sweep_seconds: float = 2.0,
        status_settle_s: float = STATUS_SETTLE_S,
        will_grace_s: float = WILL_GRACE_S,
        transition_pace_s: float = TRANSITION_PACE_S,
        event_workers: int = 2,
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.timezone = timezone
        self.batch_size = batch_size
        self.batch_s = batch_ms / 1000
        self.sweep_seconds = sweep_seconds
        self.status_settle_s = status_settle_s
        self.will_grace_s = will_grace_s
        self.transition_pace_s = transition_pace_s
        self.event_workers = max(1, event_workers)
        self.stats = GatewayStats()
        # Persistent sessions: what arrives while this replica is down (or dies mid-batch) is
        # kept by the broker for it and redelivered; the device resends on top of that.
        # Receive Maximum covers a batch per event worker and one more filling.
        # The session outlives a restart, not a replica that is gone for good: Mosquitto keeps
        # giving a share of the group to an offline member's session until it expires, and
        # those events then wait for the device's resend. Replicas keep stable ids.
        self.client = MqttClient(
            address,
            client_id,
            persistent_session=True,
            session_expiry_s=SESSION_EXPIRY_S,
            manual_ack=True,
            receive_maximum=max(batch_size * (self.event_workers + 1), 100),
            # Device acks go out a batch at a time; paho's in-flight cap costs O(n) per PUBACK.
            max_inflight=0,
        )
        # Heartbeats on a connection of their own: the broker sends one connection's messages in
        # order through one inflight window, so a heartbeat backlog there would queue ahead of an
        # SOS. Apart, a city's heartbeats can back up without delaying any event.
        self.heartbeat_client = MqttClient(
            address,
            f"{client_id}-hb",
            persistent_session=True,
            session_expiry_s=SESSION_EXPIRY_S,
            manual_ack=True,
            receive_maximum=HEARTBEAT_BATCH,
        )
        # Statuses on a third connection. The settle window holds a restart's statuses unacked
        # for its length (up to three per home: the will, the `online`s after it); on the
        # events' connection they filled its in-flight window and held SOS at the broker
        # (the fault suite's Mosquitto restart: 1,455 SOS resent), and on one capped below
        # their number the `online`s after the wills waited at the broker past the window.
        self.status_client = MqttClient(
            address,
            f"{client_id}-st",
            persistent_session=True,
            session_expiry_s=SESSION_EXPIRY_S,
            manual_ack=True,
            receive_maximum=STATUS_RECEIVE_MAXIMUM,
        )
        prefix = f"$share/{share_group}/" if shared_subscription and share_group else ""
        self.shared_subscription = bool(prefix)
        # The loop time and connection counts of this replica's last liveness tick.
        self._alive_tick: tuple[float, tuple[int, int]] | None = None
        self.events = self.client.subscribe(f"{prefix}{TOPIC_ROOT}/+/event", 1)
        # Statuses are not shared out: every replica gets every device's, in order. Shared, a
        # will (queued in one replica's session while the broker restarted) and the `online`
        # after it went to different replicas, and the will was applied last; the updates are
        # guarded, so a transition still happens once. With MQTT 5 no retained status is sent
        # on subscribing (old news, a city's worth on every reconnect).
        self.statuses = self.status_client.subscribe(
            f"{TOPIC_ROOT}/+/status", 1, skip_retained=True
        )
        # A session kept from before this change still holds the shared filter: drop it.
        self._old_status_filter = f"{prefix}{TOPIC_ROOT}/+/status"
        self.heartbeats = self.heartbeat_client.subscribe(f"{prefix}{TOPIC_ROOT}/+/heartbeat", 1)

    async def run(self, stop: asyncio.Event) -> None:
        await self.client.connect()
        await self.heartbeat_client.connect()
        await self.status_client.connect()
        self.client.unsubscribe(self._old_status_filter)
        _tune_gc()
        log.info("gateway_connected", client_id=self.client.client_id)
        try:
            # Two workers by default: while one batch waits on Postgres the other is parsed and
            # acked (docs/sizing.md). A device's events always go to the same worker, in order,
            # so one replica never reorders a device's events; the unique key and the alert's
            # partial unique index keep parallel transactions from doubling anything, as they
            # do between replicas.
            lanes: list[asyncio.Queue[MqttMessage]] = [
                asyncio.Queue() for _ in range(self.event_workers)
            ]
            await asyncio.gather(
                self._route_events(stop, lanes),
                *(self._event_loop(stop, lane) for lane in lanes),
                self._heartbeat_loop(stop),
                self._status_loop(stop),
                self._liveness_loop(stop),
                self._sweep_loop(stop),
            )
        finally:
            await self.heartbeat_client.close()
            await self.status_client.close()
            await self.client.close()

    async def _with_retry(
        self, what: str, work: Callable[[], Awaitable[T]], *, refusals_raise: bool = False
    ) -> T:
        """Retry a unit of work until the database takes it; nothing is acked before that.
        With `refusals_raise`, a refusal of the data itself is raised instead: it would only be
        refused again."""
        delay = 0.2
        while True:
            try:
                return await work()
            except Exception as exc:
                if refusals_raise and _refused(exc):
                    raise
                # The traceback once per unit of work: an outage retries every few seconds.
                log.warning(
                    "gateway_db_retry",
                    what=what,
                    error=repr(exc),
                    retry_in=delay,
                    exc_info=delay == 0.2,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _store_events(
        self,
        good: list[tuple[MqttMessage, service.Incoming]],
        strays: list[MqttMessage],
        cache: service.DeviceCache | None = None,
    ) -> list[Ack]:
        try:
            return await self._store_events_once(good, strays, cache)
        except BaseException:
            if cache is not None:
                cache.clear()  # a rollback expired the rows attached to that session
            raise

    async def _store_events_once(
        self,
        good: list[tuple[MqttMessage, service.Incoming]],
        strays: list[MqttMessage],
        cache: service.DeviceCache | None,
    ) -> list[Ack]:
        async with self._unit_of_work() as session:
            now = self.clock.now()
            for msg in strays:
                session.add(
                    DeadLetter(
                        received_at=now,
                        topic=msg.topic[:256],
                        reason=RejectReason.invalid_payload,
                        detail="topic is not anxin/v1/dev/{device_id}/event",
                        payload=ingest.truncate_payload(msg.payload),
                    )
                )
            return await service.store_events(
                session, [inc for _, inc in good], now, self.timezone, cache
            )

    async def _store_one_by_one(
        self, good: list[tuple[MqttMessage, service.Incoming]], strays: list[MqttMessage]
    ) -> list[Ack]:
        """The slow path after a refused batch: each message alone; one still refused becomes a
        dead letter with its reason, and its device gets a `rejected` ack."""
        await self._with_retry("events", partial(self._store_events, [], strays))
        acks: list[Ack] = []
        for msg, inc in good:
            try:
                single = await self._with_retry(
                    "event", partial(self._store_events, [(msg, inc)], []), refusals_raise=True
                )
                acks.append(single[0])
            except Exception as exc:
                await self._with_retry("dead_letter", partial(self._refused_letter, inc, exc))
                parsed = ingest.parse_event(inc.payload)
                event_id = parsed.event_id if isinstance(parsed, ingest.ParsedEvent) else None
                acks.append(
                    Ack(event_id=event_id, status="rejected", reason=RejectReason.invalid_payload)
                )
        return acks

    async def _refused_letter(self, inc: service.Incoming, exc: Exception) -> None:
        async with transaction(self.sessions) as session:
            session.add(
                DeadLetter(
                    received_at=self.clock.now(),
                    topic=inc.topic[:256],
                    device_id=inc.device_id,
                    reason=RejectReason.invalid_payload,
                    detail=f"refused by the database: {type(exc).__name__}"[:512],
                    payload=ingest.truncate_payload(inc.payload),
                )
            )

    async def _route_events(
        self, stop: asyncio.Event, lanes: list[asyncio.Queue[MqttMessage]]
    ) -> None:
        """Each device's event topic to one lane (worker), whole bursts at a time."""
        n = len(lanes)
        while not stop.is_set():
            try:
                msg = await asyncio.wait_for(self.events.get(), 0.5)
            except TimeoutError:
                continue
            while True:
                lanes[hash(msg.topic) % n if n > 1 else 0].put_nowait(msg)
                try:
                    msg = self.events.get_nowait()
                except asyncio.QueueEmpty:
                    break

    async def _event_loop(self, stop: asyncio.Event, lane: asyncio.Queue[MqttMessage]) -> None:
        cache = service.DeviceCache()
        while not stop.is_set():
            batch = await _take_batch(lane, self.batch_size, self.batch_s, stop)
            if not batch:
                continue
            good: list[tuple[MqttMessage, service.Incoming]] = []
            strays: list[MqttMessage] = []
            for msg in batch:
                parts = ingest.parse_topic(msg.topic)
                if parts is None:
                    strays.append(msg)
                else:
                    parsed = ingest.parse_event(msg.payload)
                    good.append(
                        (msg, service.Incoming(msg.topic, parts.device_id, msg.payload, parsed))
                    )
            # An SOS is committed and acked before the rest of its batch is applied.
            groups = ingest.urgent_first([(inc.device_id, inc.parsed) for _, inc in good]) or [[]]
            for n, positions in enumerate(groups, 1):
                last = n == len(groups)
                await self._store_and_ack(
                    [good[i] for i in positions], strays if last else [], cache
                )

    async def _store_and_ack(
        self,
        good: list[tuple[MqttMessage, service.Incoming]],
        strays: list[MqttMessage],
        cache: service.DeviceCache,
    ) -> None:
        try:
            acks = await self._with_retry(
                "events", partial(self._store_events, good, strays, cache), refusals_raise=True
            )
        except Exception as exc:
            # Not lost: one message the database refuses must not block the rest either.
            log.error("event_batch_refused", size=len(good) + len(strays), error=repr(exc))
            acks = await self._store_one_by_one(good, strays)
        # Committed: now the broker acks, then the device acks (one wake-up of paho's
        # network thread for the whole batch).
        with self.client.burst():
            for msg in strays:
                self.client.ack(msg)
                self.stats.rejected += 1
                self.stats.rejected_by_reason["bad_topic"] += 1
            for (msg, inc), ack in zip(good, acks, strict=True):
                self.client.ack(msg)
                self.client.publish_nowait(topic(inc.device_id, "ack"), ack.to_json(), 1)
                if ack.status == "rejected":
                    self.stats.rejected += 1
                    self.stats.rejected_by_reason[str(ack.reason)] += 1
                else:
                    self.stats.events += 1
        metrics.count_messages("event", len(good) + len(strays))
        for (status, reason), n in Counter((a.status, a.reason) for a in acks).items():
            metrics.count_ack(status, n)
            if status == "rejected":
                metrics.count_dead_letter(str(reason), n)
        if strays:
            metrics.count_dead_letter(str(RejectReason.invalid_payload), len(strays))

    @contextlib.asynccontextmanager
    async def _unit_of_work(self) -> AsyncIterator[AsyncSession]:
        """A transaction whose duration (to its commit) is the gateway's commit-time metric."""
        with metrics.timed_commit("gateway"):
            async with transaction(self.sessions) as session:
                yield session

    async def _store_heartbeats(self, beats: dict[str, tuple[Heartbeat, datetime]]) -> None:
        async with self._unit_of_work() as session:
            await service.record_heartbeats(session, beats, self.clock.now())

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            first = await _first_message(self.heartbeats, stop)
            if first is None:
                continue
            # Stamped when the batch's first beat arrived, not when the batch closes: a hub
            # that beats and loses power at once has its will received before this batch
            # closes, and a later stamp would count as the hub speaking after its will.
            now = self.clock.now()
            batch = await _gather_after(self.heartbeats, first, HEARTBEAT_BATCH, 0.5)
            metrics.count_messages("heartbeat", len(batch))
            beats: dict[str, tuple[Heartbeat, datetime]] = {}
            for msg in batch:
                parts = ingest.parse_topic(msg.topic)
                if parts is not None:
                    beats[parts.device_id] = (ingest.parse_heartbeat(msg.payload), now)
            await self._with_retry("heartbeats", partial(self._store_heartbeats, beats))
            with self.heartbeat_client.burst():
                for msg in batch:
                    self.heartbeat_client.ack(msg)
            self.stats.heartbeats += len(batch)

    async def _store_statuses(self, latest: dict[str, tuple[bytes, datetime]]) -> None:
        metrics.count_messages("status", len(latest))
        # A township's wills at once, a few devices a transaction and paced: each transition
        # raises or closes a device-trouble alert, and in one transaction of hundreds the
        # stretches of CPU between its statements grow long enough to hold up an SOS batch of
        # this process; all at once, the welfare checks, SMS and receipts that follow them take
        # every core of a small server for a moment, and an SOS elsewhere waits.
        # Statuses are acked after every chunk is committed; a chunk applied twice (a crash in
        # between) changes nothing, as each transition is guarded by the device's state.
        items = list(latest.items())
        offline = online = 0
        for start in range(0, len(items), STATUS_CHUNK):
            chunk = dict(items[start : start + STATUS_CHUNK])
            async with self._unit_of_work() as session:
                gone, back = await service.mark_statuses(session, chunk, self.clock.now())
            offline, online = offline + len(gone), online + len(back)
            if gone or back:
                await asyncio.sleep(self.transition_pace_s * (len(gone) + len(back)))
        self.stats.statuses += len(latest)
        log.info("statuses_stored", statuses=len(latest), offline=offline, online=online)

    def _settle_delay(self) -> float:
        """Seconds still to wait before trusting an `offline` status.

        Right after the gateway (re)connects, the statuses it gets are old news: retained ones
        replayed by the new subscription, and the wills Mosquitto publishes for every client when
        it shuts down. The devices are reconnecting meanwhile and say `online` again. Acting on
        those at once would raise a device-trouble alert for every device of the city on each
        broker restart, so in this window an `offline` is applied only if the device stays
        silent for the rest of it. Outside the window a last will takes effect after
        `will_grace_s`."""
        connected_at = self.status_client.connected_at
        if connected_at is None:
            return self.status_settle_s
        return max(0.0, connected_at + self.status_settle_s - asyncio.get_running_loop().time())

    async def _wait_before_offline(self, stop: asyncio.Event) -> None:
        """Before believing a batch's `offline`s: the rest of the settle window after a
        (re)connect, and `will_grace_s` in any case. A broker that is stopping sends its
        clients' wills as it closes their connections, and this gateway's status connection,
        closed a moment later, has already received some or all of them (the fault suite's
        broker restart took all 500 hubs offline so). If the connection drops meanwhile, this
        waits for it to be back and for its new settle window, so that the devices' `online`
        after the restart is weighed with those wills."""
        wait = max(self._settle_delay(), self.will_grace_s)
        connects = self.status_client.connect_count
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
            if self.status_client.is_connected and self.status_client.connect_count == connects:
                return
            while not self.status_client.is_connected and not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.2)
            connects = self.status_client.connect_count
            wait = self._settle_delay()

    async def _status_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batch = await _take_batch(self.statuses, 500, 0.05, stop)
            if not batch:
                continue
            received = self.clock.now()
            latest = _latest_statuses(batch, received)
            if any(state == b"offline" for state, _ in latest.values()):
                # Inline, so statuses stay in order; events and heartbeats run on meanwhile.
                await self._wait_before_offline(stop)
                # What the devices said meanwhile counts as said in the window: a hub that
                # reconnected and said `online` in it was never offline, and one heard from
                # since the window began (a heartbeat) is not taken offline by its old will.
                while not self.statuses.empty():
                    batch.append(self.statuses.get_nowait())
                latest = _latest_statuses(batch, received)
            await self._with_retry("status", partial(self._store_statuses, latest))
            with self.status_client.burst():
                for msg in batch:
                    self.status_client.ack(msg)

    async def _alive(self) -> bool:
        """Write this replica's liveness row; False, without writing it, while it cannot hear
        the devices (its broker connections are down). After a start, a reconnect or a
        database outage this is a resuming tick, which tells the platform's gap, if there was
        one, from the devices' silence (`service.gateway_alive`). The gap is measured on the
        loop's monotonic time, so a clock moved forward (a fake one) is no downtime."""
        if not (self.client.is_connected and self.heartbeat_client.is_connected):
            return False
        loop_now = asyncio.get_running_loop().time()
        connects = (self.client.connect_count, self.heartbeat_client.connect_count)
        resuming = (
            self._alive_tick is None
            or self._alive_tick[1] != connects
            or loop_now - self._alive_tick[0] > service.LIVENESS_GAP_S
        )
        async with transaction(self.sessions) as session:
            await service.gateway_alive(
                session,
                gateway_id=self.client.client_id,
                now=self.clock.now(),
                shared=self.shared_subscription,
                resuming=resuming,
            )
        self._alive_tick = (loop_now, connects)
        return True

    def _listening(self) -> bool:
        """Connected, with this connection's liveness tick written (so its gap, if there was
        one, is handled) and recent."""
        if self._alive_tick is None:
            return False
        at, connects = self._alive_tick
        return (
            self.client.is_connected
            and self.heartbeat_client.is_connected
            and connects == (self.client.connect_count, self.heartbeat_client.connect_count)
            and asyncio.get_running_loop().time() - at <= service.LIVENESS_GAP_S
        )

    async def _liveness_loop(self, stop: asyncio.Event) -> None:
        # A loop of its own, not the sweep's: a long sweep (a township's worth of transitions)
        # must not make this replica look away to the others.
        while not stop.is_set():
            try:
                await self._alive()
            except Exception as exc:
                log.warning("liveness_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.sweep_seconds)

    async def _sweep_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                # A gateway that cannot hear the devices does not blame them for its silence.
                if self._listening():
                    async with transaction(self.sessions) as session:
                        silent = await service.sweep_silent(
                            session,
                            self.clock.now(),
                            share_expiry_s=SESSION_EXPIRY_S,
                            sweeper_id=self.client.client_id,
                        )
                    if silent:
                        log.info("devices_offline", count=len(silent))
            except Exception as exc:
                log.warning("sweep_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.sweep_seconds)
