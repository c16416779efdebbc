"""`anxin doctor`'s questions to the SMS provider itself: do its credentials work, and (Aliyun)
is every template the platform sends registered, approved and worded as ours?

Run by the command (`anxin.cli doctor`) after the core's checks (`anxin.doctor`, which imports
no part); each is one or a few read-only API calls with a short timeout, sending nothing.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from anxin.doctor import Check, Status
from anxin.settings import Settings
from dispatcher.aliyun_templates import TEMPLATES
from dispatcher.providers import SmsSendError

PROVIDER = "短信平台连接 SMS provider"
TEMPLATES_CHECK = "短信模板 SMS templates"
TIMEOUT_S = 10.0
# Twilio's Messages list read newest first stops at the first message older than this: one GET.
_NEWER_THAN_ANY = datetime(9999, 1, 1, tzinfo=UTC)


async def check_aliyun(settings: Settings) -> list[Check]:
    from dispatcher.aliyun_sms import AliyunAccount, AliyunSmsProvider

    assert settings.aliyun_access_key_id and settings.aliyun_access_key_secret
    provider = AliyunSmsProvider(
        account=AliyunAccount(
            settings.aliyun_access_key_id,
            settings.aliyun_access_key_secret.get_secret_value(),
            endpoint=settings.aliyun_sms_endpoint,
            timeout_s=TIMEOUT_S / 2,
        ),
        sign_name=settings.aliyun_sign_name,
        template_codes=settings.aliyun_template_codes,
    )
    problems: list[str] = []
    try:
        async with asyncio.timeout(TIMEOUT_S * 3):
            for template in TEMPLATES:
                status, text = await provider.template_status(template.key)
                code = provider.code_of(template.key)
                if status != "approved":
                    problems.append(f"{template.key} ({code}): {status}")
                elif text is not None and text != template.text:
                    problems.append(f"{template.key} ({code}): text differs")
    except (SmsSendError, TimeoutError) as exc:
        reason = exc.reason if isinstance(exc, SmsSendError) else "timeout"
        return [
            Check(
                PROVIDER,
                Status.failure,
                f"阿里云 {settings.aliyun_sms_endpoint} 不接受请求（{reason}）：请检查 AccessKey",
                f"Aliyun at {settings.aliyun_sms_endpoint} refused us ({reason}): check the "
                "AccessKey id and secret",
            )
        ]
    finally:
        await provider.aclose()
    checks = [
        Check(
            PROVIDER,
            Status.ok,
            f"阿里云接受本平台的签名请求（{settings.aliyun_sms_endpoint}）",
            f"Aliyun accepts our signed requests ({settings.aliyun_sms_endpoint})",
        )
    ]
    if problems:
        listed = "; ".join(problems)
        checks.append(
            Check(
                TEMPLATES_CHECK,
                Status.failure,
                f"以下模板未审核通过或内容不符（见 docs/operations.md 第 11 节）：{listed}",
                f"templates not approved or worded differently (docs/operations.md §11): {listed}",
            )
        )
    else:
        checks.append(
            Check(
                TEMPLATES_CHECK,
                Status.ok,
                f"{len(TEMPLATES)} 个模板均已审核通过",
                f"all {len(TEMPLATES)} templates approved",
            )
        )
    return checks


async def check_twilio(settings: Settings) -> list[Check]:
    """One read of the Messages list (page of 1): refused when the SID or token is wrong."""
    from dispatcher.twilio_provider import TwilioSmsProvider

    assert settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from
    provider = TwilioSmsProvider(
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token.get_secret_value(),
        from_number=settings.twilio_from,
        base_url=settings.twilio_base_url,
        timeout=TIMEOUT_S,
    )
    try:
        async with asyncio.timeout(TIMEOUT_S * 2):
            await provider.find_sent(to=settings.twilio_from, body="", since=_NEWER_THAN_ANY)
    except Exception as exc:
        # twilio's page reader raises a bare TwilioException (with the HTTP status) on a 401.
        reason = exc.reason if isinstance(exc, SmsSendError) else _short(exc)
        return [
            Check(
                PROVIDER,
                Status.failure,
                f"Twilio {settings.twilio_base_url} 不接受请求（{reason}）：请检查账户 SID 和密钥",
                f"Twilio at {settings.twilio_base_url} refused us ({reason}): check the account "
                "SID and auth token",
            )
        ]
    finally:
        await provider.aclose()
    return [
        Check(
            PROVIDER,
            Status.ok,
            f"Twilio 接受本平台的账户（{settings.twilio_base_url}）",
            f"Twilio accepts our account ({settings.twilio_base_url})",
        )
    ]


async def provider_checks(settings: Settings) -> list[Check]:
    """The configured provider's checks; none in outbox mode (the settings check says so)."""
    if settings.sms_provider == "aliyun":
        return await check_aliyun(settings) if settings.aliyun_configured else []
    return await check_twilio(settings) if settings.twilio_configured else []


def _short(exc: BaseException) -> str:
    """The exception's first line, e.g. `Unable to fetch page … HTTP 401 …` (no secret in it)."""
    text = " ".join(str(exc).split())[:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
