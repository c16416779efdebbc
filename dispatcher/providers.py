"""The provider seams: SMS (`SmsProvider`) and voice call-outs (`VoiceProvider`), each Twilio
(real, or any Twilio-compatible endpoint) or the outbox only; Aliyun is the second provider
(`ANXIN_SMS_PROVIDER`). Policy (who, when, retries, daily limits, once-only) is never a
provider's: `dispatcher.worker` (SMS) and `dispatcher.calls` (voice) keep it."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from anxin.settings import Settings


class SmsSendError(Exception):
    """A send (an SMS or a call) that got no provider id. `retryable`: whether the same send
    may work later. `http_status` set means the provider answered (it refused: it has not taken
    it); None means no answer came back (it may have taken it, so the once-only check asks it
    with `find_sent` / `find_placed` before sending again)."""

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        code: int | None = None,
        http_status: int | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(reason if code is None else f"{reason} [{code}]")
        self.reason = reason
        self.retryable = retryable
        self.code = code
        self.http_status = http_status
        # What the API said, verbatim; may contain the phone number, so not for logs.
        self.detail = detail


class SmsProvider(Protocol):
    name: str

    async def send(self, *, to: str, body: str, status_callback: str | None) -> str | None:
        """Hand one SMS to the provider; returns its id, or None when kept in the outbox only."""
        ...

    async def find_sent(self, *, to: str, body: str, since: datetime) -> str | None:
        """The id of a message with this body the provider took for `to` since `since`."""
        ...

    async def aclose(self) -> None: ...


class OutboxOnlyProvider:
    """No credentials: SMS stay in the outbox, shown in the console, never sent."""

    name = "outbox"

    async def send(self, *, to: str, body: str, status_callback: str | None) -> str | None:
        return None

    async def find_sent(self, *, to: str, body: str, since: datetime) -> str | None:
        return None

    async def aclose(self) -> None:
        return None


def make_provider(settings: Settings) -> SmsProvider:
    if settings.sms_provider == "aliyun":
        return _aliyun_sms(settings)
    if not settings.twilio_configured:
        return OutboxOnlyProvider()
    from dispatcher.twilio_provider import TwilioSmsProvider

    assert settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from
    return TwilioSmsProvider(
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token.get_secret_value(),
        from_number=settings.twilio_from,
        base_url=settings.twilio_base_url,
    )


def _aliyun_sms(settings: Settings) -> SmsProvider:
    if not settings.aliyun_configured:
        return OutboxOnlyProvider()
    from dispatcher.aliyun_sms import AliyunAccount, AliyunSmsProvider

    assert settings.aliyun_access_key_id and settings.aliyun_access_key_secret
    return AliyunSmsProvider(
        account=AliyunAccount(
            access_key_id=settings.aliyun_access_key_id,
            access_key_secret=settings.aliyun_access_key_secret.get_secret_value(),
            endpoint=settings.aliyun_sms_endpoint,
        ),
        sign_name=settings.aliyun_sign_name,
        template_codes=settings.aliyun_template_codes,
    )


def sms_status_callback(settings: Settings) -> str | None:
    """The receipt URL the outbox worker gives each SMS (it adds `?sms=<row id>`): Twilio posts
    there; Aliyun posts to the push URL set in its console and takes the row id as `OutId`."""
    if settings.sms_provider == "aliyun":
        return settings.callback_base + "/aliyun/sms/report" if settings.aliyun_configured else None
    return settings.callback_base + "/twilio/status" if settings.twilio_configured else None


# --- voice call-outs (issue 19) --------------------------------------------------------------


class VoiceProvider(Protocol):
    """Places one text-to-speech call with a one-key menu, and reports back through webhooks.

    What comes back goes to two provider-neutral functions in `dispatcher.inbound`, which a
    provider's webhook view (in `dispatcher/views.py`, signature verified first; 403 and
    nothing changed otherwise) calls with the provider's words mapped to the platform's:

    - `inbound.call_keypress(session, responses=, call_id=, provider_sid=, digits=, now=)`
      when the callee pressed a key (`"1"` takes the alert, `"0"` declines, exactly as the SMS
      replies; anything else is noted);
    - `inbound.call_status(session, responses=, call_id=, provider_sid=, status=, now=)`
      with a `dispatcher.models.CallStatus` (`ringing`, `answered`, `completed`, `no_answer`,
      `busy`, `failed`, `canceled`); a final one without a key pressed moves the ladder on.

    `call_ref` is our id of the call (the `voice_calls` row id, decimal, at most 18 ASCII
    digits). Echo it back so the callbacks find the row even before the provider's id is
    stored: Twilio puts it in the callback URLs' query (`?call=<ref>`), Aliyun in `OutId`.
    """

    name: str

    async def call(
        self,
        *,
        to: str,
        speech_text: str,
        call_ref: str,
        status_callback: str | None,
        gather_callback: str | None,
    ) -> str | None:
        """Place one call to `to` (E.164) that speaks `speech_text` (Chinese) and waits for one
        key. `status_callback` / `gather_callback`: our public URLs for the outcome and the key
        (`{public_url}/twilio/call/status?call=<ref>`…; a provider whose callbacks are
        configured in its console, as Aliyun's, may ignore them). Returns the provider's call
        id, or None when the call is kept in the outbox only. Raises `SmsSendError` (with
        `retryable` and `http_status`) when it was not placed."""
        ...

    async def find_placed(self, *, to: str, call_ref: str, since: datetime) -> str | None:
        """The provider's id of a call to `to` (ours: `call_ref`, when the provider records it;
        else any of ours to that number) placed since `since`, or None when there is none.
        Asked after a crash between placing a call and committing it, so the aide is not rung
        twice. Raises `SmsSendError` when the provider cannot be asked (then the call waits);
        return None when the provider cannot tell."""
        ...

    async def aclose(self) -> None: ...


class OutboxOnlyVoiceProvider:
    """No voice provider configured: calls stay in the table (shown on the timeline), never
    placed; the ladder goes on by its SMS timeouts as before."""

    name = "outbox"

    async def call(
        self,
        *,
        to: str,
        speech_text: str,
        call_ref: str,
        status_callback: str | None,
        gather_callback: str | None,
    ) -> str | None:
        return None

    async def find_placed(self, *, to: str, call_ref: str, since: datetime) -> str | None:
        return None

    async def aclose(self) -> None:
        return None


def make_voice_provider(settings: Settings) -> VoiceProvider:
    """The voice provider the settings choose (the SMS provider's, `ANXIN_SMS_PROVIDER`), or
    the outbox only when voice is off (`ANXIN_VOICE_ENABLED=false`) or not configured."""
    if settings.voice_enabled and settings.sms_provider == "aliyun":
        return _aliyun_voice(settings)
    if not settings.voice_enabled or not settings.twilio_configured:
        return OutboxOnlyVoiceProvider()
    from dispatcher.twilio_provider import TwilioVoiceProvider

    assert settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from
    return TwilioVoiceProvider(
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token.get_secret_value(),
        from_number=settings.twilio_from,
        base_url=settings.twilio_base_url,
    )


def _aliyun_voice(settings: Settings) -> VoiceProvider:
    if not settings.aliyun_configured or not settings.aliyun_voice_show_number:
        return OutboxOnlyVoiceProvider()
    from dispatcher.aliyun_sms import AliyunAccount
    from dispatcher.aliyun_voice import AliyunVoiceProvider

    assert settings.aliyun_access_key_id and settings.aliyun_access_key_secret
    return AliyunVoiceProvider(
        account=AliyunAccount(
            access_key_id=settings.aliyun_access_key_id,
            access_key_secret=settings.aliyun_access_key_secret.get_secret_value(),
            endpoint=settings.aliyun_voice_endpoint,
        ),
        show_number=settings.aliyun_voice_show_number,
        template_codes=settings.aliyun_template_codes,
    )
