"""The web role: operators' API, the registry, the console, Twilio webhooks, health."""

from __future__ import annotations

from fastapi import FastAPI

from alert_service.console_views import mount_console
from alert_service.coverage_views import router as coverage_router
from alert_service.ladder_views import router as ladder_router
from alert_service.responses import LadderResponses
from alert_service.views import router as alert_router
from anxin.clock import Clock, SystemClock
from anxin.db import SessionMaker
from anxin.metrics import metrics_router
from anxin.settings import Settings
from anxin.web import AppContext
from dispatcher.aliyun_views import router as aliyun_router
from dispatcher.family_views import router as family_router
from dispatcher.views import router as twilio_router
from gateway.views import router as gateway_router
from registry.views import router as registry_router
from visits.replies import VisitReplies
from visits.views import router as visits_router


def create_app(settings: Settings, sessions: SessionMaker, clock: Clock | None = None) -> FastAPI:
    app = FastAPI(
        title="Anxin 安心",
        description="Emergency response for elders at home: alerts, the 15-minute rule, dispatch.",
        version="0.1.0",
    )
    app.state.ctx = AppContext(settings=settings, sessions=sessions, clock=clock or SystemClock())
    # The dispatcher's webhooks report replies and failed SMS to the ladder through this.
    app.state.alert_responses = LadderResponses(settings.timezone)
    # ... and an aide's visit report (`访 E0012`) to the care visits (dispatcher.visit_reports).
    app.state.visit_reports = VisitReplies(settings.timezone)
    app.include_router(alert_router)
    app.include_router(ladder_router)
    app.include_router(coverage_router)
    app.include_router(twilio_router)
    app.include_router(aliyun_router)
    app.include_router(family_router)
    app.include_router(registry_router)
    app.include_router(visits_router)
    app.include_router(gateway_router)
    app.include_router(metrics_router)
    mount_console(app)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
