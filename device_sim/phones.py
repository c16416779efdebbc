"""Simulated aides' phones: they read SMS from the project's provider endpoint (the
Twilio-compatible sandbox or the Aliyun-compatible one) and reply, and answer call-out calls
(issue 19): pick up after a while and press a key, let it ring, or reject it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from anxin.logging import get_logger, mask_phone
from dispatcher.twilio_sandbox import Callee

log = get_logger("device_sim.phones")
ALERT_CODE = re.compile(r"\bA\d+\b")


class Text(Protocol):
    """An SMS as a handset sees it (`SandboxMessage`, `AliyunSms`)."""

    @property
    def to(self) -> str: ...

    @property
    def body(self) -> str: ...


class PhoneNetwork(Protocol):
    """What the phones need of a provider endpoint: every SMS it takes, and a way to text back."""

    def subscribe(self, callback: Callable[[Text], None]) -> Callable[[], None]: ...

    async def reply(self, from_: str, body: str) -> int: ...


class Behaviour(StrEnum):
    accept = "accept"
    decline = "decline"
    silent = "silent"
    accept_then_late = "accept_then_late"


@dataclass
class Timing:
    """Seconds (real or scaled) between the SMS and each reply."""

    answer_after: float = 5.0
    travel: float = 15.0
    handle: float = 10.0
    late_extra: float = 60.0


@dataclass
class SimPhone:
    phone: str
    behaviour: Behaviour = Behaviour.accept
    timing: Timing = field(default_factory=Timing)
    handled: list[str] = field(default_factory=list)
    # How this phone answers a call; None: as its SMS behaviour (silent lets it ring, accept
    # presses 1 and decline 0 after `answer_after`).
    callee: Callee | None = None

    def answers_calls(self) -> Callee:
        if self.callee is not None:
            return self.callee
        if self.behaviour == Behaviour.silent:
            return Callee("ring")
        key = "0" if self.behaviour == Behaviour.decline else "1"
        return Callee("pick_up", after=self.timing.answer_after, key=key)

    def wants(self, message: Text) -> str | None:
        """The alert code of a call-out addressed to this phone (not a notice or a help text)."""
        if message.to != self.phone or (
            "回1" not in message.body and "Reply 1" not in message.body
        ):
            return None
        found = ALERT_CODE.search(message.body)
        return found.group(0) if found else None


class PhoneBank:
    """All simulated aides' phones on one sandbox; each call-out runs its own reply script."""

    def __init__(self, sandbox: PhoneNetwork, phones: list[SimPhone]) -> None:
        self.sandbox = sandbox
        self.phones = {p.phone: p for p in phones}
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsubscribe = sandbox.subscribe(self._on_message)
        # Call-out calls (issue 19), on an endpoint that places them.
        self._set_callee: Callable[[str, Callee | None], None] | None = getattr(
            sandbox, "set_callee", None
        )
        for phone in phones:
            if self._set_callee is not None:
                self._set_callee(phone.phone, phone.answers_calls())

    def _on_message(self, message: Text) -> None:
        phone = self.phones.get(message.to)
        code = phone.wants(message) if phone else None
        if phone is None or code is None or code in phone.handled:
            return
        phone.handled.append(code)
        task = asyncio.create_task(self._script(phone, code))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reply(self, phone: SimPhone, body: str) -> None:
        status = await self.sandbox.reply(phone.phone, body)
        log.info("sim_phone_reply", phone=mask_phone(phone.phone), body=body, http=status)

    async def _script(self, phone: SimPhone, code: str) -> None:
        t = phone.timing
        if phone.behaviour == Behaviour.silent:
            return
        await asyncio.sleep(t.answer_after)
        if phone.behaviour == Behaviour.decline:
            await self._reply(phone, f"0 {code}")
            return
        await self._reply(phone, f"1 {code}")
        travel = t.travel + (t.late_extra if phone.behaviour == Behaviour.accept_then_late else 0)
        await asyncio.sleep(travel)
        await self._reply(phone, f"2 {code}")
        await asyncio.sleep(t.handle)
        await self._reply(phone, f"3 {code}")

    async def close(self) -> None:
        self._unsubscribe()
        for phone in self.phones:
            if self._set_callee is not None:
                self._set_callee(phone, None)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
