"""Events become alerts: the alert rules applied to stored events (one at a time, or a gateway
batch together), an alert raised or joined, rule timers started and cancelled.

Every function runs inside the caller's transaction (the gateway's batch); none commits."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

from sqlalchemy import (
    DateTime,
    Select,
    String,
    bindparam,
    func,
    literal,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlmodel import col

from alert_service import rules
from alert_service.ladder import advance, resolve, start_response
from alert_service.models import (
    Alert,
    AlertStatus,
    AlertTimelineEntry,
    RuleTimer,
)
from alert_service.regions import ladder_for, region_chain, region_chains
from alert_service.timeline import add_timeline
from anxin.db import notify_on_commit
from anxin.logging import get_logger
from anxin.models import Device, Elder, Region, pk
from dispatcher import outbox

log = get_logger("alert_service")


_ALERTS = Alert.__table__  # type: ignore[attr-defined]


def profile_of(elder: Elder, timezone: str) -> rules.ElderProfile:
    return rules.ElderProfile(
        living_alone=elder.living_alone,
        wanders=elder.wanders,
        night_start=elder.night_start,
        night_end=elder.night_end,
        timezone=timezone,
        thresholds={k: float(v) for k, v in (elder.thresholds or {}).items()},
    )


async def apply_event(
    session: AsyncSession,
    *,
    device: Device,
    elder: Elder,
    event_type: str,
    data: dict[str, Any],
    now: datetime,
    timezone: str,
    previous_vitals: str = "normal",
    respond_now: bool = False,
) -> int | None:
    """Apply one stored event; returns the id of the alert it raised or joined, if any.

    The gateway's ack path: an alert it raises is durable when this transaction commits, and
    the watcher (woken by NOTIFY) starts its response within milliseconds — see
    `raise_or_join`. `respond_now` starts it in this transaction instead.
    """
    decisions = rules.decide(
        event_type,
        data,
        profile_of(elder, timezone),
        now,
        device_kind=device.kind,
        previous_vitals=previous_vitals,
    )
    alert_id: int | None = None
    actor = f"device:{device.id}"
    for decision in decisions:
        if isinstance(decision, rules.RaiseAlert):
            alert = await raise_or_join(
                session,
                elder,
                decision,
                device.id,
                now,
                actor,
                respond_now=respond_now,
                timezone=timezone,
            )
            alert_id = alert_id or alert.id
        elif isinstance(decision, rules.StartTimer):
            await start_rule_timer(session, elder, device.id, decision)
        elif isinstance(decision, rules.CancelTimers):
            await session.execute(
                update(RuleTimer)
                .where(
                    col(RuleTimer.elder_id) == elder.id,
                    col(RuleTimer.kind) == decision.kind,
                    col(RuleTimer.fired_at).is_(None),
                    ~col(RuleTimer.cancelled),
                )
                .values(cancelled=True)
            )
            if decision.kind == "power_lost":
                await power_restored(session, elder, device.id, now)
        elif isinstance(decision, rules.RequestCancel):
            alert_id = await request_cancel(session, elder, now, actor) or alert_id
        elif isinstance(decision, rules.DeviceBackOnline):
            await device_back_online(session, elder, device.id, now)
    return alert_id


@dataclass(frozen=True)
class StoredEvent:
    """An event the gateway stored, to apply (see `apply_events`)."""

    device: Device
    elder: Elder
    event_type: str
    data: dict[str, Any]
    previous_vitals: str = "normal"


# Decisions applied a batch at a time on the gateway path (raise/join, a rule timer, a device
# back online); an elder with any other (a cancel, vitals, a timer to cancel) goes one by one.
_BATCHED = (rules.RaiseAlert, rules.StartTimer, rules.DeviceBackOnline)


@dataclass
class _Run:
    """Batched decisions of consecutive elders, applied together (`_apply_run`)."""

    raises: list[tuple[int, StoredEvent, rules.RaiseAlert]]
    timers: list[tuple[StoredEvent, rules.StartTimer]]
    back_online: list[StoredEvent]


async def apply_events(
    session: AsyncSession, events: Sequence[StoredEvent], now: datetime, timezone: str
) -> list[int | None]:
    """`apply_event` for a gateway batch sorted by elder; the alert id per event, in order.

    An SOS burst, or a township's power cut (power lost, hubs offline, then back online), is
    mostly events that raise or join alerts, start a rule timer or close an offline alert: those
    are applied together, a few statements for the whole run instead of several per event, so
    the batch's transaction (and the alert rows it locks) is short and the gateway's loop is
    free for the next SOS. An elder with any other event (a cancel, vitals, a timer to cancel)
    has its events applied one by one, in its place in the elder order: locks are still taken
    in elder order, so two gateways cannot deadlock.
    """
    alert_ids: list[int | None] = [None] * len(events)
    run = _Run([], [], [])
    for _, group in groupby(range(len(events)), key=lambda k: events[k].elder.id):
        indexes = list(group)
        decided = [
            (
                k,
                rules.decide(
                    events[k].event_type,
                    events[k].data,
                    profile_of(events[k].elder, timezone),
                    now,
                    device_kind=events[k].device.kind,
                    previous_vitals=events[k].previous_vitals,
                ),
            )
            for k in indexes
        ]
        if all(isinstance(d, _BATCHED) for _, ds in decided for d in ds):
            for k, ds in decided:
                for d in ds:
                    if isinstance(d, rules.RaiseAlert):
                        run.raises.append((k, events[k], d))
                    elif isinstance(d, rules.StartTimer):
                        run.timers.append((events[k], d))
                    else:
                        run.back_online.append(events[k])
            continue
        await _apply_run(session, run, now, alert_ids, timezone)
        run = _Run([], [], [])
        for k in indexes:
            e = events[k]
            alert_ids[k] = await apply_event(
                session,
                device=e.device,
                elder=e.elder,
                event_type=e.event_type,
                data=e.data,
                now=now,
                timezone=timezone,
                previous_vitals=e.previous_vitals,
            )
    await _apply_run(session, run, now, alert_ids, timezone)
    return alert_ids


async def _apply_run(
    session: AsyncSession, run: _Run, now: datetime, alert_ids: list[int | None], timezone: str
) -> None:
    """`raise_or_join` (gateway path: the watchers start the response), `start_rule_timer` and
    `device_back_online` for a run of events in elder order: the open alerts involved locked
    in one query (elder order), the new ones inserted in one statement, the live timers read
    in one; the joins' trigger counts and timeline rows flushed with the commit."""
    raises = run.raises
    closing = [(pk(e.elder), "offline") for e in run.back_online]
    keys = list(dict.fromkeys((pk(e.elder), d.kind) for _, e, d in raises))
    if not keys and not closing and not run.timers:
        return
    open_alerts = await _open_alerts(session, list(dict.fromkeys([*keys, *closing])))
    raised: set[tuple[int, str]] = set()
    new = [key for key in keys if key not in open_alerts]
    if new:
        chains = await region_chains(session, {e.elder.village_id for _, e, _ in raises})
        first: dict[tuple[int, str], tuple[StoredEvent, rules.RaiseAlert]] = {}
        for _, e, d in raises:
            first.setdefault((pk(e.elder), d.kind), (e, d))
        rows = [
            _new_alert(e.elder, d, e.device.id, chains.get(e.elder.village_id, []), now, timezone)
            for e, d in (first[key] for key in new)
        ]
        notify = any(row["respond_by"] is not None for row in rows)
        inserted = await session.execute(*_insert_alerts(rows, now, None, notify=notify))
        for row in inserted:
            alert = row[0]
            key = (alert.elder_id, alert.kind)
            open_alerts[key] = alert
            raised.add(key)
        # Raised meanwhile by another gateway (our insert waited for its commit, then did
        # nothing): join it like any open alert.
        if lost := [key for key in new if key not in open_alerts]:
            open_alerts.update(await _open_alerts(session, lost))
    # A run's presses of one open alert join it together: one "triggered_again" entry with the
    # count, not one per press (a stuck button's thousand a second would bury the timeline).
    joins: dict[tuple[int, str], list[tuple[rules.RaiseAlert, str]]] = {}
    for k, e, decision in raises:
        key = (pk(e.elder), decision.kind)
        alert = open_alerts[key]
        if key in raised:
            raised.discard(key)  # the first event of the run raised it; the rest join
            if decision.call_120:
                await add_timeline(session, pk(alert), now, "system", "call_120_flagged")
            log.info(
                "alert_raised", alert=alert.code, kind=decision.kind, priority=decision.priority
            )
        else:
            joins.setdefault(key, []).append((decision, f"device:{e.device.id}"))
        alert_ids[k] = alert_ids[k] or alert.id
    for key, presses in joins.items():
        most_urgent = min(presses, key=lambda p: p[0].priority)
        await _join(
            session,
            open_alerts[key],
            most_urgent[0],
            now,
            presses[-1][1],
            respond_now=False,
            presses=len(presses),
        )
    for e in run.back_online:
        alert = open_alerts.get((pk(e.elder), "offline"))
        if alert is not None and alert.device_id == e.device.id:
            actor = f"device:{e.device.id}"
            await resolve(session, alert, now, actor=actor, outcome="device_recovered")
    await _start_rule_timers(session, [(pk(e.elder), e.device.id, d) for e, d in run.timers])


async def _open_alerts(
    session: AsyncSession, keys: list[tuple[int, str]]
) -> dict[tuple[int, str], Alert]:
    """The open alerts of these (elder, kind) pairs, locked in elder order."""
    result = await session.execute(
        select(Alert)
        .where(
            tuple_(col(Alert.elder_id), col(Alert.kind)).in_(keys),
            col(Alert.status) != "resolved",
        )
        .order_by(col(Alert.elder_id), col(Alert.kind))
        .with_for_update()
    )
    return {(a.elder_id, a.kind): a for a in result.scalars()}


async def start_rule_timer(
    session: AsyncSession, elder: Elder, device_id: str, decision: rules.StartTimer
) -> None:
    await _start_rule_timers(session, [(pk(elder), device_id, decision)])


async def _start_rule_timers(
    session: AsyncSession, timers: Sequence[tuple[int, str, rules.StartTimer]]
) -> None:
    """One live timer per elder and kind: a second bed exit before the return keeps the first
    deadline (20 minutes from when the elder first got up), it does not push it back."""
    if not timers:
        return
    live = await session.execute(
        select(col(RuleTimer.elder_id), col(RuleTimer.kind)).where(
            tuple_(col(RuleTimer.elder_id), col(RuleTimer.kind)).in_(
                list({(elder_id, d.kind) for elder_id, _, d in timers})
            ),
            col(RuleTimer.fired_at).is_(None),
            ~col(RuleTimer.cancelled),
        )
    )
    started = {(int(elder_id), str(kind)) for elder_id, kind in live}
    for elder_id, device_id, decision in timers:
        if (elder_id, decision.kind) not in started:
            started.add((elder_id, decision.kind))
            session.add(
                RuleTimer(
                    elder_id=elder_id,
                    device_id=device_id,
                    kind=decision.kind,
                    due_at=decision.due_at,
                )
            )


async def _open_alert(session: AsyncSession, elder_id: int, kind: str) -> Alert | None:
    result = await session.execute(
        select(Alert)
        .where(
            col(Alert.elder_id) == elder_id,
            col(Alert.kind) == kind,
            col(Alert.status) != "resolved",
        )
        .with_for_update()
    )
    return result.scalars().first()


def _new_alert(
    elder: Elder,
    decision: rules.RaiseAlert,
    device_id: str | None,
    chain: list[Region],
    now: datetime,
    timezone: str = "Asia/Shanghai",
) -> dict[str, Any]:
    """The row of a newly raised alert: its ladder snapshotted from the region chain (with the
    elder's night hours, when a call-out calls at once)."""
    ladder = replace(
        ladder_for(chain),
        night_start=elder.night_start,
        night_end=elder.night_end,
        timezone=timezone,
    )
    respond_by: datetime | None = None
    if decision.respond_within is not None:
        # e.g. a welfare check within 2 h: the ladder stretched to that window
        ladder = ladder.for_window(decision.respond_within)
        respond_by = now + decision.respond_within
    elif decision.priority <= rules.P2:
        respond_by = now + timedelta(minutes=ladder.respond_minutes)
    return {
        "elder_id": elder.id,
        "village_id": elder.village_id,
        "township_id": next((r.id for r in chain if r.level == "township"), None),
        "county_id": next((r.id for r in chain if r.level == "county"), None),
        "device_id": device_id,
        "kind": decision.kind,
        "priority": decision.priority,
        "status": AlertStatus.raised,
        "raised_at": now,
        "respond_by": respond_by,
        "trigger_count": 1,
        "last_trigger_at": now,
        "call_120": decision.call_120,
        "ladder": ladder.snapshot(),
        "ranking": [],
        "note": "",
        "at_risk": False,
        "breached": False,
        "cancel_requested": False,
        "next_check_at": now if respond_by is not None else None,
    }


def _insert_alerts(
    rows: list[dict[str, Any]], now: datetime, actor: str | None, *, notify: bool
) -> tuple[Select[Any], dict[str, Any]]:
    """One statement (one round trip on the gateway's ack path): the alerts inserted in the
    given order (ON CONFLICT on the partial unique index: two gateways raising at once make one
    alert), RETURNING whole rows, each one's "raised" timeline entry, and the watchers' NOTIFY
    when a response waits for them (delivered on commit, once per transaction). `actor` None:
    each alert's raising device ("device:<id>"). Returns the statement and its parameters."""
    columns = sorted(rows[0])
    params: dict[str, Any] = {
        f"{name}_{i}": row[name] for i, row in enumerate(rows) for name in columns
    }
    params["raised_at"] = now.replace(microsecond=0)
    params["actor"] = actor
    return _insert_alerts_statement(tuple(columns), len(rows), notify), params


@functools.lru_cache(maxsize=128)
def _insert_alerts_statement(columns: tuple[str, ...], count: int, notify: bool) -> Select[Any]:
    """`_insert_alerts`'s statement for `count` rows, built once (see `_REGION_WALK`)."""
    new_alert = (
        insert(Alert)
        .values(
            [
                {name: bindparam(f"{name}_{i}", type_=_ALERTS.c[name].type) for name in columns}
                for i in range(count)
            ]
        )
        .on_conflict_do_nothing(
            index_elements=["elder_id", "kind"], index_where=text("status <> 'resolved'")
        )
        .returning(*_ALERTS.columns)
        .cte("new_alert")
    )
    raised_entry = (
        insert(AlertTimelineEntry)
        .from_select(
            ["alert_id", "at", "actor", "action", "detail"],
            select(
                new_alert.c.id,
                bindparam("raised_at", type_=DateTime(timezone=True)),
                func.coalesce(
                    bindparam("actor", type_=String), func.concat("device:", new_alert.c.device_id)
                ),
                literal("raised"),
                func.json_build_object("kind", new_alert.c.kind, "priority", new_alert.c.priority),
            ),
        )
        .cte("raised_entry")
    )
    selected: list[Any] = [aliased(Alert, new_alert)]
    if notify:
        selected.append(func.pg_notify(ALERTS_CHANNEL, ""))
    return select(*selected).add_cte(raised_entry)


async def raise_or_join(
    session: AsyncSession,
    elder: Elder,
    decision: rules.RaiseAlert,
    device_id: str | None,
    now: datetime,
    actor: str,
    *,
    respond_now: bool = True,
    timezone: str = "Asia/Shanghai",
) -> Alert:
    """One open alert per elder and kind: a repeat adds to its trigger count and timeline.

    An alert whose 15-minute clock runs needs its response started: responders ranked,
    guardians told, step 0 of the ladder. With `respond_now` that happens in this transaction.
    Without it (the gateway's ack path) only the alert is written, with `ranked_at` NULL and
    `next_check_at` now, and the watchers are NOTIFYed on commit: a watcher claims it (SKIP
    LOCKED) and starts the response in its batch. Nothing is lost if that watcher dies: the
    row stays due until a watcher's transaction that started it commits.
    """
    assert elder.id is not None
    chain = await region_chain(session, elder.village_id)
    values = _new_alert(elder, decision, device_id, chain, now, timezone)
    notify = values["respond_by"] is not None and not respond_now
    inserted = await session.execute(*_insert_alerts([values], now, actor, notify=notify))
    row = inserted.first()
    if row is None:
        alert = await _open_alert(session, elder.id, decision.kind)
        assert alert is not None and alert.id is not None
        await _join(session, alert, decision, now, actor, respond_now=respond_now)
        return alert
    alert = row[0]
    assert isinstance(alert, Alert)
    new_id = pk(alert)
    if decision.call_120:
        await add_timeline(session, new_id, now, "system", "call_120_flagged")
    if alert.respond_by is not None and respond_now:
        await start_response(session, alert, now, elder=elder, chain=chain)
        await advance(session, alert, now)
    log.info("alert_raised", alert=alert.code, kind=decision.kind, priority=decision.priority)
    return alert


# The gateway NOTIFYs this channel when it raises an alert; watchers LISTEN on it.
ALERTS_CHANNEL = "anxin_alerts"


async def wake_watchers(session: AsyncSession) -> None:
    """NOTIFY the watchers (once per transaction, delivered on commit): an alert is due now."""
    await notify_on_commit(session, ALERTS_CHANNEL)


async def _join(
    session: AsyncSession,
    alert: Alert,
    decision: rules.RaiseAlert,
    now: datetime,
    actor: str,
    *,
    respond_now: bool = True,
    presses: int = 1,
) -> None:
    """`presses` events join the alert at once (`decision` the most urgent of them)."""
    assert alert.id is not None
    alert.trigger_count += presses
    alert.last_trigger_at = now
    detail: dict[str, Any] = {"trigger_count": alert.trigger_count}
    if presses > 1:
        detail["presses"] = presses
    await add_timeline(session, alert.id, now, actor, "triggered_again", **detail)
    if decision.priority < alert.priority:
        alert.priority = decision.priority
        await add_timeline(session, alert.id, now, actor, "escalated", priority=decision.priority)
        if alert.respond_by is None and decision.priority <= rules.P2:
            # Device trouble became urgent (power out over 4 h, elder alone): the 15-minute
            # clock starts now, with the ladder snapshotted when the alert was raised.
            ladder = rules.Ladder.from_snapshot(alert.ladder)
            alert.respond_by = now + timedelta(minutes=ladder.respond_minutes)
            alert.next_check_at = now
            if respond_now:
                await start_response(session, alert, now)
                await advance(session, alert, now)
            else:
                await wake_watchers(session)
    if alert.accepted_by is not None and alert.status in ("accepted", "on_scene"):
        await outbox.tell_pressed_again(
            session, alert, now, window=rules.pressed_again_window(alert.raised_at, now)
        )


async def request_cancel(
    session: AsyncSession, elder: Elder, now: datetime, actor: str
) -> int | None:
    """An SOS cancel within 2 minutes marks the alert; only a person closes it."""
    assert elder.id is not None
    alert = await _open_alert(session, elder.id, "sos")
    if alert is None or alert.id is None:
        return None
    if alert.cancel_requested:
        await add_timeline(
            session, alert.id, now, actor, "cancel_ignored", reason="already_requested"
        )
    elif rules.may_cancel(alert.raised_at, now):
        # Marked for the operator, who phones the elder to confirm; the ladder runs on.
        alert.cancel_requested = True
        await add_timeline(session, alert.id, now, actor, "cancel_requested")
    else:
        await add_timeline(session, alert.id, now, actor, "cancel_ignored", reason="too_late")
    return alert.id


async def power_restored(
    session: AsyncSession, elder: Elder, device_id: str, now: datetime
) -> None:
    """Power back before it became urgent: the device trouble fixed itself. Once the
    15-minute clock runs (alone over 4 h), a person closes the alert."""
    assert elder.id is not None
    alert = await _open_alert(session, elder.id, "power_lost")
    if alert is not None and alert.respond_by is None and alert.device_id == device_id:
        await resolve(session, alert, now, actor=f"device:{device_id}", outcome="device_recovered")


async def device_back_online(
    session: AsyncSession, elder: Elder, device_id: str, now: datetime
) -> None:
    assert elder.id is not None
    alert = await _open_alert(session, elder.id, "offline")
    if alert is not None and alert.device_id == device_id:
        await resolve(session, alert, now, actor=f"device:{device_id}", outcome="device_recovered")


@dataclass(frozen=True)
class PhoneIn:
    """A phone-in (代报警) as the operator took it: what happened and who called."""

    kind: str  # a key of rules.PHONE_IN_KINDS
    caller_role: str  # one of rules.PHONE_IN_CALLERS
    caller_phone: str | None
    note: str


async def raise_phone_in(
    session: AsyncSession,
    elder: Elder,
    call: PhoneIn,
    now: datetime,
    actor: str,
    *,
    timezone: str = "Asia/Shanghai",
) -> tuple[Alert, bool]:
    """An operator raises an alert for a caller: the same raise and ladder as a device's
    (`raise_or_join`, its 15-minute clock from `now`, the call), marked `phone_in` with the
    caller on the row and the timeline. An elder already in an open alert (of any kind, the
    most urgent first) is not raised twice: the call joins that alert, and may make it more
    urgent. Returns the alert and whether it joined."""
    assert elder.id is not None
    decision = rules.PHONE_IN_KINDS[call.kind]
    detail: dict[str, Any] = {"kind": call.kind, "caller": call.caller_role}
    if call.note:
        detail["note"] = call.note[:200]
    open_alert = (
        (
            await session.execute(
                select(Alert)
                .where(col(Alert.elder_id) == elder.id, col(Alert.status) != "resolved")
                .order_by(col(Alert.priority), col(Alert.raised_at))
                .limit(1)
                .with_for_update()
            )
        )
        .scalars()
        .first()
    )
    if open_alert is not None:
        await _join(session, open_alert, replace(decision, kind=open_alert.kind), now, actor)
        await add_timeline(session, pk(open_alert), now, actor, "phone_in", joined=True, **detail)
        log.info("phone_in_joined", alert=open_alert.code, kind=call.kind, caller=call.caller_role)
        return open_alert, True
    alert = await raise_or_join(session, elder, decision, None, now, actor, timezone=timezone)
    joined = alert.source != "device" or alert.trigger_count > 1  # a raise at the same moment
    if not joined:
        alert.source = "phone_in"
        alert.caller_role = call.caller_role
        alert.caller_phone = call.caller_phone
    await add_timeline(session, pk(alert), now, actor, "phone_in", joined=joined, **detail)
    log.info("phone_in", alert=alert.code, kind=call.kind, caller=call.caller_role)
    return alert, joined


async def unregistered_caller(
    session: AsyncSession, chain: list[Region], address: str, now: datetime
) -> Elder | None:
    """A caller not in the registry: an elder row of their own so the alert and its ladder run
    unchanged, at the free-text address and the village's position (its township's, its
    county's when the village has none; `chain` is the village's, village first), archived at
    once so it stays out of the registry lists, the visits and the coverage (an operator
    registers the person later). None when no region of the chain has a position."""
    placed = next((r for r in chain if r.lat is not None and r.lon is not None), None)
    if placed is None or placed.lat is None or placed.lon is None:
        return None
    elder = Elder(
        code=f"LD-{now:%y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}",
        name="未登记来电人",
        village_id=pk(chain[0]),
        address=address,
        lat=placed.lat,
        lon=placed.lon,
        archived_at=now,
    )
    session.add(elder)
    await session.flush()
    return elder
