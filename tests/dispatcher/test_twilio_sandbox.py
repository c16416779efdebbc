"""The real twilio library against our Twilio-compatible sandbox, over real HTTP."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from anxin.clock import SystemClock
from anxin.logging import configure_logging
from dispatcher.twilio_provider import (
    SmsSendError,
    TwilioSmsProvider,
    classify_twilio_error,
    twilio_signature_valid,
)
from dispatcher.twilio_sandbox import SandboxMessage, SmsSandbox, create_sandbox_app
from tests.support.harness import ServeApp

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "sandbox-token"
PLATFORM_NUMBER = "+8610690000001"
AIDE_PHONE = "+8613800000001"
# Waiting for something to happen, not timing it: generous so a slow CI box does not flake.
WAIT = 10.0


@dataclass
class Webhook:
    url: str
    form: dict[str, str]
    signature: str | None


@dataclass
class World:
    sandbox: SmsSandbox
    sandbox_url: str
    provider: TwilioSmsProvider
    receiver_url: str
    webhooks: asyncio.Queue[Webhook]

    async def next_webhook(self) -> Webhook:
        async with asyncio.timeout(WAIT):
            return await self.webhooks.get()


def receiver_app(webhooks: asyncio.Queue[Webhook], base_url: list[str]) -> FastAPI:
    """Stands in for the platform's /twilio/status and /twilio/inbound."""
    app = FastAPI()

    @app.post("/twilio/{hook}")
    async def hook(hook: str, request: Request) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        url = f"{base_url[0]}/twilio/{hook}"
        await webhooks.put(Webhook(url, form, request.headers.get("x-twilio-signature")))
        return Response(status_code=200)

    return app


@pytest.fixture
async def world(serve_app: ServeApp) -> AsyncIterator[World]:
    webhooks: asyncio.Queue[Webhook] = asyncio.Queue()
    receiver_base: list[str] = []
    async with serve_app(receiver_app(webhooks, receiver_base)) as receiver_url:
        receiver_base.append(receiver_url)
        sandbox = SmsSandbox(
            AUTH_TOKEN, ACCOUNT_SID, f"{receiver_url}/twilio/inbound", status_delay=0.0
        )
        async with serve_app(create_sandbox_app(sandbox)) as sandbox_url:
            provider = TwilioSmsProvider(
                account_sid=ACCOUNT_SID,
                auth_token=AUTH_TOKEN,
                from_number=PLATFORM_NUMBER,
                base_url=sandbox_url,
            )
            try:
                yield World(sandbox, sandbox_url, provider, receiver_url, webhooks)
            finally:
                await provider.aclose()
                await sandbox.aclose()


async def test_twilio_library_sends_through_the_sandbox(world: World) -> None:
    sid = await world.provider.send(
        to=AIDE_PHONE, body="【安心】A27 一键呼叫：王秀英", status_callback=None
    )

    message = await world.sandbox.next_message(AIDE_PHONE, timeout=WAIT)
    assert re.fullmatch(r"SM[0-9a-f]{32}", sid)
    assert message.sid == sid
    assert message.body == "【安心】A27 一键呼叫：王秀英"
    assert message.from_ == PLATFORM_NUMBER
    assert world.sandbox.requests_received == 1


async def test_status_callbacks_are_signed_sent_then_delivered(world: World) -> None:
    status_url = f"{world.receiver_url}/twilio/status"
    sid = await world.provider.send(to=AIDE_PHONE, body="hello", status_callback=status_url)

    sent, delivered = await world.next_webhook(), await world.next_webhook()
    assert [sent.form["MessageStatus"], delivered.form["MessageStatus"]] == ["sent", "delivered"]
    assert delivered.form["MessageSid"] == sid
    assert delivered.url == status_url
    assert twilio_signature_valid(AUTH_TOKEN, status_url, delivered.form, delivered.signature)

    forged_status = {**delivered.form, "MessageStatus": "failed"}
    assert not twilio_signature_valid(AUTH_TOKEN, status_url, forged_status, delivered.signature)
    assert not twilio_signature_valid(
        "other-token", status_url, delivered.form, delivered.signature
    )
    assert not twilio_signature_valid(AUTH_TOKEN, status_url, delivered.form, "x" + "=" * 27)
    assert not twilio_signature_valid(AUTH_TOKEN, status_url, delivered.form, None)


async def test_one_send_is_one_post_and_retrying_is_the_callers_job(world: World) -> None:
    world.sandbox.fail_next(3)
    errors: list[SmsSendError] = []
    sid = None
    for _attempt in range(4):
        try:
            sid = await world.provider.send(to=AIDE_PHONE, body="retry me", status_callback=None)
            break
        except SmsSendError as error:
            errors.append(error)

    assert sid is not None
    assert [(e.retryable, e.http_status) for e in errors] == [(True, 500)] * 3
    assert world.sandbox.requests_received == 4
    assert [m.sid for m in world.sandbox.messages_to(AIDE_PHONE)] == [sid]


async def test_wrong_auth_token_is_not_retryable(world: World) -> None:
    provider = TwilioSmsProvider(
        account_sid=ACCOUNT_SID,
        auth_token="wrong",
        from_number=PLATFORM_NUMBER,
        base_url=world.sandbox_url,
    )
    try:
        with pytest.raises(SmsSendError) as caught:
            await provider.send(to=AIDE_PHONE, body="hello", status_callback=None)
    finally:
        await provider.aclose()
    assert caught.value.retryable is False
    assert caught.value.code == 20003
    assert "鉴权失败" in caught.value.reason
    assert world.sandbox.messages == []


@pytest.mark.parametrize(
    ("to", "number_error", "code", "reason"),
    [
        (AIDE_PHONE, 21211, 21211, "收件号码无效"),
        ("13800000001", None, 21211, "收件号码无效"),
        (AIDE_PHONE, 21610, 21610, "已退订"),
        (AIDE_PHONE, 21614, 21614, "不是手机号码"),
    ],
    ids=["number error 21211", "not E.164", "unsubscribed", "landline at POST"],
)
async def test_refused_number_gets_a_readable_reason(
    world: World, to: str, number_error: int | None, code: int, reason: str
) -> None:
    if number_error is not None:
        world.sandbox.set_number_error(to, number_error)
    with pytest.raises(SmsSendError) as caught:
        await world.provider.send(to=to, body="hello", status_callback=None)
    assert caught.value.code == code
    assert caught.value.retryable is False
    assert reason in caught.value.reason
    assert world.sandbox.messages == []


async def test_unreachable_handset_is_accepted_then_undelivered(world: World) -> None:
    world.sandbox.set_number_error(AIDE_PHONE, 30003)
    status_url = f"{world.receiver_url}/twilio/status"
    sid = await world.provider.send(to=AIDE_PHONE, body="hello", status_callback=status_url)

    sent, undelivered = await world.next_webhook(), await world.next_webhook()
    assert sent.form["MessageStatus"] == "sent"
    assert undelivered.form["MessageStatus"] == "undelivered"
    assert undelivered.form["MessageSid"] == sid
    assert undelivered.form["ErrorCode"] == "30003"
    assert twilio_signature_valid(AUTH_TOKEN, status_url, undelivered.form, undelivered.signature)
    assert "无法接通" in classify_twilio_error(int(undelivered.form["ErrorCode"])).reason


async def test_number_error_can_be_cleared(world: World) -> None:
    world.sandbox.set_number_error(AIDE_PHONE, 21211)
    world.sandbox.set_number_error(AIDE_PHONE, None)
    assert await world.provider.send(to=AIDE_PHONE, body="hello", status_callback=None)


async def test_reply_is_a_signed_inbound_sms_to_the_number_that_texted(world: World) -> None:
    await world.provider.send(to=AIDE_PHONE, body="A27 ...", status_callback=None)

    status = await world.sandbox.reply(AIDE_PHONE, "1 A27")

    inbound = await world.next_webhook()
    assert status == 200
    assert inbound.form["From"] == AIDE_PHONE
    assert inbound.form["To"] == PLATFORM_NUMBER
    assert inbound.form["Body"] == "1 A27"
    assert inbound.form["MessageSid"].startswith("SM")
    assert inbound.form["AccountSid"] == ACCOUNT_SID
    assert twilio_signature_valid(AUTH_TOKEN, inbound.url, inbound.form, inbound.signature)


async def test_subscribed_phone_answers_the_sms(world: World) -> None:
    async def aide_phone(message: SandboxMessage) -> None:
        await world.sandbox.reply(message.to, "1")

    world.sandbox.subscribe(aide_phone)
    await world.provider.send(to=AIDE_PHONE, body="A27 ...", status_callback=None)

    inbound = await world.next_webhook()
    assert (inbound.form["From"], inbound.form["Body"]) == (AIDE_PHONE, "1")


async def test_unsubscribed_phone_hears_nothing_more(world: World) -> None:
    seen: list[SandboxMessage] = []
    unsubscribe = world.sandbox.subscribe(seen.append)
    await world.provider.send(to=AIDE_PHONE, body="A27 ...", status_callback=None)
    unsubscribe()
    await world.provider.send(to=AIDE_PHONE, body="A28 ...", status_callback=None)
    assert [m.body for m in seen] == ["A27 ..."]


async def test_a_crashing_phone_does_not_break_sending(world: World) -> None:
    def broken_phone(message: SandboxMessage) -> None:
        raise RuntimeError("battery fell out")

    world.sandbox.subscribe(broken_phone)
    assert await world.provider.send(to=AIDE_PHONE, body="A27 ...", status_callback=None)


async def test_next_message_waits_for_the_next_one_to_that_number(world: World) -> None:
    waiting = asyncio.create_task(world.sandbox.next_message(AIDE_PHONE, timeout=WAIT))
    await world.provider.send(to="+8613800000002", body="someone else", status_callback=None)
    await world.provider.send(to=AIDE_PHONE, body="for you", status_callback=None)
    assert (await waiting).body == "for you"


async def test_messages_are_listed_for_humans(world: World) -> None:
    await world.provider.send(to=AIDE_PHONE, body="看得见", status_callback=None)
    async with httpx.AsyncClient() as http:
        listed = (await http.get(f"{world.sandbox_url}/sandbox/messages")).json()
    assert [(m["to"], m["body"]) for m in listed] == [(AIDE_PHONE, "看得见")]


async def test_unreachable_endpoint_is_retryable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    provider = TwilioSmsProvider(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        from_number=PLATFORM_NUMBER,
        base_url=f"http://127.0.0.1:{closed_port}",
    )
    try:
        with pytest.raises(SmsSendError) as caught:
            await provider.send(to=AIDE_PHONE, body="hello", status_callback=None)
    finally:
        await provider.aclose()
    assert caught.value.retryable is True
    assert caught.value.code is None


async def test_silent_endpoint_times_out_as_retryable() -> None:
    # twilio's async client would wait forever here: it passes no timeout to aiohttp.
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    provider = TwilioSmsProvider(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        from_number=PLATFORM_NUMBER,
        base_url=f"http://127.0.0.1:{port}",
        timeout=0.2,
    )
    try:
        with pytest.raises(SmsSendError) as caught:
            await provider.send(to=AIDE_PHONE, body="hello", status_callback=None)
    finally:
        await provider.aclose()
        server.close()
    assert caught.value.retryable is True


async def test_the_provider_finds_a_message_it_took_among_many_to_the_same_number(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """What a dispatcher that died mid-pass asks (dispatcher.worker): has the provider got this
    SMS? Through the twilio library's Messages list, newest first, across pages. Even at debug
    level the list's query (the aide's number) is not logged: twilio logs it unmasked."""
    configure_logging("debug")
    caplog.set_level(logging.DEBUG)
    try:
        since = SystemClock().now()
        sids = [
            await world.provider.send(
                to=AIDE_PHONE, body=f"【安心】A{n} 一键呼叫", status_callback=None
            )
            for n in range(130)
        ]
        await world.provider.send(
            to="+8613900000001", body="【安心】A999 一键呼叫", status_callback=None
        )

        # The oldest of the 130 is on the second page of 100.
        assert (
            await world.provider.find_sent(to=AIDE_PHONE, body="【安心】A0 一键呼叫", since=since)
            == sids[0]
        )
        assert (
            await world.provider.find_sent(to=AIDE_PHONE, body="【安心】A129 一键呼叫", since=since)
            == sids[129]
        )
        # Another number's message, a body never sent, and messages from before the mark.
        assert (
            await world.provider.find_sent(to=AIDE_PHONE, body="【安心】A999 一键呼叫", since=since)
            is None
        )
        assert (
            await world.provider.find_sent(to=AIDE_PHONE, body="【安心】A130 一键呼叫", since=since)
            is None
        )
        later = since + timedelta(hours=1)
        assert (
            await world.provider.find_sent(to=AIDE_PHONE, body="【安心】A5 一键呼叫", since=later)
            is None
        )
    finally:
        configure_logging("warning")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert AIDE_PHONE not in logged and AIDE_PHONE.removeprefix("+") not in logged
