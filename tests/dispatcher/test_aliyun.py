"""Aliyun as the SMS provider (issue 19 items 3, 4), through real parts: the outbox worker sends
with the official Aliyun SDK to the project's Aliyun-compatible endpoint, which checks the SDK's
V3 signature and Aliyun's rules; receipts and replies come back as Aliyun's HTTP batch push to
the web app's push URLs; bad signatures and tokens change nothing."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from alibabacloud_dysmsapi20170525 import models as sms_models
from pydantic import SecretStr
from sqlalchemy import select, update
from sqlmodel import col

from alert_service.models import AlertStatus, AttemptAnswer
from anxin.db import transaction
from anxin.logging import redact
from anxin.models import Elder, Responder
from anxin.settings import Settings
from dispatcher import outbox
from dispatcher.aliyun_sms import AliyunAccount, AliyunSmsProvider, make_client
from dispatcher.aliyun_templates import MAX_VARIABLE_CHARS
from dispatcher.models import SmsMessage
from dispatcher.providers import SmsSendError
from tests.support.aliyun import AliyunBench
from tests.support.dispatch import ELDER
from tests.support.harness import eventually

# A rural address as the registry has it: a variable longer than Aliyun allows once the village
# is put before it. A Chinese call-out shortens the address to fit one SMS segment; an English
# one cannot fit one whatever it does, so it keeps the whole address (dispatcher.templates).
REASSIGNED = "【安心】A9 已改派他人，无需前往。"
LONG_ADDRESS = "三组王家湾后山坡沿河往东走到头过了小桥第二户左手边红色铁门的两层小楼"


async def _row(bench: AliyunBench, sms_id: int | None) -> SmsMessage:
    async with bench.sessions() as session:
        row = await session.get(SmsMessage, sms_id)
    assert row is not None
    return row


async def _delivered(bench: AliyunBench, phone: str) -> SmsMessage | None:
    rows = await bench.sms_to(phone, "dispatch")
    return rows[-1] if rows and rows[-1].status == "delivered" else None


async def test_call_out_through_aliyun_receipt_and_reply_take_the_alert(
    aliyun_bench: AliyunBench,
) -> None:
    bench = aliyun_bench
    alert = await bench.raise_alert(ELDER)
    (aide,) = await bench.asked(alert.id)
    assert await bench.send_outbox() >= 1

    # What the aide's phone shows: Aliyun's sign name and the registered call-out template.
    (message,) = bench.endpoint.messages_to(aide.phone)
    assert message.body.startswith("【安心】") and alert.code in message.body
    assert message.template_code == "ANXIN_CALLOUT" and message.params["code"] == alert.code
    (row,) = await bench.sms_to(aide.phone, "dispatch")
    assert message.out_id == str(row.id)  # OutId: the receipt finds its row by it
    assert message.body == row.body  # nothing needed shortening: the text the outbox holds

    # Aliyun's SmsReport push reaches the platform and marks it delivered.
    sent = await eventually(lambda: _delivered(bench, aide.phone), what="SmsReport receipt")
    assert sent.provider_sid == message.biz_id

    # The aide's reply (上行短信, SmsUp push) takes the alert, as on Twilio.
    assert await bench.reply(aide.phone, f"1 {alert.code}") == 200
    taken = await bench.alert(alert.id)
    assert taken.status == AlertStatus.accepted and taken.accepted_by == aide.id


async def test_a_receipt_that_says_not_delivered_moves_the_ladder_on(
    aliyun_bench: AliyunBench,
) -> None:
    bench = aliyun_bench
    alert = await bench.raise_alert(ELDER)
    (aide,) = await bench.asked(alert.id)
    bench.endpoint.set_receipt_error(aide.phone, "MOBILE_NOT_ON_SERVICE")
    await bench.send_outbox()

    async def moved_on() -> bool:
        return len(await bench.attempts(alert.id)) == 2

    await eventually(moved_on, what="the next aide asked")
    first, second = await bench.attempts(alert.id)
    assert first.answer == AttemptAnswer.failed and second.responder_id != aide.id
    (row,) = await bench.sms_to(aide.phone, "dispatch")
    assert row.status == "undelivered" and row.last_error is not None
    assert "号码无效" in row.last_error and "MOBILE_NOT_ON_SERVICE" in row.last_error


async def test_a_variable_over_35_characters_is_refused_as_aliyun_does_and_sent_shortened(
    aliyun_bench: AliyunBench,
) -> None:
    bench = aliyun_bench
    async with transaction(bench.sessions) as session:
        await session.execute(
            update(Elder).where(col(Elder.code) == ELDER).values(address=LONG_ADDRESS)
        )
        await session.execute(update(Responder).values(lang="en"))

    # Sent as it stands by the SDK itself, the variable is refused exactly as Aliyun refuses it:
    # HTTP 200, Code isv.PARAM_LENGTH_LIMIT, nothing sent.
    client = make_client(AliyunAccount(*_keys(bench), endpoint=bench.settings.aliyun_sms_endpoint))
    refused = await asyncio.to_thread(
        client.send_sms,
        sms_models.SendSmsRequest(
            phone_numbers="13800138000",
            sign_name="安心",
            template_code="ANXIN_CALLOUT_EN",
            template_param=json.dumps(
                {
                    "code": "A1",
                    "kind": "SOS button",
                    "name": "王秀英",
                    "place": f"石门村, {LONG_ADDRESS}",
                    "km": "1.2",
                    "minutes": "6",
                },
                ensure_ascii=False,
            ),
        ),
    )
    assert (refused.status_code, refused.body.code) == (200, "isv.PARAM_LENGTH_LIMIT")
    assert bench.endpoint.messages == []

    # The platform shortens it before sending: the call-out goes out, every variable fits, and
    # the place keeps its start (the village first).
    alert = await bench.raise_alert(ELDER)
    (aide,) = await bench.asked(alert.id)
    await bench.send_outbox()
    (row,) = await bench.sms_to(aide.phone, "dispatch")
    assert LONG_ADDRESS in row.body and row.status != "failed"  # the outbox keeps the full text
    (message,) = bench.endpoint.messages_to(aide.phone)
    assert message.template_code == "ANXIN_CALLOUT_EN"
    assert all(len(value) <= MAX_VARIABLE_CHARS for value in message.params.values())
    place = message.params["place"]
    assert len(place) == MAX_VARIABLE_CHARS and place.endswith("…")
    assert row.body.split(", ", 2)[1].startswith(place.split(",")[0])
    assert alert.code in message.body
    assert bench.endpoint.refusals == [("isv.PARAM_LENGTH_LIMIT", "13800138000")]


def _keys(bench: AliyunBench) -> tuple[str, str]:
    secret = bench.settings.aliyun_access_key_secret
    assert bench.settings.aliyun_access_key_id and secret
    return bench.settings.aliyun_access_key_id, secret.get_secret_value()


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("isv.BUSINESS_LIMIT_CONTROL", "上限"),
        ("isv.MOBILE_NUMBER_ILLEGAL", "号码无效"),
        ("isv.AMOUNT_NOT_ENOUGH", "账号或模板"),
        ("isv.BLACK_KEY_CONTROL_LIMIT", "内容被"),
    ],
)
async def test_an_aliyun_refusal_fails_the_call_out_once_and_the_ladder_moves_on(
    aliyun_bench: AliyunBench, code: str, words: str
) -> None:
    bench = aliyun_bench
    alert = await bench.raise_alert(ELDER)
    (aide,) = await bench.asked(alert.id)
    bench.endpoint.set_number_error(aide.phone, code)
    await bench.send_outbox()
    bench.clock.advance(timedelta(minutes=5))
    await bench.send_outbox()

    (row,) = await bench.sms_to(aide.phone, "dispatch")
    assert row.status == "failed" and row.attempts == 1  # not retried
    assert row.last_error is not None and words in row.last_error and code in row.last_error
    first, second = (await bench.attempts(alert.id))[:2]
    assert first.answer == AttemptAnswer.failed and second.responder_id != aide.id


async def test_aliyun_down_is_retried_with_backoff_and_sent_once(
    aliyun_bench: AliyunBench,
) -> None:
    bench = aliyun_bench
    alert = await bench.raise_alert(ELDER)
    (aide,) = await bench.asked(alert.id)
    bench.endpoint.fail_next(1, aide.phone)  # HTTP 503 ServiceUnavailable
    await bench.send_outbox()
    (row,) = await bench.sms_to(aide.phone, "dispatch")
    assert row.status == "queued" and row.attempts == 1
    assert bench.endpoint.messages_to(aide.phone) == []
    assert row.last_error is not None and "暂时不可用" in row.last_error

    bench.clock.advance(timedelta(seconds=1))  # the first backoff
    await bench.send_outbox()
    assert len(bench.endpoint.messages_to(aide.phone)) == 1
    row = await _row(bench, row.id)
    assert row.status in ("sent", "delivered") and row.attempts == 2
    assert [a.answer for a in await bench.attempts(alert.id)] == [AttemptAnswer.pending]


async def test_after_a_crash_the_provider_is_asked_and_the_sms_not_sent_again(
    aliyun_bench: AliyunBench,
) -> None:
    bench = aliyun_bench
    body = REASSIGNED
    since = bench.clock.now()
    biz_id = await bench.sender.send(
        to="+8613800138000", body=body, status_callback=bench.status_callback + "?sms=77"
    )
    assert biz_id.endswith("^0")
    # QuerySendDetails finds it by its text (and our OutId), so the outbox records it as sent.
    found = await bench.sender.find_sent(to="+8613800138000", body=body, since=since)
    assert found == "out:77"
    assert await bench.sender.find_sent(to="+8613800138001", body=body, since=since) is None


async def test_a_wrong_access_key_secret_is_refused_with_aliyuns_error(
    aliyun_bench: AliyunBench,
) -> None:
    bench = aliyun_bench
    key_id, _ = _keys(bench)
    wrong = AliyunSmsProvider(
        account=AliyunAccount(
            key_id, "not-the-secret", endpoint=bench.settings.aliyun_sms_endpoint
        ),
        sign_name="安心",
    )
    with pytest.raises(SmsSendError) as caught:
        await wrong.send(to="+8613800138000", body=REASSIGNED, status_callback=None)
    assert "SignatureDoesNotMatch" in caught.value.reason and caught.value.http_status == 400
    assert not caught.value.retryable and bench.endpoint.messages == []


async def test_pushes_without_the_token_are_refused_and_change_nothing(
    aliyun_bench: AliyunBench,
) -> None:
    bench = aliyun_bench
    alert = await bench.raise_alert(ELDER)
    (aide,) = await bench.asked(alert.id)
    (row,) = await bench.sms_to(aide.phone, "dispatch")
    report = [
        {
            "phone_number": aide.phone[3:],
            "success": False,
            "err_code": "MOBILE_NOT_ON_SERVICE",
            "biz_id": "1^0",
            "out_id": str(row.id),
            "send_time": "",
            "report_time": "",
        }
    ]
    up = [
        {
            "phone_number": aide.phone[3:],
            "content": f"1 {alert.code}",
            "sequence_id": 1,
            "dest_code": "10690000",
            "send_time": "",
            "sign_name": "安心",
        }
    ]
    for kind, batch in (("report", report), ("up", up)):
        for token in ("wrong-token", ""):
            answer = await bench.http.post(bench.push_url(kind, token), json=batch)
            assert answer.status_code in (403, 404, 405)
        answer = await bench.http.post(bench.push_url(kind, "wrong-token"), json=batch)
        assert answer.status_code == 403
    assert (await _row(bench, row.id)).status == "queued"
    assert [a.answer for a in await bench.attempts(alert.id)] == [AttemptAnswer.pending]
    async with bench.sessions() as session:
        inbound = await session.execute(select(SmsMessage).where(col(SmsMessage.direction) == "in"))
        assert list(inbound.scalars()) == []
    assert (await bench.alert(alert.id)).status == AlertStatus.dispatching


async def test_a_visit_report_by_sms_up_is_answered_through_a_registered_template(
    aliyun_bench: AliyunBench,
) -> None:
    bench = aliyun_bench
    async with bench.sessions() as session:
        aide = (
            (await session.execute(select(Responder).where(col(Responder.kind) == "aide")))
            .scalars()
            .first()
        )
    assert aide is not None
    assert await bench.reply(aide.phone, f"访 {ELDER}") == 200
    assert await bench.send_outbox() == 1
    (answer,) = bench.endpoint.messages_to(aide.phone)
    assert answer.template_code.startswith("ANXIN_VISIT_") and ELDER in answer.body
    assert bench.endpoint.refusals == []


async def test_the_endpoint_refuses_a_replayed_or_altered_signed_request(
    aliyun_bench: AliyunBench,
) -> None:
    """The signature covers the whole request, and each nonce is good once, as at Aliyun."""
    bench = aliyun_bench
    await bench.sender.send(to="+8613800138000", body=REASSIGNED, status_callback=None)
    assert bench.endpoint.last_request is not None
    path, query, headers, body = bench.endpoint.last_request
    url = bench.settings.aliyun_sms_endpoint + path
    replayed = await bench.http.post(f"{url}?{query}", headers=headers, content=body)
    assert (replayed.status_code, replayed.json()["Code"]) == (400, "SignatureNonceUsed")
    fresh = {**headers, "x-acs-signature-nonce": "another-nonce"}
    altered = await bench.http.post(f"{url}?{query}", headers=fresh, content=body)
    assert (altered.status_code, altered.json()["Code"]) == (400, "SignatureDoesNotMatch")
    other_number = query.replace("13800138000", "13800138001")
    assert other_number != query
    moved = await bench.http.post(f"{url}?{other_number}", headers=headers, content=body)
    assert moved.json()["Code"] == "SignatureDoesNotMatch"
    assert len(bench.endpoint.messages) == 1


async def test_an_sms_aliyun_took_before_the_dispatcher_died_is_not_sent_again(
    aliyun_bench: AliyunBench,
) -> None:
    """The pass that sent it died before its commit (and no receipt came): the next pass asks
    Aliyun (QuerySendDetails) and records it as sent instead of sending it twice."""
    bench = aliyun_bench
    bench.endpoint.report_url = None  # no receipt to give it away
    alert = await bench.raise_alert(ELDER)
    (aide,) = await bench.asked(alert.id)
    (row,) = await bench.sms_to(aide.phone, "dispatch")
    await outbox.mark_in_flight(bench.sessions, [row.id or 0], bench.clock.now())
    await bench.sender.send(
        to=aide.phone, body=row.body, status_callback=f"{bench.status_callback}?sms={row.id}"
    )
    # ... and the pass died here. The next one, after the in-flight mark has settled:
    bench.clock.advance(outbox.IN_FLIGHT_SETTLE + timedelta(seconds=1))
    await bench.send_outbox()
    assert len(bench.endpoint.messages_to(aide.phone)) == 1
    row = await _row(bench, row.id)
    assert (row.status, row.provider_sid) == ("sent", f"out:{row.id}")


def test_the_push_token_and_the_access_key_secret_are_blanked_in_logs() -> None:
    """The push URLs carry the token, so an access log line would too: it is blanked there as
    every SecretStr setting is (anxin.logging.redact)."""
    Settings(
        aliyun_access_key_secret=SecretStr("aliyun-secret-of-the-test"),
        aliyun_push_token=SecretStr("push-token-in-a-log-line"),
    )
    line = (
        '"POST /aliyun/sms/report/push-token-in-a-log-line HTTP/1.1" 200 aliyun-secret-of-the-test'
    )
    assert redact(line) == '"POST /aliyun/sms/report/*** HTTP/1.1" 200 ***'
