"""What comes back from the provider: delivery receipts and SMS replies.

A receipt updates its SMS row (a failed call-out is reported through `AlertResponses`); a reply
is stored, a duty or help reply answered here, and one about an alert handed to
`AlertResponses.reply` (alert_service decides what it does to the alert).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from anxin.logging import get_logger, mask_phone
from anxin.models import Responder, pk
from dispatcher import templates
from dispatcher.models import (
    SmsMessage,
    SmsStatus,
)
from dispatcher.outbox import answer_responder, clear_in_flight, sms_failed
from dispatcher.replies import ReplyKind, parse_reply
from dispatcher.reports import AlertResponses
from dispatcher.twilio_provider import receipt_failure_reason

log = get_logger("dispatcher")


FAILED_RECEIPTS = {"undelivered": SmsStatus.undelivered, "failed": SmsStatus.failed}


@dataclass(frozen=True)
class Receipt:
    """One delivery receipt (a status callback), as Twilio posts it."""

    sid: str
    status: str
    error_code: str | None = None
    sms_id: int | None = None


async def handle_statuses(
    session: AsyncSession, receipts: Sequence[Receipt], now: datetime, *, responses: AlertResponses
) -> list[bool]:
    """Apply delivery receipts in order (one query to find and lock their rows); for each,
    whether it named an SMS of ours.

    The worker gives every SMS a status-callback URL carrying its row id, because a receipt can
    arrive before the worker has stored the provider's SID; looking the row up by id (its lock
    waits for the worker's commit) never loses one. The SID is the fallback for receipts
    configured elsewhere (e.g. on a Twilio messaging service).

    Every row is locked up front, in id order, before any alert is: a failed receipt locks its
    alert after its SMS row, as the outbox worker does, so two of them never wait on each other.
    """
    ids = {r.sms_id for r in receipts if r.sms_id is not None}
    sids = {r.sid for r in receipts if r.sms_id is None and r.sid}
    if not ids and not sids:
        return [False] * len(receipts)
    rows = await session.execute(
        select(SmsMessage)
        .where(
            col(SmsMessage.direction) == "out",
            or_(col(SmsMessage.id).in_(ids), col(SmsMessage.provider_sid).in_(sids)),
        )
        .order_by(col(SmsMessage.id))
        .with_for_update()
    )
    found = list(rows.scalars())
    by_id = {pk(sms): sms for sms in found}
    by_sid = {sms.provider_sid: sms for sms in found if sms.provider_sid}
    applied: list[bool] = []
    for receipt in receipts:
        sms = by_id.get(receipt.sms_id) if receipt.sms_id is not None else by_sid.get(receipt.sid)
        applied.append(
            sms is not None and await _apply_receipt(session, sms, receipt, now, responses)
        )
        if sms is not None and sms.provider_sid:
            by_sid[sms.provider_sid] = sms  # a SID stored by an earlier receipt of this batch
    return applied


async def _apply_receipt(
    session: AsyncSession,
    sms: SmsMessage,
    receipt: Receipt,
    now: datetime,
    responses: AlertResponses,
) -> bool:
    sid, status = receipt.sid, receipt.status
    if sms.provider_sid is not None and sid and sms.provider_sid != sid:
        return False
    if sms.provider_sid is None and sid:
        # The provider has it although the worker's commit was lost: never send it again.
        sms.provider_sid = sid[:64]
        sms.sent_at = sms.sent_at or now
        if sms.status == SmsStatus.queued:
            sms.status, sms.updated_at = SmsStatus.sent, now
        await clear_in_flight(session, [pk(sms)])
    if status in FAILED_RECEIPTS:
        if sms.status not in FAILED_RECEIPTS.values():
            reason = receipt_failure_reason(status, receipt.error_code)
            await sms_failed(session, sms, reason, now, responses=responses)
            sms.status = FAILED_RECEIPTS[status]
    elif status == "delivered" or (status == "sent" and sms.status == SmsStatus.queued):
        # (a queued row that gets a receipt stops being queued: it is not sent a second time)
        sms.status = status
        sms.updated_at = now
    return True


async def handle_inbound(
    session: AsyncSession,
    *,
    responses: AlertResponses,
    from_phone: str,
    to_phone: str,
    body: str,
    sid: str,
    now: datetime,
) -> str:
    """Apply one SMS reply. Returns what it did (for the log and the tests)."""
    if sid:
        seen = await session.execute(
            select(col(SmsMessage.id)).where(
                col(SmsMessage.provider_sid) == sid,
                col(SmsMessage.direction) == "in",
            )
        )
        if seen.first() is not None:
            return "duplicate"
    responder = (
        (await session.execute(select(Responder).where(col(Responder.phone) == from_phone)))
        .scalars()
        .first()
    )
    session.add(
        SmsMessage(
            direction="in",
            responder_id=responder.id if responder else None,
            to_phone=to_phone[:20],
            from_phone=from_phone[:20],
            body=body[:1600],
            status=SmsStatus.received,
            provider_sid=sid or None,
            created_at=now,
        )
    )
    if responder is None or responder.id is None:
        log.info("sms_from_unknown_number", phone=mask_phone(from_phone))
        return "unknown_number"
    reply = parse_reply(body)
    lang = responder.lang

    async def answer(text: str, purpose: str) -> None:
        await answer_responder(session, responder, text, purpose, now)

    if reply.kind in (ReplyKind.on_duty, ReplyKind.off_duty):
        responder.on_duty = reply.kind == ReplyKind.on_duty
        await answer(templates.duty_sms(responder.on_duty, lang), "duty")
        return f"duty:{responder.on_duty}"
    if reply.kind == ReplyKind.help:
        await answer(templates.help_sms(lang), "help")
        return "help"

    return await responses.reply(session, responder=responder, reply=reply, now=now)
