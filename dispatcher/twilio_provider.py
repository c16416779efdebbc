"""Twilio behind a seam: the only module in Anxin that imports `twilio`.

One `send` is one HTTP POST to the Messages API. Retrying is the outbox's job: it knows whether
a retry is still worth it (the 15-minute clock) and it keeps the attempt count durably.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from dispatcher.providers import SmsSendError as SmsSendError

# The prefix the twilio library puts on every Messages API URL (twilio/rest/api/ApiBase.py).
TWILIO_API_BASE = "https://api.twilio.com"


@dataclass(frozen=True)
class TwilioErrorInfo:
    reason: str
    retryable: bool


# https://www.twilio.com/docs/api/errors. 21xxx come back on the POST; 30xxx come later
# as the ErrorCode of an `undelivered`/`failed` status callback.
TWILIO_ERRORS: Mapping[int, TwilioErrorInfo] = {
    20003: TwilioErrorInfo("Twilio 鉴权失败，请检查账号和密钥 / authentication failed", False),
    20429: TwilioErrorInfo("请求过多，被限流 / too many requests", True),
    21211: TwilioErrorInfo("收件号码无效 / invalid 'To' phone number", False),
    21408: TwilioErrorInfo("未开通发往该地区的短信 / sending to this region is not enabled", False),
    21610: TwilioErrorInfo("对方已退订（回复过 STOP）/ recipient has unsubscribed (STOP)", False),
    21614: TwilioErrorInfo("不是手机号码 / 'To' is not a mobile number", False),
    30003: TwilioErrorInfo("对方手机无法接通（关机或无信号）/ handset unreachable", True),
    30005: TwilioErrorInfo("号码不存在或已停机 / unknown destination handset", False),
    30006: TwilioErrorInfo("固定电话或运营商无法送达 / landline or unreachable carrier", False),
    30007: TwilioErrorInfo("被运营商拦截 / filtered by the carrier", False),
    30008: TwilioErrorInfo("未知投递错误 / unknown delivery error", True),
}


def classify_twilio_error(code: int | None, http_status: int | None = None) -> TwilioErrorInfo:
    """Readable reason and whether trying again could help, for a Twilio error code or status."""
    if code is not None and code in TWILIO_ERRORS:
        return TWILIO_ERRORS[code]
    if http_status is not None and (http_status >= 500 or http_status == 429):
        return TwilioErrorInfo(f"Twilio 服务暂时不可用 / Twilio HTTP {http_status}", True)
    label = f"Twilio 错误 {code}" if code is not None else "Twilio 错误"
    if http_status is None:
        return TwilioErrorInfo(f"{label} / Twilio error {code}", False)
    return TwilioErrorInfo(f"{label} / Twilio error (HTTP {http_status})", False)


def receipt_failure_reason(status: str, error_code: str | None) -> str:
    """Readable reason for an `undelivered`/`failed` status callback, e.g. from ErrorCode 30005."""
    code = _int_or_none(error_code) if error_code else None
    if code is None:
        return f"短信未送达 / message {status}"
    return f"{classify_twilio_error(code).reason} ({code})"


def _int_or_none(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _send_error(http_status: int, code: object, detail: str) -> SmsSendError:
    code_number = _int_or_none(code)
    info = classify_twilio_error(code_number, http_status)
    return SmsSendError(
        info.reason,
        retryable=info.retryable,
        code=code_number,
        http_status=http_status,
        detail=detail,
    )


class _RebasedHttpClient:
    """twilio's own async HTTP client, pointed at `base_url`, one request per call.

    twilio builds absolute `https://api.twilio.com/...` URLs in its Domain objects; rewriting the
    prefix at the one place every request passes through covers all of them.
    """

    # twilio's Client checks this before every async request.
    is_async = True

    def __init__(self, base_url: str, timeout: float, connections: int) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout
        # max_retries=None gives a plain aiohttp session: aiohttp_retry would resend a POST
        # the provider may already have accepted, and the aide would get the SMS twice.
        # pool_connections=False: no session of twilio's own (it would be left unclosed).
        self._inner = AsyncTwilioHttpClient(
            pool_connections=False, timeout=timeout, max_retries=None
        )
        # Our own session for aiohttp's default pool of 100 connections: the outbox's passes
        # POST up to 150 at once, and an SOS call-out must not wait for a connection behind
        # a hundred guardian notices.
        self._inner.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections)
        )

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Any:
        if url.startswith(TWILIO_API_BASE):
            url = self._base_url + url[len(TWILIO_API_BASE) :]
        if auth is not None:
            # Our own header instead of twilio's aiohttp.BasicAuth, deprecated in aiohttp 3.14.
            credentials = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            headers = {**(headers or {}), "Authorization": f"Basic {credentials}"}
        # AsyncTwilioHttpClient ignores its constructor timeout and the Messages API passes
        # none, which aiohttp reads as "wait forever": supply ours.
        return await self._inner.request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            auth=None,
            timeout=timeout if timeout is not None else self._timeout,
            allow_redirects=allow_redirects,
        )

    async def close(self) -> None:
        await self._inner.close()


class TwilioSmsProvider:
    """Sends SMS through Twilio's Messages API, or any endpoint that speaks it."""

    name = "twilio"

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str,
        base_url: str = TWILIO_API_BASE,
        timeout: float = 15.0,
        connections: int = 200,
    ) -> None:
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._from_number = from_number
        self._base_url = base_url
        self._timeout = timeout
        self._connections = connections
        self._http: _RebasedHttpClient | None = None
        self._client: Any = None

    def _twilio(self) -> Any:
        # Built on first use: aiohttp's session must be created inside the running event loop.
        if self._client is None:
            self._http = _RebasedHttpClient(self._base_url, self._timeout, self._connections)
            client = Client(self._account_sid, self._auth_token, http_client=self._http)
            # TWILIO_EDGE / TWILIO_REGION in the environment would rewrite the host name
            # behind our back; the base URL is the only routing setting.
            client.edge = None
            client.region = None
            self._client = client
        return self._client

    async def send(self, *, to: str, body: str, status_callback: str | None) -> str:
        """POST one message; return its SID. Raises SmsSendError."""
        optional: dict[str, str] = {}
        if status_callback:
            optional["status_callback"] = status_callback
        try:
            message = await self._twilio().messages.create_async(
                to=to, from_=self._from_number, body=body, **optional
            )
        except TwilioRestException as exc:
            raise _send_error(exc.status, exc.code, str(exc.msg)) from exc
        except TwilioServiceException as exc:
            raise _send_error(exc.status, exc.code, str(exc.detail or exc.title)) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The POST may or may not have reached Twilio; a retry risks a duplicate SMS,
            # which is better than an aide who never hears of the alert.
            raise SmsSendError(
                f"连接 Twilio 失败 / cannot reach Twilio ({type(exc).__name__})", retryable=True
            ) from exc
        except json.JSONDecodeError as exc:
            # A 2xx with a body we cannot read: the message was probably accepted.
            raise SmsSendError(
                "Twilio 返回无法解析 / unreadable Twilio response", retryable=False
            ) from exc
        sid = getattr(message, "sid", None)
        if not isinstance(sid, str) or not sid:
            raise SmsSendError("Twilio 未返回消息编号 / no message SID returned", retryable=False)
        return sid

    async def find_sent(self, *, to: str, body: str, since: datetime) -> str | None:
        """The SID of a message with this body that the provider took for `to` (from our
        sender) since `since`, or None. Reads the Messages list newest first, page by page, until
        it is older than `since`. Raises SmsSendError when the provider cannot be asked: then
        nobody knows, and the caller must not send again yet."""
        # A minute of slack for the clocks of Twilio and this server.
        after = since - timedelta(minutes=1)
        try:
            newest_first = await self._twilio().messages.stream_async(
                to=to, from_=self._from_number, page_size=100
            )
            async for message in newest_first:
                created = getattr(message, "date_created", None)
                if created is not None and created < after:
                    return None
                if message.body == body:
                    return str(message.sid)
        except TwilioRestException as exc:
            raise _send_error(exc.status, exc.code, str(exc.msg)) from exc
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
            raise SmsSendError(
                f"连接 Twilio 失败 / cannot reach Twilio ({type(exc).__name__})", retryable=True
            ) from exc
        return None

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
            self._client = None


# --- voice (issue 19) ---------------------------------------------------------------------

# Twilio's CallStatus words → the platform's (`dispatcher.models.CallStatus` values).
TWILIO_CALL_STATUS: Mapping[str, str] = {
    "queued": "placed",
    "initiated": "placed",
    "ringing": "ringing",
    "in-progress": "answered",
    "answered": "answered",
    "completed": "completed",
    "busy": "busy",
    "no-answer": "no_answer",
    "failed": "failed",
    "canceled": "canceled",
}
# The status callbacks asked for on each call (Twilio always sends `completed` and the other
# final ones; these add the progress).
CALL_STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]
# How long Twilio lets the phone ring before `no-answer`, and waits for the key once the
# message has been said.
RING_TIMEOUT_S = 30
GATHER_TIMEOUT_S = 8


def call_twiml(speech_text: str, gather_callback: str | None) -> str:
    """The call's TwiML: the message said in Chinese inside a one-key `<Gather>`, said twice
    (a villager picking up may miss the start), then a goodbye if no key came."""
    response = VoiceResponse()
    gather = response.gather(
        num_digits=1,
        timeout=GATHER_TIMEOUT_S,
        method="POST",
        action_on_empty_result=False,
        **({"action": gather_callback} if gather_callback else {}),
    )
    gather.say(speech_text, language="zh-CN")
    gather.pause(length=1)
    gather.say(speech_text, language="zh-CN")
    response.say("未收到按键，请回复短信。", language="zh-CN")
    return str(response)


def say_twiml(speech_text: str) -> str:
    """TwiML that says one thing in Chinese and hangs up (the answer to a key)."""
    response = VoiceResponse()
    response.say(speech_text, language="zh-CN")
    response.hangup()
    return str(response)


class TwilioVoiceProvider(TwilioSmsProvider):
    """Places call-outs through Twilio's Calls API (TwiML `<Say>` + `<Gather numDigits="1">`),
    or any endpoint that speaks it; the key and the outcome come back signed to
    `/twilio/call/gather` and `/twilio/call/status` (`dispatcher.views`)."""

    name = "twilio"

    async def call(
        self,
        *,
        to: str,
        speech_text: str,
        call_ref: str,
        status_callback: str | None,
        gather_callback: str | None,
    ) -> str:
        """POST one call; return its SID. Raises SmsSendError."""
        optional: dict[str, Any] = {}
        if status_callback:
            optional["status_callback"] = status_callback
            optional["status_callback_event"] = CALL_STATUS_EVENTS
            optional["status_callback_method"] = "POST"
        try:
            call = await self._twilio().calls.create_async(
                to=to,
                from_=self._from_number,
                twiml=call_twiml(speech_text, gather_callback),
                timeout=RING_TIMEOUT_S,
                **optional,
            )
        except TwilioRestException as exc:
            raise _send_error(exc.status, exc.code, str(exc.msg)) from exc
        except TwilioServiceException as exc:
            raise _send_error(exc.status, exc.code, str(exc.detail or exc.title)) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SmsSendError(
                f"连接 Twilio 失败 / cannot reach Twilio ({type(exc).__name__})", retryable=True
            ) from exc
        except json.JSONDecodeError as exc:
            raise SmsSendError(
                "Twilio 返回无法解析 / unreadable Twilio response", retryable=False
            ) from exc
        sid = getattr(call, "sid", None)
        if not isinstance(sid, str) or not sid:
            raise SmsSendError("Twilio 未返回呼叫编号 / no call SID returned", retryable=False)
        return sid

    async def find_placed(self, *, to: str, call_ref: str, since: datetime) -> str | None:
        """The SID of a call from our number to `to` created since `since` (Twilio keeps no
        reference of ours on a call; the platform calls one number at most once per ladder
        step, so any such call is the one in doubt). Raises SmsSendError when Twilio cannot be
        asked."""
        after = since - timedelta(minutes=1)
        try:
            newest_first = await self._twilio().calls.stream_async(
                to=to, from_=self._from_number, page_size=50
            )
            async for call in newest_first:
                created = getattr(call, "date_created", None)
                if created is not None and created < after:
                    return None
                return str(call.sid)
        except TwilioRestException as exc:
            raise _send_error(exc.status, exc.code, str(exc.msg)) from exc
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
            raise SmsSendError(
                f"连接 Twilio 失败 / cannot reach Twilio ({type(exc).__name__})", retryable=True
            ) from exc
        return None


def sign_twilio_request(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The X-Twilio-Signature Twilio would send for a form POST of `params` to `url`."""
    return str(RequestValidator(auth_token).compute_signature(url, dict(params)))


def twilio_signature_valid(
    auth_token: str, url: str, params: Mapping[str, str], signature: str | None
) -> bool:
    """Whether a webhook really comes from Twilio (or our sandbox) for this exact URL and form."""
    if not signature:
        return False
    try:
        return bool(RequestValidator(auth_token).validate(url, dict(params), signature))
    except ValueError:
        # A malformed URL (e.g. a non-numeric port) cannot carry a valid signature.
        return False
