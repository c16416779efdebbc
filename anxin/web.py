"""Shared HTTP dependencies: the database session, the clock, the logged-in operator, audit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession

from anxin import auth
from anxin.clock import Clock
from anxin.db import SessionMaker
from anxin.models import AuditLog, OperatorUser
from anxin.settings import Settings

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)


@dataclass
class AppContext:
    settings: Settings
    sessions: SessionMaker
    clock: Clock


def context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


Ctx = Annotated[AppContext, Depends(context)]


async def db_session(ctx: Ctx) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the route returns without error."""
    async with ctx.sessions() as session, session.begin():
        yield session


# scope="function": the transaction commits before the response is sent, so a 200 means stored.
Session = Annotated[AsyncSession, Depends(db_session, scope="function")]


@dataclass
class Operator:
    user: OperatorUser
    region_ids: set[int]

    @property
    def id(self) -> int:
        assert self.user.id is not None
        return self.user.id

    @property
    def actor(self) -> str:
        return f"operator:{self.user.username}"

    @property
    def can_act(self) -> bool:
        return self.user.role != "viewer"


async def current_operator(
    request: Request, ctx: Ctx, session: Session, token: Annotated[str | None, Depends(oauth2)]
) -> Operator:
    # EventSource cannot set headers: the live stream passes the token as a query parameter.
    token = token or request.query_params.get("token")
    operator_id = auth.read_token(
        ctx.settings.secret_key.get_secret_value(), token or "", ctx.clock.now()
    )
    user = await session.get(OperatorUser, operator_id) if operator_id is not None else None
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "请先登录 / not logged in", {"WWW-Authenticate": "Bearer"}
        )
    return Operator(user, await auth.regions_under(session, user.region_id))


CurrentOperator = Annotated[Operator, Depends(current_operator)]


def audit(
    session: AsyncSession,
    operator: Operator | None,
    now: datetime,
    action: str,
    target_type: str = "",
    target_id: object = "",
    **detail: Any,
) -> None:
    session.add(
        AuditLog(
            at=now,
            operator_id=operator.id if operator else None,
            action=action,
            target_type=target_type,
            target_id=str(target_id),
            detail=detail,
        )
    )
