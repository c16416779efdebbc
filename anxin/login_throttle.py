"""Slowing password guessing: an operator account locks for a while after failed logins.

Five failures in a row lock the account for a minute; each further failure doubles the lock,
up to fifteen minutes. A success resets the count. The count is kept on the operator's row
(operator_users.failed_logins / locked_until), so every web replica sees the same lock.

An attempt is counted (under the row's lock) BEFORE its password is checked, and a success
then lifts the count again: guesses fired in parallel cannot all slip in before the first
failure is recorded, so a burst gets the same five checks as a sequence. A login holds at most
one database connection at a time and none while the password hash is checked (in a worker
thread): a burst of guesses can neither exhaust the connection pool nor stall the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlmodel import col

from anxin import auth
from anxin.db import SessionMaker, transaction
from anxin.models import AuditLog, OperatorUser

FREE_ATTEMPTS = 5
FIRST_LOCK = timedelta(minutes=1)
LONGEST_LOCK = timedelta(minutes=15)
# Verified when the username is unknown, so an unknown name costs as long as a wrong password
# (the response time does not tell a guesser which usernames exist).
_DUMMY_HASH = auth.hash_password("anxin-no-such-operator")


def locked(user: OperatorUser, now: datetime) -> bool:
    return user.locked_until is not None and user.locked_until > now


def lock_for(failures: int) -> timedelta | None:
    """How long the account locks after `failures` failures in a row (None: not yet)."""
    if failures < FREE_ATTEMPTS:
        return None
    lock: timedelta = min(LONGEST_LOCK, FIRST_LOCK * 2 ** min(failures - FREE_ATTEMPTS, 10))
    return lock


@dataclass
class Attempt:
    user: OperatorUser | None  # None: no such username (checked against a dummy hash)
    admitted: bool  # False: the account is locked, the password is not even checked


async def admit(sessions: SessionMaker, username: str, now: datetime) -> Attempt:
    """Count this attempt as a failure before its password is checked (a success lifts it)."""
    async with transaction(sessions) as session:
        user = (
            (
                await session.execute(
                    select(OperatorUser)
                    .where(col(OperatorUser.username) == username)
                    .with_for_update()
                )
            )
            .scalars()
            .first()
        )
        if user is None:
            return Attempt(None, True)
        if locked(user, now):
            return Attempt(user, False)
        user.failed_logins += 1
        lock = lock_for(user.failed_logins)
        if lock is not None:
            user.locked_until = now + lock
        return Attempt(user, True)


def password_matches(user: OperatorUser | None, password: str) -> bool:
    """CPU-bound (argon2, tens of milliseconds): call it off the event loop."""
    if user is None:
        auth.verify_password(_DUMMY_HASH, password)
        return False
    return auth.verify_password(user.password_hash, password)


async def record_failure(sessions: SessionMaker, user: OperatorUser | None, now: datetime) -> None:
    """Audit a failed login (already counted by `admit`), in its own transaction."""
    async with transaction(sessions) as session:
        session.add(
            AuditLog(
                at=now,
                operator_id=user.id if user is not None else None,
                action="login_failed",
                target_type="operator",
                target_id=str(user.id) if user is not None else "",
                detail={"failures": user.failed_logins if user is not None else None},
            )
        )


async def record_success(sessions: SessionMaker, user: OperatorUser, now: datetime) -> None:
    """Lift the count (and the lock this attempt may have set) and audit the login."""
    async with transaction(sessions) as session:
        row = await session.get(OperatorUser, user.id, with_for_update=True)
        if row is not None:
            row.failed_logins = 0
            row.locked_until = None
        session.add(
            AuditLog(at=now, operator_id=user.id, action="login", target_type="", target_id="")
        )
