"""The per-number daily SMS limit (~50 a day per template): a warning first, then the next aide."""

from __future__ import annotations

from datetime import timedelta

from alert_service import ladder, regions
from anxin.db import transaction
from anxin.models import Responder
from dispatcher.models import SmsMessage, SmsStatus
from tests.support.dispatch import ELDER, DispatchBench


async def nearest_aide(bench: DispatchBench) -> Responder:
    async with bench.sessions() as session:
        elder = await bench.elder(ELDER, session)
        chain = await regions.region_chain(session, elder.village_id)
        ranking = await ladder.rank_for_alert(session, elder, chain, bench.clock.now())
    return await bench.responder(ranking[0]["responder_id"])


async def already_sent(
    bench: DispatchBench, phone: str, count: int, *, hours_ago: float, purpose: str = "dispatch"
) -> None:
    sent_at = bench.clock.now() - timedelta(hours=hours_ago)
    async with transaction(bench.sessions) as session:
        for i in range(count):
            session.add(
                SmsMessage(
                    direction="out",
                    purpose=purpose,
                    to_phone=phone,
                    body="earlier",
                    status=SmsStatus.delivered,
                    provider_sid=f"SMearlier{purpose}{hours_ago}{i}",
                    attempts=1,
                    created_at=sent_at,
                    sent_at=sent_at,
                )
            )


async def test_near_the_daily_limit_the_sms_goes_out_and_the_operator_is_warned(
    bench: DispatchBench,
) -> None:
    aide = await nearest_aide(bench)
    await already_sent(bench, aide.phone, 39, hours_ago=1)
    # Neither yesterday's SMS nor another template's count towards today's limit.
    await already_sent(bench, aide.phone, 50, hours_ago=25)
    await already_sent(bench, aide.phone, 30, hours_ago=1, purpose="help")

    alert = await bench.raise_alert(ELDER)
    assert (await bench.asked(alert.id))[0].id == aide.id
    await bench.send_outbox()

    assert next(m.body for m in bench.sandbox.messages_to(aide.phone)).count(alert.code) == 1
    sms = next(s for s in await bench.sms_to(aide.phone, "dispatch") if s.alert_id == alert.id)
    assert sms.status in ("sent", "delivered")
    assert sms.warning is not None and "第40条（上限50条）" in sms.warning
    (near,) = [e for e in await bench.timeline(alert.id) if e.action == "sms_limit_near"]
    assert near.detail == {"responder_id": aide.id, "count": 40, "limit": 50}


async def test_at_the_daily_limit_the_next_aide_is_asked_at_once(bench: DispatchBench) -> None:
    aide = await nearest_aide(bench)
    await already_sent(bench, aide.phone, 50, hours_ago=2)

    alert = await bench.raise_alert(ELDER)
    await bench.send_outbox()

    assert bench.sandbox.messages_to(aide.phone) == []  # the carrier would refuse it
    sms = next(s for s in await bench.sms_to(aide.phone, "dispatch") if s.alert_id == alert.id)
    assert sms.status == "failed"
    assert sms.last_error is not None and "每日短信上限" in sms.last_error
    first, second = await bench.asked(alert.id)
    assert first.id == aide.id and second.kind == "aide"
    assert any(alert.code in m.body for m in bench.sandbox.messages_to(second.phone))
    actions = [e.action for e in await bench.timeline(alert.id)]
    assert "sms_limit_reached" in actions and "sms_failed" in actions
