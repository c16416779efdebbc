"""Operator passwords (argon2) and signed bearer tokens; region scope for every query."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_hasher = PasswordHasher()


def hash_password(plain: str) -> str:
    return _hasher.hash(plain)


def verify_password(hashed: str, plain: str) -> bool:
    try:
        return _hasher.verify(hashed, plain)
    except (VerificationError, InvalidHashError):
        return False


MOSQUITTO_HASH_PREFIX = "$7$"
# mosquitto_passwd 2.0's default. Devices number in the millions and the hash only guards the
# broker's own file, so a low count keeps export and seeding fast at city scale.
MOSQUITTO_ITERATIONS = 101
# Mosquitto 2.0 drops a `$7$` entry whose salt is not exactly 12 bytes ("Unable to decode
# password salt"): that device can never log in, so no other length is ever written.
MOSQUITTO_SALT_BYTES = 12
_KEY_BYTES = 64


def mosquitto_hash(
    password: str, *, salt: bytes | None = None, iterations: int = MOSQUITTO_ITERATIONS
) -> str:
    """The `$7$…` string mosquitto_passwd would write (PBKDF2-HMAC-SHA512, base64 salt/key).
    The one hasher for every broker login: the console, the registry import, seeding, export."""
    salt = os.urandom(MOSQUITTO_SALT_BYTES) if salt is None else salt
    if len(salt) != MOSQUITTO_SALT_BYTES:
        raise ValueError(f"a Mosquitto salt is {MOSQUITTO_SALT_BYTES} bytes, not {len(salt)}")
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, _KEY_BYTES)
    return (
        f"{MOSQUITTO_HASH_PREFIX}{iterations}$"
        f"{base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"
    )


def hash_device_password(plain: str) -> str:
    """What `devices.password_hash` holds: the broker-ready hash, so the Mosquitto password file
    (`anxin devices export-mosquitto`) is generated from the registry without plain passwords."""
    return mosquitto_hash(plain)


def is_mosquitto_hash(value: str) -> bool:
    """A `$7$` entry Mosquitto will accept: a hash with any other salt length is dropped by the
    broker, so the export counts it as skipped (no login) rather than writing it."""
    parts = value.split("$")
    # "", "7", iterations, salt, key
    if not (
        len(parts) == 5
        and value.startswith(MOSQUITTO_HASH_PREFIX)
        and parts[2].isdigit()
        and bool(parts[4])
    ):
        return False
    try:
        salt = base64.b64decode(parts[3], validate=True)
    except ValueError:
        return False
    return len(salt) == MOSQUITTO_SALT_BYTES


def verify_mosquitto_hash(stored: str, plain: str) -> bool:
    if not is_mosquitto_hash(stored):
        return False
    _, _, iterations, salt_b64, key_b64 = stored.split("$")
    try:
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(key_b64, validate=True)
    except ValueError:
        return False
    key = hashlib.pbkdf2_hmac("sha512", plain.encode(), salt, int(iterations), len(expected))
    return hmac.compare_digest(key, expected)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(secret: str, operator_id: int, now: datetime, minutes: int) -> str:
    body = _b64(
        json.dumps(
            {"sub": operator_id, "exp": int((now + timedelta(minutes=minutes)).timestamp())}
        ).encode()
    )
    sig = _b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())
    return f"{body}.{sig}"


def read_token(secret: str, token: str, now: datetime) -> int | None:
    """The operator id in a valid, unexpired token; None otherwise."""
    try:
        body, sig = token.split(".", 1)
        expected = _b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(sig, expected):
            return None
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        if int(claims["exp"]) < now.timestamp():
            return None
        return int(claims["sub"])
    except (ValueError, KeyError, TypeError):
        return None


async def regions_under(session: AsyncSession, region_id: int) -> set[int]:
    """The region and everything below it: an operator sees only these."""
    rows = await session.execute(
        text(
            """
            WITH RECURSIVE tree(id) AS (
                SELECT id FROM regions WHERE id = :root
                UNION ALL SELECT r.id FROM regions r JOIN tree t ON r.parent_id = t.id
            ) SELECT id FROM tree
            """
        ),
        {"root": region_id},
    )
    return {int(r) for r in rows.scalars()}
