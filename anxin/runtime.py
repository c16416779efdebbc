"""The composition root's runtime: the roles wired together over the services
(`anxin.services`), run until stopped."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

from alert_service.responses import LadderResponses
from alert_service.watcher import run_watcher
from anxin.app import create_app
from anxin.cli_run import InProcessServer
from anxin.logging import get_logger
from anxin.metrics import run_role_metrics
from anxin.services import Services
from dispatcher.calls import run_calls
from dispatcher.providers import (
    SmsProvider,
    VoiceProvider,
    make_provider,
    make_voice_provider,
    sms_status_callback,
)
from dispatcher.worker import run_outbox
from gateway.worker import Gateway
from visits.scheduled import run_digests

log = get_logger("anxin.runtime")
ROLES = ("gateway", "alerts", "dispatcher", "web")


async def serve_web(svc: Services, stop: asyncio.Event, port: int | None = None) -> None:
    app = create_app(svc.settings, svc.sessions, svc.clock)
    config = uvicorn.Config(
        app,
        host=svc.settings.http_host,
        port=port or svc.settings.http_port,
        log_level="warning",
        lifespan="off",
    )
    server = InProcessServer(config)
    task = asyncio.create_task(server.serve())
    await stop.wait()
    server.should_exit = True
    await task


def role_tasks(
    svc: Services,
    roles: tuple[str, ...],
    stop: asyncio.Event,
    *,
    provider: SmsProvider | None = None,
    voice_provider: VoiceProvider | None = None,
    gateway_id: str = "anxin-gateway",
    web_port: int | None = None,
    shared_subscription: bool | None = None,
) -> list[Awaitable[Any]]:
    """The coroutines that run the asked-for roles until `stop` is set."""
    s = svc.settings
    work: list[Awaitable[Any]] = []
    if "gateway" in roles:
        gateway = Gateway(
            svc.sessions,
            svc.clock,
            svc.mqtt,
            timezone=s.timezone,
            client_id=gateway_id,
            share_group=s.mqtt_shared_group,
            shared_subscription=(
                bool(s.mqtt_shared_group) and svc.shared_subscriptions
                if shared_subscription is None
                else shared_subscription
            ),
            batch_size=s.gateway_batch_size,
            batch_ms=s.gateway_batch_ms,
            event_workers=s.gateway_event_workers,
        )
        work.append(gateway.run(stop))
    if "alerts" in roles:
        work.append(
            run_watcher(
                svc.sessions,
                svc.clock,
                s.timezone,
                poll_seconds=s.watcher_poll_ms / 1000,
                stop=stop,
            )
        )
    if "alerts" in roles and s.visit_digest_enabled:
        # The aides' weekly digest of visits due (issue 18 item 4), once per aide and week.
        work.append(
            run_digests(
                svc.sessions,
                svc.clock,
                timezone=s.timezone,
                weekday=s.visit_digest_weekday,
                hour=s.visit_digest_hour,
                daily_limit=s.sms_daily_limit,
                stop=stop,
            )
        )
    if "dispatcher" in roles:
        work.append(
            run_outbox(
                svc.sessions,
                provider or make_provider(s),
                svc.clock,
                responses=LadderResponses(),
                status_callback=sms_status_callback(s),
                poll_seconds=s.outbox_poll_ms / 1000,
                max_attempts=s.outbox_max_attempts,
                daily_limit=s.sms_daily_limit,
                stop=stop,
            )
        )
        # Voice call-outs (issue 19): the ladder writes them, this places them once.
        work.append(
            run_calls(
                svc.sessions,
                voice_provider or make_voice_provider(s),
                svc.clock,
                responses=LadderResponses(),
                callback_base=s.callback_base,
                poll_seconds=s.outbox_poll_ms / 1000,
                daily_limit=s.voice_daily_limit,
                stop=stop,
            )
        )
    if "web" in roles:
        work.append(serve_web(svc, stop, web_port))
    # /metrics for the roles without HTTP (ANXIN_METRICS_PORT) and the database figures.
    work.append(run_role_metrics(svc.sessions, svc.clock, roles, stop))
    return work


async def run_until_stopped(
    work: list[Awaitable[Any]],
    stop: asyncio.Event,
    on_ready: Callable[[], Awaitable[None]] | None = None,
    grace_seconds: float = 5.0,
) -> None:
    """Run until `stop` is set or a task fails; then let tasks wind down, then cancel them."""
    tasks = [asyncio.ensure_future(w) for w in work]
    if on_ready is not None:
        tasks.append(asyncio.ensure_future(on_ready()))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        running = set(tasks)
        while running and not stopped.done():
            done, _ = await asyncio.wait(running | {stopped}, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stopped}:
                running.discard(task)
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
    finally:
        stop.set()
        pending = [t for t in tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=grace_seconds)
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, stopped, return_exceptions=True)
