"""Aliyun SMS behind the seam: the only module in Anxin that imports `alibabacloud_dysmsapi20170525`.

One `send` is one SendSms request (sign name, template code, template parameters): the text the
outbox holds is turned into its registered template by `dispatcher.aliyun_templates`, variables
fitted to Aliyun's rules. Retrying is the outbox's job, so the SDK's own retries stay off.

The SDK is the official one (Tea OpenAPI, V3 signature ACS3-HMAC-SHA256, the request in the
query string, checked by `dispatcher.aliyun_sandbox` as Aliyun does). Its synchronous path runs
in a worker thread (`asyncio.to_thread`): this version's async path (darabonba 1.0) builds a
new aiohttp session and loads the CA bundle on the event loop for every request.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from alibabacloud_dysmsapi20170525 import models as sms_models
from alibabacloud_dysmsapi20170525.client import Client
from alibabacloud_tea_openapi import utils_models as openapi_models
from alibabacloud_tea_openapi.exceptions import AlibabaCloudException
from darabonba.runtime import RuntimeOptions

from anxin.logging import get_logger
from dispatcher.aliyun_templates import TEMPLATES, NoTemplate, to_template
from dispatcher.provider_errors import Outcome, ProviderError, classify_aliyun
from dispatcher.providers import SmsSendError

log = get_logger("dispatcher.aliyun")

ALIYUN_SMS_ENDPOINT = "https://dysmsapi.aliyuncs.com"
# Aliyun's dates (SendDate, QuerySendDetails' day) are Beijing time.
BEIJING = ZoneInfo("Asia/Shanghai")
_OK = "OK"


@dataclass(frozen=True)
class AliyunAccount:
    """What every Aliyun client needs: the AccessKey, and where the API is (an https URL;
    `http://127.0.0.1:…` for the project's own endpoint)."""

    access_key_id: str
    access_key_secret: str
    endpoint: str = ALIYUN_SMS_ENDPOINT
    timeout_s: float = 15.0


def client_config(account: AliyunAccount) -> openapi_models.Config:
    """The Tea OpenAPI configuration of every Aliyun SDK client for `account` (SMS, voice)."""
    parts = urlsplit(
        account.endpoint if "//" in account.endpoint else "https://" + account.endpoint
    )
    return openapi_models.Config(
        access_key_id=account.access_key_id,
        access_key_secret=account.access_key_secret,
        endpoint=parts.netloc,
        protocol=parts.scheme or "https",
        connect_timeout=int(account.timeout_s * 1000),
        read_timeout=int(account.timeout_s * 1000),
    )


def make_client(account: AliyunAccount) -> Client:
    """The SMS SDK's client for `account`."""
    return Client(client_config(account))


def runtime_options(account: AliyunAccount) -> RuntimeOptions:
    # autoretry off: a SendSms the provider may already have taken is never sent again here.
    return RuntimeOptions(
        autoretry=False,
        max_attempts=0,
        connect_timeout=int(account.timeout_s * 1000),
        read_timeout=int(account.timeout_s * 1000),
    )


def phone_for_aliyun(e164: str) -> str:
    """+8613800138000 → 13800138000 (Aliyun's domestic form); other numbers as digits."""
    return e164[3:] if e164.startswith("+86") else e164.lstrip("+")


def e164_from_aliyun(number: str) -> str:
    """13800138000 → +8613800138000 (Aliyun's push gives domestic numbers without a prefix)."""
    number = number.strip()
    if number.startswith("+"):
        return number
    if number.startswith("86") and len(number) == 13:
        return "+" + number
    return "+86" + number


def sms_ref(status_callback: str | None) -> str | None:
    """Our row id, which the outbox worker puts in the callback URL (`?sms=<id>`): sent as
    `OutId`, so a receipt finds its row even before the BizId is stored. Aliyun's receipts go
    to the push URL set in its console, not to a URL per message."""
    if not status_callback:
        return None
    values = parse_qs(urlsplit(status_callback).query).get("sms")
    return values[0] if values and values[0].isdigit() else None


def provider_error(
    error: ProviderError, http_status: int | None, detail: str | None
) -> SmsSendError:
    return SmsSendError(
        error.reason, retryable=error.retryable, http_status=http_status, detail=detail
    )


def refused(exc: AlibabaCloudException) -> SmsSendError:
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "code", None)
    return provider_error(
        classify_aliyun(code, status), status or 400, str(getattr(exc, "message", ""))
    )


async def call_sdk(method: Any, request: Any, account: AliyunAccount) -> Any:
    """One SDK call (`client.<action>_with_options`) in a worker thread; Aliyun's refusals and
    a missing answer as SmsSendError (no answer: retryable, and maybe taken)."""
    try:
        return await asyncio.to_thread(method, request, runtime_options(account))
    except AlibabaCloudException as exc:
        raise refused(exc) from exc
    except Exception as exc:
        # No answer (connection refused, timeout): the request may have landed; the outbox
        # asks find_sent before sending again.
        raise SmsSendError(
            f"连接阿里云失败 / cannot reach Aliyun ({type(exc).__name__})", retryable=True
        ) from exc


class AliyunSmsProvider:
    """Sends SMS through Aliyun's SendSms, or any endpoint that speaks it."""

    name = "aliyun"

    def __init__(
        self,
        *,
        account: AliyunAccount,
        sign_name: str,
        template_codes: Mapping[str, str] | None = None,
    ) -> None:
        self._account = account
        self._sign_name = sign_name
        # Our template key → the code Aliyun assigned when it approved it (default: the key).
        self._codes = {t.key: (template_codes or {}).get(t.key, t.key) for t in TEMPLATES}
        self._client: Client | None = None

    def _sdk(self) -> Client:
        if self._client is None:
            self._client = make_client(self._account)
        return self._client

    def code_of(self, key: str) -> str:
        return self._codes[key]

    async def send(self, *, to: str, body: str, status_callback: str | None) -> str:
        """One SendSms; returns its BizId. Raises SmsSendError."""
        try:
            message = to_template(body)
        except NoTemplate as exc:
            # Refused here, before any request: nothing was sent (hence an HTTP-like status).
            raise provider_error(
                ProviderError(Outcome.blocked_content, "NO_TEMPLATE"), 422, None
            ) from exc
        if message.shortened:
            log.info(
                "aliyun_variables_shortened",
                template=message.template.key,
                variables=",".join(message.shortened),
            )
        request = sms_models.SendSmsRequest(
            phone_numbers=phone_for_aliyun(to),
            sign_name=self._sign_name,
            template_code=self._codes[message.template.key],
            template_param=json.dumps(message.params, ensure_ascii=False)
            if message.params
            else None,
            out_id=sms_ref(status_callback),
        )
        response = await self._call(self._sdk().send_sms_with_options, request)
        body_ = response.body
        if body_ is None or body_.code != _OK:
            code = getattr(body_, "code", None)
            raise provider_error(classify_aliyun(code, 200), 200, getattr(body_, "message", None))
        if not body_.biz_id:
            raise SmsSendError("阿里云未返回回执编号 / no BizId returned", retryable=False)
        return str(body_.biz_id)

    async def _call(self, method: Any, request: Any) -> Any:
        return await call_sdk(method, request, self._account)

    async def find_sent(self, *, to: str, body: str, since: datetime) -> str | None:
        """An id for a message with this text that Aliyun took for `to` since `since`, read
        from QuerySendDetails (by Beijing day, newest pages first), or None. Its records carry
        no BizId: the id returned is `out:<OutId>` (our row id), or `sent:<SendDate>`."""
        try:
            expected = self._sign(to_template(body).text)
        except NoTemplate:
            return None  # such a text was never handed to Aliyun
        after = since.astimezone(BEIJING) - timedelta(minutes=1)
        # Asked within minutes of `since` (after a crash): its day, and the next one when the
        # send may have crossed midnight in Beijing.
        for day in sorted({after.date(), (after + timedelta(hours=1)).date()}):
            found = await self._find_on(to, expected, day.strftime("%Y%m%d"), after)
            if found is not None:
                return found
        return None

    def _sign(self, text: str) -> str:
        return f"【{self._sign_name}】{text}"

    async def _find_on(self, to: str, expected: str, day: str, after: datetime) -> str | None:
        page = 1
        while True:
            request = sms_models.QuerySendDetailsRequest(
                phone_number=phone_for_aliyun(to), send_date=day, page_size=50, current_page=page
            )
            response = await self._call(self._sdk().query_send_details_with_options, request)
            body = response.body
            if body is None or body.code != _OK:
                code = getattr(body, "code", None)
                raise provider_error(
                    classify_aliyun(code, 200), 200, getattr(body, "message", None)
                )
            records = (
                body.sms_send_detail_dtos.sms_send_detail_dto if body.sms_send_detail_dtos else []
            )
            for record in records or []:
                sent = _beijing(record.send_date)
                if record.content == expected and (sent is None or sent >= after):
                    return f"out:{record.out_id}" if record.out_id else f"sent:{record.send_date}"
            if len(records or []) < 50:
                return None
            page += 1

    async def template_status(self, key: str) -> tuple[str, str | None]:
        """(Aliyun's status of one of our templates: `approved`, `pending`, `rejected`,
        `missing`, and its registered text) — what `anxin doctor` checks."""
        request = sms_models.QuerySmsTemplateRequest(template_code=self._codes[key])
        response = await self._call(self._sdk().query_sms_template_with_options, request)
        body = response.body
        if body is None or body.code != _OK:
            code = getattr(body, "code", None)
            if code in ("isv.SMS_TEMPLATE_ILLEGAL", "isv.TEMPLATE_NOT_EXIST"):
                return "missing", None
            raise provider_error(classify_aliyun(code, 200), 200, getattr(body, "message", None))
        status = {0: "pending", 1: "approved", 2: "rejected"}.get(body.template_status, "pending")
        return status, body.template_content

    async def aclose(self) -> None:
        self._client = None


def _beijing(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING)
    except ValueError:
        return None
