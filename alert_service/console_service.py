"""What the operator console needs beyond the alert API: reassigning an alert to a chosen
responder. Runs in the caller's transaction; never commits.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alert_service import ladder as alert_ladder
from alert_service import timeline
from alert_service.models import Alert, AlertStatus, AttemptAnswer, DispatchAttempt
from anxin.models import Responder
from dispatcher import outbox


class ReassignRefused(Exception):
    """The alert cannot be reassigned now (closed, or someone is already at the elder's side)."""


async def reassign(
    session: AsyncSession, alert: Alert, responder_id: int, now: datetime, actor: str
) -> None:
    """Ask a responder the operator chose, now (e.g. the operator knows who is nearby).

    The aides asked before (waiting, silent, or the one who had taken it) are withdrawn: they
    get "已改派他人，无需前往", the ladder does not ask them again, and a late "1" from them does
    not take the alert. Centres' requests stay: they are the safety net if the chosen aide
    cannot go. The ladder keeps running, so an unanswered ask still times out and moves on.
    """
    assert alert.id is not None
    if alert.status == AlertStatus.resolved:
        raise ReassignRefused("已结束 / the alert is closed")
    if alert.on_scene_at is not None:
        raise ReassignRefused("已有人到场 / someone is already at the elder's side")
    responder = await session.get(Responder, responder_id)
    if responder is None:
        raise ReassignRefused("没有这个助老员 / no such responder")
    if alert.accepted_by == responder_id:
        return
    released = alert.accepted_by
    withdrawn = await alert_ladder.set_answers(
        session,
        alert_id=alert.id,
        role="aide",
        except_responder=responder_id,
        # A silent aide's "1" would still take the alert: withdrawn too.
        was=(AttemptAnswer.pending, AttemptAnswer.timed_out, AttemptAnswer.accepted),
        answer=AttemptAnswer.withdrawn,
        now=now,
    )
    if released is not None:
        # A centre that had taken it: superseded, as when someone else takes it (withdrawn would
        # keep the ladder from asking the county when the chosen aide cannot go).
        await alert_ladder.set_answers(
            session,
            alert_id=alert.id,
            responder_id=released,
            was=(AttemptAnswer.accepted,),
            answer=AttemptAnswer.superseded,
            now=now,
        )
        alert.accepted_by = None
        alert.accepted_at = None
        alert.reminder_sent_at = None
        await timeline.add_timeline(
            session, alert.id, now, actor, "released", responder_id=released
        )
        if released not in withdrawn:
            withdrawn.append(released)
    for other in withdrawn:
        if other != released:
            await timeline.add_timeline(
                session, alert.id, now, actor, "withdrawn", responder_id=other
            )
    last_step = await session.scalar(
        select(func.max(DispatchAttempt.step)).where(col(DispatchAttempt.alert_id) == alert.id)
    )
    step = 0 if last_step is None else int(last_step) + 1
    await outbox.tell_reassigned(session, alert, withdrawn, step, now)
    await alert_ladder.ask(session, alert, responder_id, responder.kind, step=step, now=now)
    alert.status = AlertStatus.dispatching
    await timeline.add_timeline(
        session,
        alert.id,
        now,
        actor,
        "asked",
        responder_id=responder_id,
        role=responder.kind,
        reason="operator",
    )
    await alert_ladder.advance(session, alert, now)
