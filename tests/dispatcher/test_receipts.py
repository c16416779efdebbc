"""Delivery receipts in batches: what one transaction of many receipts does is what each would
have done alone, in the order they came."""

from __future__ import annotations

from sqlalchemy import select
from sqlmodel import col

from alert_service.models import AttemptAnswer
from alert_service.responses import LadderResponses
from anxin.db import transaction
from dispatcher import inbound
from dispatcher.models import SmsMessage
from tests.support.dispatch import ELDER, DispatchBench


async def test_a_batch_of_receipts_applies_each_in_order(bench: DispatchBench) -> None:
    first = await bench.raise_alert(ELDER)
    second = await bench.raise_alert("E0002")
    async with bench.sessions() as session:
        rows = await session.execute(
            select(SmsMessage)
            .where(col(SmsMessage.purpose) == "dispatch")
            .order_by(col(SmsMessage.id))
        )
        ok, bounced = list(rows.scalars())
    assert ok.alert_id == first.id and bounced.alert_id == second.id
    now = bench.clock.now()
    async with transaction(bench.sessions) as session:
        applied = await inbound.handle_statuses(
            session,
            [
                inbound.Receipt("SM-ok", "sent", sms_id=ok.id),
                inbound.Receipt("SM-bounced", "sent", sms_id=bounced.id),
                inbound.Receipt("SM-ok", "delivered", sms_id=ok.id),
                inbound.Receipt("SM-bounced", "undelivered", "30005", sms_id=bounced.id),
                inbound.Receipt("SM-other", "delivered", sms_id=ok.id),  # not its SID
                inbound.Receipt("SM-nobody", "delivered", sms_id=10**9),  # no such SMS
                inbound.Receipt("SM-ok", "delivered"),  # by SID alone: stored above
            ],
            now,
            responses=LadderResponses(),
        )
    assert applied == [True, True, True, True, False, False, True]
    async with bench.sessions() as session:
        got = {
            sms.id: sms
            for sms in (
                await session.execute(
                    select(SmsMessage).where(col(SmsMessage.id).in_([ok.id, bounced.id]))
                )
            ).scalars()
        }
    assert (got[ok.id].status, got[ok.id].provider_sid) == ("delivered", "SM-ok")
    reason = got[bounced.id].last_error
    assert got[bounced.id].status == "undelivered" and reason is not None and "30005" in reason
    # The bounced call-out moved that alert's ladder on at once; the other alert's did not move.
    assert [a.answer for a in await bench.attempts(second.id)] == [
        AttemptAnswer.failed,
        AttemptAnswer.pending,
    ]
    assert [a.answer for a in await bench.attempts(first.id)] == [AttemptAnswer.pending]
