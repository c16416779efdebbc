"""What comes back from the provider: delivery receipts, SMS replies, and a call-out call's
outcome and keypress (provider-neutral: each provider's webhook maps its words and calls
`call_status` / `call_keypress`).

A receipt updates its SMS row (a failed call-out is reported through `AlertResponses`); a reply
is stored, a duty or help reply answered here, and one about an alert handed to
`AlertResponses.reply` (alert_service decides what it does to the alert).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import cast, delete, or_, select
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from anxin.logging import get_logger, mask_phone
from anxin.models import Elder, Responder, pk
from dispatcher import templates
from dispatcher.models import (
    CALL_FINAL,
    CALL_UNANSWERED,
    CallInFlight,
    CallStatus,
    FamilyOptOut,
    SmsMessage,
    SmsStatus,
    VoiceCall,
)
from dispatcher.outbox import answer_responder, clear_in_flight, queue_sms, sms_failed
from dispatcher.replies import Reply, ReplyKind, TextInKind, parse_reply, parse_text_in
from dispatcher.reports import AlertResponses, TextAlert
from dispatcher.twilio_provider import receipt_failure_reason
from dispatcher.visit_reports import VisitReports

log = get_logger("dispatcher")


FAILED_RECEIPTS = {"undelivered": SmsStatus.undelivered, "failed": SmsStatus.failed}


@dataclass(frozen=True)
class Receipt:
    """One delivery receipt (a status callback), as Twilio posts it (Aliyun's SmsReport is
    mapped to Twilio's words by its webhook, with its own `reason` for a failure)."""

    sid: str
    status: str
    error_code: str | None = None
    sms_id: int | None = None
    reason: str | None = None


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
            reason = receipt.reason or receipt_failure_reason(status, receipt.error_code)
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
    visits: VisitReports | None = None,
) -> str:
    """Apply one SMS reply. Returns what it did (for the log and the tests). A visit report
    (`访 E0012`) goes to `visits` (without one, the aide gets the help SMS)."""
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
    stored = SmsMessage(
        direction="in",
        responder_id=responder.id if responder else None,
        to_phone=to_phone[:20],
        from_phone=from_phone[:20],
        body=body[:1600],
        status=SmsStatus.received,
        provider_sid=sid or None,
        created_at=now,
    )
    session.add(stored)
    if responder is None or responder.id is None:
        family = await _family_of(session, from_phone)
        if not family:
            log.info("sms_from_unknown_number", phone=mask_phone(from_phone))
            return "unknown_number"
        stored.elder_id = family[0].id
        await session.flush()  # the stored SMS's id, on the alert's timeline
        return await _from_family(session, stored, family, responses=responses, now=now)
    reply = parse_reply(body)
    lang = responder.lang

    async def answer(text: str, purpose: str) -> None:
        await answer_responder(session, responder, text, purpose, now)

    if reply.kind in (ReplyKind.on_duty, ReplyKind.off_duty):
        responder.on_duty = reply.kind == ReplyKind.on_duty
        await answer(templates.duty_sms(responder.on_duty, lang), "duty")
        await responses.duty_changed(session, responder=responder, now=now)
        return f"duty:{responder.on_duty}"
    if reply.kind == ReplyKind.visit and visits is not None:
        await session.flush()  # the stored SMS's id, on the visit's record
        return await visits.visit(
            session, responder=responder, reply=reply, sms_id=stored.id, now=now
        )
    if reply.kind in (ReplyKind.help, ReplyKind.visit):
        await answer(templates.help_sms(lang), "help")
        return "help"

    return await responses.reply(session, responder=responder, reply=reply, now=now)


# --- the elder's family: text-in alerts, replies, 退订 (issue 20 items 2 and 4) ---------------

# A flood of help texts from one number raises one alert (the rest join it) and is answered at
# most once per this many seconds of the alert's life (README, Decisions, "Text-in alerts").
TEXT_CONFIRM_EVERY_S = 600
# A number that is the guardian of more elders than this is read for the first ones only.
MAX_ELDERS_PER_NUMBER = 5


async def _family_of(session: AsyncSession, phone: str) -> list[Elder]:
    """The elders (in the registry, not archived) who list this number as a guardian's."""
    if not phone:
        return []
    rows = await session.execute(
        select(Elder)
        .where(
            col(Elder.archived_at).is_(None),
            cast(col(Elder.guardian_phones), JSONB).contains([phone]),
        )
        .order_by(col(Elder.id))
        .limit(MAX_ELDERS_PER_NUMBER)
    )
    return list(rows.scalars())


async def _from_family(
    session: AsyncSession,
    stored: SmsMessage,
    family: list[Elder],
    *,
    responses: AlertResponses,
    now: datetime,
) -> str:
    """An SMS from a guardian's number, stored (`stored`, with its elder): 退订 / 订阅 answered
    here; a help word raises or joins a P1 for each of its elders (`AlertResponses.text_alert`),
    confirmed by SMS at most once per `TEXT_CONFIRM_EVERY_S`; anything else goes on the open
    alert's timeline, or stays stored for the elder's page."""
    phone, kind = stored.from_phone, parse_text_in(stored.body)
    if kind in (TextInKind.opt_out, TextInKind.opt_in):
        stored.purpose = kind
        if kind == TextInKind.opt_out:
            await session.execute(
                insert(FamilyOptOut).values(phone=phone, since=now).on_conflict_do_nothing()
            )
        else:
            await session.execute(delete(FamilyOptOut).where(col(FamilyOptOut.phone) == phone))
        await queue_sms(
            session,
            to=phone,
            body=templates.family_opt_sms(kind == TextInKind.opt_out),
            key=None,
            now=now,
            purpose=kind,
        )
        log.info("family_subscription", phone=mask_phone(phone), kind=kind)
        return f"family:{kind}"
    if kind == TextInKind.help:
        raised: list[TextAlert] = []
        for elder in family:
            got = await responses.text_alert(
                session, elder_id=pk(elder), phone=phone, sms_id=stored.id, now=now
            )
            if got is not None:
                raised.append(got)
        if raised:
            first = raised[0]
            stored.purpose, stored.alert_id = "text_alert", first.alert_id
            window = int((now - first.raised_at).total_seconds() // TEXT_CONFIRM_EVERY_S)
            await queue_sms(
                session,
                to=phone,
                body=templates.text_alert_sms(joined=all(r.joined for r in raised)),
                key=f"alert:{first.alert_id}:text_in:{phone}:w{window}",
                now=now,
                alert_id=first.alert_id,
                purpose="text_alert",
            )
            verb = "joined" if first.joined else "raised"
            return f"text_alert:{verb}:" + ",".join(r.code for r in raised)
    stored.purpose = "family_message"
    for elder in family:
        alert_id = await responses.family_message(
            session, elder_id=pk(elder), phone=phone, body=stored.body, sms_id=stored.id, now=now
        )
        if alert_id is not None and stored.alert_id is None:
            stored.alert_id = alert_id
    log.info("family_message", phone=mask_phone(phone), alert=stored.alert_id)
    return "family_message" + (f":A{stored.alert_id}" if stored.alert_id else "")


# --- voice call-outs (issue 19) --------------------------------------------------------------

# What a key means on a call-out call: the same as the SMS reply with that digit (CONTRACT §5).
CALL_KEYS = {"1": ReplyKind.accept, "0": ReplyKind.decline}


async def _lock_call(
    session: AsyncSession, call_id: int | None, provider_sid: str | None
) -> VoiceCall | None:
    """The call a callback is about: by our id (`call_ref`) when given, else the provider's."""
    if call_id is not None:
        where = col(VoiceCall.id) == call_id
    elif provider_sid:
        where = col(VoiceCall.provider_sid) == provider_sid
    else:
        return None
    rows = await session.execute(select(VoiceCall).where(where).with_for_update())
    call = rows.scalars().first()
    if call is not None and provider_sid and call.provider_sid not in (None, provider_sid):
        return None  # our id with another call's provider id: not ours
    return call


async def _provider_has(
    session: AsyncSession, call: VoiceCall, sid: str | None, now: datetime
) -> None:
    """A callback names the call: the provider has it, whatever the placing pass committed."""
    if sid and call.provider_sid is None:
        call.provider_sid = sid[:64]
        call.placed_at = call.placed_at or now
        if call.status == CallStatus.queued:
            call.status = CallStatus.placed
        await session.execute(delete(CallInFlight).where(col(CallInFlight.call_id) == call.id))


def call_outcome_reason(status: str) -> str:
    """Readable reason (Chinese / English) for a call that did not reach its callee."""
    return {
        CallStatus.no_answer: "电话无人接听 / call not answered",
        CallStatus.busy: "电话占线或被拒接 / call busy or rejected",
        CallStatus.canceled: "电话已取消 / call canceled",
        CallStatus.completed: "接听后未按键 / answered, no key pressed",
    }.get(CallStatus(status), "电话呼叫失败 / call failed")


async def call_keypress(
    session: AsyncSession,
    *,
    responses: AlertResponses,
    call_id: int | None,
    provider_sid: str | None,
    digits: str,
    now: datetime,
) -> str:
    """The callee pressed a key: recorded once on the call and the alert's timeline; `1` / `0`
    are handed to `AlertResponses.reply` as the SMS replies `1` / `0` about this alert.
    Returns what it did (for the log and the tests)."""
    call = await _lock_call(session, call_id, provider_sid)
    if call is None:
        return "unknown_call"
    await _provider_has(session, call, provider_sid, now)
    if call.digits is not None:
        return "duplicate"
    key = unicodedata.normalize("NFKC", digits).strip()[:1]
    call.digits = key
    call.answered_at = call.answered_at or now
    if call.status not in CALL_FINAL:
        call.status = CallStatus.answered
    call.updated_at = now
    responder = await session.get(Responder, call.responder_id) if call.responder_id else None
    kind = CALL_KEYS.get(key)
    outcome = f"key:{key or 'none'}"
    if kind is not None and responder is not None and call.alert_id is not None:
        reply = Reply(kind=kind, alert_code=f"A{call.alert_id}")
        outcome = await responses.reply(session, responder=responder, reply=reply, now=now)
    # The timeline row after the reply: its insert takes a key-share lock on the alert, and a
    # reply that locked the alert after that would deadlock with a second key pressed for the
    # same alert at the same moment (each holding a key share, each waiting to lock it).
    if call.alert_id is not None:
        await responses.note(
            session,
            alert_id=call.alert_id,
            action="call_key",
            now=now,
            responder_id=call.responder_id,
            digits=key,
        )
    return outcome


async def call_status(
    session: AsyncSession,
    *,
    responses: AlertResponses,
    call_id: int | None,
    provider_sid: str | None,
    status: CallStatus,
    now: datetime,
) -> bool:
    """A call's progress or outcome (already mapped to `CallStatus` by the provider's webhook).
    A final outcome with no key pressed (no answer, busy, failed, canceled, or answered and
    hung up) moves the ladder on as a failed SMS does (`AlertResponses.delivery_failed`, channel
    "voice"). Returns whether it named a call of ours. A repeated or late callback changes
    nothing."""
    call = await _lock_call(session, call_id, provider_sid)
    if call is None:
        return False
    await _provider_has(session, call, provider_sid, now)
    if call.status in CALL_FINAL:
        return True
    call.updated_at = now
    if status == CallStatus.ringing:
        if call.status in (CallStatus.queued, CallStatus.placed):
            call.status = CallStatus.ringing
        return True
    if status == CallStatus.answered:
        call.status = CallStatus.answered
        call.answered_at = call.answered_at or now
        return True
    if status not in CALL_FINAL:
        return True
    call.status = status
    call.ended_at = now
    if status in CALL_UNANSWERED or call.digits is None:
        reason = call_outcome_reason(status)
        call.last_error = reason
        log.info("call_unanswered", call=call.id, to=mask_phone(call.to_phone), outcome=status)
        if call.alert_id is not None and call.responder_id is not None:
            await responses.delivery_failed(
                session,
                alert_id=call.alert_id,
                responder_id=call.responder_id,
                reason=reason,
                now=now,
                channel="voice",
            )
    elif call.alert_id is not None:
        await responses.note(
            session,
            alert_id=call.alert_id,
            action="call_ended",
            now=now,
            responder_id=call.responder_id,
            outcome=status,
            digits=call.digits,
        )
    return True
