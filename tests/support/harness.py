"""Where the tests find their services (the machine's under CI, embedded elsewhere), the
platform run in-process, and `eventually`, the one way a test waits for asynchronous work."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from anxin.broker import mosquitto_binary as find_mosquitto
from anxin.db import SessionMaker
from device_sim.harness import InProcessPlatform, run_in_process, serve_app
from device_sim.region.plan import RegionPlan

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CI_DATABASE = "postgresql://postgres@127.0.0.1:5432/test"
CI_MQTT = "mqtt://127.0.0.1:1883"
T = TypeVar("T")


def admin_url() -> str:
    """The Postgres server the tests create their databases on."""
    if url := os.environ.get("ANXIN_TEST_DATABASE_URL"):
        return url
    if IN_CI:
        return CI_DATABASE
    from anxin.db import start_embedded_postgres

    data = Path(__file__).resolve().parent.parent.parent / "var" / "test"
    url = start_embedded_postgres(data)
    return url.replace("postgresql+asyncpg://", "postgresql://")


def mosquitto_binary() -> str:
    found = find_mosquitto()
    if found is None:
        if IN_CI:
            raise RuntimeError("mosquitto is not installed; CI needs it for broker tests")
        pytest.skip("mosquitto is not installed here (CI has it)")
    return found


@dataclass
class Seeded:
    plan: RegionPlan
    sessions: SessionMaker


# The simulator's harness runs the platform in-process; the tests use the same one.
serve = serve_app
ServeApp = Callable[[Any], AbstractAsyncContextManager[str]]
RunningPlatform = InProcessPlatform
run_platform = run_in_process


async def eventually(
    check: Callable[[], Awaitable[T | None]], *, timeout: float = 20.0, what: str = "condition"
) -> T:
    """Wait for asynchronous work to show a result. The timeout is a safety net against a hang,
    generous on purpose: speed is measured by the benchmarks, never asserted here."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result is not None and result is not False:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
