"""Slowing password guessing: an operator account locks for a while after failed logins.

Five failures in a row lock the account for a minute; each further failure doubles the lock,
up to fifteen minutes. A success resets the count. The count is kept on the operator's row
(operator_users.failed_logins / locked_until), so every web replica sees the same lock.
"""

from __future__ import annotations

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


def password_matches(user: OperatorUser | None, password: str) -> bool:
    if user is None:
        auth.verify_password(_DUMMY_HASH, password)
        return False
    return auth.verify_password(user.password_hash, password)


async def record_failure(sessions: SessionMaker, user: OperatorUser | None, now: datetime) -> None:
    """Count a failure in its own transaction: the request's own one rolls back with the 401."""
    async with transaction(sessions) as session:
        row = None
        if user is not None:
            row = (
                (
                    await session.execute(
                        select(OperatorUser)
                        .where(col(OperatorUser.id) == user.id)
                        .with_for_update()
                    )
                )
                .scalars()
                .first()
            )
        if row is not None:
            row.failed_logins += 1
            lock = lock_for(row.failed_logins)
            if lock is not None:
                row.locked_until = now + lock
        session.add(
            AuditLog(
                at=now,
                operator_id=row.id if row is not None else None,
                action="login_failed",
                target_type="operator",
                target_id=str(row.id) if row is not None else "",
                detail={"failures": row.failed_logins if row is not None else None},
            )
        )


def record_success(user: OperatorUser) -> None:
    user.failed_logins = 0
    user.locked_until = None
