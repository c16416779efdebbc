"""Bearer tokens: only the server's own, unexpired, untampered ones are accepted, and only in
the Authorization header (the live stream alone takes one in its URL)."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import httpx

from anxin import auth
from anxin.clock import FakeClock
from anxin.settings import Settings
from tests.builders import login


async def test_forged_expired_and_misplaced_tokens_are_refused(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    t01 = await login(client, "t01", "anxin-t01")
    token = t01["Authorization"].removeprefix("Bearer ")
    assert (await client.get("/api/elders", headers=t01)).status_code == 200

    key = Settings().secret_key.get_secret_value()
    body, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    # Someone else's id in the same signature; a token signed with another key.
    claims["sub"] = 1
    raised = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    forged = (
        f"{raised}.{signature}",
        auth.make_token("another-key-entirely", 1, clock.now(), 60),
        "",
        "garbage",
        f"{body}.",
    )
    for bad in forged:
        res = await client.get("/api/elders", headers={"Authorization": f"Bearer {bad}"})
        assert res.status_code == 401, bad
    assert auth.read_token(key, token, clock.now()) is not None

    # In a URL it is refused, except by the live stream (EventSource sends no headers).
    assert (await client.get(f"/api/elders?token={token}")).status_code == 401
    assert (await client.get(f"/api/alerts/1?token={token}")).status_code == 401

    clock.advance(timedelta(minutes=Settings().token_minutes, seconds=1))
    assert (await client.get("/api/elders", headers=t01)).status_code == 401
