"""Dispatcher fixtures: `bench`, the test bench of real parts in tests/support/dispatch.py."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from anxin.app import create_app
from anxin.clock import FakeClock
from anxin.settings import Settings
from anxin.web import AppContext
from dispatcher.aliyun_sandbox import AliyunSandbox, create_aliyun_sandbox_app
from dispatcher.aliyun_sms import AliyunAccount, AliyunSmsProvider
from dispatcher.twilio_provider import TwilioSmsProvider
from dispatcher.twilio_sandbox import SmsSandbox, create_sandbox_app
from tests.support.aliyun import PUSH_TOKEN, AliyunBench
from tests.support.dispatch import PLATFORM_NUMBER, DispatchBench
from tests.support.harness import Seeded, ServeApp


@pytest.fixture
async def bench(region: Seeded, serve_app: ServeApp) -> AsyncIterator[DispatchBench]:
    token, account = uuid.uuid4().hex, "AC" + uuid.uuid4().hex
    clock = FakeClock()
    # status_delay 0: receipts race the worker's commit, which the platform must survive.
    sandbox = SmsSandbox(token, account, None, status_delay=0.0)
    settings = Settings(
        twilio_account_sid=account,
        twilio_auth_token=SecretStr(token),
        twilio_from=PLATFORM_NUMBER,
    )
    app = create_app(settings, region.sessions, clock)
    async with serve_app(create_sandbox_app(sandbox)) as sandbox_url, serve_app(app) as web_url:
        # Twilio signs the public URL: it is only known once the app listens.
        settings = settings.model_copy(
            update={"public_url": web_url, "twilio_base_url": sandbox_url}
        )
        app.state.ctx = AppContext(settings=settings, sessions=region.sessions, clock=clock)
        sandbox.inbound_url = web_url + "/twilio/inbound"
        provider = TwilioSmsProvider(
            account_sid=account, auth_token=token, from_number=PLATFORM_NUMBER, base_url=sandbox_url
        )
        async with httpx.AsyncClient() as http:
            try:
                yield DispatchBench(
                    region.sessions, region, clock, sandbox, provider, web_url, settings, http
                )
            finally:
                await provider.aclose()
                await sandbox.aclose()


@pytest.fixture
async def aliyun_bench(region: Seeded, serve_app: ServeApp) -> AsyncIterator[AliyunBench]:
    """The bench on Aliyun: the official SDK against the project's Aliyun-compatible endpoint,
    receipts and replies pushed back to the web app's push URLs (with their token)."""
    key_id, secret = "LTAI" + uuid.uuid4().hex[:20], uuid.uuid4().hex
    clock = FakeClock()
    endpoint = AliyunSandbox(key_id, secret, status_delay=0.0, clock=clock)
    settings = Settings(
        sms_provider="aliyun",
        aliyun_access_key_id=key_id,
        aliyun_access_key_secret=SecretStr(secret),
        aliyun_push_token=SecretStr(PUSH_TOKEN),
    )
    app = create_app(settings, region.sessions, clock)
    async with serve_app(create_aliyun_sandbox_app(endpoint)) as api, serve_app(app) as web_url:
        settings = settings.model_copy(
            update={
                "public_url": web_url,
                "aliyun_sms_endpoint": api,
                "aliyun_voice_endpoint": api,
                "aliyun_voice_show_number": endpoint.show_number,
            }
        )
        app.state.ctx = AppContext(settings=settings, sessions=region.sessions, clock=clock)
        endpoint.report_url = f"{web_url}/aliyun/sms/report/{PUSH_TOKEN}"
        endpoint.up_url = f"{web_url}/aliyun/sms/up/{PUSH_TOKEN}"
        endpoint.voice_report_url = f"{web_url}/aliyun/voice/report/{PUSH_TOKEN}"
        provider = AliyunSmsProvider(
            account=AliyunAccount(key_id, secret, endpoint=api), sign_name=settings.aliyun_sign_name
        )
        async with httpx.AsyncClient() as http:
            try:
                yield AliyunBench(
                    region.sessions,
                    region,
                    clock,
                    # Twilio's parts of the bench: placeholders, never served nor used.
                    SmsSandbox("unused", "ACunused", None),
                    TwilioSmsProvider(
                        account_sid="ACunused", auth_token="unused", from_number=PLATFORM_NUMBER
                    ),
                    web_url,
                    settings,
                    http,
                    aliyun=endpoint,
                    aliyun_provider=provider,
                )
            finally:
                await provider.aclose()
                await endpoint.aclose()
