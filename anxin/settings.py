"""Typed settings (CONTRACT.md §3). Read once at the edge and passed in, never read deep inside."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from anxin.logging import register_secrets


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANXIN_", extra="ignore")

    # None → embedded Postgres in data_dir.
    database_url: SecretStr | None = None
    # None → in-process MQTT broker (amqtt, MQTT 3.1.1) on a free port.
    mqtt_url: SecretStr | None = None
    data_dir: Path = Path("./var")
    # Gateway replicas split the load through `$share/<group>/…` (Mosquitto, EMQX); empty turns
    # shared subscriptions off (brokers without them, such as the in-process one).
    mqtt_shared_group: str = "anxin-gw"

    # Unset credentials → SMS stay in the built-in outbox (shown in the console, not sent).
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from: str | None = None
    twilio_base_url: str = "https://api.twilio.com"

    # Which provider sends SMS (and places calls): `twilio` or `aliyun` (issue 19).
    sms_provider: Literal["twilio", "aliyun"] = "twilio"
    # Aliyun (阿里云短信 / 语音服务): AccessKey, sign name, the codes Aliyun gave our templates
    # (JSON: {"ANXIN_CALLOUT": "SMS_4567…"}; unset → our keys), the API endpoints (the SDK's
    # endpoint setting: the project's own compatible endpoint for the demo and tests), and the
    # token in the push URLs of receipts and replies (docs/operations.md).
    aliyun_access_key_id: str | None = None
    aliyun_access_key_secret: SecretStr | None = None
    aliyun_sign_name: str = "安心"
    aliyun_template_codes: Annotated[dict[str, str], NoDecode] = {}
    aliyun_sms_endpoint: str = "https://dysmsapi.aliyuncs.com"
    aliyun_voice_endpoint: str = "https://dyvmsapi.aliyuncs.com"
    # The number call-out calls show (IvrCall's CalledShowNumber: one bought in Aliyun's console).
    aliyun_voice_show_number: str = ""
    aliyun_push_token: SecretStr | None = None

    public_url: str = "http://127.0.0.1:8000"
    timezone: str = "Asia/Shanghai"

    # Web console / API.
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    secret_key: SecretStr = SecretStr("anxin-dev-secret-change-me")
    token_minutes: int = 12 * 60
    language: str = "zh"

    # Workers.
    gateway_batch_size: int = 500
    gateway_batch_ms: int = 20
    gateway_event_workers: int = 2
    watcher_poll_ms: int = 200
    outbox_poll_ms: int = 200
    outbox_max_attempts: int = 8
    # The carrier's cap per number and template in a rolling 24 h (Aliyun: ~50); from 80 % of
    # it the operator is warned. A provider without a cap can raise it.
    sms_daily_limit: int = 50
    # Voice call-outs (issue 19): off → calls stay in the table, never placed. Calls per number
    # in a rolling 24 h (voice notifications have their own carrier cap).
    voice_enabled: bool = True
    voice_daily_limit: int = 20
    # The aides' weekly SMS digest of visits due (issue 18): local ISO weekday (1 = Monday)
    # and hour from which the alerts role writes it, once per aide and week; off: only
    # `anxin visits send-digests` writes it.
    visit_digest_enabled: bool = True
    visit_digest_weekday: int = Field(1, ge=1, le=7)
    visit_digest_hour: int = Field(8, ge=0, le=23)
    log_json: bool = False
    log_level: str = "info"

    @field_validator("aliyun_template_codes", mode="before")
    @classmethod
    def _json_object(cls, value: object) -> object:
        """JSON from the environment; empty (a compose file's unset variable) is none."""
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    def model_post_init(self, context: Any, /) -> None:
        # Whatever process reads settings has its secrets known to the log redactor before it
        # can log anything: no call site can forget (anxin.logging.redact).
        register_secrets(
            value.get_secret_value()
            for value in self.__dict__.values()
            if isinstance(value, SecretStr)
        )

    @property
    def aliyun_configured(self) -> bool:
        return bool(self.aliyun_access_key_id and self.aliyun_access_key_secret)

    @property
    def sms_configured(self) -> bool:
        """The chosen provider has its credentials (else SMS stay in the outbox)."""
        if self.sms_provider == "aliyun":
            return self.aliyun_configured
        return self.twilio_configured

    @property
    def twilio_configured(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token and self.twilio_from)

    @property
    def callback_base(self) -> str:
        return self.public_url.rstrip("/")
