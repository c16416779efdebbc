"""Issue 5 checks through real parts: the outbox worker sends with the real `twilio` client to
the project's Twilio-compatible endpoint, receipts and replies come back signed to the web app's
webhooks, and what the aides see and the alert's state are what the contract promises."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import SQLModel, col

from alert_service import ladder as alert_ladder
from alert_service.models import Alert, AlertTimelineEntry, AttemptAnswer, DispatchAttempt
from alert_service.responses import LadderResponses
from anxin.db import SessionMaker, transaction
from anxin.models import Responder
from dispatcher import outbox, templates
from dispatcher.models import SmsMessage
from dispatcher.twilio_provider import TwilioSmsProvider, sign_twilio_request
from dispatcher.worker import send_due
from tests.support.dispatch import ELDER, PLATFORM_NUMBER, DispatchBench, operator_resolves
from tests.support.harness import eventually

UNKNOWN_PHONE = "+8613999999999"


async def db_state(sessions: SessionMaker) -> dict[str, list[dict[str, Any]]]:
    """Every row a webhook could change, to compare before and after."""
    state: dict[str, list[dict[str, Any]]] = {}
    async with sessions() as session:
        for model in (Alert, DispatchAttempt, SmsMessage, AlertTimelineEntry, Responder):
            rows = await session.execute(select(model).order_by(col(model.id)))
            state[model.__tablename__] = [
                row.model_dump() for row in rows.scalars() if isinstance(row, SQLModel)
            ]
    return state


async def delivered(bench: DispatchBench, phone: str) -> SmsMessage | None:
    rows = await bench.sms_to(phone)
    return rows[-1] if rows and rows[-1].status == "delivered" else None


async def receipts_settled(bench: DispatchBench) -> None:
    """Wait until every SMS sent has its final receipt, so nothing changes behind a test."""

    async def settled() -> bool:
        async with bench.sessions() as session:
            rows = await session.execute(
                select(col(SmsMessage.status)).where(col(SmsMessage.direction) == "out")
            )
            return all(
                status in ("delivered", "undelivered", "failed") for status in rows.scalars()
            )

    await eventually(settled, what="every receipt")


# --- sending and receipts -------------------------------------------------------------------


async def test_dispatch_sms_goes_out_through_twilio_and_signed_receipts_are_applied(
    bench: DispatchBench,
) -> None:
    alert = await bench.raise_alert(ELDER)
    (aide,) = await bench.asked(alert.id)
    assert alert.ranking[0]["responder_id"] == aide.id  # the ranking is on the alert

    assert await bench.send_outbox() >= 1
    (message,) = bench.sandbox.messages_to(aide.phone)
    assert alert.code in message.body and "回1接单" in message.body

    # The endpoint's signed receipts reach /twilio/status and move the row to delivered.
    row = await eventually(lambda: delivered(bench, aide.phone), what="delivery receipt")
    assert row.provider_sid == message.sid
    assert row.purpose == "dispatch" and row.attempts == 1


def _status_form(sid: str) -> dict[str, str]:
    return {"MessageSid": sid, "MessageStatus": "undelivered", "ErrorCode": "30005"}


def _inbound_form(phone: str) -> dict[str, str]:
    return {"MessageSid": "SMforged", "From": phone, "To": PLATFORM_NUMBER, "Body": "1"}


FORGERIES = ("unsigned", "wrong token", "signed for another URL", "form changed after signing")


async def test_unsigned_or_wrongly_signed_webhooks_get_403_and_change_nothing(
    bench: DispatchBench,
) -> None:
    alert = await bench.raise_alert(ELDER)
    (aide,) = await bench.asked(alert.id)
    await bench.send_outbox()
    row = await eventually(lambda: delivered(bench, aide.phone), what="delivery receipt")
    await receipts_settled(bench)
    before = await db_state(bench.sessions)
    assert row.provider_sid is not None
    token = bench.sandbox.auth_token

    for hook in ("status", "inbound"):
        if hook == "status":
            # What a forger would want: the dispatch SMS "undelivered", the ladder moved on.
            url = f"{bench.status_callback}?sms={row.id}"
            form = {"MessageSid": row.provider_sid, "MessageStatus": "undelivered"}
        else:
            # …or the aide "accepting" without having replied.
            url = bench.web_url + "/twilio/inbound"
            form = {
                "MessageSid": "SMforged",
                "From": aide.phone,
                "To": PLATFORM_NUMBER,
                "Body": "1",
            }
        for forgery in FORGERIES:
            headers: dict[str, str] = {}
            sent = form
            if forgery == "wrong token":
                headers["X-Twilio-Signature"] = sign_twilio_request("not-the-token", url, form)
            elif forgery == "signed for another URL":
                headers["X-Twilio-Signature"] = sign_twilio_request(token, url + "&x=1", form)
            elif forgery == "form changed after signing":
                headers["X-Twilio-Signature"] = sign_twilio_request(token, url, form)
                sent = {**form, "Body": "0", "MessageStatus": "failed"}
            response = await bench.http.post(url, data=sent, headers=headers)
            assert response.status_code == 403, (hook, forgery)
            assert await db_state(bench.sessions) == before, (hook, forgery)

    # The same form, rightly signed, is applied: the refusals were about the signature.
    form = {"MessageSid": "SMreal", "From": aide.phone, "To": PLATFORM_NUMBER, "Body": "1"}
    url = bench.web_url + "/twilio/inbound"
    signature = sign_twilio_request(token, url, form)
    response = await bench.http.post(url, data=form, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200
    assert (await bench.alert(alert.id)).accepted_by == aide.id


@pytest.mark.parametrize(("error_code", "status"), [(30005, "undelivered"), (21612, "failed")])
async def test_failed_receipt_asks_the_next_aide_at_once(
    bench: DispatchBench, error_code: int, status: str
) -> None:
    alert = await bench.raise_alert(ELDER)
    (first,) = await bench.asked(alert.id)
    bench.sandbox.set_number_error(first.phone, error_code)
    await bench.send_outbox()

    async def escalated() -> list[Responder] | None:
        asked = await bench.asked(alert.id)
        return asked if len(asked) == 2 else None

    # The clock has not moved: the receipt alone moved the ladder on.
    first_again, second = await eventually(escalated, what="the next aide asked")
    assert first_again.id == first.id and second.id != first.id and second.kind == "aide"
    attempts = await bench.attempts(alert.id)
    assert [a.answer for a in attempts] == [AttemptAnswer.failed, AttemptAnswer.pending]
    (failed,) = await bench.sms_to(first.phone, "dispatch")
    assert failed.status == status
    assert failed.last_error is not None and str(error_code) in failed.last_error
    if error_code == 30005:
        assert "号码不存在或已停机" in failed.last_error
    assert "sms_failed" in [e.action for e in await bench.timeline(alert.id)]

    await bench.send_outbox()
    assert alert.code in bench.sandbox.messages_to(second.phone)[0].body


async def test_number_refused_at_send_gets_a_readable_reason_and_the_next_aide(
    bench: DispatchBench,
) -> None:
    alert = await bench.raise_alert(ELDER)
    (first,) = await bench.asked(alert.id)
    bench.sandbox.set_number_error(first.phone, 21211)
    await bench.send_outbox()

    (failed,) = await bench.sms_to(first.phone, "dispatch")
    assert failed.status == "failed" and failed.attempts == 1  # not retryable: not retried
    assert failed.last_error is not None and "收件号码无效" in failed.last_error
    assert len(await bench.asked(alert.id)) == 2
    assert len(bench.sandbox.messages) >= 1  # the next aide's SMS went out in the same run


async def test_provider_500_three_times_then_201_sends_exactly_one_sms(
    bench: DispatchBench,
) -> None:
    async with transaction(bench.sessions) as session:
        await outbox.queue_sms(
            session, to="+8613800000001", body="测试", key="retry-test", now=bench.clock.now()
        )
    bench.sandbox.fail_next(3)

    assert await bench.send_outbox() == 1
    (row,) = await bench.sms_to("+8613800000001")
    assert (row.status, row.attempts) == ("queued", 1)
    assert row.last_error is not None and "Twilio 服务暂时不可用" in row.last_error
    # Backoff: nothing more is sent until the retry is due.
    assert await bench.send_outbox() == 0
    assert bench.sandbox.requests_received == 1

    for backoff in (1, 2, 4):
        bench.clock.advance(backoff - 0.5)
        assert await bench.send_outbox() == 0
        bench.clock.advance(0.5)
        assert await bench.send_outbox() == 1

    assert bench.sandbox.requests_received == 4
    assert len(bench.sandbox.messages) == 1
    row = await eventually(lambda: delivered(bench, "+8613800000001"), what="delivery receipt")
    assert row.attempts == 4
    assert row.provider_sid == bench.sandbox.messages[0].sid
    bench.clock.advance(3600)
    assert await bench.send_outbox() == 0
    assert bench.sandbox.requests_received == 4


# --- idempotency and workers ----------------------------------------------------------------


async def test_running_the_same_ladder_step_twice_writes_one_sms(bench: DispatchBench) -> None:
    alert = await bench.raise_alert(ELDER)
    (aide,) = await bench.asked(alert.id)
    for _ in range(2):
        async with transaction(bench.sessions) as session:
            again = await alert_ladder.lock_alert(session, alert.id or 0)
            assert again is not None
            await alert_ladder.ask(
                session, again, aide.id or 0, "aide", step=0, now=bench.clock.now()
            )
            await alert_ladder.advance(session, again, bench.clock.now())

    assert len(await bench.sms_to(aide.phone, "dispatch")) == 1
    assert len(await bench.attempts(alert.id)) == 1
    await bench.send_outbox()
    assert len(bench.sandbox.messages_to(aide.phone)) == 1


async def test_two_outbox_workers_never_send_one_sms_twice(bench: DispatchBench) -> None:
    count = 60
    async with transaction(bench.sessions) as session:
        for i in range(count):
            await outbox.queue_sms(
                session,
                to=f"+86138{i:08d}",
                body=f"第{i}条",
                key=f"two-workers-{i}",
                now=bench.clock.now(),
            )
    providers = [
        TwilioSmsProvider(
            account_sid=bench.sandbox.account_sid,
            auth_token=bench.sandbox.auth_token,
            from_number=PLATFORM_NUMBER,
            base_url=bench.settings.twilio_base_url,
        )
        for _ in range(2)
    ]

    async def worker(provider: TwilioSmsProvider) -> int:
        handled = 0
        while n := await send_due(
            bench.sessions,
            provider,
            bench.clock,
            responses=LadderResponses(),
            status_callback=None,
            limit=7,
        ):
            handled += n
        return handled

    try:
        handled = await asyncio.gather(*(worker(p) for p in providers))
    finally:
        for provider in providers:
            await provider.aclose()
    assert sum(handled) == count
    assert bench.sandbox.requests_received == count
    assert sorted(m.body for m in bench.sandbox.messages) == sorted(
        f"第{i}条" for i in range(count)
    )


# --- replies through the webhook ------------------------------------------------------------

ACCEPT_FORMS = ["1", "接", "接单", "收到", "好", "ok", "y", "１", "  1  ", "OK"]
DECLINE_FORMS = ["0", "不", "不能", "没空", "no", "n", "０"]
ON_SCENE_FORMS = ["2", "到", "到了", "已到", "到达", "２"]
DONE_FORMS = [
    ("3", "handled"),
    ("完成", "handled"),
    ("结束", "handled"),
    ("３", "handled"),
    ("3 误报", "false_alarm"),
    ("完成 送医", "hospital"),
]


async def test_every_accept_form_takes_the_alert(bench: DispatchBench) -> None:
    for form in ACCEPT_FORMS:
        alert = await bench.raise_alert(ELDER)
        aide = (await bench.asked(alert.id))[0]
        assert await bench.reply(aide.phone, form) == 200
        taken = await bench.alert(alert.id)
        assert (taken.status, taken.accepted_by) == ("accepted", aide.id), form
        await operator_resolves(bench, alert.id)


async def test_every_decline_form_asks_the_next_aide_now(bench: DispatchBench) -> None:
    for form in DECLINE_FORMS:
        alert = await bench.raise_alert(ELDER)
        first = (await bench.asked(alert.id))[0]
        assert await bench.reply(first.phone, form) == 200
        attempts = await bench.attempts(alert.id)
        assert attempts[0].answer == AttemptAnswer.declined, form
        assert attempts[1].responder_id != first.id and attempts[1].role == "aide", form
        second = await bench.responder(attempts[1].responder_id)
        assert [s.alert_id for s in await bench.sms_to(second.phone, "dispatch")][-1] == alert.id
        assert (await bench.alert(alert.id)).status == "dispatching"
        await operator_resolves(bench, alert.id)


async def test_every_arrival_form_puts_the_aide_on_scene(bench: DispatchBench) -> None:
    for form in ON_SCENE_FORMS:
        alert = await bench.raise_alert(ELDER)
        aide = (await bench.asked(alert.id))[0]
        # Arriving without replying 1 first still counts: the aide is there.
        assert await bench.reply(aide.phone, form) == 200
        current = await bench.alert(alert.id)
        assert (current.status, current.accepted_by) == ("on_scene", aide.id), form
        assert current.on_scene_at == bench.clock.now()
        await operator_resolves(bench, alert.id)


async def test_every_done_form_closes_the_alert_with_its_outcome(bench: DispatchBench) -> None:
    for form, outcome in DONE_FORMS:
        alert = await bench.raise_alert(ELDER)
        aide = (await bench.asked(alert.id))[0]
        assert await bench.reply(aide.phone, "1") == 200
        assert await bench.reply(aide.phone, form) == 200
        closed = await bench.alert(alert.id)
        assert (closed.status, closed.outcome) == ("resolved", outcome), form
        assert closed.resolved_by == f"responder:{aide.id}"


async def test_duty_replies_set_the_aide_on_or_off_duty(bench: DispatchBench) -> None:
    alert = await bench.raise_alert(ELDER)
    aide = (await bench.asked(alert.id))[0]
    await operator_resolves(bench, alert.id)

    for form, on_duty in (("下班", False), ("上班", True), ("休息", False), (" 值班 ", True)):
        assert await bench.reply(aide.phone, form) == 200
        assert (await bench.responder(aide.id or 0)).on_duty is on_duty, form
        confirmation = (await bench.sms_to(aide.phone, "duty"))[-1]
        assert confirmation.body == templates.duty_sms(on_duty, "zh")
        # What it is for: an aide off duty is not asked.
        again = await bench.raise_alert(ELDER)
        assert ((await bench.asked(again.id))[0].id == aide.id) is on_duty, form
        await operator_resolves(bench, again.id)


async def _two_alerts_for_one_aide(bench: DispatchBench) -> tuple[Alert, Alert, Responder]:
    """Two open alerts whose first SMS went to the same aide."""
    first = await bench.raise_alert(ELDER)
    aide = (await bench.asked(first.id))[0]
    elder = await bench.elder(ELDER)
    village_elders = [
        e.code
        for e in bench.seeded.plan.elders
        if e.village_code == bench.seeded.plan.elders[0].village_code
    ]
    assert elder.village_id
    for code in village_elders:
        for kind in ("fall", "smoke", "gas", "sos"):
            if (code, kind) == (ELDER, "sos"):
                continue
            second = await bench.raise_alert(code, kind)
            if (await bench.asked(second.id))[0].id == aide.id:
                return first, second, aide
    raise AssertionError("no second alert for the same aide in the demo county")


async def test_an_alert_code_picks_one_dispatch_when_the_aide_has_several(
    bench: DispatchBench,
) -> None:
    first, second, aide = await _two_alerts_for_one_aide(bench)

    assert await bench.reply(aide.phone, f"1 {first.code}") == 200
    assert (await bench.alert(first.id)).accepted_by == aide.id
    assert (await bench.alert(second.id)).status == "dispatching"

    assert await bench.reply(aide.phone, f"{second.code}不能") == 200
    assert (await bench.attempts(second.id))[0].answer == AttemptAnswer.declined
    assert len(await bench.attempts(second.id)) == 2  # the next aide is asked for that one
    assert (await bench.alert(first.id)).status == "accepted"

    # Without a code, arrival is for the alert this aide took.
    assert await bench.reply(aide.phone, "到了") == 200
    assert (await bench.alert(first.id)).status == "on_scene"
    assert (await bench.alert(second.id)).status == "dispatching"


async def test_unknown_text_gets_the_help_sms_and_changes_nothing_else(
    bench: DispatchBench,
) -> None:
    alert = await bench.raise_alert(ELDER)
    aide = (await bench.asked(alert.id))[0]
    await bench.send_outbox()

    assert await bench.reply(aide.phone, "你们在哪里？") == 200
    await bench.send_outbox()
    help_sms = bench.sandbox.messages_to(aide.phone)[-1]
    assert help_sms.body == templates.help_sms("zh")
    assert (await bench.alert(alert.id)).status == "dispatching"
    assert [a.answer for a in await bench.attempts(alert.id)] == [AttemptAnswer.pending]


async def test_a_reply_from_an_unknown_number_changes_nothing(bench: DispatchBench) -> None:
    alert = await bench.raise_alert(ELDER)
    await bench.send_outbox()
    await receipts_settled(bench)
    before = await db_state(bench.sessions)

    assert await bench.reply(UNKNOWN_PHONE, f"1 {alert.code}") == 200
    after = await db_state(bench.sessions)
    stored = [s for s in after["sms_messages"] if s["direction"] == "in"]
    # Kept for the record, and nothing else: no state moved, no SMS to anyone.
    assert [(s["from_phone"], s["responder_id"]) for s in stored] == [(UNKNOWN_PHONE, None)]
    after["sms_messages"] = [s for s in after["sms_messages"] if s["direction"] == "out"]
    assert after == before


async def test_when_someone_accepts_the_others_asked_hear_who_has_it(
    bench: DispatchBench,
) -> None:
    alert = await bench.raise_alert(ELDER)
    first = (await bench.asked(alert.id))[0]
    assert await bench.reply(first.phone, "0") == 200
    second = (await bench.asked(alert.id))[1]
    assert await bench.reply(second.phone, "1") == 200
    await bench.send_outbox()

    handled = templates.handled_by_sms(alert.code, second.name, "zh")
    assert f"已由{templates.mask_name(second.name)}接单" in handled
    assert [m.body for m in bench.sandbox.messages_to(first.phone)][-1] == handled
    assert all(m.body != handled for m in bench.sandbox.messages_to(second.phone))

    # A late "1" from the first aide does not take it back; they are told who has it.
    assert await bench.reply(first.phone, "1") == 200
    assert (await bench.alert(alert.id)).accepted_by == second.id
    await bench.send_outbox()
    assert [m.body for m in bench.sandbox.messages_to(first.phone)][-1] == handled


async def test_only_the_taker_puts_an_alert_on_scene_or_resolves_it(bench: DispatchBench) -> None:
    """CONTRACT §5: aide A declines, aide B takes it; A's `2` or `3` (bare or with the code)
    changes nothing and A is told who has it; B's own `2` and `3` still work."""
    alert = await bench.raise_alert(ELDER)
    first = (await bench.asked(alert.id))[0]
    assert await bench.reply(first.phone, "0") == 200
    second = (await bench.asked(alert.id))[1]
    assert await bench.reply(second.phone, "1") == 200
    await bench.send_outbox()
    timeline = len(await bench.timeline(alert.id))
    told_second = len(bench.sandbox.messages_to(second.phone))

    not_yours = templates.not_taker_sms(alert.code, second.name, "zh")
    assert f"{alert.code} 已由{templates.mask_name(second.name)}接单" in not_yours
    for body in ("3", "2", "到了", f"完成 误报 {alert.code}"):
        assert await bench.reply(first.phone, body) == 200
        taken = await bench.alert(alert.id)
        assert (taken.status, taken.accepted_by, taken.on_scene_at) == (
            "accepted",
            second.id,
            None,
        ), body
        await bench.send_outbox()
        assert bench.sandbox.messages_to(first.phone)[-1].body == not_yours, body
    assert len(await bench.timeline(alert.id)) == timeline
    assert len(bench.sandbox.messages_to(second.phone)) == told_second

    assert await bench.reply(second.phone, "2") == 200
    assert await bench.reply(second.phone, "3") == 200
    closed = await bench.alert(alert.id)
    assert (closed.status, closed.resolved_by) == ("resolved", f"responder:{second.id}")


async def test_the_running_worker_is_woken_by_the_queuing_commit_not_by_polling(
    bench: DispatchBench,
) -> None:
    # It polls only hourly: only the NOTIFY can wake it.
    idle = asyncio.Event()
    async with bench.running_outbox(status_callback=bench.status_callback, idle=idle):
        # The worker has looked once, found nothing and is waiting.
        await eventually(lambda: asyncio.sleep(0, idle.is_set()), what="the worker waiting")
        alert = await bench.raise_alert(ELDER)
        aide = (await bench.asked(alert.id))[0]
        sms = await bench.sandbox.next_message(aide.phone, timeout=20)
        assert alert.code in sms.body
