"""An aide going off duty leaves a village uncovered (issue 18 item 7's scenario, over the wire):
the aide texts 下班 through the real twilio client and the signed webhook, on a fake clock; the township's
operator then sees the village with no aide on duty, the elders' fastest aide now from another
village, and the warning naming who went off duty; a county operator sees it too, another
township's operator does not."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col

from anxin.models import Responder
from device_sim.region.plan import RegionPlan, ResponderSpec
from tests.builders import operator_token
from tests.support.dispatch import DispatchBench


def lone_aide(plan: RegionPlan) -> tuple[str, ResponderSpec]:
    """A village with exactly one aide on duty (the demo county has one), and that aide."""
    for village in plan.villages:
        on_duty = [a for a in plan.aides if a.village_code == village.code and a.on_duty]
        if len(on_duty) == 1:
            return village.code, on_duty[0]
    raise AssertionError("the demo county has no village with a single aide on duty")


def operator_of(plan: RegionPlan, region_code: str) -> str:
    return next(o.username for o in plan.operators if o.region_code == region_code)


async def test_off_duty_leaves_a_village_uncovered_and_warns_the_township(
    bench: DispatchBench, capfd: pytest.CaptureFixture[str]
) -> None:
    async with httpx.AsyncClient(base_url=bench.web_url) as http:
        plan = bench.seeded.plan
        village_code, aide = lone_aide(plan)
        village = next(v for v in plan.villages if v.code == village_code)
        township = next(t for t in plan.townships if t.code == village.parent_code)
        other = next(t for t in plan.townships if t.code != township.code)
        elders_here = {e.code for e in plan.elders if e.village_code == village_code}
        headers = await operator_token(http, operator_of(plan, township.code))

        async def coverage(headers: dict[str, str]) -> dict[str, Any]:
            response = await http.get(
                "/api/figures/coverage", params={"all": "true"}, headers=headers
            )
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body

        before = await coverage(headers)
        assert village.name not in {v["village"] for v in before["villages_without_aide"]}
        assert before["warnings"] == []
        reach_before = {e["code"]: e for e in before["reach"]}

        assert await bench.reply(aide.phone, "下班") == 200

        after = await coverage(headers)
        gaps = after["villages_without_aide"]
        assert [(g["village"], g["elders"]) for g in gaps] == [(village.name, len(elders_here))]
        reach_after = {e["code"]: e for e in after["reach"]}
        for code in elders_here:
            # Someone from another village (or nobody) is now the fastest, and no sooner.
            assert reach_after[code]["aide_name"] != aide.name
            if reach_after[code]["eta_minutes"] is not None:
                assert reach_after[code]["eta_minutes"] >= reach_before[code]["eta_minutes"]
        # The list is exactly the elders whose fastest aide is too late (or absent).
        late = {
            code
            for code, e in reach_after.items()
            if e["eta_minutes"] is None or e["eta_minutes"] > e["respond_minutes"]
        }
        assert {e["code"] for e in after["uncovered"]} == late
        (warning,) = after["warnings"]
        assert warning["detail"]["responder"] == aide.name
        assert warning["detail"]["villages_without_aide"] == [village.name]
        assert "coverage_gap" in capfd.readouterr().err

        # The county sees the warning; the other township neither the gap nor the warning.
        county = await coverage(await operator_token(http, operator_of(plan, plan.county.code)))
        assert len(county["warnings"]) == 1
        theirs = await coverage(await operator_token(http, operator_of(plan, other.code)))
        assert theirs["warnings"] == [] and theirs["villages_without_aide"] == []

        # A day later (the fake clock) the warning has left the page; the gap has not.
        bench.clock.advance(timedelta(hours=25))
        headers = await operator_token(http, operator_of(plan, township.code))  # a new shift
        next_day = await coverage(headers)
        assert next_day["warnings"] == []
        assert [g["village"] for g in next_day["villages_without_aide"]] == [village.name]

        # Back on duty: the village is covered again, and no new warning.
        assert await bench.reply(aide.phone, "上班") == 200
        again = await coverage(headers)
        assert again["villages_without_aide"] == [] and again["warnings"] == []
        assert {e["code"] for e in again["uncovered"]} == {e["code"] for e in before["uncovered"]}


async def test_off_duty_is_kept_when_the_coverage_check_fails(
    bench: DispatchBench, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alert_service import coverage_service

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("coverage broke")

    monkeypatch.setattr(coverage_service, "coverage_in", broken)
    _, aide = lone_aide(bench.seeded.plan)
    assert await bench.reply(aide.phone, "下班") == 200
    async with bench.sessions() as session:
        row = (
            await session.execute(select(Responder).where(col(Responder.phone) == aide.phone))
        ).scalar_one()
    assert row.on_duty is False
    assert [m.purpose for m in await bench.sms_to(aide.phone)] == ["duty"]
