"""Plays a scenario (device_sim/scenario/model.py) against a platform, then checks it
(checks.py):

* on scenario time (a FakeClock shared with the in-process roles): the player moves the clock
  straight to the next thing that can happen — a timeline step, a simulated aide's reply, a
  ladder timer, a rule timer — after the platform has settled, so a 40-minute night plays in
  seconds and the same way every time;
* at real time (SystemClock): steps and replies wait for real, against in-process roles or a
  platform running elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlmodel import col

from alert_service.models import Alert, RuleTimer
from anxin.clock import FakeClock
from anxin.db import SessionMaker
from anxin.models import Device, Responder, pk
from anxin.mqtt import BrokerAddress
from device_sim.homes import DEVICE_FOR_EVENT, AckResult, SimDevice, SimHome
from device_sim.phones import Behaviour
from device_sim.region.generate import generate_region
from device_sim.region.plan import RegionPlan
from device_sim.scenario.checks import OutcomeCheck, ScenarioResult, responder_labels
from device_sim.scenario.model import (
    ALERT_CODE,
    ResponderScript,
    Scenario,
    ScenarioError,
    Step,
    format_seconds,
)
from dispatcher.models import SmsMessage, VoiceCall
from dispatcher.twilio_provider import RING_TIMEOUT_S
from dispatcher.twilio_sandbox import SandboxCall, SandboxMessage, SmsSandbox
from gateway.models import Event
from visits import service as visits_service

# A scenario longer than this (a month's) is played on scenario time only.
REAL_TIME_LIMIT_S = 6 * 3600.0
# Heartbeats are sent this long before the platform would call a device offline.
BEAT_MARGIN = timedelta(seconds=30)


# --- scenario time --------------------------------------------------------------------------


class ScenarioTime:
    """Sleeping in scenario time. On a fake clock a sleeper parks until the player moves the
    clock past its wake time; `active` counts scripts that are running rather than parked, so
    the player knows when the simulated phones have nothing more to do at this instant."""

    def __init__(self, clock: FakeClock | None) -> None:
        self.clock = clock
        self.active = 0
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        return self.clock.now() if self.clock is not None else datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        if self.clock is None:
            await asyncio.sleep(seconds)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(
            self._sleepers, (self.now() + timedelta(seconds=seconds), next(self._seq), fut)
        )
        self.active -= 1
        await fut

    def next_wake(self) -> datetime | None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    def wake_due(self) -> None:
        now = self.now()
        while self._sleepers and self._sleepers[0][0] <= now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                self.active += 1
                fut.set_result(None)


# --- the player -----------------------------------------------------------------------------


class ScenarioPlayer:
    def __init__(
        self,
        scenario: Scenario,
        plan: RegionPlan,
        *,
        sessions: SessionMaker,
        sandbox: SmsSandbox,
        mqtt: BrokerAddress,
        clock: FakeClock | None,
        settle_timeout_s: float = 120.0,
        progress: Callable[[float], None] | None = None,
        web_url: str | None = None,
    ) -> None:
        self.scenario = scenario
        # The platform's HTTP API: the `visits:` and `coverage:` checks read it as an operator.
        self.web_url = web_url
        # Told the scenario seconds played so far (of `run_for`), for a progress bar.
        self.progress = progress
        self.plan = plan
        self.sessions = sessions
        self.sandbox = sandbox
        self.mqtt = mqtt
        self.clock = clock
        self.time = ScenarioTime(clock)
        self.settle_timeout_s = settle_timeout_s
        self.homes: dict[str, SimHome] = {}  # by elder code
        self.t0 = scenario.start
        self.acks: list[tuple[Step, AckResult]] = []
        self.first_send_real: dict[str, float] = {}  # alert code → monotonic time of its event
        self.first_callout_real: dict[str, float] = {}
        self._answered: set[tuple[str, str]] = set()
        self.timelines: list[str] = []
        self._scripts: set[asyncio.Task[None]] = set()
        self._inflight = 0
        self._beating: list[SimHome] = []

    # -- homes --------------------------------------------------------------------------------
    def _homes_needed(self) -> list[str]:
        codes = list(dict.fromkeys(self.scenario.homes.values()))
        cut = {s.power_cut for s in self.scenario.timeline if s.power_cut}
        if cut:
            villages = {v.code for v in self.plan.villages if v.parent_code in cut}
            codes.extend(
                e.code
                for e in self.plan.elders
                if e.village_code in villages and e.code not in codes
            )
        return codes

    def _make_home(self, elder_code: str) -> SimHome:
        devices = [
            SimDevice(d.device_id, d.kind.value, d.password, d.heartbeat_interval_s)
            for d in self.plan.devices
            if d.elder_code == elder_code
        ]
        # The home's connection is its hub's when it has one (its last will speaks for the hub).
        devices.sort(key=lambda d: d.kind != "hub")
        return SimHome(
            self.mqtt,
            devices,
            name=elder_code,
            now_ms=lambda: int(self.time.now().timestamp() * 1000),
        )

    async def _connect_homes(self) -> None:
        codes = self._homes_needed()
        for code in codes:
            self.homes[code] = self._make_home(code)
        named = set(self.scenario.homes.values())
        announcing = [
            h for code, h in self.homes.items() if code not in named or self.scenario.heartbeats
        ]
        for chunk in _chunks(list(self.homes.values()), 200):
            await asyncio.gather(
                *(h.connect(announce=h in announcing or self.clock is None) for h in chunk)
            )
        if self.clock is None:
            announcing = list(self.homes.values())
        self._beating = announcing
        ids = [d for h in announcing for d in h.device_ids]
        await self._wait_db(
            lambda s: s.scalar(
                select(func.count())
                .select_from(Device)
                .where(col(Device.id).in_(ids), col(Device.online))
            ),
            len(ids),
            "the simulated devices to be online",
        )
        if self.clock is None:
            for home in self.homes.values():
                home.start_heartbeats()

    async def _wait_db(self, query: Any, wanted: int, what: str) -> None:
        deadline = time.monotonic() + self.settle_timeout_s
        while True:
            async with self.sessions() as session:
                got = int(await query(session) or 0)
            if got >= wanted:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what} ({got}/{wanted})")
            await asyncio.sleep(0.05)

    # -- phones ---------------------------------------------------------------------------------
    def _on_sms(self, message: SandboxMessage) -> None:
        if "回1" not in message.body and "Reply 1" not in message.body:
            return  # a notice, a reminder or a help text: nothing to answer
        found = ALERT_CODE.search(message.body)
        if found is None:
            return
        code = found.group(0)
        self.first_callout_real.setdefault(code, time.monotonic())
        if (message.to, code) in self._answered:
            return
        self._answered.add((message.to, code))
        self.time.active += 1
        task = asyncio.create_task(self._phone_script(message.to, code))
        self._scripts.add(task)
        task.add_done_callback(self._scripts.discard)

    async def _label_of(self, code: str, phone: str) -> str:
        async with self.sessions() as session:
            alert = await session.get(Alert, int(code[1:]))
            responder_id = await session.scalar(
                select(col(SmsMessage.responder_id)).where(
                    col(SmsMessage.alert_id) == int(code[1:]), col(SmsMessage.to_phone) == phone
                )
            )
        if alert is None or responder_id is None:
            return "unknown"
        return responder_labels(alert).get(int(responder_id), "unknown")

    async def _phone_script(self, phone: str, code: str) -> None:
        try:
            label = await self._label_of(code, phone)
            script = self.scenario.responders.get(label) or self.scenario.responders.get(
                "default", ResponderScript()
            )
            if script.behaviour == Behaviour.silent:
                return
            await self.time.sleep(script.answer_after)
            if script.behaviour == Behaviour.decline:
                await self.sandbox.reply(phone, f"0 {code}")
                return
            await self.sandbox.reply(phone, f"1 {code}")
            late = script.late_extra if script.behaviour == Behaviour.accept_then_late else 0.0
            await self.time.sleep(script.travel + late)
            await self.sandbox.reply(phone, f"2 {code}")
            await self.time.sleep(script.handle)
            await self.sandbox.reply(phone, f"3 {code}")
        finally:
            self.time.active -= 1

    # -- calls (issue 19): the phone rings, the responder's script answers it ---------------------
    def _on_call(self, call: SandboxCall) -> None:
        self.time.active += 1
        task = asyncio.create_task(self._call_script(call))
        self._scripts.add(task)
        task.add_done_callback(self._scripts.discard)

    async def _call_label(self, phone: str) -> str:
        async with self.sessions() as session:
            alert_id = await session.scalar(
                select(col(VoiceCall.alert_id))
                .where(col(VoiceCall.to_phone) == phone)
                .order_by(col(VoiceCall.id).desc())
                .limit(1)
            )
            alert = await session.get(Alert, alert_id) if alert_id else None
            responder = await session.scalar(
                select(col(VoiceCall.responder_id))
                .where(col(VoiceCall.alert_id) == alert_id, col(VoiceCall.to_phone) == phone)
                .limit(1)
            )
        if alert is None or responder is None:
            return "unknown"
        return responder_labels(alert).get(int(responder), "unknown")

    async def _call_script(self, call: SandboxCall) -> None:
        try:
            label = await self._call_label(call.to)
            script = self.scenario.responders.get(label) or self.scenario.responders.get(
                "default", ResponderScript()
            )
            plan = script.call_script()
            await self.sandbox.ringing(call)
            if plan.answer == "ring":
                await self.time.sleep(RING_TIMEOUT_S)
                await self.sandbox.ring_out(call)
                return
            await self.time.sleep(plan.after)
            if plan.answer == "reject":
                await self.sandbox.reject(call)
            else:
                await self.sandbox.pick_up(call, plan.key)
        finally:
            self.time.active -= 1

    # -- steps ------------------------------------------------------------------------------------
    async def _run_step(self, step: Step) -> None:
        self._inflight += 1
        try:
            if step.power_cut is not None:
                await self._power_cut(step.power_cut)
                return
            if step.sms is not None:
                assert step.by is not None
                await self._aide_texts(self.scenario.homes[step.by], step.sms)
                return
            assert step.home is not None and step.event is not None
            home = self.homes[self.scenario.homes[step.home]]
            device = home.device(DEVICE_FOR_EVENT.get(step.event.value, "sos_button"))
            sent_at = time.monotonic()
            ack = await home.send_event(
                device.device_id, step.event.value, step.data, event_id=step.event_id
            )
            self.acks.append((step, ack))
            if ack.alert_id:
                self.first_send_real.setdefault(ack.alert_id, sent_at)
        finally:
            self._inflight -= 1

    async def _aide_texts(self, elder_code: str, text: str) -> None:
        """The aide who owns this elder's visits texts the platform (the SMS sandbox posts it
        to the platform's signed webhook, as Twilio would)."""
        async with self.sessions() as session:
            elder = await visits_service.find_elder(session, elder_code)
            assert elder is not None, f"no elder {elder_code} in the database"
            owner = (await visits_service.owners(session, elders=[elder]))[pk(elder)]
            aide = await session.get(Responder, owner) if owner is not None else None
        if aide is None:
            raise LookupError(f"no aide owns the visits of {elder_code}")
        status = await self.sandbox.reply(aide.phone, text)
        if status != 200:
            raise RuntimeError(f"the platform answered {status} to an aide's SMS {text!r}")

    async def _power_cut(self, township: str) -> None:
        villages = {v.code for v in self.plan.villages if v.parent_code == township}
        elders = {e.code for e in self.plan.elders if e.village_code in villages}
        cut = [h for code, h in self.homes.items() if code in elders and h.powered]
        # A hub has a battery for this: it reports the cut, then its modem goes down with
        # every other mains-powered thing in the home.
        await asyncio.gather(
            *(h.send_event(h.device("hub").device_id, "power_lost") for h in cut if h.has("hub"))
        )
        hubs = [h.device("hub").device_id for h in cut if h.has("hub")]
        for home in cut:
            await home.close(lose_power=True)
        await self._wait_db(
            lambda s: s.scalar(
                select(func.count())
                .select_from(Device)
                .where(col(Device.id).in_(hubs), ~col(Device.online))
            ),
            len(hubs),
            "the broker's last wills to mark the hubs offline",
        )

    # -- settling (scenario time only) ----------------------------------------------------------
    async def _fingerprint(self) -> tuple[int, ...]:
        now = self.time.now()
        async with self.sessions() as session:
            values = [
                await session.scalar(
                    select(func.count())
                    .select_from(SmsMessage)
                    .where(
                        col(SmsMessage.status) == "queued", col(SmsMessage.next_attempt_at) <= now
                    )
                ),
                await session.scalar(
                    select(func.count()).select_from(Alert).where(col(Alert.next_check_at) <= now)
                ),
                await session.scalar(
                    select(func.count())
                    .select_from(VoiceCall)
                    .where(col(VoiceCall.status) == "queued", col(VoiceCall.next_attempt_at) <= now)
                ),
                await session.scalar(
                    select(func.count())
                    .select_from(RuleTimer)
                    .where(
                        col(RuleTimer.due_at) <= now,
                        col(RuleTimer.fired_at).is_(None),
                        ~col(RuleTimer.cancelled),
                    )
                ),
                await session.scalar(
                    select(func.count())
                    .select_from(Device)
                    .where(
                        col(Device.online), col(Device.enabled), col(Device.offline_after) <= now
                    )
                ),
                await session.scalar(select(func.coalesce(func.max(SmsMessage.id), 0))),
                await session.scalar(select(func.coalesce(func.max(Event.id), 0))),
                await session.scalar(
                    select(func.count()).select_from(Device).where(col(Device.online))
                ),
                await session.scalar(select(func.coalesce(func.sum(Alert.trigger_count), 0))),
            ]
        return (
            *(int(v or 0) for v in values),
            len(self.sandbox.messages),
            sum(len(c.status_history) for c in self.sandbox.calls),
        )

    async def _settle(self) -> None:
        """Until the platform has done everything due at this instant (and phones are parked)."""
        deadline = time.monotonic() + self.settle_timeout_s
        stable, last = 0, None
        while stable < 2:
            await asyncio.sleep(0.03)
            if time.monotonic() > deadline:
                raise TimeoutError(f"platform did not settle at {self._at()} (last state {last})")
            if self.time.active > 0 or self._inflight > 0:
                stable, last = 0, None
                continue
            fp = await self._fingerprint()
            busy = any(fp[:5])
            if busy:
                stable, last = 0, None
            elif fp == last:
                stable += 1
            else:
                stable, last = 1, fp

    def _at(self) -> str:
        return format_seconds((self.time.now() - self.t0).total_seconds())

    async def _next_due_in_db(self, now: datetime) -> datetime | None:
        async with self.sessions() as session:
            times = [
                await session.scalar(
                    select(func.min(Alert.next_check_at)).where(col(Alert.next_check_at) > now)
                ),
                await session.scalar(
                    select(func.min(RuleTimer.due_at)).where(
                        col(RuleTimer.due_at) > now,
                        col(RuleTimer.fired_at).is_(None),
                        ~col(RuleTimer.cancelled),
                    )
                ),
                await session.scalar(
                    select(func.min(SmsMessage.next_attempt_at)).where(
                        col(SmsMessage.status) == "queued", col(SmsMessage.next_attempt_at) > now
                    )
                ),
                await session.scalar(
                    select(func.min(VoiceCall.next_attempt_at)).where(
                        col(VoiceCall.status) == "queued", col(VoiceCall.next_attempt_at) > now
                    )
                ),
            ]
        found = [t for t in times if t is not None]
        return min(found) if found else None

    def _live_devices(self) -> list[str]:
        return [d for h in self._beating if h.powered for d in h.device_ids]

    async def _beat_deadline(self) -> datetime | None:
        """When the first live simulated device would be called offline without a heartbeat."""
        live = self._live_devices()
        if not live:
            return None
        async with self.sessions() as session:
            earliest = await session.scalar(
                select(func.min(Device.offline_after)).where(
                    col(Device.id).in_(live), col(Device.online)
                )
            )
        return earliest

    async def _heartbeat_all(self) -> None:
        """Every live home heartbeats now; wait until the gateway has stored them."""
        now = self.time.now()
        for home in self._beating:
            if home.powered:
                home.heartbeat()
        live = self._live_devices()
        await self._wait_db(
            lambda s: s.scalar(
                select(func.count())
                .select_from(Device)
                .where(col(Device.id).in_(live), col(Device.last_seen_at) >= now)
            ),
            len(live),
            "heartbeats to be stored",
        )

    # -- playing ----------------------------------------------------------------------------------
    async def play(self) -> ScenarioResult:
        if self.clock is None and self.scenario.run_for > REAL_TIME_LIMIT_S:
            raise ScenarioError(
                f"{self.scenario.name}: runs {format_seconds(self.scenario.run_for)}, "
                "it plays on scenario time only (not --real-time nor --external)"
            )
        started = time.monotonic()
        unsubscribe = self.sandbox.subscribe(self._on_sms)
        unsubscribe_calls = self.sandbox.subscribe_calls(self._on_call)
        try:
            if self.clock is not None:
                self.clock.set(self.scenario.start)
            else:
                self.t0 = datetime.now(UTC)
            await self._connect_homes()
            if self.clock is not None:
                await self._play_on_scenario_time()
            else:
                await self._play_in_real_time()
            result = await self.check()
        finally:
            unsubscribe()
            unsubscribe_calls()
            for task in list(self._scripts):
                task.cancel()
            await asyncio.gather(*self._scripts, return_exceptions=True)
            for home in self.homes.values():
                if home.powered:
                    with contextlib.suppress(Exception):
                        await home.close()
        result.real_seconds = time.monotonic() - started
        result.mode = "scenario time" if self.clock is not None else "real time"
        return result

    async def _play_on_scenario_time(self) -> None:
        assert self.clock is not None
        pending = self.scenario.steps()
        end = self.t0 + timedelta(seconds=self.scenario.run_for)
        while True:
            await self._settle()
            now = self.clock.now()
            self._report_progress(now)
            due = [s for s in pending if self.t0 + timedelta(seconds=s.at) <= now]
            if due:
                for step in due:
                    pending.remove(step)
                    await self._run_step(step)
                continue
            if now >= end:
                return
            candidates = [end]
            if pending:
                candidates.append(self.t0 + timedelta(seconds=pending[0].at))
            if (wake := self.time.next_wake()) is not None:
                candidates.append(wake)
            if (db_due := await self._next_due_in_db(now)) is not None:
                candidates.append(db_due)
            target = max(min(candidates), now + timedelta(milliseconds=1))
            beat_deadline = await self._beat_deadline()
            if beat_deadline is not None and target >= beat_deadline - BEAT_MARGIN:
                beat_at = max(now, beat_deadline - BEAT_MARGIN)
                self.clock.set(beat_at)
                self.time.wake_due()
                await self._heartbeat_all()
                continue
            self.clock.set(target)
            self.time.wake_due()

    def _report_progress(self, now: datetime) -> None:
        if self.progress is not None:
            played = (now - self.t0).total_seconds()
            self.progress(min(max(played, 0.0), self.scenario.run_for))

    async def _play_in_real_time(self) -> None:
        for step in self.scenario.steps():
            wait = (self.t0 + timedelta(seconds=step.at) - datetime.now(UTC)).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._run_step(step)
            self._report_progress(datetime.now(UTC))
        end = self.t0 + timedelta(seconds=self.scenario.run_for)
        # Stop early once everything expected has happened and no phone is mid-script.
        while datetime.now(UTC) < end:
            await asyncio.sleep(0.5)
            self._report_progress(datetime.now(UTC))
            if self.time.active <= 0 and (await self.check()).passed:
                return

    # -- checking -----------------------------------------------------------------------------------
    async def check(self) -> ScenarioResult:
        return await OutcomeCheck(
            scenario=self.scenario,
            sessions=self.sessions,
            t0=self.t0,
            on_scenario_time=self.clock is not None,
            acks=self.acks,
            first_send_real=self.first_send_real,
            first_callout_real=self.first_callout_real,
            timelines=self.timelines,
            plan=self.plan,
            web_url=self.web_url,
        ).run()


def _chunks(items: list[SimHome], size: int) -> Iterable[list[SimHome]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --- running one ------------------------------------------------------------------------------


async def seed_plan(sessions: SessionMaker, plan: RegionPlan) -> bool:
    """Seed the scenario's region unless it is there already; True when it was written now."""
    from anxin import auth
    from anxin.db import transaction
    from device_sim.region.seed import seed_region

    async with transaction(sessions) as session:
        result = await seed_region(session, plan, auth.hash_device_password, auth.hash_password)
    return result.created


async def play_in_process(
    scenario: Scenario,
    *,
    database_url: str,
    mqtt_url: str,
    engine: Any,
    real_time: bool = False,
    plan: RegionPlan | None = None,
    progress: Callable[[float], None] | None = None,
) -> ScenarioResult:
    """Seed, start every role in this process (on a FakeClock unless `real_time`) and play."""
    from device_sim.harness import run_in_process

    plan = plan or generate_region(scenario.region.homes, scenario.region.seed)
    clock = None if real_time else FakeClock(scenario.start)
    async with run_in_process(database_url, mqtt_url, engine, clock=clock) as platform:
        await seed_plan(platform.sessions, plan)
        player = ScenarioPlayer(
            scenario,
            plan,
            sessions=platform.sessions,
            sandbox=platform.sandbox,
            mqtt=platform.mqtt,
            clock=clock,
            progress=progress,
            web_url=platform.web_url,
        )
        return await player.play()
