"""Due timers: alerts whose next check is due and rule timers that fire, claimed with
`FOR UPDATE SKIP LOCKED` so any number of watchers share them. Runs in the caller's
transaction (the watcher's loop)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import (
    func,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alert_service import rules
from alert_service.intake import raise_or_join
from alert_service.ladder import advance, batched_asks, needs_start, rank_for_alerts, start_response
from alert_service.models import (
    Alert,
    DispatchAttempt,
    RuleTimer,
)
from alert_service.regions import region_chains
from anxin import metrics
from anxin.logging import get_logger
from anxin.models import Elder, Region, Responder, pk
from dispatcher import outbox

log = get_logger("alert_service")


RETRY_FAILED_AFTER = timedelta(seconds=30)


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
            rankings = await rank_for_alerts(
                session,
                [(elders[a.elder_id], chains.get(a.village_id, [])) for a in starting],
                now,
                keep=batch_rows,
            )
            for alert, ranking in zip(starting, rankings, strict=True):
                await start_response(
                    session,
                    alert,
                    now,
                    elder=elders[alert.elder_id],
                    ranking=ranking,
                    guardians=False,
                )
            await outbox.notify_guardians_many(
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
        async with batched_asks(session):
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
            await _fire(session, timer, now, timezone)
            continue
        try:
            async with session.begin_nested():
                await _fire(session, timer, now, timezone)
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


async def _fire(session: AsyncSession, timer: RuleTimer, now: datetime, timezone: str) -> None:
    timer.fired_at = now
    elder = await session.get(Elder, timer.elder_id)
    if elder is None:
        return
    await raise_or_join(
        session,
        elder,
        rules.timer_alert(timer.kind),
        timer.device_id,
        now,
        "system",
        timezone=timezone,
    )
