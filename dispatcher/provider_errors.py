"""Providers' error codes → the platform's outcomes. Pure.

Whatever a provider calls it, a send that failed is one of a few outcomes, and the outcome alone
decides what the platform does (`dispatcher.worker`): `provider_down` is retried with backoff
(`outbox.retry_delay`) — after first asking the provider whether it has the message when no
answer came back, so never twice —; every other outcome fails the SMS at once, and a failed
call-out moves the ladder on to the next responder. The reason written on the SMS row and the
alert's timeline is the outcome's words, then the provider's code, never the provider's raw
text (it may carry the phone number).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    invalid_number = "invalid_number"  # no such mobile number, or not one the provider serves
    limit_reached = "limit_reached"  # the carrier's per-number cap: try someone else
    blocked_content = "blocked_content"  # template, variables or words the carrier refuses
    account = "account"  # credentials, sign name, template not approved, balance: operator's
    provider_down = "provider_down"  # the provider failed or throttled: the same send may work
    undelivered = "undelivered"  # accepted, then the handset could not be reached


RETRYABLE: frozenset[Outcome] = frozenset({Outcome.provider_down})

OUTCOME_WORDS: Mapping[Outcome, str] = {
    Outcome.invalid_number: "号码无效 / invalid number",
    Outcome.limit_reached: "已达短信平台对该号码的上限 / provider's limit for this number reached",
    Outcome.blocked_content: "内容被短信平台拒绝 / content refused by the provider",
    Outcome.account: "短信平台账号或模板配置有误 / provider account or template misconfigured",
    Outcome.provider_down: "短信平台暂时不可用 / provider unavailable",
    Outcome.undelivered: "短信未送达 / not delivered",
}


@dataclass(frozen=True)
class ProviderError:
    outcome: Outcome
    code: str

    @property
    def retryable(self) -> bool:
        return self.outcome in RETRYABLE

    @property
    def reason(self) -> str:
        return f"{OUTCOME_WORDS[self.outcome]} [{self.code}]"


# Aliyun SMS (Dysmsapi SendSms) and voice (Dyvmsapi) codes, https://help.aliyun.com/document_detail/101346.html
# Business refusals come back as HTTP 200 with this `Code`; authentication ones as HTTP 4xx.
ALIYUN_OUTCOMES: Mapping[str, Outcome] = {
    "isv.MOBILE_NUMBER_ILLEGAL": Outcome.invalid_number,
    "isv.DOMESTIC_NUMBER_NOT_SUPPORTED": Outcome.invalid_number,
    "isv.MOBILE_COUNT_OVER_LIMIT": Outcome.invalid_number,
    "isv.BUSINESS_LIMIT_CONTROL": Outcome.limit_reached,
    "isv.DAY_LIMIT_CONTROL": Outcome.limit_reached,
    "isv.TEMPLATE_MISSING_PARAMETERS": Outcome.blocked_content,
    "isv.TEMPLATE_PARAMS_ILLEGAL": Outcome.blocked_content,
    "isv.PARAM_LENGTH_LIMIT": Outcome.blocked_content,
    "isv.PARAM_NOT_SUPPORT_URL": Outcome.blocked_content,
    "isv.BLACK_KEY_CONTROL_LIMIT": Outcome.blocked_content,
    "isv.SMS_CONTENT_ILLEGAL": Outcome.blocked_content,
    "isv.INVALID_JSON_PARAM": Outcome.blocked_content,
    "isv.SMS_TEMPLATE_ILLEGAL": Outcome.account,
    "isv.TTS_TEMPLATE_ILLEGAL": Outcome.account,
    "isv.SMS_SIGNATURE_ILLEGAL": Outcome.account,
    "isv.SMS_SIGN_ILLEGAL": Outcome.account,
    "isv.AMOUNT_NOT_ENOUGH": Outcome.account,
    "isv.ACCOUNT_NOT_EXISTS": Outcome.account,
    "isv.ACCOUNT_ABNORMAL": Outcome.account,
    "isv.OUT_OF_SERVICE": Outcome.account,
    "isv.PRODUCT_UN_SUBSCRIPT": Outcome.account,
    "isv.PRODUCT_UNSUBSCRIBE": Outcome.account,
    "isv.DENY_IP_RANGE": Outcome.account,
    "isp.RAM_PERMISSION_DENY": Outcome.account,
    "SignatureDoesNotMatch": Outcome.account,
    "InvalidAccessKeyId.NotFound": Outcome.account,
    "IncompleteSignature": Outcome.account,
    "Forbidden.RAM": Outcome.account,
    "isv.SYSTEM_ERROR": Outcome.provider_down,
    "isp.SYSTEM_ERROR": Outcome.provider_down,
    "isp.GATEWAY_ERROR": Outcome.provider_down,
    "Throttling.User": Outcome.provider_down,
    "Throttling.Api": Outcome.provider_down,
    "ServiceUnavailable": Outcome.provider_down,
    "InternalError": Outcome.provider_down,
}

# Delivery receipts' `err_code` (SmsReport): the handset, not the request.
ALIYUN_RECEIPT_OUTCOMES: Mapping[str, Outcome] = {
    "MOBILE_NOT_ON_SERVICE": Outcome.invalid_number,
    "MOBILE_ACCOUNT_ABNORMAL": Outcome.invalid_number,
    "MOBILE_IN_BLACK": Outcome.blocked_content,
    "CONTENT_KEYWORD": Outcome.blocked_content,
    "MOBILE_TERMINAL_ERROR": Outcome.undelivered,
    "USER_OFFLINE": Outcome.undelivered,
}


def classify_aliyun(code: str | None, http_status: int | None = None) -> ProviderError:
    """The outcome of an Aliyun error code (or, without a known one, of the HTTP status)."""
    if code and code in ALIYUN_OUTCOMES:
        return ProviderError(ALIYUN_OUTCOMES[code], code)
    shown = code or f"HTTP {http_status}"
    if http_status is not None and (http_status >= 500 or http_status == 429):
        return ProviderError(Outcome.provider_down, shown)
    if code and (code.startswith("isp.") or code.startswith("Throttling")):
        return ProviderError(Outcome.provider_down, code)
    # An unknown refusal: not worth repeating on the 15-minute clock, the ladder moves on.
    return ProviderError(Outcome.blocked_content if code else Outcome.account, shown)


def aliyun_receipt_reason(err_code: str | None, err_msg: str | None = None) -> str:
    """Readable reason of a failed SmsReport, e.g. MOBILE_NOT_ON_SERVICE → 号码无效."""
    code = err_code or "UNKNOWN"
    outcome = ALIYUN_RECEIPT_OUTCOMES.get(code, Outcome.undelivered)
    return ProviderError(outcome, code).reason


# Twilio's codes (`dispatcher.twilio_provider.TWILIO_ERRORS` has their words) by outcome, so
# both providers answer the same question the same way.
TWILIO_OUTCOMES: Mapping[int, Outcome] = {
    20003: Outcome.account,
    20429: Outcome.provider_down,
    21211: Outcome.invalid_number,
    21408: Outcome.account,
    21610: Outcome.blocked_content,
    21614: Outcome.invalid_number,
    30003: Outcome.provider_down,
    30005: Outcome.invalid_number,
    30006: Outcome.invalid_number,
    30007: Outcome.blocked_content,
    30008: Outcome.provider_down,
}


# Aliyun voice: the `status_code` of a VoiceCallReport / VoiceReport push → the platform's call
# status (`dispatcher.models.CallStatus`). 300000 carries the key pressed (`dtmf`). A code not
# listed is read by its `smart_status_code`, else taken as a failed call.
ALIYUN_CALL_STATUS: Mapping[str, str] = {
    "200100": "answered",  # 接通
    "300000": "answered",  # 按键 (dtmf)
    "200000": "completed",  # 正常结束
    "200002": "no_answer",  # 用户未接
    "200003": "busy",  # 用户忙
    "200010": "busy",  # 用户拒接
    "200005": "failed",  # 关机
    "200007": "failed",  # 停机
    "200011": "failed",  # 空号
}
ALIYUN_SMART_CALL_STATUS: Mapping[str, str] = {
    "ANSWERED": "answered",
    "NO_ANSWER": "no_answer",
    "BUSY": "busy",
    "REJECTED": "busy",
    "POWER_OFF": "failed",
    "INVALID_NUMBER": "failed",
}
KEYPRESS_STATUS = "300000"


def aliyun_call_status(status_code: str, smart_status_code: str = "") -> str:
    """The platform's call status for one of Aliyun's voice pushes."""
    return ALIYUN_CALL_STATUS.get(
        status_code, ALIYUN_SMART_CALL_STATUS.get(smart_status_code, "failed")
    )
