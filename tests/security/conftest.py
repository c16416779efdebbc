"""The real app (create_app) against the real Postgres, with the seeded demo county's logins."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from anxin.app import create_app
from anxin.clock import FakeClock
from anxin.settings import Settings
from tests.support.harness import Seeded


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(region: Seeded, clock: FakeClock) -> FastAPI:
    return create_app(Settings(), region.sessions, clock)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as http:
        yield http
