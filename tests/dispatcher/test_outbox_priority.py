"""The outbox sends an SOS's call-out before SMS that call nobody out, whenever they were queued.

A township's power cut queues a guardian notice (and a welfare-check call-out) for every elder
living alone whose hub went silent; an SOS elsewhere a moment later must not wait behind them.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlmodel import col

from alert_service.responses import LadderResponses
from anxin.db import transaction
from dispatcher import outbox
from dispatcher.models import SmsMessage, SmsStatus
from dispatcher.worker import send_due
from tests.support.dispatch import ELDER, DispatchBench
from tests.support.harness import eventually


async def test_a_p1_call_out_queued_after_thirty_notices_goes_out_in_the_first_pass(
    bench: DispatchBench,
) -> None:
    async with transaction(bench.sessions) as session:
        await outbox.queue_sms_many(
            session,
            [
                {
                    "to": f"+861390000{i:04d}",
                    "body": f"您的家人家中停电（测试 {i}）",
                    "key": f"test:guardian:{i}",
                    "purpose": "guardian",
                }
                for i in range(30)
            ],
            bench.clock.now(),
        )
    bench.clock.advance(1)
    alert = await bench.raise_alert(ELDER)
    [aide] = await bench.asked(alert.id)

    # One pass of 10: the call-out is among them although 30 SMS were queued before it.
    assert (
        await send_due(
            bench.sessions,
            bench.provider,
            bench.clock,
            responses=LadderResponses(),
            status_callback=None,
            limit=10,
        )
        == 10
    )
    [call_out] = await bench.sms_to(aide.phone, "dispatch")
    assert call_out.priority == 1
    assert call_out.status == SmsStatus.sent
    first_pass = {m.to for m in bench.sandbox.messages}
    # The call-out, then the earliest queued of the rest.
    assert first_pass == {aide.phone} | {f"+861390000{i:04d}" for i in range(9)}
    async with bench.sessions() as session:
        still_queued = (
            await session.execute(
                select(SmsMessage).where(col(SmsMessage.status) == SmsStatus.queued)
            )
        ).scalars()
        waiting = list(still_queued)
    # The rest waited their turn, and went out after (nothing was dropped).
    assert len(waiting) >= 21 and all(s.purpose == "guardian" and s.priority == 3 for s in waiting)
    assert await bench.send_outbox() >= len(waiting)
    assert {m.to for m in bench.sandbox.messages} >= {f"+861390000{i:04d}" for i in range(30)}


async def test_a_p1_call_out_goes_out_while_every_pass_waits_on_guardian_notices(
    bench: DispatchBench,
) -> None:
    """The running worker: both of its passes are POSTing 50 guardian notices each to a slow
    provider when an SOS is raised. Its call-out is sent by the urgent pass at once, not after
    those POSTs are answered."""
    guardian = "+8613900000001"
    bench.sandbox.set_number_delay(guardian, 5.0)
    async with transaction(bench.sessions) as session:
        await outbox.queue_sms_many(
            session,
            [
                {
                    "to": guardian,
                    "body": f"您的家人家中停电（测试 {i}）",
                    "key": f"test:guardian:{i}",
                    "purpose": "guardian",
                }
                for i in range(100)
            ],
            bench.clock.now(),
        )

    async def guardian_notices_sent() -> int:
        async with bench.sessions() as session:
            return int(
                await session.scalar(
                    select(func.count())
                    .select_from(SmsMessage)
                    .where(
                        col(SmsMessage.to_phone) == guardian, col(SmsMessage.sent_at).is_not(None)
                    )
                )
                or 0
            )

    async with bench.running_outbox(status_callback=None):
        # Both passes are waiting for the provider's answers to their 50 POSTs.
        async def posts_under_way() -> bool:
            return bench.sandbox.requests_received >= 100

        await eventually(posts_under_way, what="100 guardian POSTs under way")
        alert = await bench.raise_alert(ELDER)
        [aide] = await bench.asked(alert.id)
        call_out = await bench.sandbox.next_message(aide.phone, timeout=20)
        assert alert.code in call_out.body
        # It went out before any of the slow POSTs was answered and recorded.
        assert await guardian_notices_sent() == 0
        # And none of them is lost: they are all sent once the provider answers.

        async def all_sent() -> bool:
            return await guardian_notices_sent() == 100

        await eventually(all_sent, timeout=30, what="every guardian notice sent")
