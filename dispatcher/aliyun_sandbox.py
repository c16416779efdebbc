"""An Aliyun-compatible SMS endpoint the project runs itself (as `twilio_sandbox.py` for Twilio).

The platform, the simulated aides' phones and the tests drive the official Aliyun SDK against it
(its endpoint setting, `ANXIN_ALIYUN_SMS_ENDPOINT`). It checks what Aliyun checks and answers as
Aliyun answers:

- the request's V3 signature (ACS3-HMAC-SHA256 over the canonical request, with the AccessKey
  secret), computed here from Aliyun's published algorithm, not with the SDK's code: a wrong
  secret is `SignatureDoesNotMatch`, an unknown AccessKey `InvalidAccessKeyId.NotFound`, a nonce
  used twice `SignatureNonceUsed`;
- SendSms: a mainland mobile number (`isv.MOBILE_NUMBER_ILLEGAL`), the sign name
  (`isv.SMS_SIGNATURE_ILLEGAL`), a registered template (`isv.SMS_TEMPLATE_ILLEGAL`) — the
  registered ones are `dispatcher.aliyun_templates.TEMPLATES`, the list docs/operations.md gives
  the operator —, every variable given (`isv.TEMPLATE_MISSING_PARAMETERS`), each at most 35
  characters (`isv.PARAM_LENGTH_LIMIT`) with no link (`isv.PARAM_NOT_SUPPORT_URL`), the balance
  (`isv.AMOUNT_NOT_ENOUGH`) and the per-number cap per template and day
  (`isv.BUSINESS_LIMIT_CONTROL`); refusals come back as HTTP 200 with that `Code`, as Aliyun's do;
- QuerySendDetails (what the outbox asks after a crash) and QuerySmsTemplate (`anxin doctor`);
- IvrCall (voice call-outs with a one-key menu): the number, the registered text-to-speech
  templates (`VOICE_TEMPLATES`) and their variables as for SMS, the show number, and the
  per-callee cap (1 a minute, 5 an hour, 20 a day: `isv.BUSINESS_LIMIT_CONTROL`); the callee is
  played as `set_callee` says (pick up after N s and press a key, let it ring, reject), and the
  call's VoiceCallReport (接通 200100, 按键 300000 with `dtmf`) and VoiceReport (200000, or
  200002 not answered, 200010 rejected) are pushed to `voice_report_url`;

and pushes delivery receipts (SmsReport) and replies (SmsUp) back as Aliyun's HTTP batch push
does: a JSON array POSTed to the URLs configured (in Aliyun's console; here `report_url`,
`up_url`), which carry the platform's push token in their path (README, Decisions).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import itertools
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, quote
from zoneinfo import ZoneInfo

import aiohttp
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from anxin.clock import Clock, SystemClock
from anxin.logging import get_logger
from dispatcher.aliyun_templates import TEMPLATES, VOICE_TEMPLATES, Template, variable_problem
from dispatcher.templates import sms_segments
from dispatcher.twilio_sandbox import Callee

log = get_logger(__name__)

BEIJING = ZoneInfo("Asia/Shanghai")
SIGNATURE_ALGORITHM = "ACS3-HMAC-SHA256"
_MAINLAND_MOBILE = re.compile(r"1[3-9][0-9]{9}")
_AUTHORIZATION = re.compile(
    r"ACS3-HMAC-SHA256 Credential=(?P<ak>[^,]+),SignedHeaders=(?P<headers>[^,]+),"
    r"Signature=(?P<signature>[0-9a-f]+)"
)
# Aliyun's default cap for notifications: per number, template and (Beijing) day.
DAILY_LIMIT_PER_TEMPLATE = 50
_VARIABLE_REFUSALS = {
    "too_long": ("isv.PARAM_LENGTH_LIMIT", "参数超出长度限制"),
    "link": ("isv.PARAM_NOT_SUPPORT_URL", "不支持URL"),
    "empty": ("isv.TEMPLATE_PARAMS_ILLEGAL", "模板变量里包含非法关键字"),
}


# --- the V3 signature, from Aliyun's documentation (not the SDK's code) --------------------


def _encode(value: str) -> str:
    return quote(value, safe="~")


def canonical_request(
    method: str,
    path: str,
    query: list[tuple[str, str]],
    headers: Mapping[str, str],
    signed_headers: list[str],
    payload_hash: str,
) -> str:
    """Method, URI, sorted encoded query, the signed headers (lower-case, trimmed), their
    names, the payload's hash: one line each."""
    canonical_query = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(query))
    canonical_headers = "".join(
        f"{name}:{headers.get(name, '').strip()}\n" for name in signed_headers
    )
    return "\n".join(
        [
            method,
            path or "/",
            canonical_query,
            canonical_headers,
            ";".join(signed_headers),
            payload_hash,
        ]
    )


def acs3_signature(secret: str, canonical: str) -> str:
    string_to_sign = f"{SIGNATURE_ALGORITHM}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    return hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


# --- state -----------------------------------------------------------------------------------


@dataclass
class AliyunSms:
    """One SMS Aliyun took: `to` in E.164 and `body` as the handset shows it (sign included)."""

    biz_id: str
    to: str
    body: str
    template_code: str
    params: dict[str, str]
    out_id: str | None
    send_date: datetime
    status: str = "sending"  # sending → delivered | failed
    err_code: str | None = None
    history: list[str] = field(default_factory=list)


MessageCallback = Callable[[AliyunSms], Awaitable[None] | None]


@dataclass
class AliyunCall:
    """One IvrCall Aliyun took: what it says (`speech`), the keys' templates, what happened."""

    call_id: str
    to: str
    speech: str
    start_code: str
    params: dict[str, str]
    menu: dict[str, str]  # key → template code
    out_id: str | None
    placed_at: datetime
    status: str = "calling"
    digits: str | None = None
    history: list[str] = field(default_factory=list)

    @property
    def answer_for(self) -> str | None:
        """The template code the call played after the key (None: no key)."""
        return self.menu.get(self.digits) if self.digits else None


def _aliyun_error(http_status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {
            "RequestId": secrets.token_hex(16).upper(),
            "HostId": "dysmsapi.aliyuncs.com",
            "Code": code,
            "Message": message,
            "Recommend": f"https://api.aliyun.com/troubleshoot?q={code}",
        },
        status_code=http_status,
    )


def _answer(code: str = "OK", message: str = "OK", **fields: Any) -> JSONResponse:
    """A business answer: HTTP 200 whatever the Code, as Aliyun's SendSms gives it."""
    return JSONResponse(
        {"RequestId": secrets.token_hex(16).upper(), "Code": code, "Message": message, **fields}
    )


def _e164(number: str) -> str:
    return "+86" + number if _MAINLAND_MOBILE.fullmatch(number) else "+" + number


def _aliyun_number(e164: str) -> str:
    return e164[3:] if e164.startswith("+86") else e164.lstrip("+")


class AliyunSandbox:
    """The fake Aliyun account: AccessKey, sign name, registered templates, what was sent."""

    def __init__(
        self,
        access_key_id: str,
        access_key_secret: str,
        *,
        report_url: str | None = None,
        up_url: str | None = None,
        sign_name: str = "安心",
        template_codes: Mapping[str, str] | None = None,
        daily_limit: int = DAILY_LIMIT_PER_TEMPLATE,
        status_delay: float = 0.2,
        dest_code: str = "10690000",
        voice_report_url: str | None = None,
        show_number: str = "057100000000",
        clock: Clock | None = None,
    ) -> None:
        self.access_key_id = access_key_id
        self.access_key_secret = access_key_secret
        self.report_url = report_url
        self.up_url = up_url
        self.sign_name = sign_name
        # The registered templates, by the code Aliyun gave each (default: our key).
        self.templates: dict[str, Template] = {
            (template_codes or {}).get(t.key, t.key): t for t in TEMPLATES
        }
        self.voice_templates: dict[str, Template] = {
            (template_codes or {}).get(t.key, t.key): t for t in VOICE_TEMPLATES
        }
        self.voice_report_url = voice_report_url
        self.show_number = show_number
        self.calls: list[AliyunCall] = []
        self._callees: dict[str, Callee] = {}
        self.daily_limit = daily_limit
        self.status_delay = status_delay
        self.dest_code = dest_code
        self.balance_exhausted = False
        self.messages: list[AliyunSms] = []
        # Every SendSms that reached us (signed or not, refused or not), and the refusals.
        self.requests_received = 0
        self.refusals: list[tuple[str, str]] = []  # (Code, phone number as sent)
        self._clock: Clock = clock or SystemClock()
        self._failures_pending = 0
        self._failing_number: str | None = None
        # The last request that reached the API, as sent (for tests that replay or alter it).
        self.last_request: tuple[str, str, dict[str, str], bytes] | None = None
        self._number_errors: dict[str, str] = {}
        self._receipt_errors: dict[str, str] = {}
        self._nonces: set[str] = set()
        self._ids = itertools.count(int(secrets.randbelow(10**9)) * 10**6)
        self._inboxes: dict[str, asyncio.Queue[AliyunSms]] = {}
        self._subscribers: list[MessageCallback] = []
        self._sequence = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None

    # -- fault injection -------------------------------------------------------------

    def fail_next(self, count: int, to: str | None = None) -> None:
        """The next `count` SendSms (to `to` only, when given, E.164) get HTTP 503
        ServiceUnavailable, as during an outage."""
        self._failures_pending = count
        self._failing_number = to

    def set_number_error(self, number: str, code: str | None) -> None:
        """SendSms to `number` (E.164) is refused with this Aliyun Code (None: accepted)."""
        if code is None:
            self._number_errors.pop(number, None)
        else:
            self._number_errors[number] = code

    def set_receipt_error(self, number: str, err_code: str | None) -> None:
        """SMS to `number` are taken but their receipt says not delivered (e.g.
        MOBILE_NOT_ON_SERVICE)."""
        if err_code is None:
            self._receipt_errors.pop(number, None)
        else:
            self._receipt_errors[number] = err_code

    def set_callee(self, number: str, callee: Callee | None) -> None:
        """How the phone at `number` (E.164) answers calls from now on (None: it lets them
        ring out, the default)."""
        if callee is None:
            self._callees.pop(number, None)
        else:
            self._callees[number] = callee

    def calls_to(self, to: str) -> list[AliyunCall]:
        return [c for c in self.calls if c.to == to]

    # -- what phones see -------------------------------------------------------------

    def subscribe(self, callback: MessageCallback) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    async def next_message(self, to: str, timeout: float) -> AliyunSms:
        """The oldest SMS to `to` not yet returned here, waiting for one. Raises TimeoutError."""
        async with asyncio.timeout(timeout):
            return await self._inbox(to).get()

    def messages_to(self, to: str) -> list[AliyunSms]:
        return [m for m in self.messages if m.to == to]

    async def reply(self, from_: str, body: str) -> int:
        """A phone texts the platform (上行短信): Aliyun's SmsUp push; the HTTP status."""
        if self.up_url is None:
            raise RuntimeError("AliyunSandbox has no up_url to push replies to")
        up = {
            "phone_number": _aliyun_number(from_),
            "send_time": self._beijing(self._clock.now()),
            "content": body,
            "sign_name": self.sign_name,
            "dest_code": self.dest_code,
            "sequence_id": next(self._sequence),
        }
        return await self._push(self.up_url, [up])

    # -- the API ---------------------------------------------------------------------

    def verify(
        self, method: str, path: str, raw_query: str, headers: Mapping[str, str], body: bytes
    ) -> JSONResponse | None:
        """None when the request is signed by our AccessKey; Aliyun's error answer otherwise."""
        match = _AUTHORIZATION.fullmatch(headers.get("authorization", "").strip())
        if match is None:
            return _aliyun_error(
                400,
                "IncompleteSignature",
                "The request signature does not conform to Aliyun standards.",
            )
        if not secrets.compare_digest(match["ak"], self.access_key_id):
            return _aliyun_error(
                404, "InvalidAccessKeyId.NotFound", "Specified access key is not found."
            )
        if hashlib.sha256(body).hexdigest() != headers.get("x-acs-content-sha256", ""):
            return _aliyun_error(400, "ContentSHA256NotMatched", "The content hash does not match.")
        signed = match["headers"].split(";")
        if not {"host", "x-acs-action", "x-acs-date", "x-acs-signature-nonce"} <= set(signed):
            return _aliyun_error(400, "IncompleteSignature", "Required headers are not signed.")
        query = parse_qsl(raw_query, keep_blank_values=True)
        canonical = canonical_request(
            method, path, query, headers, signed, headers.get("x-acs-content-sha256", "")
        )
        expected = acs3_signature(self.access_key_secret, canonical)
        if not secrets.compare_digest(expected, match["signature"]):
            return _aliyun_error(
                400,
                "SignatureDoesNotMatch",
                "Specified signature does not match our calculation.",
            )
        nonce = headers.get("x-acs-signature-nonce", "")
        if nonce in self._nonces:
            return _aliyun_error(
                400, "SignatureNonceUsed", "Specified signature nonce was used already."
            )
        self._nonces.add(nonce)
        return None

    async def handle(self, action: str, query: dict[str, str]) -> JSONResponse:
        if action == "SendSms":
            return await self.send_sms(query)
        if action == "QuerySendDetails":
            return self.query_send_details(query)
        if action == "QuerySmsTemplate":
            return self.query_sms_template(query)
        if action == "IvrCall":
            return self.ivr_call(query)
        return _aliyun_error(404, "InvalidAction.NotFound", f"Specified api is not found: {action}")

    def _refuse(self, code: str, message: str, phone: str) -> JSONResponse:
        self.refusals.append((code, phone))
        log.info("aliyun_sandbox_refused", code=code)
        return _answer(code, message)

    async def send_sms(self, query: dict[str, str]) -> JSONResponse:
        phone = query.get("PhoneNumbers", "")
        if self._failures_pending > 0 and self._failing_number in (None, _e164(phone)):
            self._failures_pending -= 1
            return _aliyun_error(
                503,
                "ServiceUnavailable",
                "The request has failed due to a temporary failure of the server.",
            )
        if not _MAINLAND_MOBILE.fullmatch(phone):
            return self._refuse("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号", phone)
        to = _e164(phone)
        if query.get("SignName") != self.sign_name:
            return self._refuse("isv.SMS_SIGNATURE_ILLEGAL", "该账号下找不到对应签名", phone)
        template = self.templates.get(query.get("TemplateCode", ""))
        if template is None:
            return self._refuse("isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板", phone)
        values = self._variables_refused(template, query.get("TemplateParam"), phone)
        if isinstance(values, JSONResponse):
            return values
        if self.balance_exhausted:
            return self._refuse("isv.AMOUNT_NOT_ENOUGH", "账户余额不足", phone)
        if (injected := self._number_errors.get(to)) is not None:
            return self._refuse(injected, "sandbox: refused for this number", phone)
        now = self._clock.now()
        today = now.astimezone(BEIJING).date()
        sent_today = sum(
            1
            for m in self.messages
            if m.to == to
            and m.template_code == query["TemplateCode"]
            and m.send_date.astimezone(BEIJING).date() == today
        )
        if sent_today >= self.daily_limit:
            return self._refuse("isv.BUSINESS_LIMIT_CONTROL", "触发天级流控Permits:50", phone)
        sms = AliyunSms(
            biz_id=f"{next(self._ids)}^0",
            to=to,
            body=f"【{self.sign_name}】{template.render(values)}",
            template_code=query["TemplateCode"],
            params=values,
            out_id=query.get("OutId") or None,
            send_date=now,
            history=["sending"],
        )
        self.messages.append(sms)
        self._inbox(to).put_nowait(sms)
        self._spawn(self._deliver(sms))
        for callback in list(self._subscribers):
            try:
                result = callback(sms)
            except Exception:
                log.exception("sandbox_subscriber_failed")
                continue
            if inspect.isawaitable(result):
                self._spawn(_awaited(result))
        log.info("aliyun_sandbox_sms_accepted", biz_id=sms.biz_id, segments=sms_segments(sms.body))
        return _answer(BizId=sms.biz_id)

    def _variables_refused(
        self, template: Template, raw: str | None, phone: str
    ) -> JSONResponse | dict[str, str]:
        """The template's variables from their JSON, or Aliyun's refusal of them."""
        try:
            params = json.loads(raw or "{}")
        except json.JSONDecodeError:
            return self._refuse("isv.INVALID_JSON_PARAM", "JSON参数不合法", phone)
        if not isinstance(params, dict):
            return self._refuse("isv.INVALID_JSON_PARAM", "JSON参数不合法", phone)
        values = {str(k): str(v) for k, v in params.items()}
        if any(name not in values for name in template.variables):
            return self._refuse("isv.TEMPLATE_MISSING_PARAMETERS", "模板缺少变量", phone)
        for name in template.variables:
            problem = variable_problem(values[name])
            if problem is not None:
                code, message = _VARIABLE_REFUSALS[problem]
                return self._refuse(code, f"{message}: {name}", phone)
        return values

    def ivr_call(self, query: dict[str, str]) -> JSONResponse:
        phone = query.get("CalledNumber", "")
        if not _MAINLAND_MOBILE.fullmatch(phone):
            return self._refuse("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号", phone)
        if query.get("CalledShowNumber") != self.show_number:
            return self._refuse("isv.INVALID_PARAMETERS", "被叫显号不可用", phone)
        template = self.voice_templates.get(query.get("StartCode", ""))
        if template is None:
            return self._refuse("isv.TTS_TEMPLATE_ILLEGAL", "TTS模板不存在", phone)
        values = self._variables_refused(template, query.get("StartTtsParams"), phone)
        if isinstance(values, JSONResponse):
            return values
        menu = {
            query[key]: query.get(key[: -len("Key")] + "Code", "")
            for key in query
            if key.startswith("MenuKeyMap.") and key.endswith(".Key")
        }
        if not menu or any(code not in self.voice_templates for code in menu.values()):
            return self._refuse("isv.TTS_TEMPLATE_ILLEGAL", "按键提示音模板不存在", phone)
        if self.balance_exhausted:
            return self._refuse("isv.AMOUNT_NOT_ENOUGH", "账户余额不足", phone)
        to = _e164(phone)
        if (injected := self._number_errors.get(to)) is not None:
            return self._refuse(injected, "sandbox: refused for this number", phone)
        now = self._clock.now()
        placed = [c.placed_at for c in self.calls if c.to == to]
        for window, cap in ((60, 1), (3600, 5), (86400, 20)):
            if sum(1 for t in placed if (now - t).total_seconds() < window) >= cap:
                return self._refuse("isv.BUSINESS_LIMIT_CONTROL", f"触发流控Permits:{cap}", phone)
        call = AliyunCall(
            call_id=f"{next(self._ids)}^{next(self._ids)}",
            to=to,
            speech=template.render(values),
            start_code=query["StartCode"],
            params=values,
            menu=menu,
            out_id=query.get("OutId") or None,
            placed_at=now,
            history=["calling"],
        )
        self.calls.append(call)
        self._spawn(self._play(call, self._callees.get(to, Callee("ring"))))
        log.info("aliyun_sandbox_call_accepted", call_id=call.call_id)
        return _answer(CallId=call.call_id)

    async def _play(self, call: AliyunCall, callee: Callee) -> None:
        """The callee's phone: the pushes Aliyun sends for what it does."""
        await asyncio.sleep(callee.after if callee.answer != "ring" else self.status_delay)
        if callee.answer == "ring":
            await self._call_report(call, "200002", "NO_ANSWER", final=True)
            return
        if callee.answer == "reject":
            await self._call_report(call, "200010", "REJECTED", final=True)
            return
        await self._call_report(call, "200100", "ANSWERED")
        if callee.key is not None:
            call.digits = callee.key
            await self._call_report(call, "300000", "ANSWERED", dtmf=callee.key)
        await self._call_report(call, "200000", "ANSWERED", final=True)

    async def _call_report(
        self,
        call: AliyunCall,
        status_code: str,
        smart: str,
        *,
        final: bool = False,
        dtmf: str | None = None,
    ) -> None:
        call.status = status_code
        call.history.append(status_code)
        if self.voice_report_url is None:
            return
        report: dict[str, Any] = {
            "call_id": call.call_id,
            "status_code": status_code,
            "smart_status_code": smart,
            "status_time": self._beijing(self._clock.now()),
            "out_id": call.out_id or "",
        }
        if dtmf is not None:
            report["dtmf"] = dtmf
        if final:  # VoiceReport: the call's record
            report |= {
                "start_time": self._beijing(call.placed_at),
                "end_time": self._beijing(self._clock.now()),
                "duration": "12" if status_code == "200000" else "0",
                "status_msg": {
                    "200000": "正常结束",
                    "200002": "用户未接",
                    "200010": "用户拒接",
                }.get(status_code, ""),
                "dtmf": call.digits or "",
                "callee": _aliyun_number(call.to),
                "caller": self.show_number,
            }
        await self._push(self.voice_report_url, [report])

    def query_send_details(self, query: dict[str, str]) -> JSONResponse:
        phone, day = query.get("PhoneNumber", ""), query.get("SendDate", "")
        try:
            size = max(1, min(50, int(query.get("PageSize", "10"))))
            page = max(1, int(query.get("CurrentPage", "1")))
        except ValueError:
            return _answer("isv.INVALID_PARAMETERS", "参数异常")
        found = [
            m
            for m in reversed(self.messages)
            if _aliyun_number(m.to) == phone
            and self._beijing(m.send_date)[:10].replace("-", "") == day
            and (not query.get("BizId") or m.biz_id == query["BizId"])
        ]
        chunk = found[(page - 1) * size : page * size]
        records = [
            {
                "Content": m.body,
                "ErrCode": m.err_code or ("DELIVERED" if m.status == "delivered" else ""),
                "OutId": m.out_id or "",
                "PhoneNum": _aliyun_number(m.to),
                "ReceiveDate": self._beijing(m.send_date) if m.status != "sending" else "",
                "SendDate": self._beijing(m.send_date),
                "SendStatus": {"sending": 1, "failed": 2, "delivered": 3}[m.status],
                "TemplateCode": m.template_code,
            }
            for m in chunk
        ]
        return _answer(SmsSendDetailDTOs={"SmsSendDetailDTO": records}, TotalCount=str(len(found)))

    def query_sms_template(self, query: dict[str, str]) -> JSONResponse:
        code = query.get("TemplateCode", "")
        template = self.templates.get(code)
        if template is None:
            return _answer("isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板")
        return _answer(
            TemplateCode=code,
            TemplateContent=template.text,
            TemplateName=template.key,
            TemplateStatus=1,
            TemplateType=1,
            CreateDate="2026-12-01 09:00:00",
            Reason="无审批备注",
        )

    # -- receipts --------------------------------------------------------------------

    async def _deliver(self, sms: AliyunSms) -> None:
        await asyncio.sleep(self.status_delay)
        err_code = self._receipt_errors.get(sms.to)
        sms.status = "failed" if err_code else "delivered"
        sms.err_code = err_code or "DELIVERED"
        sms.history.append(sms.status)
        if self.report_url is None:
            return
        report = {
            "phone_number": _aliyun_number(sms.to),
            "send_time": self._beijing(sms.send_date),
            "report_time": self._beijing(self._clock.now()),
            "success": err_code is None,
            "err_code": sms.err_code,
            "err_msg": "用户接收成功" if err_code is None else "失败",
            "sms_size": str(sms_segments(sms.body)),
            "biz_id": sms.biz_id,
            "out_id": sms.out_id or "",
        }
        await self._push(self.report_url, [report])

    async def _push(self, url: str, batch: list[dict[str, Any]]) -> int:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10.0))
        try:
            async with self._http.post(url, json=batch) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("aliyun_sandbox_push_failed", error=type(exc).__name__)
            return 0

    @staticmethod
    def _beijing(moment: datetime) -> str:
        return moment.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")

    def _inbox(self, number: str) -> asyncio.Queue[AliyunSms]:
        return self._inboxes.setdefault(number, asyncio.Queue())

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None


async def _awaited(result: Awaitable[None]) -> None:
    try:
        await result
    except Exception:
        log.exception("sandbox_subscriber_failed")


def create_aliyun_sandbox_app(sandbox: AliyunSandbox) -> FastAPI:
    app = FastAPI(title="Anxin Aliyun sandbox", docs_url=None, redoc_url=None)

    @app.post("/")
    async def rpc(request: Request) -> JSONResponse:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        action = headers.get("x-acs-action", "")
        if action in ("SendSms", "IvrCall"):
            sandbox.requests_received += 1
        sandbox.last_request = (request.url.path, request.url.query, headers, body)
        refused = sandbox.verify("POST", request.url.path, request.url.query, headers, body)
        if refused is not None:
            return refused
        query = dict(parse_qsl(request.url.query, keep_blank_values=True))
        return await sandbox.handle(action, query)

    @app.get("/sandbox/messages")
    async def list_messages() -> list[dict[str, Any]]:
        return [{**asdict(m), "send_date": m.send_date.isoformat()} for m in sandbox.messages]

    return app


__all__ = ["AliyunCall", "AliyunSandbox", "AliyunSms", "Callee", "create_aliyun_sandbox_app"]
