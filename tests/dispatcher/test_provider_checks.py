"""`anxin doctor` asks the configured SMS provider itself (issue 19 item 4): the credentials,
and with Aliyun every template registered, approved and worded as the platform sends it —
through the real SDKs against the project's own endpoints."""

from __future__ import annotations

from pydantic import SecretStr

from anxin.doctor import Status, check_sms
from anxin.settings import Settings
from dispatcher.provider_checks import provider_checks
from tests.support.aliyun import AliyunBench
from tests.support.dispatch import DispatchBench


async def test_aliyun_credentials_and_templates_are_checked(aliyun_bench: AliyunBench) -> None:
    settings = aliyun_bench.settings
    provider, templates = await provider_checks(settings)
    assert (provider.status, templates.status) == (Status.ok, Status.ok)
    assert "approved" in templates.en

    del aliyun_bench.endpoint.templates["ANXIN_REMINDER"]
    _, templates = await provider_checks(settings)
    assert templates.status == Status.failure and "ANXIN_REMINDER" in templates.en

    wrong = settings.model_copy(update={"aliyun_access_key_secret": SecretStr("wrong")})
    (refused,) = await provider_checks(wrong)
    assert refused.status == Status.failure and "SignatureDoesNotMatch" in refused.en
    assert aliyun_bench.endpoint.messages == []  # the doctor sends nothing


async def test_twilio_credentials_are_checked(bench: DispatchBench) -> None:
    (ok,) = await provider_checks(bench.settings)
    assert ok.status == Status.ok
    wrong = bench.settings.model_copy(update={"twilio_auth_token": SecretStr("wrong")})
    (refused,) = await provider_checks(wrong)
    assert refused.status == Status.failure and "401" in refused.en


def test_aliyun_settings_need_the_push_token() -> None:
    base = {"sms_provider": "aliyun", "aliyun_access_key_id": "LTAI5t"}
    assert check_sms(Settings(**base)).status == Status.failure  # type: ignore[arg-type]
    keyed = Settings(
        sms_provider="aliyun",
        aliyun_access_key_id="LTAI5t",
        aliyun_access_key_secret=SecretStr("s" * 30),
    )
    missing = check_sms(keyed)
    assert missing.status == Status.failure and "ANXIN_ALIYUN_PUSH_TOKEN" in missing.en
    sound = keyed.model_copy(update={"aliyun_push_token": SecretStr("t" * 32)})
    no_calls = check_sms(sound)
    assert no_calls.status == Status.warning and "VOICE_SHOW_NUMBER" in no_calls.en
    calls = sound.model_copy(update={"aliyun_voice_show_number": "057112345678"})
    assert check_sms(calls).status == Status.ok
    assert check_sms(Settings(sms_provider="aliyun")).status == Status.warning
