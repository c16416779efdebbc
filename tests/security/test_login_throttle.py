"""Login brute force is slowed: a guesser gets a handful of password checks per account per hour,
also when firing guesses in parallel, and every failed guess is counted and audited.
(The lock's basic shape — five failures, a minute, reset on success — is in
tests/console/test_registry_api.py.)"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlmodel import col

from anxin.clock import FakeClock
from anxin.models import AuditLog, OperatorUser
from tests.support.harness import Seeded, ServeApp

WRONG = {"username": "t03", "password": "not-the-password"}
RIGHT = {"username": "t03", "password": "anxin-t03"}


async def failures(region: Seeded) -> tuple[int, int]:
    async with region.sessions() as session:
        user = (
            await session.execute(select(OperatorUser).where(col(OperatorUser.username) == "t03"))
        ).scalar_one()
        audited = await session.scalar(
            select(func.count()).where(
                col(AuditLog.action) == "login_failed", col(AuditLog.operator_id) == user.id
            )
        )
        return user.failed_logins, int(audited or 0)


async def test_a_guess_every_ten_seconds_for_an_hour_gets_few_password_checks(
    client: httpx.AsyncClient, region: Seeded, clock: FakeClock
) -> None:
    checked = refused = 0
    for _ in range(360):
        res = await client.post("/api/auth/token", data=WRONG)
        assert res.status_code in (401, 429), res.text
        checked += res.status_code == 401
        refused += res.status_code == 429
        clock.advance(timedelta(seconds=10))
    print(f"\nlogin guesses in one hour: {checked} checked, {refused} refused with 429")
    # Five free, then locks of 1, 2, 4, 8 and 15, 15, … minutes: about a dozen checks an hour.
    assert checked <= 13 and refused >= 340
    assert await failures(region) == (checked, checked)
    # While locked, even the right password is refused; after the lock it works again.
    assert (await client.post("/api/auth/token", data=RIGHT)).status_code == 429
    clock.advance(timedelta(minutes=15, seconds=1))
    assert (await client.post("/api/auth/token", data=RIGHT)).status_code == 200


async def test_parallel_guesses_are_all_counted_and_lock_the_account(
    app: FastAPI, region: Seeded, serve_app: ServeApp
) -> None:
    async with serve_app(app) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        answers = await asyncio.gather(
            *(http.post("/api/auth/token", data=WRONG, timeout=60) for _ in range(30))
        )
        codes = [a.status_code for a in answers]
        assert set(codes) <= {401, 429}
        # Each attempt is counted before its password is checked: a burst gets the same five
        # checks as a sequence, and each is an audited failure.
        assert codes.count(401) == 5 and codes.count(429) == 25
        assert await failures(region) == (5, 5)
        assert (await http.post("/api/auth/token", data=RIGHT)).status_code == 429
    print(f"\n30 parallel guesses: {codes.count(401)} checked, {codes.count(429)} refused")
