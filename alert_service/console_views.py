"""The operator console: its static files, the page shell, and the few API calls only the
console needs (its settings, reassigning an alert). The figures page reads GET /api/figures.

The console is plain HTML, CSS and JavaScript modules served as files: nothing to build.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, HTTPException, Request, status
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from alert_service import console_service
from alert_service import ladder as alert_ladder
from alert_service.views import responder_for
from anxin.models import Region
from anxin.web import CurrentOperator, RowId, Session, audit, context

router = APIRouter()
CONSOLE_DIR = Path(__file__).with_name("console")
SHELL = Path(__file__).with_name("index.html")


def mount_console(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(
        "/console/static", StaticFiles(directory=CONSOLE_DIR / "static"), name="console-static"
    )


@router.get("/console", response_class=HTMLResponse, include_in_schema=False)
async def console_page() -> HTMLResponse:
    # The same shell as `/`: the console routes inside the page (#/queue, #/alert/7, …).
    return HTMLResponse(SHELL.read_text(encoding="utf-8"))


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> FileResponse:
    # The page names its icon; this is for what asks by the old name anyway (/docs, bookmarks).
    return FileResponse(CONSOLE_DIR / "static" / "favicon.svg", media_type="image/svg+xml")


class ConsoleConfig(BaseModel):
    timezone: str
    language: str
    username: str
    display_name: str
    role: str
    region: str
    can_act: bool
    can_edit_regions: bool
    # A map tile URL template ({z}/{x}/{y}); empty: the map draws offline from coordinates.
    tile_url: str = ""


@router.get("/api/console/config", response_model=ConsoleConfig, tags=["console"])
async def console_config(
    session: Session, operator: CurrentOperator, request: Request
) -> ConsoleConfig:
    settings = context(request).settings
    region = await session.get(Region, operator.user.region_id)
    return ConsoleConfig(
        timezone=settings.timezone,
        language=operator.user.lang or settings.language,
        username=operator.user.username,
        display_name=operator.user.display_name,
        role=operator.user.role,
        region=region.name if region else "",
        can_act=operator.can_act,
        can_edit_regions=operator.user.role in ("admin", "county_operator"),
    )


class ReassignIn(BaseModel):
    responder_id: RowId


class ReassignOut(BaseModel):
    id: int
    status: str


@router.post("/api/alerts/{alert_id}/reassign", response_model=ReassignOut, tags=["alerts"])
async def reassign_alert(
    alert_id: RowId, body: ReassignIn, session: Session, operator: CurrentOperator, request: Request
) -> ReassignOut:
    """Ask a responder the operator chose, now."""
    if not operator.can_act:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "只读账号 / viewers cannot act")
    now = context(request).clock.now()
    alert = await alert_ladder.lock_alert(session, alert_id)
    if alert is None or alert.village_id not in operator.region_ids:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "没有这个警报 / no such alert")
    if await responder_for(session, operator, alert, body.responder_id) is None:
        # Someone else's aide looks exactly like no aide (as the service says for an unknown one).
        raise HTTPException(status.HTTP_409_CONFLICT, "没有这个助老员 / no such responder")
    try:
        await console_service.reassign(session, alert, body.responder_id, now, operator.actor)
    except console_service.ReassignRefused as refused:
        raise HTTPException(status.HTTP_409_CONFLICT, str(refused)) from refused
    audit(session, operator, now, "reassign", "alert", alert_id, responder_id=body.responder_id)
    return ReassignOut(id=alert_id, status=alert.status)
