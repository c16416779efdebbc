"""Gateway fixtures: a private Mosquitto per test (so restarts and ACLs touch nobody else).
The parts themselves (Mosquitto, the in-process gateway, the test device) are in
tests/support/broker.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.broker import Mosquitto


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "mosquitto")
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()
