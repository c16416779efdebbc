"""Issue 19 items 1 and 2 through real parts: the ladder calls a silent aide, the calls worker
places the call with the real `twilio` client at the project's Twilio-compatible sandbox, whose
simulated phone picks up and presses a key (or lets it ring, or rejects it); the signed `<Gather>`
action and status callbacks come back to the web app and move the alert as an SMS reply would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import SQLModel, col

from alert_service.models import Alert, AlertTimelineEntry, AttemptAnswer, DispatchAttempt
from anxin.db import SessionMaker
from anxin.models import Responder
from dispatcher.models import CallStatus, VoiceCall
from dispatcher.twilio_provider import TwilioVoiceProvider, sign_twilio_request
from dispatcher.twilio_sandbox import Callee
from tests.builders import tick_at
from tests.support.dispatch import ELDER, DispatchBench
from tests.support.harness import eventually
from tests.support.voice import KEYS_SPOKEN, calls_of, place_calls, voice_on, voice_provider


@pytest.fixture
async def voice(bench: DispatchBench) -> AsyncIterator[TwilioVoiceProvider]:
    await voice_on(bench, voice_after_s=60)
    provider = voice_provider(bench)
    try:
        yield provider
    finally:
        await provider.aclose()


async def ended(bench: DispatchBench, alert_id: int | None) -> VoiceCall | None:
    rows = await calls_of(bench, alert_id)
    return rows[-1] if rows and rows[-1].ended_at is not None else None


async def actions(bench: DispatchBench, alert_id: int | None) -> list[str]:
    return [e.action for e in await bench.timeline(alert_id)]


async def test_a_silent_aide_is_called_after_a_minute_and_takes_it_by_key_1(
    bench: DispatchBench, voice: TwilioVoiceProvider
) -> None:
    alert = await bench.raise_alert(ELDER)
    (aide,) = await bench.asked(alert.id)
    await bench.send_outbox()
    bench.sandbox.set_callee(aide.phone, Callee("pick_up", after=0.0, key="1"))

    # 59 s of silence: no call yet.
    await tick_at(bench.sessions, bench.clock, alert.raised_at + timedelta(seconds=59))
    assert await calls_of(bench, alert.id) == []
    await tick_at(bench.sessions, bench.clock, alert.raised_at + timedelta(seconds=60))
    assert await place_calls(bench, voice) == 1

    row = await eventually(lambda: ended(bench, alert.id), what="the call's end")
    assert (row.digits, row.status, row.reason) == ("1", CallStatus.completed, "no_sms_answer")
    assert (await bench.alert(alert.id)).accepted_by == aide.id
    (call,) = bench.sandbox.calls_to(aide.phone)
    assert row.provider_sid == call.sid
    speech = call.speech[0]
    assert KEYS_SPOKEN in speech and "公里" in speech and "分钟" in speech
    elder = await bench.elder(ELDER)
    assert elder.name in speech
    assert call.answer_twiml is not None and "已为您接单" in call.answer_twiml
    timeline = await actions(bench, alert.id)
    for step in ("called", "call_placed", "call_key", "accepted"):
        assert step in timeline, step
    key = next(e for e in await bench.timeline(alert.id) if e.action == "call_key")
    assert key.detail["digits"] == "1"


@pytest.mark.parametrize(
    ("callee", "outcome"),
    [(Callee("ring"), CallStatus.no_answer), (Callee("reject"), CallStatus.busy)],
    ids=["rings out", "rejected"],
)
async def test_a_call_not_answered_asks_the_next_aide_at_once(
    bench: DispatchBench, voice: TwilioVoiceProvider, callee: Callee, outcome: CallStatus
) -> None:
    alert = await bench.raise_alert(ELDER)
    (first,) = await bench.asked(alert.id)
    await bench.send_outbox()
    bench.sandbox.set_callee(first.phone, callee)
    await tick_at(bench.sessions, bench.clock, alert.raised_at + timedelta(seconds=60))
    await place_calls(bench, voice)

    async def escalated() -> list[Responder] | None:
        asked = await bench.asked(alert.id)
        return asked if len(asked) >= 2 else None

    # The clock has not moved past the minute: the call's outcome alone moved the ladder on.
    _, second, *_ = await eventually(escalated, what="the next aide asked")
    assert second.id != first.id and second.kind == "aide"
    attempts = await bench.attempts(alert.id)
    assert [a.answer for a in attempts[:2]] == [AttemptAnswer.failed, AttemptAnswer.pending]
    (row,) = await calls_of(bench, alert.id)
    assert row.status == outcome and row.digits is None
    assert "call_failed" in await actions(bench, alert.id)


async def test_an_sms_1_while_the_phone_rings_keeps_the_alert_when_the_call_rings_out(
    bench: DispatchBench, voice: TwilioVoiceProvider
) -> None:
    alert = await bench.raise_alert(ELDER)
    (aide,) = await bench.asked(alert.id)
    await bench.send_outbox()
    bench.sandbox.set_callee(aide.phone, Callee("ring"))
    bench.sandbox.ring_seconds = 3600  # still ringing when the aide texts back
    await tick_at(bench.sessions, bench.clock, alert.raised_at + timedelta(seconds=60))
    await place_calls(bench, voice)
    assert await bench.reply(aide.phone, "1") == 200
    (call,) = bench.sandbox.calls_to(aide.phone)
    await bench.sandbox.ring_out(call)
    await eventually(lambda: ended(bench, alert.id), what="the call's end")
    assert (await bench.alert(alert.id)).accepted_by == aide.id
    assert [a.answer for a in await bench.attempts(alert.id)] == [AttemptAnswer.accepted]
    timeline = await actions(bench, alert.id)
    assert "call_failed" not in timeline and timeline[-1] == "call_ended"


async def test_key_0_declines_and_the_next_aide_is_asked_at_once(
    bench: DispatchBench, voice: TwilioVoiceProvider
) -> None:
    alert = await bench.raise_alert(ELDER)
    (first,) = await bench.asked(alert.id)
    await bench.send_outbox()
    bench.sandbox.set_callee(first.phone, Callee("pick_up", key="0"))
    await tick_at(bench.sessions, bench.clock, alert.raised_at + timedelta(seconds=60))
    await place_calls(bench, voice)
    await eventually(lambda: ended(bench, alert.id), what="the call's end")
    attempts = await bench.attempts(alert.id)
    assert [a.answer for a in attempts[:2]] == [AttemptAnswer.declined, AttemptAnswer.pending]
    assert attempts[1].role == "aide"
    assert "declined" in await actions(bench, alert.id)


async def test_a_failed_sms_calls_the_same_aide_at_once(
    bench: DispatchBench, voice: TwilioVoiceProvider
) -> None:
    alert = await bench.raise_alert(ELDER)
    (aide,) = await bench.asked(alert.id)
    bench.sandbox.set_number_error(aide.phone, 30005)  # SMS undelivered; the phone still rings
    bench.sandbox.set_callee(aide.phone, Callee("pick_up", key="1"))
    await bench.send_outbox()

    async def call_queued() -> list[VoiceCall] | None:
        return await calls_of(bench, alert.id) or None

    (row,) = await eventually(call_queued, what="the call after the failed SMS")
    assert row.reason == "sms_failed"
    assert len(await bench.asked(alert.id)) == 1  # the same aide, not the next one
    await place_calls(bench, voice)
    await eventually(lambda: ended(bench, alert.id), what="the call's end")
    assert (await bench.alert(alert.id)).accepted_by == aide.id


async def test_voice_has_its_own_daily_limit_per_number(
    bench: DispatchBench, voice: TwilioVoiceProvider
) -> None:
    alert = await bench.raise_alert(ELDER)
    await bench.send_outbox()
    await tick_at(bench.sessions, bench.clock, alert.raised_at + timedelta(seconds=60))
    assert await place_calls(bench, voice, daily_limit=0) == 1
    assert bench.sandbox.calls == []
    (row,) = await calls_of(bench, alert.id)
    assert row.status == CallStatus.failed and row.last_error and "每日语音上限" in row.last_error
    assert len(await bench.asked(alert.id)) >= 2  # moved on as an unanswered call does


async def call_state(sessions: SessionMaker) -> dict[str, list[dict[str, Any]]]:
    state: dict[str, list[dict[str, Any]]] = {}
    async with sessions() as session:
        for model in (Alert, DispatchAttempt, VoiceCall, AlertTimelineEntry):
            rows = await session.execute(select(model).order_by(col(model.id)))
            state[model.__tablename__] = [
                row.model_dump() for row in rows.scalars() if isinstance(row, SQLModel)
            ]
    return state


FORGERIES = ("unsigned", "wrong token", "signed for another URL", "form changed after signing")


async def test_forged_call_callbacks_get_403_and_change_nothing(
    bench: DispatchBench, voice: TwilioVoiceProvider
) -> None:
    alert = await bench.raise_alert(ELDER)
    (aide,) = await bench.asked(alert.id)
    await bench.send_outbox()
    bench.sandbox.set_callee(aide.phone, Callee("ring"))
    bench.sandbox.ring_seconds = 3600  # it rings on: the forger's callbacks come first
    await tick_at(bench.sessions, bench.clock, alert.raised_at + timedelta(seconds=60))
    await place_calls(bench, voice)
    (row,) = await calls_of(bench, alert.id)
    before = await call_state(bench.sessions)
    token = bench.sandbox.auth_token
    hooks = {
        # What a forger would want: the aide "taking it" by key 1, or the call "unanswered".
        "gather": {"CallSid": row.provider_sid or "", "Digits": "1", "CallStatus": "in-progress"},
        "status": {"CallSid": row.provider_sid or "", "CallStatus": "no-answer"},
    }
    for hook, form in hooks.items():
        url = f"{bench.web_url}/twilio/call/{hook}?call={row.id}"
        for forgery in FORGERIES:
            headers: dict[str, str] = {}
            sent = form
            if forgery == "wrong token":
                headers["X-Twilio-Signature"] = sign_twilio_request("not-the-token", url, form)
            elif forgery == "signed for another URL":
                headers["X-Twilio-Signature"] = sign_twilio_request(token, url + "&x=1", form)
            elif forgery == "form changed after signing":
                headers["X-Twilio-Signature"] = sign_twilio_request(token, url, form)
                sent = {**form, "Digits": "0", "CallStatus": "busy"}
            response = await bench.http.post(url, data=sent, headers=headers)
            assert response.status_code == 403, (hook, forgery)
            assert await call_state(bench.sessions) == before, (hook, forgery)

    # Rightly signed, the same key is applied: the refusals were about the signature.
    url = f"{bench.web_url}/twilio/call/gather?call={row.id}"
    form = hooks["gather"]
    signature = sign_twilio_request(token, url, form)
    response = await bench.http.post(url, data=form, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200 and "已为您接单" in response.text
    assert (await bench.alert(alert.id)).accepted_by == aide.id
