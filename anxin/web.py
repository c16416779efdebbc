"""Shared HTTP dependencies: the database session, the clock, the logged-in operator, audit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import annotated_types
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from pydantic import AfterValidator
from sqlalchemy.ext.asyncio import AsyncSession

from anxin import auth
from anxin.clock import Clock
from anxin.db import SessionMaker
from anxin.models import AuditLog, OperatorUser
from anxin.settings import Settings

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)
STREAM_PATH = "/api/alerts-stream"

INT32_MAX = 2**31 - 1
# A row id (path, query or body). Ids are Postgres integers: a larger number names no row, and
# passing it to the database would be a 500 rather than the 404/422 the caller should see.
RowId = Annotated[int, annotated_types.Ge(1), annotated_types.Le(INT32_MAX)]
# Any other integer stored in or compared with an integer column.
Int32 = Annotated[int, annotated_types.Ge(-INT32_MAX), annotated_types.Le(INT32_MAX)]


def storable_text(value: str) -> str:
    """Text Postgres can store: no NUL character, no lone surrogate (not encodable as UTF-8).
    Everything else (quotes, <script>, SQL) is stored and returned verbatim."""
    if "\x00" in value:
        raise ValueError("不能含有空字符 / must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("不是有效的文字 / not valid UTF-8 text") from None
    return value


Text = Annotated[str, AfterValidator(storable_text)]


def invalid(where: str, field: str, message: str) -> HTTPException:
    """A 422 in FastAPI's own (documented) shape, so the console shows it next to the field."""
    return HTTPException(
        422,
        [{"loc": [where, field], "msg": message, "type": "value_error"}],
    )


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
    # EventSource cannot set headers: the live stream (and only it) takes the token as a query
    # parameter. Elsewhere a token in a URL is refused: URLs end up in histories and proxy logs.
    if token is None and request.url.path == STREAM_PATH:
        token = request.query_params.get("token")
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


def filters_given(**given: Any) -> dict[str, Any]:
    """The filters a list read was asked with (those set), for its audit row."""
    return {k: v for k, v in given.items() if v not in (None, "", False, 0)}
