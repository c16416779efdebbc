"""Two gateway replicas on a shared subscription get an elder's repeated presses in different
batches, in any order. Found by the fault suite: their batch transactions lock the elders'
alerts in the order the messages came, so two batches holding the same elders in opposite
orders deadlock; Postgres aborts one (after deadlock_timeout) and the gateway redoes the
whole batch — nothing is lost, but every event of that batch waits for the redo (seen as
`gateway_db_retry … deadlock detected` in the suite's gateway logs, with 500-event batches
that took ~20 s each on the loaded CI machine).

The gateway now applies a batch's events sorted by elder (a device's events keep their order),
so both batches commit."""

from __future__ import annotations

import asyncio

from anxin.clock import SystemClock
from anxin.db import transaction
from anxin.schemas import Ack, event_json, topic
from gateway import service
from gateway.service import Incoming
from tests.support.harness import Seeded


def _sos(device_id: str, event_id: str) -> Incoming:
    return Incoming(topic(device_id, "event"), device_id, event_json(event_id, "sos"))


async def test_two_batches_with_the_same_elders_in_opposite_orders_both_commit(
    region: Seeded,
) -> None:
    buttons: dict[str, str] = {}
    for d in region.plan.devices:
        if d.kind == "sos_button" and d.elder_code not in buttons:
            buttons[d.elder_code] = d.device_id
    x, y = list(buttons.values())[:2]
    now = SystemClock().now()

    async def store(batch: list[Incoming]) -> list[Ack]:
        async with transaction(region.sessions) as session:
            return await service.store_events(session, batch, now, "Asia/Shanghai")

    results = await asyncio.gather(
        store([_sos(x, "a-x"), _sos(y, "a-y")]),
        store([_sos(y, "b-y"), _sos(x, "b-x")]),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == [], f"a batch was aborted: {failures!r}"
