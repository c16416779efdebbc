"""A Twilio-compatible Messages and Calls endpoint the project runs itself.

It lets the platform, the simulated aides' phones and the tests exercise the real `twilio` library
and real HTTP: messages are accepted (or refused the way Twilio refuses them), status callbacks
and inbound replies are posted back signed with X-Twilio-Signature, and nothing leaves the machine.

Calls (issue 19): `Calls.json` takes a call with its TwiML; the callee is played by a simulated
phone — one configured per number (`set_callee`: pick up after N s and press a key, let it ring,
reject), or a subscriber that plays it on its own time (`subscribe_calls`, the scenario player),
or by default a phone nobody picks up — and the sandbox posts the signed `<Gather>` action
(`Digits`) and the status callbacks (`CallStatus` ringing, in-progress, completed / no-answer /
busy) as Twilio does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import re
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from datetime import datetime
from email.utils import format_datetime
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from anxin.clock import Clock, SystemClock
from anxin.logging import get_logger
from dispatcher.templates import sms_segments
from dispatcher.twilio_provider import sign_twilio_request

log = get_logger(__name__)

API_VERSION = "2010-04-01"
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
# Codes Twilio reports on the POST itself (with this HTTP status); any other code is accepted
# and then fails later, as a status callback.
_REFUSED_AT_POST: dict[int, int] = {
    20003: 401,
    20429: 429,
    21211: 400,
    21408: 400,
    21610: 400,
    21614: 400,
}
# 30xxx are carrier outcomes (`undelivered`); anything else accepted is a Twilio-side `failed`.
_FIRST_CARRIER_CODE = 30000


@dataclass
class SandboxMessage:
    sid: str
    account_sid: str
    to: str
    from_: str
    body: str
    direction: Literal["outbound-api", "inbound"]
    date_created: datetime
    status: str
    status_callback: str | None = None
    error_code: int | None = None
    status_history: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Twilio's Message resource, enough for twilio's MessageInstance (and a human) to read."""
        created = format_datetime(self.date_created)
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}"
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "to": self.to,
            "from": self.from_,
            "body": self.body,
            "direction": self.direction,
            "status": self.status,
            "error_code": self.error_code,
            "error_message": None,
            "num_segments": str(sms_segments(self.body)),
            "num_media": "0",
            "price": None,
            "price_unit": "USD",
            "messaging_service_sid": None,
            "date_created": created,
            "date_updated": created,
            "date_sent": None,
            "uri": f"{uri}.json",
            "subresource_uris": {"media": f"{uri}/Media.json"},
        }


MessageCallback = Callable[[SandboxMessage], Awaitable[None] | None]


@dataclass
class Callee:
    """How a simulated phone answers a call: `pick_up` after `after` seconds and press `key`
    (None: hang up without a key), `ring` until the caller gives up (no-answer), or `reject`
    (busy) after `after` seconds."""

    answer: Literal["pick_up", "ring", "reject"] = "ring"
    after: float = 0.0
    key: str | None = "1"


@dataclass
class SandboxCall:
    sid: str
    account_sid: str
    to: str
    from_: str
    twiml: str
    date_created: datetime
    status: str = "queued"
    status_callback: str | None = None
    status_events: list[str] = field(default_factory=list)
    timeout: int = 60
    digits: str | None = None
    # What the platform's <Gather> action answered (its TwiML), once a key was pressed.
    answer_twiml: str | None = None
    status_history: list[str] = field(default_factory=list)

    @property
    def speech(self) -> list[str]:
        """What the call says (its <Say> texts)."""
        return [el.text or "" for el in ET.fromstring(self.twiml).iter("Say")]

    @property
    def gather_action(self) -> str | None:
        gather = ET.fromstring(self.twiml).find(".//Gather")
        return gather.get("action") if gather is not None else None

    def to_json(self) -> dict[str, Any]:
        """Twilio's Call resource, enough for twilio's CallInstance to read."""
        created = format_datetime(self.date_created)
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{self.sid}"
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "to": self.to,
            "to_formatted": self.to,
            "from": self.from_,
            "from_formatted": self.from_,
            "direction": "outbound-api",
            "status": self.status,
            "date_created": created,
            "date_updated": created,
            "start_time": None,
            "end_time": None,
            "duration": None,
            "price": None,
            "price_unit": "USD",
            "answered_by": None,
            "uri": f"{uri}.json",
            "subresource_uris": {},
        }


CallCallback = Callable[[SandboxCall], Awaitable[None] | None]


def _call_sid() -> str:
    return "CA" + secrets.token_hex(16)


def _message_sid() -> str:
    return "SM" + secrets.token_hex(16)


def _twilio_error(http_status: int, code: int, message: str) -> JSONResponse:
    """Twilio's (legacy) error body, which twilio parses into TwilioRestException."""
    return JSONResponse(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": http_status,
        },
        status_code=http_status,
    )


class SmsSandbox:
    """State of the fake Twilio account: messages, injected faults, subscribers."""

    def __init__(
        self,
        auth_token: str,
        account_sid: str,
        inbound_url: str | None,
        *,
        fail_next: int = 0,
        platform_number: str = "+8610690000000",
        status_delay: float = 0.2,
        clock: Clock | None = None,
    ) -> None:
        self.auth_token = auth_token
        self.account_sid = account_sid
        self.inbound_url = inbound_url
        # Replies go to the number that last texted the phone; this one before any message.
        self.platform_number = platform_number
        # Real Twilio calls back after hundreds of milliseconds; calling back before the
        # platform has stored the SID of its own POST would be a race real life never shows.
        self.status_delay = status_delay
        self.messages: list[SandboxMessage] = []
        # Every POST to Messages.json, failed or not: one send must be one request.
        self.requests_received = 0
        self._clock: Clock = clock or SystemClock()
        self._failures_pending = fail_next
        self._number_errors: dict[str, int] = {}
        self._number_delays: dict[str, float] = {}
        self._inboxes: dict[str, asyncio.Queue[SandboxMessage]] = {}
        self._subscribers: list[MessageCallback] = []
        # Calls (issue 19): every POST to Calls.json, the calls taken, how each number answers.
        self.calls: list[SandboxCall] = []
        self.call_requests_received = 0
        self._callees: dict[str, Callee] = {}
        self._call_subscribers: list[CallCallback] = []
        # A phone that nobody picks up rings this long (real seconds) before `no-answer`.
        self.ring_seconds = 0.5
        self._last_sender: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # aiohttp, not httpx: with thousands of receipts under way, httpx's connection pool
        # and its per-request async-library lookups took two thirds of the `anxin bench`
        # process's CPU (py-spy, 10,000 homes, 20 SOS/s), more than the homes themselves.
        self._http: aiohttp.ClientSession | None = None

    # -- fault injection -------------------------------------------------------------

    def fail_next(self, count: int) -> None:
        """The next `count` POSTs get HTTP 500, as during a Twilio outage."""
        self._failures_pending = count

    def set_number_error(self, number: str, code: int | None) -> None:
        """Messages to `number` fail with this Twilio error code (None: deliver again)."""
        if code is None:
            self._number_errors.pop(number, None)
        else:
            self._number_errors[number] = code

    def set_number_delay(self, number: str, seconds: float | None) -> None:
        """POSTs of messages to `number` are answered `seconds` late (None: at once), as when
        the provider is slow: the message is taken at once, the platform hears of it later."""
        if seconds is None:
            self._number_delays.pop(number, None)
        else:
            self._number_delays[number] = seconds

    def set_callee(self, number: str, callee: Callee | None) -> None:
        """How the phone at `number` answers calls from now on (None: as by default)."""
        if callee is None:
            self._callees.pop(number, None)
        else:
            self._callees[number] = callee

    def subscribe_calls(self, callback: CallCallback) -> Callable[[], None]:
        """`callback` plays the callee of every call to a number without `set_callee` (it must
        end each call: `pick_up`, `ring_out` or `reject`). Returns an unsubscribe function."""
        self._call_subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._call_subscribers:
                self._call_subscribers.remove(callback)

        return unsubscribe

    def calls_to(self, to: str) -> list[SandboxCall]:
        return [c for c in self.calls if c.to == to]

    # -- what phones see -------------------------------------------------------------

    def subscribe(self, callback: MessageCallback) -> Callable[[], None]:
        """Call `callback` with every accepted outbound message. Returns an unsubscribe function."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    async def next_message(self, to: str, timeout: float) -> SandboxMessage:
        """The oldest message to `to` not yet returned here, waiting for one if needed.

        Queued rather than "from now on", so a message sent just before the call is not missed.
        Raises TimeoutError.
        """
        async with asyncio.timeout(timeout):
            return await self._inbox(to).get()

    def messages_to(self, to: str) -> list[SandboxMessage]:
        return [m for m in self.messages if m.to == to and m.direction == "outbound-api"]

    async def reply(self, from_: str, body: str) -> int:
        """A phone texts the platform: post a signed inbound SMS to `inbound_url`; HTTP status."""
        if self.inbound_url is None:
            raise RuntimeError("SmsSandbox has no inbound_url to deliver replies to")
        message = SandboxMessage(
            sid=_message_sid(),
            account_sid=self.account_sid,
            to=self._last_sender.get(from_, self.platform_number),
            from_=from_,
            body=body,
            direction="inbound",
            date_created=self._clock.now(),
            status="received",
        )
        self.messages.append(message)
        form = {
            "MessageSid": message.sid,
            "SmsSid": message.sid,
            "AccountSid": self.account_sid,
            "From": message.from_,
            "To": message.to,
            "Body": body,
            "NumMedia": "0",
            "SmsStatus": "received",
            "ApiVersion": API_VERSION,
        }
        return await self._post_signed(self.inbound_url, form)

    # -- the Messages API ------------------------------------------------------------

    def _authorised(self, authorization: str | None) -> bool:
        if not authorization or not authorization.lower().startswith("basic "):
            return False
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, _, password = decoded.partition(":")
        return secrets.compare_digest(user, self.account_sid) and secrets.compare_digest(
            password, self.auth_token
        )

    async def create_message(
        self, account_sid: str, authorization: str | None, form: dict[str, str]
    ) -> JSONResponse:
        self.requests_received += 1
        if not self._authorised(authorization):
            return _twilio_error(401, 20003, "Authenticate")
        if account_sid != self.account_sid:
            return _twilio_error(404, 20404, f"The requested resource {account_sid} was not found")
        if self._failures_pending > 0:
            self._failures_pending -= 1
            return _twilio_error(500, 20500, "Internal Server Error")

        to, from_, body = form.get("To", ""), form.get("From", ""), form.get("Body", "")
        if not to:
            return _twilio_error(400, 21604, "A 'To' phone number is required.")
        if not from_:
            return _twilio_error(400, 21603, "A 'From' phone number is required.")
        if not body:
            return _twilio_error(400, 21602, "Message body is required.")
        if not _E164.fullmatch(to):
            return _twilio_error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        error_code = self._number_errors.get(to)
        if error_code in _REFUSED_AT_POST:
            http_status = _REFUSED_AT_POST[error_code]
            return _twilio_error(http_status, error_code, f"Refused by the sandbox for {to}")

        message = SandboxMessage(
            sid=_message_sid(),
            account_sid=self.account_sid,
            to=to,
            from_=from_,
            body=body,
            direction="outbound-api",
            date_created=self._clock.now(),
            status="queued",
            status_callback=form.get("StatusCallback") or None,
            status_history=["queued"],
        )
        self.messages.append(message)
        self._last_sender[to] = from_
        self._inbox(to).put_nowait(message)
        self._spawn(self._deliver(message, error_code))
        for callback in list(self._subscribers):
            try:
                result = callback(message)
            except Exception:
                # A simulated phone that crashes must not fail the platform's send.
                log.exception("sandbox_subscriber_failed")
                continue
            if inspect.isawaitable(result):
                self._spawn(_awaited(result))
        log.info("sandbox_sms_accepted", sid=message.sid, segments=sms_segments(body))
        if (delay := self._number_delays.get(to)) is not None:
            await asyncio.sleep(delay)
        return JSONResponse(message.to_json(), status_code=201)

    def list_messages(
        self, account_sid: str, authorization: str | None, query: dict[str, str]
    ) -> JSONResponse:
        """Twilio's Messages list, newest first, filtered by `To` and `From`, in pages of
        `PageSize` (default 50) that link to the next one."""
        if not self._authorised(authorization):
            return _twilio_error(401, 20003, "Authenticate")
        if account_sid != self.account_sid:
            return _twilio_error(404, 20404, f"The requested resource {account_sid} was not found")
        asked_size, asked_page = query.get("PageSize", ""), query.get("Page", "")
        size = max(1, min(1000, int(asked_size))) if asked_size.isdigit() else 50
        page = int(asked_page) if asked_page.isdigit() else 0
        to, from_ = query.get("To"), query.get("From")
        found = [
            m
            for m in reversed(self.messages)
            if (to is None or m.to == to) and (from_ is None or m.from_ == from_)
        ]
        chunk = found[page * size : (page + 1) * size]
        filters = "".join(
            f"&{key}={quote(value)}" for key, value in (("To", to), ("From", from_)) if value
        )
        base = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages.json?PageSize={size}{filters}"
        more = (page + 1) * size < len(found)
        return JSONResponse(
            {
                "messages": [m.to_json() for m in chunk],
                "page": page,
                "page_size": size,
                "start": page * size,
                "end": page * size + max(0, len(chunk) - 1),
                "uri": f"{base}&Page={page}",
                "first_page_uri": f"{base}&Page=0",
                "next_page_uri": f"{base}&Page={page + 1}" if more else None,
                "previous_page_uri": f"{base}&Page={page - 1}" if page else None,
            }
        )

    # -- the Calls API ---------------------------------------------------------------

    async def create_call(
        self, account_sid: str, authorization: str | None, form: dict[str, Any]
    ) -> JSONResponse:
        self.call_requests_received += 1
        if not self._authorised(authorization):
            return _twilio_error(401, 20003, "Authenticate")
        if account_sid != self.account_sid:
            return _twilio_error(404, 20404, f"The requested resource {account_sid} was not found")
        if self._failures_pending > 0:
            self._failures_pending -= 1
            return _twilio_error(500, 20500, "Internal Server Error")
        to, from_, twiml = str(form.get("To", "")), str(form.get("From", "")), form.get("Twiml")
        if not to:
            return _twilio_error(400, 21201, "No 'To' number is specified")
        if not from_:
            return _twilio_error(400, 21213, "No 'From' number is specified")
        if not twiml:
            return _twilio_error(400, 21205, "Url or Twiml parameter is required.")
        if not _E164.fullmatch(to):
            return _twilio_error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        try:
            ET.fromstring(str(twiml))
        except ET.ParseError:
            return _twilio_error(400, 12100, "Document parse failure")
        error_code = self._number_errors.get(to)
        if error_code in _REFUSED_AT_POST:
            return _twilio_error(_REFUSED_AT_POST[error_code], error_code, "Refused by the sandbox")
        timeout = str(form.get("Timeout", "60"))
        events = form.get("StatusCallbackEvent") or []
        call = SandboxCall(
            sid=_call_sid(),
            account_sid=self.account_sid,
            to=to,
            from_=from_,
            twiml=str(twiml),
            date_created=self._clock.now(),
            status_callback=str(form.get("StatusCallback") or "") or None,
            status_events=[str(e) for e in (events if isinstance(events, list) else [events])],
            timeout=int(timeout) if timeout.isdigit() else 60,
            status_history=["queued"],
        )
        self.calls.append(call)
        self._last_sender[to] = from_
        callee = self._callees.get(to)
        if callee is not None or not self._call_subscribers:
            self._spawn(self.play(call, callee or Callee("ring")))
        else:
            for callback in list(self._call_subscribers):
                try:
                    result = callback(call)
                except Exception:
                    log.exception("sandbox_call_subscriber_failed")
                    continue
                if inspect.isawaitable(result):
                    self._spawn(_awaited(result))
        log.info("sandbox_call_accepted", sid=call.sid)
        if (delay := self._number_delays.get(to)) is not None:
            await asyncio.sleep(delay)
        return JSONResponse(call.to_json(), status_code=201)

    def list_calls(
        self, account_sid: str, authorization: str | None, query: dict[str, str]
    ) -> JSONResponse:
        """Twilio's Calls list, newest first, filtered by `To` and `From` (one page)."""
        if not self._authorised(authorization):
            return _twilio_error(401, 20003, "Authenticate")
        if account_sid != self.account_sid:
            return _twilio_error(404, 20404, f"The requested resource {account_sid} was not found")
        to, from_ = query.get("To"), query.get("From")
        found = [
            c
            for c in reversed(self.calls)
            if (to is None or c.to == to) and (from_ is None or c.from_ == from_)
        ]
        base = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls.json"
        return JSONResponse(
            {
                "calls": [c.to_json() for c in found],
                "page": 0,
                "page_size": max(1, len(found)),
                "start": 0,
                "end": max(0, len(found) - 1),
                "uri": base,
                "first_page_uri": base,
                "next_page_uri": None,
                "previous_page_uri": None,
            }
        )

    # -- the callee ------------------------------------------------------------------

    async def play(self, call: SandboxCall, callee: Callee) -> None:
        """Play `callee` in real time (the scenario player plays on its own clock, calling
        `ringing`, `pick_up`, `ring_out` and `reject` itself)."""
        await self.ringing(call)
        if callee.answer == "ring":
            await asyncio.sleep(self.ring_seconds)
            await self.ring_out(call)
            return
        await asyncio.sleep(callee.after)
        if callee.answer == "reject":
            await self.reject(call)
        else:
            await self.pick_up(call, callee.key)

    async def ringing(self, call: SandboxCall) -> None:
        await self._call_status(call, "initiated", event="initiated")
        await self._call_status(call, "ringing", event="ringing")

    async def pick_up(self, call: SandboxCall, key: str | None) -> None:
        """The callee answers, hears the message and presses `key` (None: hangs up)."""
        await self._call_status(call, "in-progress", event="answered")
        action = call.gather_action
        if key is not None and action:
            call.digits = key
            form = {**self._call_form(call), "Digits": key, "FinishedOnKey": ""}
            status, body = await self._post_signed_read(action, form)
            call.answer_twiml = body if status < 300 else None
        await self._call_status(call, "completed", event="completed", duration="25")

    async def ring_out(self, call: SandboxCall) -> None:
        """Nobody picks up before the caller gives up."""
        await self._call_status(call, "no-answer", event="completed")

    async def reject(self, call: SandboxCall) -> None:
        """The callee rejects the call (or the line is busy)."""
        await self._call_status(call, "busy", event="completed")

    def _call_form(self, call: SandboxCall) -> dict[str, str]:
        return {
            "CallSid": call.sid,
            "AccountSid": call.account_sid,
            "From": call.from_,
            "To": call.to,
            "CallStatus": call.status,
            "Direction": "outbound-api",
            "ApiVersion": API_VERSION,
        }

    async def _call_status(
        self, call: SandboxCall, status: str, *, event: str, duration: str | None = None
    ) -> None:
        call.status = status
        call.status_history.append(status)
        # Twilio sends `completed`-event callbacks (every final status) always, the others
        # only when asked for in StatusCallbackEvent.
        if not call.status_callback or (event != "completed" and event not in call.status_events):
            return
        form = {
            **self._call_form(call),
            "CallbackSource": "call-progress-events",
            "SequenceNumber": str(len(call.status_history) - 2),
            "Timestamp": format_datetime(self._clock.now()),
        }
        if duration is not None:
            form["CallDuration"] = duration
        await self._post_signed(call.status_callback, form)

    async def _post_signed_read(self, url: str, form: dict[str, str]) -> tuple[int, str]:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10.0))
        headers = {"X-Twilio-Signature": sign_twilio_request(self.auth_token, url, form)}
        try:
            async with self._http.post(url, data=form, headers=headers) as response:
                return response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("sandbox_webhook_failed", url=url, error=type(exc).__name__)
            return 0, ""

    # -- status callbacks ------------------------------------------------------------

    async def _deliver(self, message: SandboxMessage, error_code: int | None) -> None:
        await asyncio.sleep(self.status_delay)
        if error_code is None:
            outcome = ["sent", "delivered"]
        elif error_code >= _FIRST_CARRIER_CODE:
            outcome = ["sent", "undelivered"]
        else:
            outcome = ["failed"]
        for status in outcome:
            message.status = status
            message.status_history.append(status)
            if status in ("undelivered", "failed"):
                message.error_code = error_code
            if message.status_callback:
                await self._post_signed(message.status_callback, _status_form(message))

    async def _post_signed(self, url: str, form: dict[str, str]) -> int:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10.0))
        headers = {"X-Twilio-Signature": sign_twilio_request(self.auth_token, url, form)}
        try:
            async with self._http.post(url, data=form, headers=headers) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Twilio does not retry webhooks either: the platform must cope with a lost one.
            log.warning("sandbox_webhook_failed", url=url, error=type(exc).__name__)
            return 0

    def _inbox(self, number: str) -> asyncio.Queue[SandboxMessage]:
        return self._inboxes.setdefault(number, asyncio.Queue())

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Stop pending callbacks and close the webhook client."""
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


def _status_form(message: SandboxMessage) -> dict[str, str]:
    form = {
        "MessageSid": message.sid,
        "SmsSid": message.sid,
        "AccountSid": message.account_sid,
        "From": message.from_,
        "To": message.to,
        "MessageStatus": message.status,
        "SmsStatus": message.status,
        "ApiVersion": API_VERSION,
    }
    if message.error_code is not None:
        form["ErrorCode"] = str(message.error_code)
    return form


def create_sandbox_app(sandbox: SmsSandbox) -> FastAPI:
    app = FastAPI(title="Anxin Twilio sandbox", docs_url=None, redoc_url=None)

    @app.post(f"/{API_VERSION}/Accounts/{{account_sid}}/Messages.json")
    async def create_message(account_sid: str, request: Request) -> JSONResponse:
        form = await request.form()
        fields = {key: value for key, value in form.items() if isinstance(value, str)}
        return await sandbox.create_message(
            account_sid, request.headers.get("authorization"), fields
        )

    @app.get(f"/{API_VERSION}/Accounts/{{account_sid}}/Messages.json")
    async def read_messages(account_sid: str, request: Request) -> JSONResponse:
        return sandbox.list_messages(
            account_sid, request.headers.get("authorization"), dict(request.query_params)
        )

    @app.post(f"/{API_VERSION}/Accounts/{{account_sid}}/Calls.json")
    async def create_call(account_sid: str, request: Request) -> JSONResponse:
        form = await request.form()
        fields: dict[str, Any] = {
            key: value for key, value in form.items() if isinstance(value, str)
        }
        fields["StatusCallbackEvent"] = [
            v for v in form.getlist("StatusCallbackEvent") if isinstance(v, str)
        ]
        return await sandbox.create_call(account_sid, request.headers.get("authorization"), fields)

    @app.get(f"/{API_VERSION}/Accounts/{{account_sid}}/Calls.json")
    async def read_calls(account_sid: str, request: Request) -> JSONResponse:
        return sandbox.list_calls(
            account_sid, request.headers.get("authorization"), dict(request.query_params)
        )

    @app.get("/sandbox/messages")
    async def list_messages() -> list[dict[str, Any]]:
        return [{**asdict(m), "date_created": m.date_created.isoformat()} for m in sandbox.messages]

    return app
