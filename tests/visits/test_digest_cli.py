"""`anxin visits send-digests [--dry-run]`: the week's digests written by hand, as the alerts
role would — a dry run prints them and writes nothing, a second run writes nothing new."""

from __future__ import annotations

import asyncio
import os
import sys

from sqlalchemy import func, select
from sqlmodel import col

from dispatcher.models import SmsMessage
from tests.support.harness import Seeded
from visits import service


async def run(database_url: str, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "anxin.cli",
        "visits",
        "send-digests",
        *args,
        env={**os.environ, "ANXIN_DATABASE_URL": database_url, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def digests(region: Seeded) -> int:
    async with region.sessions() as session:
        found = await session.execute(
            select(func.count()).where(col(SmsMessage.purpose) == service.DIGEST_PURPOSE)
        )
        return int(found.scalar_one())


async def test_a_dry_run_prints_the_digests_then_they_are_written_once(
    region: Seeded, database_url: str
) -> None:
    dry = await run(database_url, "--dry-run")
    texts = [line for line in dry.splitlines() if "本周待探访：" in line]
    assert texts and all(line.rstrip().endswith("位") for line in texts)
    assert f"{len(texts)} would write, 0 already written" in dry
    assert await digests(region) == 0

    wet = await run(database_url)
    assert f"{len(texts)} written, 0 already written" in wet
    assert await digests(region) == len(texts)
    again = await run(database_url)
    assert f"0 written, {len(texts)} already written" in again
    assert await digests(region) == len(texts)
