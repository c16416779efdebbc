"""Aliyun voice call-outs (issue 19 item 3): the calls worker places an IvrCall with the official
Aliyun SDK at the project's Aliyun-compatible endpoint (V3 signature, registered text-to-speech
templates, the one-key menu); its simulated phone picks up and presses a key, lets it ring or
rejects it, and the VoiceCallReport / VoiceReport push comes back to the web app and moves the
alert as an SMS reply would. A push without the token changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from alert_service.models import AttemptAnswer
from dispatcher.aliyun_sandbox import Callee
from dispatcher.aliyun_voice import AliyunVoiceProvider
from dispatcher.models import CallStatus, VoiceCall
from tests.builders import tick_at
from tests.support.aliyun import AliyunBench
from tests.support.dispatch import ELDER
from tests.support.harness import eventually
from tests.support.voice import KEYS_SPOKEN, calls_of, voice_on


@pytest.fixture
async def voice(aliyun_bench: AliyunBench) -> AsyncIterator[AliyunVoiceProvider]:
    await voice_on(aliyun_bench, voice_after_s=60)
    provider = aliyun_bench.voice()
    try:
        yield provider
    finally:
        await provider.aclose()


async def ended(bench: AliyunBench, alert_id: int | None) -> VoiceCall | None:
    rows = await calls_of(bench, alert_id)
    return rows[-1] if rows and rows[-1].ended_at is not None else None


async def test_a_silent_aide_is_called_through_aliyun_and_takes_it_by_key_1(
    aliyun_bench: AliyunBench, voice: AliyunVoiceProvider
) -> None:
    bench = aliyun_bench
    alert = await bench.raise_alert(ELDER)
    (aide,) = await bench.asked(alert.id)
    await bench.send_outbox()
    bench.endpoint.set_callee(aide.phone, Callee("pick_up", after=0.0, key="1"))
    await tick_at(bench.sessions, bench.clock, alert.raised_at + timedelta(seconds=60))
    assert await bench.place_calls(voice) == 1

    row = await eventually(lambda: ended(bench, alert.id), what="the call's end")
    assert (row.digits, row.status) == ("1", CallStatus.completed)
    assert (await bench.alert(alert.id)).accepted_by == aide.id
    (call,) = bench.endpoint.calls_to(aide.phone)
    assert row.provider_sid == call.call_id and call.out_id == str(row.id)
    # What the phone heard: the registered call-out template, then key 1's answer.
    assert call.start_code == "ANXIN_TTS_CALLOUT" and KEYS_SPOKEN in call.speech
    assert call.speech == row.speech_text and (await bench.elder(ELDER)).name in call.speech
    assert call.answer_for == "ANXIN_TTS_KEY_1"
    assert set(call.menu) == {"1", "0"}


@pytest.mark.parametrize(
    ("callee", "outcome"),
    [(Callee("ring"), CallStatus.no_answer), (Callee("reject"), CallStatus.busy)],
    ids=["rings out", "rejected"],
)
async def test_a_call_not_answered_asks_the_next_aide_at_once(
    aliyun_bench: AliyunBench, voice: AliyunVoiceProvider, callee: Callee, outcome: CallStatus
) -> None:
    bench = aliyun_bench
    alert = await bench.raise_alert(ELDER)
    (first,) = await bench.asked(alert.id)
    await bench.send_outbox()
    bench.endpoint.set_callee(first.phone, callee)
    await tick_at(bench.sessions, bench.clock, alert.raised_at + timedelta(seconds=60))
    await bench.place_calls(voice)

    async def escalated() -> bool:
        return len(await bench.asked(alert.id)) >= 2

    await eventually(escalated, what="the next aide asked")
    attempts = await bench.attempts(alert.id)
    assert [a.answer for a in attempts[:2]] == [AttemptAnswer.failed, AttemptAnswer.pending]
    (row,) = await calls_of(bench, alert.id)
    assert row.status == outcome and row.digits is None


async def test_key_0_declines_through_aliyun(
    aliyun_bench: AliyunBench, voice: AliyunVoiceProvider
) -> None:
    bench = aliyun_bench
    alert = await bench.raise_alert(ELDER)
    (first,) = await bench.asked(alert.id)
    await bench.send_outbox()
    bench.endpoint.set_callee(first.phone, Callee("pick_up", key="0"))
    await tick_at(bench.sessions, bench.clock, alert.raised_at + timedelta(seconds=60))
    await bench.place_calls(voice)
    await eventually(lambda: ended(bench, alert.id), what="the call's end")
    attempts = await bench.attempts(alert.id)
    assert [a.answer for a in attempts[:2]] == [AttemptAnswer.declined, AttemptAnswer.pending]
    assert bench.endpoint.calls_to(first.phone)[0].answer_for == "ANXIN_TTS_KEY_0"


async def test_aliyuns_per_callee_cap_fails_the_call_and_the_ladder_goes_on(
    aliyun_bench: AliyunBench, voice: AliyunVoiceProvider
) -> None:
    bench = aliyun_bench
    alert = await bench.raise_alert(ELDER)
    (first,) = await bench.asked(alert.id)
    await bench.send_outbox()
    bench.endpoint.set_number_error(first.phone, "isv.BUSINESS_LIMIT_CONTROL")
    await tick_at(bench.sessions, bench.clock, alert.raised_at + timedelta(seconds=60))
    await bench.place_calls(voice)
    (row,) = await calls_of(bench, alert.id)
    assert row.status == CallStatus.failed and row.attempts == 1
    assert row.last_error is not None and "isv.BUSINESS_LIMIT_CONTROL" in row.last_error
    assert bench.endpoint.calls == []


async def test_a_forged_voice_push_is_refused_and_changes_nothing(
    aliyun_bench: AliyunBench, voice: AliyunVoiceProvider
) -> None:
    bench = aliyun_bench
    alert = await bench.raise_alert(ELDER)
    await bench.send_outbox()
    await tick_at(bench.sessions, bench.clock, alert.raised_at + timedelta(seconds=60))
    (row,) = await calls_of(bench, alert.id)
    forged = [{"call_id": "1^1", "status_code": "300000", "dtmf": "1", "out_id": str(row.id)}]
    url = f"{bench.web_url}/aliyun/voice/report/not-the-token"
    assert (await bench.http.post(url, json=forged)).status_code == 403
    (after,) = await calls_of(bench, alert.id)
    assert (after.status, after.digits, after.provider_sid) == (row.status, None, None)
    assert (await bench.alert(alert.id)).accepted_by is None
