"""Aliyun voice call-outs behind the voice seam: the only module in Anxin that imports
`alibabacloud_dyvmsapi20170525`.

One `call` is one IvrCall (交互式语音应答): the call-out's speech as its registered
text-to-speech template (`dispatcher.aliyun_templates.VOICE_TEMPLATES`, variables fitted), said
twice, then a one-key menu — `1` and `0`, each answered by a short template of its own. The key
and the outcome come back in Aliyun's VoiceCallReport / VoiceReport push with our `OutId`
(`dispatcher.aliyun_views`), not to per-call URLs. Same SDK stack as `dispatcher.aliyun_sms`
(V3 signature, the synchronous path in a worker thread, no SDK retries).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

from alibabacloud_dyvmsapi20170525 import models as vms_models
from alibabacloud_dyvmsapi20170525.client import Client

from anxin.logging import get_logger
from dispatcher.aliyun_sms import (
    AliyunAccount,
    call_sdk,
    client_config,
    phone_for_aliyun,
    provider_error,
)
from dispatcher.aliyun_templates import (
    CALL_KEY_TEMPLATES,
    VOICE_TEMPLATES,
    NoTemplate,
    to_voice_template,
)
from dispatcher.provider_errors import Outcome, ProviderError, classify_aliyun
from dispatcher.providers import SmsSendError

log = get_logger("dispatcher.aliyun")

ALIYUN_VOICE_ENDPOINT = "https://dyvmsapi.aliyuncs.com"
# The speech is said twice (PlayTimes), then the menu waits this long for a key (ms).
PLAY_TIMES = 2
KEY_TIMEOUT_MS = 10_000


class AliyunVoiceProvider:
    """Places call-outs through Aliyun's IvrCall, or any endpoint that speaks it."""

    name = "aliyun"

    def __init__(
        self,
        *,
        account: AliyunAccount,
        show_number: str,
        template_codes: Mapping[str, str] | None = None,
    ) -> None:
        self._account = account
        self._show_number = show_number
        self._codes = {t.key: (template_codes or {}).get(t.key, t.key) for t in VOICE_TEMPLATES}
        self._client: Client | None = None

    def _sdk(self) -> Client:
        if self._client is None:
            self._client = Client(client_config(self._account))
        return self._client

    async def call(
        self,
        *,
        to: str,
        speech_text: str,
        call_ref: str,
        status_callback: str | None,
        gather_callback: str | None,
    ) -> str:
        """One IvrCall; returns Aliyun's CallId. Raises SmsSendError. The callback URLs are
        not Aliyun's way: its push URL is set in its console, and `call_ref` goes as OutId."""
        try:
            message = to_voice_template(speech_text)
        except NoTemplate as exc:
            raise provider_error(
                ProviderError(Outcome.blocked_content, "NO_TEMPLATE"), 422, None
            ) from exc
        if message.shortened:
            log.info(
                "aliyun_variables_shortened",
                template=message.template.key,
                variables=",".join(message.shortened),
            )
        request = vms_models.IvrCallRequest(
            called_show_number=self._show_number,
            called_number=phone_for_aliyun(to),
            start_code=self._codes[message.template.key],
            start_tts_params=json.dumps(message.params, ensure_ascii=False),
            menu_key_map=[
                vms_models.IvrCallRequestMenuKeyMap(key=key, code=self._codes[template])
                for key, template in CALL_KEY_TEMPLATES.items()
            ],
            play_times=PLAY_TIMES,
            timeout=KEY_TIMEOUT_MS,
            out_id=call_ref,
        )
        response = await call_sdk(self._sdk().ivr_call_with_options, request, self._account)
        body = response.body
        if body is None or body.code != "OK":
            code = getattr(body, "code", None)
            raise provider_error(classify_aliyun(code, 200), 200, getattr(body, "message", None))
        if not body.call_id:
            raise SmsSendError("阿里云未返回呼叫编号 / no CallId returned", retryable=False)
        return str(body.call_id)

    async def find_placed(self, *, to: str, call_ref: str, since: datetime) -> str | None:
        """None: Aliyun's voice API answers only by its own CallId, never by our OutId, so it
        cannot tell. What keeps a crashed pass from ringing twice is the push: the call's first
        VoiceCallReport carries our OutId and marks the row placed (`inbound.call_status`)
        within seconds, before the next pass may ask (`calls.IN_FLIGHT_SETTLE`)."""
        return None

    async def aclose(self) -> None:
        self._client = None
