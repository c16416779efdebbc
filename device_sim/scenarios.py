"""Scenarios as files: a timeline of presses, sensor readings and aides' behaviour, with the
outcomes the platform must produce (device_sim/scenarios/*.yaml).

`load_scenario(path)` validates a file (pydantic) and names the file, line and field of any
mistake. `ScenarioPlayer` plays one against a platform:

* on scenario time (a FakeClock shared with the in-process roles): the player moves the clock
  straight to the next thing that can happen — a timeline step, a simulated aide's reply, a
  ladder timer, a rule timer — after the platform has settled, so a 40-minute night plays in
  seconds and the same way every time;
* at real time (SystemClock): steps and replies wait for real, against in-process roles or a
  platform running elsewhere.

Then every expectation is checked against the database and reported pass/fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select
from sqlmodel import col

from alert_service.models import Alert, AlertTimelineEntry, DispatchAttempt, RuleTimer
from anxin.clock import FakeClock
from anxin.db import SessionMaker
from anxin.logging import get_logger
from anxin.models import Device, Elder, Region
from anxin.mqtt import BrokerAddress
from anxin.schemas import EventType
from device_sim.homes import DEVICE_FOR_EVENT, AckResult, SimDevice, SimHome
from device_sim.phones import Behaviour
from device_sim.region import RegionPlan, generate_region
from dispatcher.models import SmsMessage
from dispatcher.twilio_sandbox import SandboxMessage, SmsSandbox
from gateway.models import Event

log = get_logger("device_sim.scenarios")
SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
ALERT_CODE = re.compile(r"\bA(\d+)\b")
_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*$"
)
# Heartbeats are sent this long before the platform would call a device offline.
BEAT_MARGIN = timedelta(seconds=30)


def parse_duration(value: Any) -> float:
    """Seconds from `90`, `90s`, `11m`, `1h30m`, `2m30s`."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text like 90s, 11m, 1h30m")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        found = _DURATION.match(value)
        if found and any(found.groups()):
            hours, minutes, seconds = (float(g) if g else 0.0 for g in found.groups())
            return hours * 3600 + minutes * 60 + seconds
    raise ValueError(f"{value!r} is not a duration (use e.g. 90s, 11m, 1h30m)")


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _fmt(seconds: float) -> str:
    seconds = round(seconds)
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


# --- the file format ------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResponderScript(_Strict):
    """How one responder's phone answers a call-out (times in scenario time, from the SMS)."""

    behaviour: Behaviour = Behaviour.silent
    answer_after: Duration = 30.0
    travel: Duration = 300.0
    handle: Duration = 120.0
    late_extra: Duration = 600.0  # accept_then_late: this much longer on the road


RESPONDER_LABEL = re.compile(r"^(aide[1-9][0-9]*|township|county|default)$")


class Step(_Strict):
    at: Duration
    home: str | None = None
    event: EventType | None = None
    data: dict[str, Any] | None = None
    event_id: str | None = None
    repeat: int = Field(default=1, ge=1, le=100)
    every: Duration = 0.0
    power_cut: str | None = None  # a township code: every home there loses mains power
    expect_ack: Literal["accepted", "duplicate", "rejected"] | None = None

    @model_validator(mode="after")
    def _one_action(self) -> Step:
        if (self.event is None) == (self.power_cut is None):
            raise ValueError("a step has exactly one of `event` (with `home`) or `power_cut`")
        if self.event is not None and self.home is None:
            raise ValueError("an `event` step needs the `home` it happens in")
        if self.repeat > 1 and self.every <= 0:
            raise ValueError("`repeat` needs `every` (the time between repeats)")
        if self.repeat > 1 and self.event_id is not None:
            raise ValueError("`repeat` makes new events; to resend one event_id, list it twice")
        return self


class AlertSelector(_Strict):
    home: str
    kind: str
    nth: int = Field(default=1, ge=1)


class AlertFilter(_Strict):
    kind: str | None = None
    priority: int | None = None
    home: str | None = None
    township: str | None = None


class EventFilter(_Strict):
    home: str
    type: EventType | None = None


class Expectation(_Strict):
    """One of `alert:` (checks on one alert), `alerts:` (how many) or `events:` (how many)."""

    alert: AlertSelector | None = None
    alerts: AlertFilter | None = None
    events: EventFilter | None = None
    # on one alert
    priority: int | None = None
    status: Literal["raised", "dispatching", "accepted", "on_scene", "resolved"] | None = None
    trigger_count: int | None = None
    call_120: bool | None = None
    cancel_requested: bool | None = None
    breached: bool | None = None
    at_risk: bool | None = None
    met: bool | None = None
    asked: list[str] | None = None
    accepted_by: str | None = None
    raised_at: Duration | None = None  # scenario time of raising
    on_scene_within: Duration | None = None  # from raising
    sms: dict[str, int] | None = None  # per responder label (and `guardians`): SMS for this alert
    sms_within_real_s: float | None = None  # device publish → call-out at the SMS endpoint
    # on counts
    count: int | None = None
    at_least: int | None = None
    at_most: int | None = None

    @model_validator(mode="after")
    def _one_subject(self) -> Expectation:
        subjects = [s for s in (self.alert, self.alerts, self.events) if s is not None]
        if len(subjects) != 1:
            raise ValueError("an expectation has exactly one of `alert`, `alerts` or `events`")
        counting = (self.count, self.at_least, self.at_most)
        if self.alert is not None and any(c is not None for c in counting):
            raise ValueError("`count`/`at_least`/`at_most` go with `alerts:` or `events:`")
        if self.alert is None and all(c is None for c in counting):
            raise ValueError("`alerts:`/`events:` need `count`, `at_least` or `at_most`")
        single = self.model_dump(
            exclude={"alert", "alerts", "events", "count", "at_least", "at_most"},
            exclude_none=True,
        )
        if self.alert is None and single:
            raise ValueError(f"{sorted(single)} can only be checked on one `alert:`")
        return self

    @field_validator("asked")
    @classmethod
    def _labels(cls, value: list[str] | None) -> list[str] | None:
        for label in value or []:
            if not RESPONDER_LABEL.match(label) or label == "default":
                raise ValueError(f"{label!r} is not aide1, aide2, …, township or county")
        return value


class RegionChoice(_Strict):
    homes: int = Field(default=120, ge=1, le=20000)
    seed: int = 2026


class Scenario(_Strict):
    name: str
    description: str = ""
    start: datetime = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    region: RegionChoice = RegionChoice()
    run_for: Duration
    # Whether the named homes announce themselves (`online`) and heartbeat. Off by default: on
    # scenario time every heartbeat round costs real time, and most scenarios are about the
    # alert chain, not liveness. Homes in a power cut always do (they must be online to drop).
    heartbeats: bool = False
    homes: dict[str, str]  # label → elder code
    responders: dict[str, ResponderScript] = {}
    timeline: list[Step]
    expect: list[Expectation] = Field(min_length=1)

    @field_validator("start")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("give `start` with its UTC offset, e.g. 2026-11-23T02:00:00+08:00")
        return value.astimezone(UTC)

    @field_validator("responders")
    @classmethod
    def _responder_labels(cls, value: dict[str, ResponderScript]) -> dict[str, ResponderScript]:
        for label in value:
            if not RESPONDER_LABEL.match(label):
                raise ValueError(f"{label!r} is not aide1, aide2, …, township, county or default")
        return value

    def steps(self) -> list[Step]:
        """The timeline with repeats spelled out, in time order (file order within a time)."""
        expanded: list[Step] = []
        for step in self.timeline:
            for i in range(step.repeat):
                expanded.append(
                    step.model_copy(update={"at": step.at + i * step.every, "repeat": 1})
                )
        return sorted(expanded, key=lambda s: s.at)


class ScenarioError(ValueError):
    """A scenario file that cannot be played; the message names file, line and field."""


def _line_of(node: yaml.Node | None, loc: Iterable[int | str]) -> int | None:
    """The line of the deepest YAML node on the path `loc` (1-based)."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    child = value
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line


def _where(path: Path, root: yaml.Node | None, loc: tuple[int | str, ...]) -> str:
    line = _line_of(root, loc)
    dotted = ".".join(str(p) for p in loc) or "(top)"
    return f"{path}:{line or 1}: {dotted}"


def load_scenario(path: Path | str, plan: RegionPlan | None = None) -> Scenario:
    """Read and check a scenario file; raises ScenarioError naming file, line and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise ScenarioError(f"{path}:{line}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}:1: a scenario is a mapping (name:, timeline:, expect: …)")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{_where(path, root, tuple(err['loc']))}: {err['msg']}" for err in exc.errors()
        ]
        raise ScenarioError("\n".join(problems)) from exc
    plan = plan or generate_region(scenario.region.homes, scenario.region.seed)
    problems = [
        f"{_where(path, root, loc)}: {msg}" for loc, msg in _reference_problems(scenario, plan)
    ]
    if problems:
        raise ScenarioError("\n".join(problems))
    return scenario


def _reference_problems(
    scenario: Scenario, plan: RegionPlan
) -> list[tuple[tuple[int | str, ...], str]]:
    """Names that must exist: elders in the region, homes in the file, devices in the home."""
    problems: list[tuple[tuple[int | str, ...], str]] = []
    elders = {e.code for e in plan.elders}
    kinds: dict[str, set[str]] = {}
    for d in plan.devices:
        kinds.setdefault(d.elder_code, set()).add(d.kind.value)
    townships = {t.code for t in plan.townships}
    for label, code in scenario.homes.items():
        if code not in elders:
            problems.append(
                (("homes", label), f"no elder {code} in a region of {len(elders)} homes")
            )
    for i, step in enumerate(scenario.timeline):
        if step.home is not None and step.home not in scenario.homes:
            problems.append(
                (("timeline", i, "home"), f"unknown home {step.home!r} (not under `homes:`)")
            )
        elif step.home is not None and step.event is not None:
            code = scenario.homes[step.home]
            needed = DEVICE_FOR_EVENT.get(step.event.value, "sos_button")
            if code in kinds and needed not in kinds[code]:
                problems.append(
                    (
                        ("timeline", i, "event"),
                        f"home {step.home} ({code}) has no {needed} to send {step.event.value}",
                    )
                )
        if step.power_cut is not None and step.power_cut not in townships:
            problems.append((("timeline", i, "power_cut"), f"no township {step.power_cut}"))
    for i, exp in enumerate(scenario.expect):
        home = (exp.alert.home if exp.alert else None) or (exp.events.home if exp.events else None)
        home = home or (exp.alerts.home if exp.alerts else None)
        if home is not None and home not in scenario.homes:
            problems.append((("expect", i), f"unknown home {home!r} (not under `homes:`)"))
    return problems


def bundled_scenarios() -> list[Path]:
    return sorted(SCENARIO_DIR.glob("*.yaml"))


# --- results --------------------------------------------------------------------------------


@dataclass
class Check:
    subject: str
    what: str
    expected: str
    actual: str
    passed: bool


@dataclass
class ScenarioResult:
    name: str
    checks: list[Check] = field(default_factory=list)
    mode: str = "scenario time"
    real_seconds: float = 0.0
    acks: list[str] = field(default_factory=list)
    # The timeline of every alert with a failed check, so a failure says what happened.
    timelines: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


def render(result: ScenarioResult, console: Console) -> None:
    table = Table(title=f"{result.name} ({result.mode}, {result.real_seconds:.1f} s real)")
    for column in ("", "subject", "check", "expected", "actual"):
        table.add_column(column)
    for check in result.checks:
        mark = "[green]pass[/]" if check.passed else "[bold red]FAIL[/]"
        table.add_row(mark, check.subject, check.what, check.expected, check.actual)
    console.print(table)
    for line in result.timelines:
        console.print(line, markup=False, highlight=False)
    verdict = (
        "[green]PASSED[/]" if result.passed else f"[bold red]FAILED[/] ({len(result.failures())})"
    )
    console.print(f"{result.name}: {verdict}")


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


@dataclass
class _Alert:
    row: Alert
    labels: dict[int, str]


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
    ) -> None:
        self.scenario = scenario
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
        return _labels(alert).get(int(responder_id), "unknown")

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

    # -- steps ------------------------------------------------------------------------------------
    async def _run_step(self, step: Step) -> None:
        self._inflight += 1
        try:
            if step.power_cut is not None:
                await self._power_cut(step.power_cut)
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
        return (*(int(v or 0) for v in values), len(self.sandbox.messages))

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
            busy = any(fp[:4])
            if busy:
                stable, last = 0, None
            elif fp == last:
                stable += 1
            else:
                stable, last = 1, fp

    def _at(self) -> str:
        return _fmt((self.time.now() - self.t0).total_seconds())

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
        started = time.monotonic()
        unsubscribe = self.sandbox.subscribe(self._on_sms)
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
        result = ScenarioResult(self.scenario.name)
        for step, ack in self.acks:
            result.acks.append(
                f"{_fmt(step.at)} {step.home} {step.event}: {ack.status} {ack.alert_id or ''}"
            )
            if step.expect_ack is not None:
                result.checks.append(
                    Check(
                        f"{step.home} {step.event} at {_fmt(step.at)}",
                        "device ack",
                        step.expect_ack,
                        ack.status,
                        ack.status == step.expect_ack,
                    )
                )
        async with self.sessions() as session:
            rows = await session.execute(
                select(col(Elder.code), col(Elder.id)).where(
                    col(Elder.code).in_(list(self.scenario.homes.values()))
                )
            )
            elders = {code: elder_id for code, elder_id in rows if elder_id is not None}
            for exp in self.scenario.expect:
                if exp.alert is not None:
                    result.checks.extend(await self._check_alert(session, exp, elders))
                elif exp.alerts is not None:
                    result.checks.append(await self._check_alert_count(session, exp, elders))
                elif exp.events is not None:
                    result.checks.append(await self._check_event_count(session, exp, elders))
        result.timelines = self.timelines
        return result

    async def _alerts_of(self, session: Any, elder_id: int | None, kind: str) -> list[Alert]:
        rows = await session.execute(
            select(Alert)
            .where(
                col(Alert.elder_id) == elder_id,
                col(Alert.kind) == kind,
                col(Alert.raised_at) >= self.t0,
            )
            .order_by(col(Alert.id))
        )
        return list(rows.scalars())

    async def _check_alert(
        self, session: Any, exp: Expectation, elders: dict[str, int]
    ) -> list[Check]:
        assert exp.alert is not None
        sel = exp.alert
        subject = f"{sel.home} {sel.kind}" + (f" #{sel.nth}" if sel.nth > 1 else "")
        found = await self._alerts_of(session, elders.get(self.scenario.homes[sel.home]), sel.kind)
        if len(found) < sel.nth:
            return [Check(subject, "alert raised", "yes", f"{len(found)} such alerts", False)]
        alert = found[sel.nth - 1]
        subject += f" ({alert.code})"
        labels = _labels(alert)
        checks: list[Check] = []

        def add(what: str, expected: Any, actual: Any, passed: bool | None = None) -> None:
            ok = (expected == actual) if passed is None else passed
            checks.append(Check(subject, what, str(expected), str(actual), ok))

        for name in (
            "priority",
            "status",
            "trigger_count",
            "call_120",
            "cancel_requested",
            "breached",
            "at_risk",
        ):
            expected = getattr(exp, name)
            if expected is not None:
                add(name, expected, getattr(alert, name))
        if exp.met is not None:
            met = (
                alert.on_scene_at is not None
                and alert.respond_by is not None
                and alert.on_scene_at <= alert.respond_by
            )
            add("met (on scene by respond_by)", exp.met, met)
        if exp.raised_at is not None:
            at = (alert.raised_at - self.t0).total_seconds()
            tolerance = 2.0 if self.clock is not None else 5.0
            add("raised at", _fmt(exp.raised_at), _fmt(at), abs(at - exp.raised_at) <= tolerance)
        if exp.on_scene_within is not None:
            took = (
                None
                if alert.on_scene_at is None
                else (alert.on_scene_at - alert.raised_at).total_seconds()
            )
            add(
                "on scene within",
                _fmt(exp.on_scene_within),
                "never" if took is None else _fmt(took),
                took is not None and took <= exp.on_scene_within,
            )
        if exp.asked is not None or exp.accepted_by is not None:
            attempts = (
                await session.execute(
                    select(DispatchAttempt)
                    .where(col(DispatchAttempt.alert_id) == alert.id)
                    .order_by(col(DispatchAttempt.step))
                )
            ).scalars()
            asked = [labels.get(a.responder_id, f"responder {a.responder_id}") for a in attempts]
            if exp.asked is not None:
                add("asked, in order", exp.asked, asked)
        if exp.accepted_by is not None:
            taker = (
                labels.get(alert.accepted_by, str(alert.accepted_by)) if alert.accepted_by else None
            )
            add("accepted by", exp.accepted_by, taker)
        if exp.sms is not None:
            rows = await session.execute(
                select(col(SmsMessage.responder_id), col(SmsMessage.purpose), func.count())
                .where(col(SmsMessage.alert_id) == alert.id, col(SmsMessage.direction) == "out")
                .group_by(col(SmsMessage.responder_id), col(SmsMessage.purpose))
            )
            per_label: dict[str, int] = {}
            for responder_id, purpose, n in rows:
                label = (
                    "guardians"
                    if purpose == "guardian"
                    else labels.get(responder_id or -1, f"responder {responder_id}")
                )
                per_label[label] = per_label.get(label, 0) + int(n)
            actual = {k: per_label.get(k, 0) for k in exp.sms}
            add("SMS per responder", exp.sms, actual)
        if exp.sms_within_real_s is not None:
            sent = self.first_send_real.get(alert.code)
            got = self.first_callout_real.get(alert.code)
            took = None if sent is None or got is None else got - sent
            add(
                "call-out SMS requested within (real s)",
                exp.sms_within_real_s,
                "never" if took is None else f"{took:.2f}",
                took is not None and took <= exp.sms_within_real_s,
            )
        if not all(c.passed for c in checks):
            self.timelines.extend(await self._timeline_of(session, alert, subject, labels))
        return checks

    async def _timeline_of(
        self, session: Any, alert: Alert, subject: str, labels: dict[int, str]
    ) -> list[str]:
        entries = (
            await session.execute(
                select(AlertTimelineEntry)
                .where(col(AlertTimelineEntry.alert_id) == alert.id)
                .order_by(col(AlertTimelineEntry.at), col(AlertTimelineEntry.id))
            )
        ).scalars()
        lines = [f"timeline of {subject}:"]
        for entry in entries:
            detail = dict(entry.detail)
            if (rid := detail.get("responder_id")) is not None:
                detail["responder"] = labels.get(int(rid), str(rid))
                del detail["responder_id"]
            at = _fmt((entry.at - self.t0).total_seconds())
            lines.append(f"  {at:>8} {entry.actor:<16} {entry.action:<14} {detail}")
        return lines

    def _count_check(self, subject: str, exp: Expectation, n: int) -> Check:
        parts = []
        ok = True
        if exp.count is not None:
            parts.append(f"= {exp.count}")
            ok &= n == exp.count
        if exp.at_least is not None:
            parts.append(f"≥ {exp.at_least}")
            ok &= n >= exp.at_least
        if exp.at_most is not None:
            parts.append(f"≤ {exp.at_most}")
            ok &= n <= exp.at_most
        return Check(subject, "how many", " and ".join(parts), str(n), ok)

    async def _check_alert_count(
        self, session: Any, exp: Expectation, elders: dict[str, int]
    ) -> Check:
        f = exp.alerts
        assert f is not None
        query = select(func.count()).select_from(Alert).where(col(Alert.raised_at) >= self.t0)
        bits = []
        if f.kind is not None:
            query = query.where(col(Alert.kind) == f.kind)
            bits.append(f.kind)
        if f.priority is not None:
            query = query.where(col(Alert.priority) == f.priority)
            bits.append(f"P{f.priority}")
        if f.home is not None:
            query = query.where(col(Alert.elder_id) == elders.get(self.scenario.homes[f.home]))
            bits.append(f.home)
        if f.township is not None:
            township_id = await session.scalar(
                select(col(Region.id)).where(col(Region.code) == f.township)
            )
            query = query.where(col(Alert.township_id) == township_id)
            bits.append(f"in {f.township}")
        n = int(await session.scalar(query) or 0)
        return self._count_check("alerts " + " ".join(bits or ["(all)"]), exp, n)

    async def _check_event_count(
        self, session: Any, exp: Expectation, elders: dict[str, int]
    ) -> Check:
        f = exp.events
        assert f is not None
        query = (
            select(func.count())
            .select_from(Event)
            .where(
                col(Event.elder_id) == elders.get(self.scenario.homes[f.home]),
                col(Event.received_at) >= self.t0,
            )
        )
        if f.type is not None:
            query = query.where(col(Event.type) == f.type.value)
        n = int(await session.scalar(query) or 0)
        return self._count_check(f"events stored {f.home} {f.type.value if f.type else ''}", exp, n)


def _labels(alert: Alert) -> dict[int, str]:
    """Responder id → label as a scenario names it: aide1 is the alert's nearest aide, and so
    on down its ranking; the township and county centres' duty phones."""
    labels: dict[int, str] = {}
    aides = 0
    for line in alert.ranking or []:
        kind = str(line.get("kind"))
        responder_id = int(line["responder_id"])
        if kind == "aide":
            aides += 1
            labels[responder_id] = f"aide{aides}"
        elif kind == "township_centre":
            labels[responder_id] = "township"
        elif kind == "county_centre":
            labels[responder_id] = "county"
    return labels


def _chunks(items: list[SimHome], size: int) -> Iterable[list[SimHome]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --- running one ------------------------------------------------------------------------------


async def seed_plan(sessions: SessionMaker, plan: RegionPlan) -> bool:
    """Seed the scenario's region unless it is there already; True when it was written now."""
    from anxin import auth
    from anxin.db import transaction
    from device_sim.region import seed_region

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
        )
        return await player.play()
