"""The dispatcher bench on Aliyun (the `aliyun_bench` fixture of tests/dispatcher/conftest.py):
Postgres with the demo county, the web app's Aliyun push webhooks, the project's
Aliyun-compatible endpoint and the official Aliyun SDK (`dispatcher.aliyun_sms`).

As `DispatchBench`, nothing runs by itself: a test raises an alert, runs the outbox, moves the
fake clock. Its Twilio parts (`sandbox`, `provider`) are placeholders no test of it uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alert_service.responses import LadderResponses
from dispatcher import calls
from dispatcher.aliyun_sandbox import AliyunSandbox
from dispatcher.aliyun_sms import AliyunSmsProvider
from dispatcher.aliyun_voice import AliyunVoiceProvider
from dispatcher.providers import make_voice_provider, sms_status_callback
from dispatcher.worker import send_due
from tests.support.dispatch import DispatchBench

PUSH_TOKEN = "push-token-of-the-test"


@dataclass
class AliyunBench(DispatchBench):
    aliyun: AliyunSandbox | None = None
    aliyun_provider: AliyunSmsProvider | None = None

    @property
    def endpoint(self) -> AliyunSandbox:
        assert self.aliyun is not None
        return self.aliyun

    @property
    def sender(self) -> AliyunSmsProvider:
        assert self.aliyun_provider is not None
        return self.aliyun_provider

    @property
    def status_callback(self) -> str:
        callback = sms_status_callback(self.settings)
        assert callback is not None
        return callback

    def push_url(self, kind: str, token: str = PUSH_TOKEN) -> str:
        return f"{self.web_url}/aliyun/sms/{kind}/{token}"

    async def send_outbox(self, **kwargs: Any) -> int:
        handled = 0
        while n := await send_due(
            self.sessions,
            self.sender,
            self.clock,
            responses=LadderResponses(),
            status_callback=self.status_callback,
            **kwargs,
        ):
            handled += n
        return handled

    def voice(self) -> AliyunVoiceProvider:
        """The voice provider the settings make (IvrCall through the official SDK)."""
        provider = make_voice_provider(self.settings)
        assert isinstance(provider, AliyunVoiceProvider)
        return provider

    async def place_calls(self, provider: AliyunVoiceProvider) -> int:
        """Calls-worker passes until nothing is due at the clock's now; how many handled."""
        handled = 0
        while n := await calls.place_due(
            self.sessions,
            provider,
            self.clock,
            responses=LadderResponses(),
            callback_base=self.web_url,
        ):
            handled += n
        return handled

    async def reply(self, phone: str, body: str) -> int:
        """The aide's phone texts the platform: Aliyun's SmsUp push; HTTP status."""
        return await self.endpoint.reply(phone, body)
