"""A Twilio-compatible Messages endpoint the project runs itself.

It lets the platform, the simulated aides' phones and the tests exercise the real `twilio` library
and real HTTP: messages are accepted (or refused the way Twilio refuses them), status callbacks
and inbound replies are posted back signed with X-Twilio-Signature, and nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import re
import secrets
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

    @app.get("/sandbox/messages")
    async def list_messages() -> list[dict[str, Any]]:
        return [{**asdict(m), "date_created": m.date_created.isoformat()} for m in sandbox.messages]

    return app
