"""Tiny builders for test data: a test says the values it relies on, not the product's defaults.

Not a test module and holds no fixture (fixtures live in the conftest.py files): plain
functions that any test, conftest or helper may import.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alert_service import intake, rules
from alert_service.models import Alert
from anxin.models import Elder, Region

# Every rung spelt out: the ladder the seeded world runs and most ladder tests assume. Changing
# the product's default (`rules.Ladder`) breaks only the test about the default, not these.
LADDER_VALUES: dict[str, Any] = {
    "respond_minutes": 15,
    "accept_timeout_s": 180,
    "max_aides": 3,
    "at_risk_s": 480,
    "centre_answer_s": 180,
    "reminder_grace_s": 120,
    "notify_guardians": True,
}


def ladder(**changes: Any) -> rules.Ladder:
    """A ladder with every value given (LADDER_VALUES, then `changes`)."""
    unknown = set(changes) - set(LADDER_VALUES)
    assert not unknown, f"not a ladder setting: {sorted(unknown)}"
    return rules.Ladder(**(LADDER_VALUES | changes))


def region_ladder(**changes: Any) -> dict[str, Any]:
    """`regions.ladder` settings for `ladder(**changes)`; the window stays the region's own
    `response_minutes`, as in production."""
    settings = ladder(**changes).snapshot()
    del settings["respond_minutes"]
    return settings


async def sos(session: AsyncSession, elder_code: str, now: datetime) -> Alert:
    """An SOS from this elder, raised (or joined) as the gateway does, in `session`."""
    elder = (await session.execute(select(Elder).where(col(Elder.code) == elder_code))).scalar_one()
    return await intake.raise_or_join(
        session, elder, rules.RaiseAlert("sos", rules.P1), None, now, "test"
    )


async def operator_token(http: httpx.AsyncClient, username: str) -> dict[str, str]:
    """The bearer header of a seeded operator (password `anxin-<username>`)."""
    res = await http.post(
        "/api/auth/token", data={"username": username, "password": f"anxin-{username}"}
    )
    assert res.status_code == 200, res.text
    return {"Authorization": f"Bearer {res.json()['access_token']}"}


async def region_id(session: AsyncSession, code: str) -> int:
    """The id of the region with this code."""
    found = (
        await session.execute(select(col(Region.id)).where(col(Region.code) == code))
    ).scalar_one()
    assert found is not None
    return found
