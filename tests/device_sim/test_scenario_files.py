"""Scenario files: every bundled one loads; a mistake is reported with its file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_sim.scenario.model import (
    ScenarioError,
    bundled_scenarios,
    load_scenario,
    parse_duration,
)


def test_at_least_eight_bundled_scenarios_load() -> None:
    paths = bundled_scenarios()
    assert len(paths) >= 8
    names = {load_scenario(p).name for p in paths}
    assert len(names) == len(paths)  # each says what it is about, differently


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90.0), ("90s", 90.0), ("11m", 660.0), ("1h30m", 5400.0), ("2m30s", 150.0)],
)
def test_durations_read_as_people_write_them(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


GOOD_HEAD = """\
name: test
run_for: 5m
homes:
  elder: E0003
"""


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(GOOD_HEAD + body, encoding="utf-8")
    return path


def test_a_misspelt_event_names_file_line_and_field(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
timeline:
  - {at: 0s, home: elder, event: sos}
  - {at: 1m, home: elder, event: sso}
expect:
  - alerts: {home: elder}
    count: 1
""",
    )
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    message = str(error.value)
    assert f"{path}:7: timeline.1.event" in message
    assert "sso" in message or "sos" in message


def test_unknown_home_device_and_bad_duration_are_all_reported(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
timeline:
  - {at: 0s, home: grandpa, event: sos}
  - {at: 1m, home: elder, event: gas}
expect:
  - alert: {home: elder, kind: sos}
    on_scene_within: soon
""",
    )
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    assert "expect.0.on_scene_within" in str(error.value)
    assert "soon" in str(error.value)

    path.write_text(path.read_text().replace("on_scene_within: soon", "met: true"))
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    message = str(error.value)
    assert f"{path}:6: timeline.0.home: unknown home 'grandpa'" in message
    assert "timeline.1.event: home elder (E0003) has no gas" in message


def test_an_expectation_needs_a_subject(tmp_path: Path) -> None:
    path = _write(tmp_path, "timeline: []\nexpect:\n  - priority: 1\n")
    with pytest.raises(ScenarioError, match="exactly one of `alert`, `alerts` or `events`"):
        load_scenario(path)


@pytest.mark.parametrize(
    ("text", "seconds"), [("7d", 604800.0), ("29d10h", 29 * 86400 + 36000.0), ("1d30m", 88200.0)]
)
def test_a_month_is_written_in_days(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_the_month_scenarios_are_bundled() -> None:
    """Issue 18 item 7: played by `anxin sim run` and by tests/device_sim/test_scenarios.py."""
    stems = {p.stem for p in bundled_scenarios()}
    assert {
        "month_one_elder_never_visited",
        "month_concern_found_on_a_visit",
        "month_aide_off_duty_village_uncovered",
    } <= stems


def test_an_aide_sms_step_names_a_home_and_figures_name_real_operators(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
timeline:
  - {at: 1d, sms: 访 E0003, by: grandpa}
  - {at: 2d, sms: 下班}
expect:
  - visits: {month: 2026-11, region: V99, operator: nobody}
    due: 1
    missed: {E9999: not_visited}
  - coverage: {operator: t01}
    uncovered_include: [grandma]
""",
    )
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    assert f"{path}:7: timeline.1: Value error, an `sms` step needs `by`" in str(error.value)

    path.write_text(path.read_text().replace("  - {at: 2d, sms: 下班}\n", ""))
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    message = str(error.value)
    assert f"{path}:6: timeline.0.by: unknown home 'grandpa'" in message
    assert "expect.0.visits.operator: no operator 'nobody'" in message
    assert "expect.0.visits.region: no region V99" in message
    assert "'E9999' is neither a home nor an elder" in message
    assert "expect.1.uncovered_include: unknown home 'grandma'" in message


def test_checks_go_with_their_subject(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
timeline: []
expect:
  - coverage: {operator: t01}
    due: 3
""",
    )
    with pytest.raises(ScenarioError, match=r"\['due'\] cannot be checked on `coverage:`"):
        load_scenario(path)


async def test_a_month_scenario_is_refused_at_real_time() -> None:
    """`--real-time` (or `--external`) would wait 30 days: it says so at once instead."""
    from typing import Any, cast

    from device_sim.region.generate import generate_region
    from device_sim.scenario.player import ScenarioPlayer

    path = next(p for p in bundled_scenarios() if p.stem == "month_one_elder_never_visited")
    scenario = load_scenario(path)
    nothing = cast(Any, None)  # refused before it touches the platform
    player = ScenarioPlayer(
        scenario,
        generate_region(scenario.region.homes, scenario.region.seed),
        sessions=nothing,
        sandbox=nothing,
        mqtt=nothing,
        clock=None,
    )
    with pytest.raises(ScenarioError, match="plays on scenario time only"):
        await player.play()
