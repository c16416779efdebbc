"""What a reply or a delivery outcome does to an alert: alert_service's side of the
dispatcher's `AlertResponses` seam (wired in `anxin.app` and `anxin.runtime`).

The dispatcher stores a reply, answers duty and help itself, and hands the rest here: which
open dispatch the reply is about, then accept, decline, on scene or resolve. Runs in the
caller's transaction; never commits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alert_service import coverage_service, intake, ladder, rules
from alert_service.models import Alert, AlertStatus, AttemptAnswer, DispatchAttempt
from alert_service.timeline import add_timeline
from anxin.logging import get_logger, mask_phone
from anxin.models import Elder, Responder, pk
from dispatcher import outbox, templates
from dispatcher.replies import Reply, ReplyKind
from dispatcher.reports import TextAlert

log = get_logger("alert_service")


async def _open_attempts(
    session: AsyncSession, responder_id: int
) -> list[tuple[DispatchAttempt, Alert]]:
    rows = await session.execute(
        select(DispatchAttempt, Alert)
        .join(Alert, col(Alert.id) == col(DispatchAttempt.alert_id))
        .where(
            col(DispatchAttempt.responder_id) == responder_id,
            col(Alert.status) != AlertStatus.resolved,
        )
        .order_by(col(DispatchAttempt.asked_at).desc())
    )
    return list(rows)


def outcome_of(word: str | None) -> str:
    if not word:
        return "handled"
    if "误" in word or "false" in word.lower():
        return "false_alarm"
    if "医" in word or "hospital" in word.lower() or "120" in word:
        return "hospital"
    return "handled"


async def _elders_open_alert(session: AsyncSession, elder_id: int) -> Alert | None:
    """The elder's open alert, the most urgent (then the oldest) when there are several."""
    rows = await session.execute(
        select(Alert)
        .where(col(Alert.elder_id) == elder_id, col(Alert.status) != AlertStatus.resolved)
        .order_by(col(Alert.priority), col(Alert.raised_at))
        .limit(1)
    )
    return rows.scalars().first()


class LadderResponses:
    """`dispatcher.reports.AlertResponses`, applied to the ladder."""

    def __init__(self, timezone: str = "Asia/Shanghai") -> None:
        self.timezone = timezone  # the elder's night hours on a text-in alert's ladder

    async def reply(
        self, session: AsyncSession, *, responder: Responder, reply: Reply, now: datetime
    ) -> str:
        assert responder.id is not None
        actor = f"responder:{responder.id}"
        lang = responder.lang

        async def answer(text: str, purpose: str) -> None:
            await outbox.answer_responder(session, responder, text, purpose, now)

        open_attempts = await _open_attempts(session, responder.id)
        if reply.alert_code:
            open_attempts = [(a, al) for a, al in open_attempts if al.code == reply.alert_code]
        if reply.kind in (ReplyKind.on_scene, ReplyKind.done):
            # Arrival and completion are for the alert this aide took.
            taken = [(a, al) for a, al in open_attempts if al.accepted_by == responder.id]
            open_attempts = taken or open_attempts
        else:
            open_attempts = (
                [(a, al) for a, al in open_attempts if a.answer == AttemptAnswer.pending]
                or [(a, al) for a, al in open_attempts if a.answer != AttemptAnswer.withdrawn]
                or open_attempts
            )
        if not open_attempts:
            await answer(templates.help_sms(lang), "help")
            return "no_open_alert"
        attempt, alert_row = open_attempts[0]
        assert alert_row.id is not None
        if attempt.answer == AttemptAnswer.withdrawn and alert_row.accepted_by != responder.id:
            # The operator gave this alert to someone else (改派): a late reply takes nothing.
            await answer(templates.reassigned_sms(alert_row.code, lang), "reassigned")
            return f"reassigned:{alert_row.code}"
        alert = await ladder.lock_alert(session, alert_row.id)
        if alert is None:
            return "no_open_alert"
        if reply.kind == ReplyKind.accept:
            if await ladder.accept(session, alert, responder.id, now, actor):
                return f"accepted:{alert.code}"
            taker = await session.get(Responder, alert.accepted_by) if alert.accepted_by else None
            await answer(
                templates.handled_by_sms(alert.code, taker.name if taker else "", lang),
                "handled_by",
            )
            return f"already_taken:{alert.code}"
        if reply.kind == ReplyKind.decline:
            await ladder.decline(session, alert, responder.id, now, actor)
            return f"declined:{alert.code}"
        # CONTRACT §5: only the taker moves an alert on (an untaken one is taken by the `2`/`3`).
        if alert.accepted_by != responder.id and not await ladder.accept(
            session, alert, responder.id, now, actor
        ):
            taker = await session.get(Responder, alert.accepted_by) if alert.accepted_by else None
            await answer(
                templates.not_taker_sms(alert.code, taker.name if taker else "", lang), "not_taker"
            )
            return f"not_taker:{alert.code}"
        if reply.kind == ReplyKind.on_scene:
            await ladder.on_scene(session, alert, now, actor)
            return f"on_scene:{alert.code}"
        # done
        if alert.on_scene_at is None:
            await ladder.on_scene(session, alert, now, actor)
        await ladder.resolve(session, alert, now, actor=actor, outcome=outcome_of(reply.outcome))
        return f"resolved:{alert.code}"

    async def delivery_failed(
        self,
        session: AsyncSession,
        *,
        alert_id: int,
        responder_id: int,
        reason: str,
        now: datetime,
        channel: str = "sms",
    ) -> None:
        alert = await ladder.lock_alert(session, alert_id)
        if alert is not None and alert.status != AlertStatus.resolved:
            await ladder.attempt_failed(session, alert, responder_id, now, reason, channel=channel)

    async def note(
        self, session: AsyncSession, *, alert_id: int, action: str, now: datetime, **detail: Any
    ) -> None:
        await add_timeline(session, alert_id, now, "system", action, **detail)

    async def duty_changed(
        self, session: AsyncSession, *, responder: Responder, now: datetime
    ) -> None:
        await coverage_service.warn_after_off_duty(session, responder=responder, now=now)

    async def text_alert(
        self, session: AsyncSession, *, elder_id: int, phone: str, sms_id: int | None, now: datetime
    ) -> TextAlert | None:
        """A help word by SMS: a P1 through the device's intake (`raise_or_join`: its 15-minute
        clock from `now`, the same ladder, started in this transaction), marked `text_in`. An
        elder already in an open alert is not raised twice: the text joins that alert (and
        makes it P1)."""
        elder = await session.get(Elder, elder_id)
        if elder is None or elder.archived_at is not None:
            return None
        actor = f"sms:{mask_phone(phone)}"
        open_alert = await _elders_open_alert(session, elder_id)
        kind = open_alert.kind if open_alert is not None else "sos"
        alert = await intake.raise_or_join(
            session, elder, rules.RaiseAlert(kind, rules.P1), None, now, actor,
            timezone=self.timezone,
        )  # fmt: skip
        joined = open_alert is not None or alert.trigger_count > 1
        if not joined:
            alert.source = "text_in"
        await add_timeline(session, pk(alert), now, actor, "text_in", joined=joined, sms=sms_id)
        log.info("text_in_alert", alert=alert.code, joined=joined, phone=mask_phone(phone))
        return TextAlert(pk(alert), alert.code, alert.raised_at, joined)

    async def family_message(
        self,
        session: AsyncSession,
        *,
        elder_id: int,
        phone: str,
        body: str,
        sms_id: int | None,
        now: datetime,
    ) -> int | None:
        alert = await _elders_open_alert(session, elder_id)
        if alert is None:
            return None
        await add_timeline(
            session, pk(alert), now, f"sms:{mask_phone(phone)}", "family_message",
            text=body[:200], sms=sms_id,
        )  # fmt: skip
        return pk(alert)
