"""The ladder: its response started (ranking, guardians), each due step run, and people's
answers (accept, decline, on scene, resolve) applied to an alert and its dispatch attempts.

The ladder owns the `dispatch_attempts` rows. It calls the dispatcher to rank responders and
write SMS (alert_service → dispatcher, never the reverse). Every function runs inside the
caller's transaction; none commits."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

import dispatcher.service as dispatch
from alert_service import rules
from alert_service.models import (
    Alert,
    AlertStatus,
    AttemptAnswer,
    DispatchAttempt,
)
from alert_service.regions import region_chain
from alert_service.timeline import add_timeline
from anxin.models import Elder, Region, Responder


def needs_start(alert: Alert) -> bool:
    """Its clock runs but its response has not started (no ranking, no guardians, no step 0)."""
    return alert.respond_by is not None and alert.ranked_at is None


async def start_response(
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
        await start_response(session, alert, now)
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
