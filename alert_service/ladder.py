"""The ladder: its response started (ranking, guardians), each due step run, and people's
answers (accept, decline, on scene, resolve) applied to an alert and its dispatch attempts.

The ladder owns the `dispatch_attempts` rows. It calls the dispatcher to rank responders and
write SMS (alert_service → dispatcher, never the reverse). Every function runs inside the
caller's transaction; none commits."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, literal, select, union_all, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alert_service import rules
from alert_service.models import Alert, AlertStatus, AttemptAnswer, DispatchAttempt
from alert_service.regions import region_chain
from alert_service.timeline import add_timeline
from anxin.models import Elder, Region, Responder
from dispatcher import calls, outbox, ranking


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
        ranking = (await rank_for_alerts(session, [(elder, chain)], now))[0]
    alert.ranking = ranking
    alert.ranked_at = now
    await add_timeline(session, alert.id, now, "system", "ranked", candidates=len(ranking))
    if guardians and rules.Ladder.from_snapshot(alert.ladder).notify_guardians:
        await outbox.notify_guardians(session, alert, elder, now)


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
            rules.AttemptState(
                a.responder_id,
                a.role,
                a.asked_at,
                a.answer,
                a.eta_minutes,
                called=a.called_at is not None,
                sms_failed=a.sms_failed_at is not None,
            )
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
        await ask(session, alert, action.responder_id, action.role, step=len(attempts), now=now)
        line = next((c for c in alert.ranking if c["responder_id"] == action.responder_id), {})
        # The row was inserted by `ask` (or will be, at the end of a batch); this copy keeps the
        # list true for the next pass (it is not added to the session).
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
    elif isinstance(action, rules.CallResponder):
        await _call(session, alert, attempts, action, now)
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
        await outbox.remind_taker(session, alert, action.responder_id, now)
        await add_timeline(
            session, alert.id, now, "system", "reminded", responder_id=action.responder_id
        )


async def _call(
    session: AsyncSession,
    alert: Alert,
    attempts: list[DispatchAttempt],
    action: rules.CallResponder,
    now: datetime,
) -> None:
    """Call a silent responder's phone about their pending attempt (once: `called_at`)."""
    assert alert.id is not None
    attempt = next(
        a for a in attempts if a.responder_id == action.responder_id and a.answer == "pending"
    )
    attempt.called_at = now  # a loaded row is written at commit; a copy keeps the plan true
    if attempt not in session:
        pending = session.info.get(_PENDING_ASKS)
        queued = pending.find(alert.id, attempt.step) if isinstance(pending, _PendingAsks) else None
        if queued is not None:
            queued["called_at"] = now
        else:
            await session.execute(
                update(DispatchAttempt)
                .where(
                    col(DispatchAttempt.alert_id) == alert.id,
                    col(DispatchAttempt.step) == attempt.step,
                )
                .values(called_at=now)
            )
    await calls.queue_call(
        session,
        alert=alert,
        responder_id=action.responder_id,
        role=action.role,
        step=attempt.step,
        reason=action.reason,
        now=now,
    )
    await add_timeline(
        session,
        alert.id,
        now,
        "system",
        "called",
        responder_id=action.responder_id,
        role=action.role,
        reason=action.reason,
    )


async def set_answers(
    session: AsyncSession,
    *,
    alert_id: int,
    answer: str,
    now: datetime,
    was: Sequence[str] = (AttemptAnswer.pending,),
    responder_id: int | None = None,
    role: str | None = None,
    except_responder: int | None = None,
) -> list[int]:
    """The one writer of attempts' answers: every attempt of this alert whose answer is one of
    `was` (of this responder, of this role, of everyone but `except_responder`, when given) gets
    `answer`; returns the responders whose attempts changed."""
    where = [col(DispatchAttempt.alert_id) == alert_id, col(DispatchAttempt.answer).in_(was)]
    if responder_id is not None:
        where.append(col(DispatchAttempt.responder_id) == responder_id)
    if role is not None:
        where.append(col(DispatchAttempt.role) == role)
    if except_responder is not None:
        where.append(col(DispatchAttempt.responder_id) != except_responder)
    changed = await session.execute(
        update(DispatchAttempt)
        .where(*where)
        .values(answer=answer, answered_at=now)
        .returning(col(DispatchAttempt.responder_id))
    )
    return list(changed.scalars().unique())


async def lock_alert(session: AsyncSession, alert_id: int) -> Alert | None:
    """The alert, locked, as it is once the lock is granted: a copy this session read before
    (e.g. the reply's search for open dispatches) is refreshed, or a second responder taking it
    at the same moment would see it untaken and take it too (two `accepted` seen in the demo
    with voice, an SMS `1` and a key `1` in the same second)."""
    result = await session.execute(
        select(Alert)
        .where(col(Alert.id) == alert_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
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
    await set_answers(
        session,
        alert_id=alert.id,
        responder_id=responder_id,
        answer=AttemptAnswer.accepted,
        now=now,
    )
    await add_timeline(session, alert.id, now, actor, "accepted", responder_id=responder_id)
    others = await session.execute(
        select(col(DispatchAttempt.responder_id))
        .where(
            col(DispatchAttempt.alert_id) == alert.id,
            col(DispatchAttempt.responder_id) != responder_id,
            # Those the operator withdrew were told to stand down already (改派).
            col(DispatchAttempt.answer) != AttemptAnswer.withdrawn,
        )
        .distinct()
    )
    await outbox.tell_others_handled(session, alert, responder_id, list(others.scalars()), now)
    await set_answers(session, alert_id=alert.id, answer=AttemptAnswer.superseded, now=now)
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
        await set_answers(
            session,
            alert_id=alert.id,
            responder_id=responder_id,
            was=(AttemptAnswer.accepted,),
            answer=AttemptAnswer.declined,
            now=now,
        )
        await add_timeline(session, alert.id, now, actor, "withdrew", responder_id=responder_id)
    else:
        await set_answers(
            session,
            alert_id=alert.id,
            responder_id=responder_id,
            answer=AttemptAnswer.declined,
            now=now,
        )
        await add_timeline(session, alert.id, now, actor, "declined", responder_id=responder_id)
    await advance(session, alert, now)  # the next responder at once


async def attempt_failed(
    session: AsyncSession,
    alert: Alert,
    responder_id: int,
    now: datetime,
    reason: str,
    *,
    channel: str = "sms",
) -> None:
    """A call-out could not reach its responder: the next rung at once — but a failed SMS to
    someone this alert's ladder would call (and has not yet) gets the call first, at once."""
    assert alert.id is not None
    if channel == "sms" and rules.Ladder.from_snapshot(alert.ladder).calls(alert.priority):
        marked = await session.execute(
            update(DispatchAttempt)
            .where(
                col(DispatchAttempt.alert_id) == alert.id,
                col(DispatchAttempt.responder_id) == responder_id,
                col(DispatchAttempt.answer) == AttemptAnswer.pending,
                col(DispatchAttempt.called_at).is_(None),
            )
            .values(sms_failed_at=now)
            .returning(col(DispatchAttempt.id))
        )
        if marked.first() is not None:
            await add_timeline(
                session,
                alert.id,
                now,
                "system",
                "sms_failed",
                responder_id=responder_id,
                reason=reason,
                calling=True,
            )
            await advance(session, alert, now)
            return
    changed = await set_answers(
        session, alert_id=alert.id, responder_id=responder_id, answer=AttemptAnswer.failed, now=now
    )
    if channel == "voice" and not changed:
        # They answered meanwhile (an SMS `1` while the phone rang): the call changes nothing.
        await add_timeline(
            session,
            alert.id,
            now,
            "system",
            "call_ended",
            responder_id=responder_id,
            outcome=reason,
        )
        return
    action = "call_failed" if channel == "voice" else "sms_failed"
    await add_timeline(
        session, alert.id, now, "system", action, responder_id=responder_id, reason=reason
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
    await set_answers(session, alert_id=alert.id, answer=AttemptAnswer.superseded, now=now)
    # The family told when it started hears that it is over (issue 20 item 4).
    await outbox.tell_family_all_clear(session, alert, outcome, now)


# --- asking a responder: the attempt row and its call-out SMS ---------------------------------


async def ask(
    session: AsyncSession, alert: Alert, responder_id: int, role: str, *, step: int, now: datetime
) -> None:
    """Ask one responder: the dispatch attempt and its call-out SMS (nothing when the responder
    or the elder is gone). Inside `batched_asks`, only collected."""
    assert alert.id is not None
    sms = await outbox.call_out_sms(
        session, alert=alert, responder_id=responder_id, role=role, step=step
    )
    if sms is None:
        return
    line = next((c for c in alert.ranking if c["responder_id"] == responder_id), {})
    attempt = {
        "alert_id": alert.id,
        "responder_id": responder_id,
        "step": step,
        "role": role,
        "asked_at": now,
        "distance_km": line.get("distance_km"),
        "eta_minutes": line.get("eta_minutes"),
        "answer": AttemptAnswer.pending,
        "sms_failed_at": None,
        "called_at": None,
    }
    pending = session.info.get(_PENDING_ASKS)
    if isinstance(pending, _PendingAsks):
        pending.add(now, attempt, sms)
    else:
        await _write_asks(session, now, [attempt], [sms])


async def _write_asks(
    session: AsyncSession,
    now: datetime,
    attempts: list[dict[str, Any]],
    messages: list[dict[str, Any]],
) -> None:
    """The dispatch attempts and their call-out SMS, one INSERT each (keys make both once)."""
    await session.execute(
        insert(DispatchAttempt)
        .values(attempts)
        .on_conflict_do_nothing(constraint="uq_attempt_alert_responder_step")
    )
    await outbox.queue_sms_many(session, messages, now)


_PENDING_ASKS = "alert_service.pending_asks"


@dataclass
class _PendingAsks:
    by_now: dict[datetime, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = field(
        default_factory=dict
    )

    def add(self, now: datetime, attempt: dict[str, Any], sms: dict[str, Any]) -> None:
        attempts, messages = self.by_now.setdefault(now, ([], []))
        attempts.append(attempt)
        messages.append(sms)

    def find(self, alert_id: int, step: int) -> dict[str, Any] | None:
        """The attempt row collected for this alert's step, not yet written."""
        for attempts, _ in self.by_now.values():
            for attempt in attempts:
                if attempt["alert_id"] == alert_id and attempt["step"] == step:
                    return attempt
        return None


@contextlib.asynccontextmanager
async def batched_asks(session: AsyncSession) -> AsyncIterator[None]:
    """Within the block, `ask` only collects its attempt row and call-out SMS; they
    are written when the block ends, in two statements for the whole block instead of two per
    ask (the watcher's batch). Nothing is written if the block raises (its transaction rolls
    back anyway). Inside the block the new attempts are not yet in the table: the caller keeps
    its own list (the watcher does)."""
    pending = _PendingAsks()
    session.info[_PENDING_ASKS] = pending
    try:
        yield
    finally:
        session.info.pop(_PENDING_ASKS, None)
    for now, (attempts, messages) in pending.by_now.items():
        await _write_asks(session, now, attempts, messages)


async def responder_load(
    session: AsyncSession, responder_ids: set[int], now: datetime
) -> ranking.ResponderLoad:
    """How busy these responders are, for the ranking, in one query: a P1 they have taken
    (marked -1), and how often each was asked in the last 24 hours."""
    load: Any = await session.execute(
        union_all(
            select(col(Alert.accepted_by), literal(-1)).where(
                col(Alert.priority) == 1,
                col(Alert.status).in_(("accepted", "on_scene")),
                col(Alert.accepted_by).in_(responder_ids),
            ),
            select(col(DispatchAttempt.responder_id), func.count())
            .where(
                col(DispatchAttempt.asked_at) >= now - timedelta(hours=24),
                col(DispatchAttempt.responder_id).in_(responder_ids),
            )
            .group_by(col(DispatchAttempt.responder_id)),
        )
    )
    committed: set[int] = set()
    today: dict[int, int] = {}
    for row in load:
        responder_id, n = int(row[0]), int(row[1])
        if n < 0:
            committed.add(responder_id)
        else:
            today[responder_id] = n
    return ranking.ResponderLoad(committed=committed, asked_today=today)


async def rank_for_alerts(
    session: AsyncSession,
    homes: Sequence[tuple[Elder, Sequence[Region]]],
    now: datetime,
    *,
    keep: list[object] | None = None,
) -> list[list[dict[str, Any]]]:
    """The dispatcher's ranking of responders for these elders, with the ladder's load."""
    return await ranking.rank_for_alerts(session, homes, now, load=responder_load, keep=keep)


async def rank_for_alert(
    session: AsyncSession, elder: Elder, chain: list[Region], now: datetime
) -> list[dict[str, Any]]:
    """`rank_for_alerts` for one elder."""
    return (await rank_for_alerts(session, [(elder, chain)], now))[0]
