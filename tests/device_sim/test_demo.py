"""The README's first command, as a user runs it: homes press SOS, aides reply, alerts close."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr
from rich.console import Console
from sqlalchemy import func, select
from sqlmodel import col

from alert_service.models import Alert
from anxin.db import SessionMaker
from anxin.settings import Settings
from device_sim.demo import run_demo
from device_sim.phones import Timing
from dispatcher.models import SmsMessage


@pytest.mark.parametrize("provider", ["twilio", "aliyun"])
async def test_demo_closes_an_alert_through_mqtt_and_sms_replies(
    sessions: SessionMaker, database_url: str, mqtt_url: str, tmp_path: Path, provider: str
) -> None:
    """On either provider (`ANXIN_SMS_PROVIDER`), each through its real library against the
    project's own compatible endpoint."""
    settings = Settings(
        sms_provider=provider,
        database_url=SecretStr(database_url),
        mqtt_url=SecretStr(mqtt_url),
        data_dir=tmp_path,
        watcher_poll_ms=50,
        mqtt_shared_group="",  # the in-process broker used outside CI has no shared subscriptions
        outbox_poll_ms=50,
    )
    console = Console(record=True, width=200)
    result = await run_demo(
        settings,
        sos_every=2.0,
        duration=90.0,
        exit_after_resolved=1,
        timing=Timing(answer_after=0.5, travel=1.0, handle=0.5),
        console=console,
    )
    assert result.pressed >= 1
    assert len(result.resolved) >= 1, console.export_text()
    output = console.export_text()
    assert "admin / anxin-admin" in output  # the login the demo prints
    assert "http://127.0.0.1:" in output
    assert f"{provider.capitalize()}-compatible" in output

    async with sessions() as session:
        resolved = (
            (
                await session.execute(
                    select(Alert).where(col(Alert.status) == "resolved", col(Alert.kind) == "sos")
                )
            )
            .scalars()
            .all()
        )
        assert resolved and all(a.on_scene_at is not None for a in resolved)
        dispatched = await session.scalar(
            select(func.count())
            .select_from(SmsMessage)
            .where(
                col(SmsMessage.purpose) == "dispatch",
                col(SmsMessage.status).in_(("sent", "delivered")),
            )
        )
        replies = await session.scalar(
            select(func.count()).select_from(SmsMessage).where(col(SmsMessage.direction) == "in")
        )
    assert dispatched and dispatched >= 1
    assert replies and replies >= 3  # 1, 2 and 3 from the aide's phone
