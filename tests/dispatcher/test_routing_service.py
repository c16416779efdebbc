"""Who is asked first, through the database: routed travel times and the township centre."""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import col

from alert_service import ladder as alert_ladder
from alert_service import regions
from anxin.db import transaction
from anxin.models import Responder
from dispatcher import ranking
from dispatcher.travel_table import parse_travel_table
from tests.support.dispatch import ELDER, DispatchBench, operator_resolves


async def import_csv(bench: DispatchBench, text: str) -> tuple[int, list[str]]:
    rows, errors = parse_travel_table(text)
    async with transaction(bench.sessions) as session:
        stored, unknown = await ranking.import_travel_times(
            session, rows, source="test-router", now=bench.clock.now()
        )
    return stored, [e.reason for e in errors + unknown]


async def test_a_routed_travel_time_table_decides_who_is_asked_first(
    bench: DispatchBench,
) -> None:
    # Without a table: the nearest aide by the straight line (times circuity) is asked.
    before = await bench.raise_alert(ELDER)
    near, far = before.ranking[0], before.ranking[1]
    assert near["kind"] == far["kind"] == "aide" and near["source"] == "estimate"
    await operator_resolves(bench, before.id)
    near_aide = await bench.responder(near["responder_id"])
    far_aide = await bench.responder(far["responder_id"])

    # The router knows the nearer aide is across the river: 40 minutes round by the bridge,
    # while the farther one on the same bank is 6 minutes away.
    stored, errors = await import_csv(
        bench,
        "elder_code,responder_phone,minutes\n"
        f"{ELDER},{near_aide.phone},40\n"
        f"{ELDER},{far_aide.phone},6\n"
        f"E9999,{far_aide.phone},3\n",
    )
    assert stored == 2 and errors == ["unknown elder E9999"]

    after = await bench.raise_alert(ELDER)
    assert (await bench.asked(after.id))[0].id == far_aide.id
    lines = {line["responder_id"]: line for line in after.ranking}
    assert lines[far_aide.id or 0]["source"] == "table"
    assert lines[far_aide.id or 0]["eta_minutes"] == 6 + far_aide.setup_minutes
    assert lines[near_aide.id or 0]["eta_minutes"] == 40 + near_aide.setup_minutes
    (sms,) = await bench.sms_to(far_aide.phone, "dispatch")
    assert f"约{6 + round(far_aide.setup_minutes)}分钟" in sms.body

    # A newer import of the same pair replaces the older time.
    await operator_resolves(bench, after.id)
    await import_csv(bench, f"老人编号,助老员电话,分钟\n{ELDER},{near_aide.phone},1\n")
    latest = await bench.raise_alert(ELDER)
    assert (await bench.asked(latest.id))[0].id == near_aide.id


async def _township_aides(bench: DispatchBench) -> list[Responder]:
    alert = await bench.raise_alert(ELDER)
    await operator_resolves(bench, alert.id)
    aide_ids = [line["responder_id"] for line in alert.ranking if line["kind"] == "aide"]
    return [await bench.responder(i) for i in aide_ids]


async def test_no_aide_on_duty_asks_the_township_centre_at_once(bench: DispatchBench) -> None:
    aides = await _township_aides(bench)
    async with transaction(bench.sessions) as session:
        await session.execute(
            update(Responder)
            .where(col(Responder.id).in_([a.id for a in aides]))
            .values(on_duty=False)
        )

    alert = await bench.raise_alert(ELDER)
    (centre,) = await bench.asked(alert.id)
    assert centre.kind == "township_centre"
    asked = [e for e in await bench.timeline(alert.id) if e.action == "asked"]
    assert [e.detail["reason"] for e in asked] == ["no_aide_in_time"]
    (sms,) = await bench.sms_to(centre.phone, "dispatch")
    assert sms.body.startswith("【安心】升级 " + alert.code)


async def test_no_aide_in_time_asks_the_nearest_aide_and_the_township_centre_at_once(
    bench: DispatchBench,
) -> None:
    aides = await _township_aides(bench)
    # Every aide is more than 15 minutes away by road.
    await import_csv(
        bench,
        "elder_code,responder_phone,minutes\n"
        + "".join(f"{ELDER},{a.phone},{30 + i}\n" for i, a in enumerate(aides)),
    )

    alert = await bench.raise_alert(ELDER)
    asked = await bench.asked(alert.id)
    assert [r.kind for r in asked] == ["aide", "township_centre"]
    assert asked[0].id == aides[0].id
    reasons = [e.detail["reason"] for e in await bench.timeline(alert.id) if e.action == "asked"]
    assert reasons == ["nearest", "no_aide_in_time"]
    async with transaction(bench.sessions) as session:
        again = await alert_ladder.lock_alert(session, alert.id or 0)
        assert again is not None
        await alert_ladder.advance(session, again, bench.clock.now())
    assert len(await bench.asked(alert.id)) == 2  # the ladder at T0 again: nobody new


async def test_ranking_a_batch_of_alerts_ranks_each_as_alone(bench: DispatchBench) -> None:
    """The watcher ranks its whole batch of new alerts with a few queries; each elder's
    ranking is the one they would get alone (same people, same order, same ETAs)."""
    # Something to tell apart: an aide off duty, one already committed to a P1, a routed time.
    taken = await bench.raise_alert(ELDER)
    taker = taken.ranking[0]["responder_id"]
    async with transaction(bench.sessions) as session:
        alert = await alert_ladder.lock_alert(session, taken.id or 0)
        assert alert is not None
        await alert_ladder.accept(session, alert, taker, bench.clock.now(), "test")
        off = taken.ranking[1]["responder_id"]
        await session.execute(
            update(Responder).where(col(Responder.id) == off).values(on_duty=False)
        )
    far = await bench.responder(taken.ranking[2]["responder_id"])
    await import_csv(bench, f"elder_code,responder_phone,minutes\nE0002,{far.phone},1\n")

    codes = [e.code for e in bench.seeded.plan.elders[::9]]
    assert len(codes) >= 10
    async with bench.sessions() as session:
        elders = [await bench.elder(code, session) for code in codes]
        chains = [await regions.region_chain(session, e.village_id) for e in elders]
        assert {c[1].id for c in chains if len(c) > 1} and len({c[0].id for c in chains}) > 3
        now = bench.clock.now()
        alone = [
            await alert_ladder.rank_for_alert(session, e, c, now)
            for e, c in zip(elders, chains, strict=True)
        ]
        together = await alert_ladder.rank_for_alerts(
            session, list(zip(elders, chains, strict=True)), now
        )
    assert together == alone
    assert all(ranking for ranking in together)
