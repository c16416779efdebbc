"""Alert service database functions: events become alerts, the ladder runs, people act.

Every function here runs inside the caller's transaction; none commits. The watcher's loop and
the gateway's batch decide where a transaction starts and ends.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
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

import dispatcher.service as dispatch
from alert_service import figures, rules
from alert_service.models import (
    OPEN_STATUSES,
    Alert,
    AlertStatus,
    AlertTimelineEntry,
    AttemptAnswer,
    DispatchAttempt,
    RuleTimer,
)
from anxin import metrics
from anxin.db import notify_on_commit
from anxin.logging import get_logger
from anxin.models import Device, Elder, Region, Responder, pk

log = get_logger("alert_service")
_ALERTS = Alert.__table__  # type: ignore[attr-defined]
OUTCOMES = ("handled", "false_alarm", "hospital", "elder_cancelled", "device_recovered")
RETRY_FAILED_AFTER = timedelta(seconds=30)


def profile_of(elder: Elder, timezone: str) -> rules.ElderProfile:
    return rules.ElderProfile(
        living_alone=elder.living_alone,
        wanders=elder.wanders,
        night_start=elder.night_start,
        night_end=elder.night_end,
        timezone=timezone,
        thresholds={k: float(v) for k, v in (elder.thresholds or {}).items()},
    )


async def add_timeline(
    session: AsyncSession,
    alert_id: int,
    at: datetime,
    actor: str,
    action: str,
    **detail: Any,
) -> None:
    session.add(
        AlertTimelineEntry(
            alert_id=alert_id,
            at=at.replace(microsecond=0),
            actor=actor,
            action=action,
            detail=detail,
        )
    )


async def region_chain(session: AsyncSession, village_id: int) -> list[Region]:
    """The village, its township and its county (nearest first)."""
    return (await region_chains(session, {village_id})).get(village_id, [])


def _region_walk() -> Select[Any]:
    """Each village's chain up `parent_id`, for the `village_ids` bound at execution."""
    walk = (
        select(
            col(Region.id).label("start"),
            col(Region.id).label("region_id"),
            literal(0).label("depth"),
        )
        .where(col(Region.id).in_(bindparam("village_ids", expanding=True)))
        .cte("region_walk", recursive=True)
    )
    up = aliased(Region)
    walk = walk.union_all(
        select(walk.c.start, col(up.parent_id), walk.c.depth + 1)
        .join(up, col(up.id) == walk.c.region_id)
        .where(col(up.parent_id).is_not(None), walk.c.depth < 3)
    )
    return (
        select(Region, walk.c.start)
        .join(walk, walk.c.region_id == col(Region.id))
        .order_by(walk.c.start, walk.c.depth)
    )


# Built once: a CTE and an alias copy every column of the table they wrap, in reference
# cycles. Built per call, on the gateway's ack path, they were most of the cyclic garbage
# behind its 30–70 ms collector pauses (docs/sizing.md).
_REGION_WALK = _region_walk()


async def region_chains(session: AsyncSession, village_ids: set[int]) -> dict[int, list[Region]]:
    """`region_chain` for many villages in one query (a recursive walk up `parent_id`)."""
    if not village_ids:
        return {}
    rows = await session.execute(_REGION_WALK, {"village_ids": sorted(village_ids)})
    chains: dict[int, list[Region]] = {}
    for region, start in rows:
        chains.setdefault(start, []).append(region)
    return chains


def _ladder_for(chain: list[Region]) -> rules.Ladder:
    merged: dict[str, Any] = {}
    for region in reversed(chain):  # county first, the village's own settings last
        merged.update(region.ladder or {})
    respond = chain[0].response_minutes if chain else 15
    merged.setdefault("respond_minutes", respond)
    return rules.Ladder.from_snapshot(merged)


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
                session, elder, decision, device.id, now, actor, respond_now=respond_now
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
        await _apply_run(session, run, now, alert_ids)
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
    await _apply_run(session, run, now, alert_ids)
    return alert_ids


async def _apply_run(
    session: AsyncSession, run: _Run, now: datetime, alert_ids: list[int | None]
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
            _new_alert(e.elder, d, e.device.id, chains.get(e.elder.village_id, []), now)
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
) -> dict[str, Any]:
    """The row of a newly raised alert: its ladder snapshotted from the region chain."""
    ladder = _ladder_for(chain)
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
    values = _new_alert(elder, decision, device_id, chain, now)
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
        await _start_response(session, alert, now, elder=elder, chain=chain)
        await advance(session, alert, now)
    log.info("alert_raised", alert=alert.code, kind=decision.kind, priority=decision.priority)
    return alert


# The gateway NOTIFYs this channel when it raises an alert; watchers LISTEN on it.
ALERTS_CHANNEL = "anxin_alerts"


async def wake_watchers(session: AsyncSession) -> None:
    """NOTIFY the watchers (once per transaction, delivered on commit): an alert is due now."""
    await notify_on_commit(session, ALERTS_CHANNEL)


def needs_start(alert: Alert) -> bool:
    """Its clock runs but its response has not started (no ranking, no guardians, no step 0)."""
    return alert.respond_by is not None and alert.ranked_at is None


async def _start_response(
    session: AsyncSession,
    alert: Alert,
    now: datetime,
    *,
    elder: Elder | None = None,
    chain: list[Region] | None = None,
    ranking: list[dict[str, Any]] | None = None,
    guardians: bool = True,
) -> None:
    """Rank the responders and tell the guardians (the caller runs step 0 next, `advance`).

    The caller holds the alert's row lock; `ranked_at` marks it done, so it runs once per
    alert. The watcher passes `elder` and `ranking`, computed for its whole batch at once.
    """
    assert alert.id is not None
    if elder is None:
        elder = await session.get(Elder, alert.elder_id)
        if elder is None:
            return
    if ranking is None:
        if chain is None:
            chain = await region_chain(session, alert.village_id)
        ranking = await dispatch.rank_for_alert(session, elder, chain, now)
    alert.ranking = ranking
    alert.ranked_at = now
    await add_timeline(session, alert.id, now, "system", "ranked", candidates=len(ranking))
    if guardians and rules.Ladder.from_snapshot(alert.ladder).notify_guardians:
        await dispatch.notify_guardians(session, alert, elder, now)


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
                await _start_response(session, alert, now)
                await advance(session, alert, now)
            else:
                await wake_watchers(session)
    if alert.accepted_by is not None and alert.status in ("accepted", "on_scene"):
        await dispatch.tell_pressed_again(session, alert, now)


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


# --- the ladder -----------------------------------------------------------------------------


async def _attempts(session: AsyncSession, alert_id: int) -> list[DispatchAttempt]:
    result = await session.execute(
        select(DispatchAttempt)
        .where(col(DispatchAttempt.alert_id) == alert_id)
        .order_by(col(DispatchAttempt.step))
    )
    return list(result.scalars())


def _state(alert: Alert, attempts: list[DispatchAttempt]) -> rules.AlertState:
    return rules.AlertState(
        priority=alert.priority,
        status=alert.status,
        raised_at=alert.raised_at,
        respond_by=alert.respond_by,
        accepted_at=alert.accepted_at,
        accepted_by=alert.accepted_by,
        on_scene_at=alert.on_scene_at,
        at_risk=alert.at_risk,
        breached=alert.breached,
        reminder_sent=alert.reminder_sent_at is not None,
        attempts=tuple(
            rules.AttemptState(a.responder_id, a.role, a.asked_at, a.answer, a.eta_minutes)
            for a in attempts
        ),
        ranking=tuple(
            rules.Candidate(int(c["responder_id"]), str(c["kind"]), float(c["eta_minutes"]))
            for c in alert.ranking
        ),
    )


async def advance(
    session: AsyncSession,
    alert: Alert,
    now: datetime,
    attempts: list[DispatchAttempt] | None = None,
) -> None:
    """Run every ladder step due at `now` and set the alert's next timer. Idempotent.

    The caller holds the alert's row lock, and every writer of its attempts takes that lock
    first, so the attempts read once here stay true while the ladder settles. `attempts` may
    be passed in (the watcher loads a whole batch's in one query).
    """
    assert alert.id is not None
    if needs_start(alert):
        # Whoever advances an alert first (the watcher, or a person acting within the few
        # milliseconds before it) starts its response: no step 0 without a ranking.
        await _start_response(session, alert, now)
    ladder = rules.Ladder.from_snapshot(alert.ladder)
    if attempts is None:
        attempts = await _attempts(session, alert.id)
    # No flush before each statement: the timeline rows and alert updates of a whole batch go
    # to the database together at commit (a few statements instead of a dozen per alert).
    with session.no_autoflush:
        for _ in range(8):  # each pass changes state; a handful of passes settles any ladder
            decided = rules.plan(_state(alert, attempts), ladder, now)
            if not decided.actions:
                alert.next_check_at = decided.next_check_at
                return
            for action in decided.actions:
                await _apply_action(session, alert, attempts, action, now)
    alert.next_check_at = now + timedelta(seconds=1)


async def _apply_action(
    session: AsyncSession,
    alert: Alert,
    attempts: list[DispatchAttempt],
    action: rules.Action,
    now: datetime,
) -> None:
    assert alert.id is not None
    if isinstance(action, rules.AskResponder):
        responder = await session.get(Responder, action.responder_id)
        # An aide who replied 下班 since the ranking is not asked: the next one is, at once.
        off_duty = responder is not None and action.role == "aide" and not responder.on_duty
        if responder is None or off_duty:
            # Removed from the registry since the ranking, or gone off duty: drop them so the
            # ladder moves on (asking them would record nothing, and the same step would come
            # back forever).
            alert.ranking = [c for c in alert.ranking if c["responder_id"] != action.responder_id]
            await add_timeline(
                session,
                alert.id,
                now,
                "system",
                "responder_off_duty" if off_duty else "responder_missing",
                responder_id=action.responder_id,
            )
            return
        await dispatch.ask_responder(
            session, alert, action.responder_id, action.role, step=len(attempts), now=now
        )
        line = next((c for c in alert.ranking if c["responder_id"] == action.responder_id), {})
        # The row was inserted by the dispatcher; this copy keeps the list true for the next
        # pass (it is not added to the session).
        attempts.append(
            DispatchAttempt(
                alert_id=alert.id,
                responder_id=action.responder_id,
                step=len(attempts),
                role=action.role,
                asked_at=now,
                eta_minutes=line.get("eta_minutes"),
                answer=AttemptAnswer.pending,
            )
        )
        if alert.status == AlertStatus.raised:
            alert.status = AlertStatus.dispatching
        await add_timeline(
            session,
            alert.id,
            now,
            "system",
            "asked",
            responder_id=action.responder_id,
            role=action.role,
            reason=action.reason,
        )
    elif isinstance(action, rules.TimeOutAttempt):
        for attempt in attempts:
            if attempt.responder_id == action.responder_id and attempt.answer == "pending":
                # A loaded row: the unit of work writes it at commit, with the batch's others.
                attempt.answer = AttemptAnswer.timed_out
                attempt.answered_at = now
        await add_timeline(
            session, alert.id, now, "system", "no_answer", responder_id=action.responder_id
        )
    elif isinstance(action, rules.MarkAtRisk):
        alert.at_risk = True
        await add_timeline(session, alert.id, now, "system", "at_risk", reason=action.reason)
    elif isinstance(action, rules.MarkBreached):
        alert.breached = True
        if action.arrived_late:
            await add_timeline(session, alert.id, now, "system", "breached", arrived_late=True)
        else:
            await add_timeline(session, alert.id, now, "system", "breached")
    elif isinstance(action, rules.RemindTaker):
        alert.reminder_sent_at = now
        await dispatch.remind_taker(session, alert, action.responder_id, now)
        await add_timeline(
            session, alert.id, now, "system", "reminded", responder_id=action.responder_id
        )


async def _set_answer(
    session: AsyncSession, alert_id: int, responder_id: int, answer: str, now: datetime
) -> None:
    await session.execute(
        update(DispatchAttempt)
        .where(
            col(DispatchAttempt.alert_id) == alert_id,
            col(DispatchAttempt.responder_id) == responder_id,
            col(DispatchAttempt.answer) == AttemptAnswer.pending,
        )
        .values(answer=answer, answered_at=now)
    )


# --- people act -----------------------------------------------------------------------------


async def lock_alert(session: AsyncSession, alert_id: int) -> Alert | None:
    result = await session.execute(select(Alert).where(col(Alert.id) == alert_id).with_for_update())
    return result.scalars().first()


async def accept(
    session: AsyncSession, alert: Alert, responder_id: int, now: datetime, actor: str
) -> bool:
    """The first accept wins; returns False when someone else already has it."""
    assert alert.id is not None
    if alert.status == AlertStatus.resolved:
        return False
    if alert.accepted_by is not None and alert.accepted_by != responder_id:
        return False
    if alert.accepted_by == responder_id:
        return True
    alert.accepted_by = responder_id
    alert.accepted_at = now
    if alert.status in (AlertStatus.raised, AlertStatus.dispatching):
        alert.status = AlertStatus.accepted
    await _set_answer(session, alert.id, responder_id, AttemptAnswer.accepted, now)
    await add_timeline(session, alert.id, now, actor, "accepted", responder_id=responder_id)
    await dispatch.tell_others_handled(session, alert, responder_id, now)
    await session.execute(
        update(DispatchAttempt)
        .where(
            col(DispatchAttempt.alert_id) == alert.id,
            col(DispatchAttempt.answer) == AttemptAnswer.pending,
        )
        .values(answer=AttemptAnswer.superseded, answered_at=now)
    )
    await advance(session, alert, now)
    return True


async def decline(
    session: AsyncSession, alert: Alert, responder_id: int, now: datetime, actor: str
) -> None:
    assert alert.id is not None
    if alert.status == AlertStatus.resolved:
        return
    if alert.accepted_by == responder_id and alert.on_scene_at is None:
        # The taker cannot go after all (the reminder SMS invites a `0`): the alert is open
        # again and the ladder goes on from where it stands, at once.
        alert.accepted_by = None
        alert.accepted_at = None
        alert.status = AlertStatus.dispatching
        alert.reminder_sent_at = None
        await session.execute(
            update(DispatchAttempt)
            .where(
                col(DispatchAttempt.alert_id) == alert.id,
                col(DispatchAttempt.responder_id) == responder_id,
                col(DispatchAttempt.answer) == AttemptAnswer.accepted,
            )
            .values(answer=AttemptAnswer.declined, answered_at=now)
        )
        await add_timeline(session, alert.id, now, actor, "withdrew", responder_id=responder_id)
    else:
        await _set_answer(session, alert.id, responder_id, AttemptAnswer.declined, now)
        await add_timeline(session, alert.id, now, actor, "declined", responder_id=responder_id)
    await advance(session, alert, now)  # the next responder at once


async def attempt_failed(
    session: AsyncSession, alert: Alert, responder_id: int, now: datetime, reason: str
) -> None:
    assert alert.id is not None
    await _set_answer(session, alert.id, responder_id, AttemptAnswer.failed, now)
    await add_timeline(
        session, alert.id, now, "system", "sms_failed", responder_id=responder_id, reason=reason
    )
    await advance(session, alert, now)


async def on_scene(session: AsyncSession, alert: Alert, now: datetime, actor: str) -> None:
    """Met when a responder confirms on-scene or an operator records it."""
    assert alert.id is not None
    if alert.on_scene_at is not None or alert.status == AlertStatus.resolved:
        return
    alert.on_scene_at = now
    alert.status = AlertStatus.on_scene
    met = alert.respond_by is None or now <= alert.respond_by
    await add_timeline(session, alert.id, now, actor, "on_scene", met=met)
    await advance(session, alert, now)


async def resolve(
    session: AsyncSession,
    alert: Alert,
    now: datetime,
    *,
    actor: str,
    outcome: str,
    note: str = "",
    verified_by_phone: bool = False,
) -> None:
    assert alert.id is not None
    if alert.status == AlertStatus.resolved:
        return
    if verified_by_phone and alert.on_scene_at is None:
        # A person who verified by phone meets the rule (e.g. a false alarm confirmed by call).
        alert.on_scene_at = now
        await add_timeline(session, alert.id, now, actor, "verified_by_phone")
    alert.status = AlertStatus.resolved
    alert.resolved_at = now
    alert.resolved_by = actor[:64]
    alert.outcome = outcome
    if note:
        alert.note = note[:1000]
    alert.next_check_at = None
    await add_timeline(session, alert.id, now, actor, "resolved", outcome=outcome, note=note[:200])
    await session.execute(
        update(DispatchAttempt)
        .where(
            col(DispatchAttempt.alert_id) == alert.id,
            col(DispatchAttempt.answer) == AttemptAnswer.pending,
        )
        .values(answer=AttemptAnswer.superseded, answered_at=now)
    )


# --- the watcher ----------------------------------------------------------------------------


async def run_due_alerts(
    session: AsyncSession,
    now: datetime,
    limit: int = 100,
    *,
    isolate: bool = False,
    urgent: bool | None = None,
) -> int:
    """Claim alerts whose timer is due (SKIP LOCKED: any number of watchers) and advance them.
    `urgent`: only P1/P2 alerts (True), only the others (False), or all (None).

    With `isolate`, each alert runs in a savepoint and one that fails is put off for
    RETRY_FAILED_AFTER instead of failing the whole batch again and again.
    """
    due = [col(Alert.next_check_at) <= now]
    if urgent is not None:
        due.append(col(Alert.priority) <= rules.P2 if urgent else col(Alert.priority) > rules.P2)
    # The elder comes with the claim: new alerts need them for ranking and the call-out SMS.
    claimed = await session.execute(
        select(Alert, Elder)
        .join(Elder, col(Elder.id) == col(Alert.elder_id))
        .where(*due)
        .order_by(col(Alert.next_check_at))
        .limit(limit)
        .with_for_update(of=Alert, skip_locked=True)
    )
    pairs = [(alert, elder) for alert, elder in claimed]
    if not pairs:
        return 0
    alerts = [alert for alert, _ in pairs]
    for alert in alerts:
        if alert.next_check_at is not None:
            metrics.observe_timer_lateness(alert.next_check_at, now)
    elders = {pk(elder): elder for _, elder in pairs}
    ids = [pk(a) for a in alerts]
    attempts: dict[int, list[DispatchAttempt]] = {alert_id: [] for alert_id in ids}
    loaded = await session.execute(
        select(DispatchAttempt)
        .where(col(DispatchAttempt.alert_id).in_(ids))
        .order_by(col(DispatchAttempt.alert_id), col(DispatchAttempt.step))
    )
    for attempt in loaded.scalars():
        attempts[attempt.alert_id].append(attempt)
    # Rows the ladder's SMS need (responders, villages), held in a local while the batch runs:
    # the session's identity map keeps only rows someone still refers to, and then answers
    # `session.get` for them without a query.
    batch_rows: list[object] = [*elders.values()]
    # New alerts from the gateway: rank them all at once (a handful of queries per batch),
    # tell their guardians in one INSERT. Nothing is flushed before the commit: the timeline
    # rows and alert updates of the whole batch go to the database together.
    starting = [a for a in alerts if needs_start(a)]
    if starting and not isolate:
        chains = await region_chains(session, {a.village_id for a in starting})
        batch_rows.extend(r for chain in chains.values() for r in chain)
        with session.no_autoflush:
            rankings = await dispatch.rank_for_alerts(
                session,
                [(elders[a.elder_id], chains.get(a.village_id, [])) for a in starting],
                now,
                keep=batch_rows,
            )
            for alert, ranking in zip(starting, rankings, strict=True):
                await _start_response(
                    session,
                    alert,
                    now,
                    elder=elders[alert.elder_id],
                    ranking=ranking,
                    guardians=False,
                )
            await dispatch.notify_guardians_many(
                session,
                [
                    (a, elders[a.elder_id])
                    for a in starting
                    if rules.Ladder.from_snapshot(a.ladder).notify_guardians
                ],
                now,
            )
    # What the other call-out SMS need, in two queries rather than two per alert.
    have = {pk(r) for r in batch_rows if isinstance(r, Responder)}
    responder_ids = {int(c["responder_id"]) for a in alerts for c in a.ranking} - have
    if responder_ids:
        batch_rows.extend(
            (
                await session.execute(select(Responder).where(col(Responder.id).in_(responder_ids)))
            ).scalars()
        )
    have = {pk(r) for r in batch_rows if isinstance(r, Region)}
    village_ids = {a.village_id for a in alerts} - have
    if village_ids:
        batch_rows.extend(
            (await session.execute(select(Region).where(col(Region.id).in_(village_ids)))).scalars()
        )
    if not isolate:
        # Every call-out of the batch in two INSERTs (attempts, SMS), not two per alert.
        async with dispatch.batched_asks(session):
            for alert in alerts:
                await advance(session, alert, now, attempts[pk(alert)])
    for alert in alerts if isolate else ():
        try:
            async with session.begin_nested():
                await advance(session, alert, now)
        except Exception as exc:
            log.error("ladder_step_failed", alert=alert.code, error=repr(exc))
            await session.refresh(alert)
            alert.next_check_at = now + RETRY_FAILED_AFTER
    del batch_rows
    return len(alerts)


async def run_due_rule_timers(
    session: AsyncSession, now: datetime, timezone: str, limit: int = 100, *, isolate: bool = False
) -> int:
    """Fire due rule timers (a bed exit with no return within 20 minutes raises its alert)."""
    result = await session.execute(
        select(RuleTimer)
        .where(
            col(RuleTimer.due_at) <= now,
            col(RuleTimer.fired_at).is_(None),
            # `NOT cancelled`, as the partial index says: Postgres cannot match `IS false`
            ~col(RuleTimer.cancelled),
        )
        .order_by(col(RuleTimer.due_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    timers = list(result.scalars())
    for timer in timers:
        metrics.observe_timer_lateness(timer.due_at, now)
    for timer in timers:
        if not isolate:
            await _fire(session, timer, now)
            continue
        try:
            async with session.begin_nested():
                await _fire(session, timer, now)
        except Exception as exc:
            # Left unfired: it is retried on the next tick, without holding up the others.
            log.error("rule_timer_failed", timer=timer.id, error=repr(exc))
    return len(timers)


async def next_due_at(session: AsyncSession, *, urgent: bool) -> datetime | None:
    """The earliest timer of one of the watcher's two lanes: P1/P2 alerts and rule timers (which
    raise P2s), or P3 alerts. Index lookups (the partial indexes' heads)."""
    alerts_next = select(func.min(col(Alert.next_check_at))).where(
        col(Alert.priority) <= rules.P2 if urgent else col(Alert.priority) > rules.P2
    )
    if urgent:
        timers_next = (
            select(func.min(col(RuleTimer.due_at)))
            .where(col(RuleTimer.fired_at).is_(None), ~col(RuleTimer.cancelled))
            .scalar_subquery()
        )
        alerts_next = select(func.least(alerts_next.scalar_subquery(), timers_next))
    value = (await session.execute(alerts_next)).scalar()
    return value if isinstance(value, datetime) else None


async def _fire(session: AsyncSession, timer: RuleTimer, now: datetime) -> None:
    timer.fired_at = now
    elder = await session.get(Elder, timer.elder_id)
    if elder is None:
        return
    await raise_or_join(
        session, elder, rules.timer_alert(timer.kind), timer.device_id, now, "system"
    )


async def open_alert_count(session: AsyncSession) -> int:
    result = await session.execute(
        select(func.count()).select_from(Alert).where(col(Alert.status).in_(OPEN_STATUSES))
    )
    return int(result.scalar_one())


# --- compliance figures ---------------------------------------------------------------------


async def compliance(
    session: AsyncSession,
    region_ids: set[int],
    start: datetime,
    end: datetime,
    timezone: str,
    now: datetime,
) -> list[figures.MonthFigures]:
    """Figures per township and county in `region_ids`, for alerts raised in [start, end)."""
    rows = await session.execute(
        select(
            col(Alert.township_id),
            col(Alert.county_id),
            col(Alert.priority),
            col(Alert.raised_at),
            col(Alert.respond_by),
            col(Alert.accepted_at),
            col(Alert.on_scene_at),
            col(Alert.resolved_at),
            col(Alert.breached),
            col(Alert.outcome),
            col(Alert.ladder),
            col(Device.kind),
        )
        .outerjoin(Device, col(Device.id) == col(Alert.device_id))
        .where(
            col(Alert.raised_at) >= start,
            col(Alert.raised_at) < end,
            col(Alert.village_id).in_(region_ids),
        )
    )
    facts = [
        figures.AlertFacts(
            township_id=township_id,
            county_id=county_id,
            priority=priority,
            raised_at=raised_at,
            clock_started_at=(
                respond_by
                - timedelta(minutes=rules.Ladder.from_snapshot(ladder or {}).respond_minutes)
                if respond_by is not None
                else None
            ),
            respond_by=respond_by,
            accepted_at=accepted_at,
            on_scene_at=on_scene_at,
            resolved_at=resolved_at,
            breached=breached,
            outcome=outcome,
            device_kind=device_kind,
        )
        for (
            township_id,
            county_id,
            priority,
            raised_at,
            respond_by,
            accepted_at,
            on_scene_at,
            resolved_at,
            breached,
            outcome,
            ladder,
            device_kind,
        ) in rows
    ]
    # A township operator sees their township's figures, not the county's (which would
    # include townships outside their remit).
    return [
        f for f in figures.compliance_figures(facts, timezone, now) if f.region_id in region_ids
    ]


_PLATFORM_GAP = text(
    """
    INSERT INTO alert_timeline (alert_id, at, actor, action, detail)
    SELECT id, :at, 'system', 'platform_gap', CAST(:detail AS json)
      FROM alerts WHERE status <> 'resolved' AND raised_at < :until
    """
)


async def record_platform_gap(session: AsyncSession, *, since: datetime, until: datetime) -> int:
    """Every alert open across the platform's downtime gets one timeline entry for the gap
    (平台中断 25 分钟, 10:02–10:27): an operator reading it later knows why nothing happened
    then. Its age is left as it is: raised_at and respond_by are the alert's own. Returns how
    many alerts got one."""
    minutes = max(1, round((until - since).total_seconds() / 60))
    detail = {"minutes": minutes, "since": since.isoformat(), "until": until.isoformat()}
    result = await session.execute(
        _PLATFORM_GAP,
        {"at": until.replace(microsecond=0), "until": until, "detail": json.dumps(detail)},
    )
    return int(getattr(result, "rowcount", 0) or 0)
