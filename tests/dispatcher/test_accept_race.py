"""Two responders taking one alert in the same moment (issue 19 made it common: an SMS `1` and a
key `1` on a call arrive within the same second): the first wins, the second hears who has it.

A reply reads the responder's open dispatches (and so the alert) before it locks the alert; the
lock must not hand back that earlier, untaken copy (the night demo had 7 alerts taken twice)."""

from __future__ import annotations

from datetime import timedelta

from alert_service.models import Alert
from alert_service.responses import LadderResponses
from anxin.db import transaction
from dispatcher.replies import Reply, ReplyKind
from tests.builders import tick_at
from tests.support.dispatch import ELDER, DispatchBench


async def test_the_second_of_two_simultaneous_accepts_does_not_take_it_too(
    bench: DispatchBench,
) -> None:
    alert = await bench.raise_alert(ELDER)
    await tick_at(bench.sessions, bench.clock, alert.raised_at + timedelta(seconds=180))
    first, second = (await bench.asked(alert.id))[:2]
    now = bench.clock.now()
    take = Reply(ReplyKind.accept, alert.code)
    async with transaction(bench.sessions) as late:
        # This reply's session has read the alert, untaken (as the reply's own search for open
        # dispatches does, before it locks the alert) …
        seen = await late.get(Alert, alert.id)
        assert seen is not None and seen.accepted_by is None
        # … when the other responder's reply takes it and commits.
        async with transaction(bench.sessions) as quick:
            won = await LadderResponses().reply(quick, responder=second, reply=take, now=now)
        lost = await LadderResponses().reply(late, responder=first, reply=take, now=now)
        assert seen.accepted_by == second.id  # the lock refreshed the copy it had
    assert won == f"accepted:{alert.code}"
    assert lost == f"already_taken:{alert.code}"
    assert (await bench.alert(alert.id)).accepted_by == second.id
    takers = {e.actor for e in await bench.timeline(alert.id) if e.action == "accepted"}
    assert takers == {f"responder:{second.id}"}
