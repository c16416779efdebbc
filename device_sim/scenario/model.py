"""The scenario file format: a timeline of presses, sensor readings and aides' behaviour, with
the outcomes the platform must produce (the files are device_sim/scenarios/*.yaml).

`load_scenario(path)` validates a file (pydantic) and names the file, line and field of any
mistake, including names that must exist in the scenario's generated region.

Durations read as people write them: `90s`, `11m`, `1h30m`, and days for a month's scenario
(`7d`, `29d10h`); a step's `at` is one from `start`, so a month is `run_for: 30d` and steps on
the days things happen (the fake clock jumps straight there). The kinds of step:

    - {at: 30s, home: elder, event: sos}              # a device in the home sends an event
    - {at: 2m, power_cut: T01}                         # a township loses mains power
    - {at: 1d, sms: 访 E0001, by: high1}               # an aide texts the platform (issue 18):
    - {at: 9d, sms: 访 E0012 异常 摔过一次, by: fell}  #   the aide who owns the visits of home
    - {at: 29d10h, sms: 下班, by: e21}                 #   `by`'s elder, through the SMS sandbox

`repeat`/`every` repeat any step (`repeat: 4, every: 7d`: a weekly visit). The expectations:

    - alert: {home: elder, kind: sos}                  # one alert: priority, status, asked, …,
      timeline_has: [raised, visit]                    #   actions on its timeline
    - alerts: {kind: visit_concern}                    # how many alerts (events: how many events)
      count: 2
    - visits: {month: 2026-11, region: V01}            # the month's visit figures of a region as
      due: 15                                          #   an operator (default `county`) reads
      visited: 14                                      #   GET /api/figures/visits: due, visited,
      rate: 0.933                                      #   pending, visited ÷ due to 3 places,
      missed: {missing: not_visited}                   #   exactly who was missed and why
    - coverage: {operator: t01}                        # GET /api/figures/coverage as operator:
      villages_without_aide: [枫树河村]                #   the villages (exactly), homes among the
      uncovered_include: [e21]                         #   uncovered, the 下班 warnings of the
      warnings: 1                                      #   last 24 h
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from anxin.schemas import EventType
from device_sim.homes import DEVICE_FOR_EVENT
from device_sim.phones import Behaviour
from device_sim.region.generate import generate_region
from device_sim.region.plan import RegionPlan

# The data folder beside this package (not inside it: `anxin sim run device_sim/scenarios/*.yaml`).
SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"
ALERT_CODE = re.compile(r"\bA(\d+)\b")
_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)d)?\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?"
    r"\s*(?:(\d+(?:\.\d+)?)s)?\s*$"
)


def parse_duration(value: Any) -> float:
    """Seconds from `90`, `90s`, `11m`, `1h30m`, `2m30s`, `7d`, `30d8h` (a month's scenario)."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text like 90s, 11m, 1h30m")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        found = _DURATION.match(value)
        if found and any(found.groups()):
            days, hours, minutes, seconds = (float(g) if g else 0.0 for g in found.groups())
            return days * 86400 + hours * 3600 + minutes * 60 + seconds
    raise ValueError(f"{value!r} is not a duration (use e.g. 90s, 11m, 1h30m, 7d)")


Duration = Annotated[float, BeforeValidator(parse_duration)]


def format_seconds(seconds: float) -> str:
    seconds = round(seconds)
    days, rest = divmod(seconds, 86400)
    if days:
        hours, rest = divmod(rest, 3600)
        return f"{days}d{hours:02d}h{rest // 60:02d}m"
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


# --- the file format ------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CallScript(_Strict):
    """How a responder's phone answers a call-out call (issue 19), in scenario time from the
    ring: `pick_up` after `after` and press `key` (none: hang up without one), `ring` until the
    caller gives up (no answer), or `reject` (busy) after `after`."""

    answer: Literal["pick_up", "ring", "reject"] = "ring"
    after: Duration = 10.0
    key: Literal["0", "1"] | None = "1"


class ResponderScript(_Strict):
    """How one responder's phone answers a call-out (times in scenario time, from the SMS).

    `call`: how it answers a call-out call; by default as the SMS — silent lets it ring, accept
    presses 1 and decline presses 0, ten seconds after picking up."""

    behaviour: Behaviour = Behaviour.silent
    answer_after: Duration = 30.0
    travel: Duration = 300.0
    handle: Duration = 120.0
    late_extra: Duration = 600.0  # accept_then_late: this much longer on the road
    call: CallScript | None = None

    def call_script(self) -> CallScript:
        if self.call is not None:
            return self.call
        if self.behaviour == Behaviour.silent:
            return CallScript(answer="ring")
        return CallScript(answer="pick_up", key="0" if self.behaviour == Behaviour.decline else "1")


RESPONDER_LABEL = re.compile(r"^(aide[1-9][0-9]*|township|county|default)$")


class Step(_Strict):
    """One thing that happens at `at` (scenario time from `start`): a device's `event` in a
    `home`; a `power_cut` in a township; or an aide's text message (`sms`, issue 18), sent
    through the SMS sandbox to the platform's webhook from the phone of the aide who owns the
    visits of the elder of home `by` — `访 E0001`, `访 E0012 异常 摔过一次`, `下班`, `上班`."""

    at: Duration
    home: str | None = None
    event: EventType | None = None
    data: dict[str, Any] | None = None
    event_id: str | None = None
    repeat: int = Field(default=1, ge=1, le=100)
    every: Duration = 0.0
    power_cut: str | None = None  # a township code: every home there loses mains power
    sms: str | None = Field(default=None, min_length=1, max_length=160)
    by: str | None = None  # `sms`: the home label whose elder's visit owner texts it
    expect_ack: Literal["accepted", "duplicate", "rejected"] | None = None

    @model_validator(mode="after")
    def _one_action(self) -> Step:
        if sum(a is not None for a in (self.event, self.power_cut, self.sms)) != 1:
            raise ValueError(
                "a step has exactly one of `event` (with `home`), `power_cut` or `sms` (with `by`)"
            )
        if self.event is not None and self.home is None:
            raise ValueError("an `event` step needs the `home` it happens in")
        if (self.sms is None) != (self.by is None):
            raise ValueError("an `sms` step needs `by` (the home whose aide texts), and only it")
        if self.sms is not None and self.expect_ack is not None:
            raise ValueError("`expect_ack` is a device's ack: an `sms` step has none")
        if self.repeat > 1 and self.every <= 0:
            raise ValueError("`repeat` needs `every` (the time between repeats)")
        if self.repeat > 1 and self.event_id is not None:
            raise ValueError("`repeat` makes new events; to resend one event_id, list it twice")
        return self


class AlertSelector(_Strict):
    home: str
    kind: str
    nth: int = Field(default=1, ge=1)


class AlertFilter(_Strict):
    kind: str | None = None
    priority: int | None = None
    home: str | None = None
    township: str | None = None


class EventFilter(_Strict):
    home: str
    type: EventType | None = None


class VisitFigures(_Strict):
    """`visits:` a month's visit figures of one region, as an operator reads them over the API
    (GET /api/figures/visits): the region's row, checked against a hand count."""

    month: str = Field(pattern=r"^\d{4}-\d{2}$")
    region: str  # a county, township or village code
    operator: str = "county"  # a seeded operator's username (password `anxin-<username>`)


class CoverageView(_Strict):
    """`coverage:` who no aide can reach in time, as an operator reads it over the API
    (GET /api/figures/coverage), with the 下班 warnings of the last 24 hours."""

    operator: str  # a seeded operator's username, e.g. t01 (a township's)


# Which checks go with which subject (a check beside the wrong subject is a file mistake).
ALERT_CHECKS = frozenset(
    {
        "priority", "status", "trigger_count", "call_120", "cancel_requested", "breached",
        "at_risk", "met", "asked", "accepted_by", "raised_at", "on_scene_within", "sms", "calls",
        "call_keys", "sms_within_real_s", "timeline_has",
    }
)  # fmt: skip
COUNT_CHECKS = frozenset({"count", "at_least", "at_most"})
VISIT_CHECKS = frozenset({"due", "visited", "pending", "rate", "missed"})
COVERAGE_CHECKS = frozenset({"villages_without_aide", "uncovered_include", "warnings"})


class Expectation(_Strict):
    """One of `alert:` (checks on one alert), `alerts:` (how many), `events:` (how many),
    `visits:` (a month's visit figures) or `coverage:` (who no aide can reach in time)."""

    alert: AlertSelector | None = None
    alerts: AlertFilter | None = None
    events: EventFilter | None = None
    visits: VisitFigures | None = None
    coverage: CoverageView | None = None
    # on one alert
    priority: int | None = None
    status: Literal["raised", "dispatching", "accepted", "on_scene", "resolved"] | None = None
    trigger_count: int | None = None
    call_120: bool | None = None
    cancel_requested: bool | None = None
    breached: bool | None = None
    at_risk: bool | None = None
    met: bool | None = None
    asked: list[str] | None = None
    accepted_by: str | None = None
    raised_at: Duration | None = None  # scenario time of raising
    on_scene_within: Duration | None = None  # from raising
    sms: dict[str, int] | None = None  # per responder label (and `guardians`): SMS for this alert
    calls: dict[str, int] | None = None  # per responder label: call-out calls for this alert
    # per responder label: the key pressed on their call ("none": answered without one)
    call_keys: dict[str, str] | None = None
    sms_within_real_s: float | None = None  # device publish → call-out at the SMS endpoint
    # timeline actions the alert must have, e.g. [raised, visit] (a concern found on a visit)
    timeline_has: list[str] | None = None
    # on counts
    count: int | None = None
    at_least: int | None = None
    at_most: int | None = None
    # on a month's visit figures: visits due, made, pending, visited ÷ due (to 3 places), and
    # who was missed — exactly these, home label (or elder code) → reason (not_visited, no_aide,
    # late, rejected)
    due: int | None = None
    visited: int | None = None
    pending: int | None = None
    rate: float | None = None
    missed: dict[str, str] | None = None
    # on coverage: the villages with no aide on duty (names, exactly), homes among the
    # uncovered, and how many 下班 warnings the operator sees
    villages_without_aide: list[str] | None = None
    uncovered_include: list[str] | None = None
    warnings: int | None = None

    @model_validator(mode="after")
    def _one_subject(self) -> Expectation:
        subjects = {
            name: checks
            for name, checks in (
                ("alert", ALERT_CHECKS),
                ("alerts", COUNT_CHECKS),
                ("events", COUNT_CHECKS),
                ("visits", VISIT_CHECKS),
                ("coverage", COVERAGE_CHECKS),
            )
            if getattr(self, name) is not None
        }
        if len(subjects) != 1:
            raise ValueError(
                "an expectation has exactly one of `alert`, `alerts` or `events` "
                "(or `visits`, `coverage`)"
            )
        ((subject, allowed),) = subjects.items()
        given = set(
            self.model_dump(
                exclude={"alert", "alerts", "events", "visits", "coverage"}, exclude_none=True
            )
        )
        if given - allowed:
            wrong = given - allowed
            if subject != "alert" and wrong <= ALERT_CHECKS:
                raise ValueError(f"{sorted(wrong)} can only be checked on one `alert:`")
            if wrong <= COUNT_CHECKS:
                raise ValueError("`count`/`at_least`/`at_most` go with `alerts:` or `events:`")
            raise ValueError(f"{sorted(wrong)} cannot be checked on `{subject}:`")
        if subject in ("alerts", "events") and not given:
            raise ValueError("`alerts:`/`events:` need `count`, `at_least` or `at_most`")
        if subject in ("visits", "coverage") and not given:
            raise ValueError(
                f"`{subject}:` needs something to check ({', '.join(sorted(allowed))})"
            )
        return self

    @field_validator("asked")
    @classmethod
    def _labels(cls, value: list[str] | None) -> list[str] | None:
        for label in value or []:
            if not RESPONDER_LABEL.match(label) or label == "default":
                raise ValueError(f"{label!r} is not aide1, aide2, …, township or county")
        return value


class RegionChoice(_Strict):
    homes: int = Field(default=120, ge=1, le=20000)
    seed: int = 2026


class Scenario(_Strict):
    name: str
    description: str = ""
    start: datetime = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    region: RegionChoice = RegionChoice()
    run_for: Duration
    # Whether the named homes announce themselves (`online`) and heartbeat. Off by default: on
    # scenario time every heartbeat round costs real time, and most scenarios are about the
    # alert chain, not liveness. Homes in a power cut always do (they must be online to drop).
    heartbeats: bool = False
    homes: dict[str, str]  # label → elder code
    responders: dict[str, ResponderScript] = {}
    timeline: list[Step]
    expect: list[Expectation] = Field(min_length=1)

    @field_validator("start")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("give `start` with its UTC offset, e.g. 2026-11-23T02:00:00+08:00")
        return value.astimezone(UTC)

    @field_validator("responders")
    @classmethod
    def _responder_labels(cls, value: dict[str, ResponderScript]) -> dict[str, ResponderScript]:
        for label in value:
            if not RESPONDER_LABEL.match(label):
                raise ValueError(f"{label!r} is not aide1, aide2, …, township, county or default")
        return value

    def steps(self) -> list[Step]:
        """The timeline with repeats spelled out, in time order (file order within a time)."""
        expanded: list[Step] = []
        for step in self.timeline:
            for i in range(step.repeat):
                expanded.append(
                    step.model_copy(update={"at": step.at + i * step.every, "repeat": 1})
                )
        return sorted(expanded, key=lambda s: s.at)


class ScenarioError(ValueError):
    """A scenario file that cannot be played; the message names file, line and field."""


def _line_of(node: yaml.Node | None, loc: Iterable[int | str]) -> int | None:
    """The line of the deepest YAML node on the path `loc` (1-based)."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    child = value
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line


def _where(path: Path, root: yaml.Node | None, loc: tuple[int | str, ...]) -> str:
    line = _line_of(root, loc)
    dotted = ".".join(str(p) for p in loc) or "(top)"
    return f"{path}:{line or 1}: {dotted}"


def load_scenario(path: Path | str, plan: RegionPlan | None = None) -> Scenario:
    """Read and check a scenario file; raises ScenarioError naming file, line and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise ScenarioError(f"{path}:{line}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}:1: a scenario is a mapping (name:, timeline:, expect: …)")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{_where(path, root, tuple(err['loc']))}: {err['msg']}" for err in exc.errors()
        ]
        raise ScenarioError("\n".join(problems)) from exc
    plan = plan or generate_region(scenario.region.homes, scenario.region.seed)
    problems = [
        f"{_where(path, root, loc)}: {msg}" for loc, msg in _reference_problems(scenario, plan)
    ]
    if problems:
        raise ScenarioError("\n".join(problems))
    return scenario


def _reference_problems(
    scenario: Scenario, plan: RegionPlan
) -> list[tuple[tuple[int | str, ...], str]]:
    """Names that must exist: elders in the region, homes in the file, devices in the home."""
    problems: list[tuple[tuple[int | str, ...], str]] = []
    elders = {e.code for e in plan.elders}
    kinds: dict[str, set[str]] = {}
    for d in plan.devices:
        kinds.setdefault(d.elder_code, set()).add(d.kind.value)
    townships = {t.code for t in plan.townships}
    for label, code in scenario.homes.items():
        if code not in elders:
            problems.append(
                (("homes", label), f"no elder {code} in a region of {len(elders)} homes")
            )
    for i, step in enumerate(scenario.timeline):
        if step.home is not None and step.home not in scenario.homes:
            problems.append(
                (("timeline", i, "home"), f"unknown home {step.home!r} (not under `homes:`)")
            )
        elif step.home is not None and step.event is not None:
            code = scenario.homes[step.home]
            needed = DEVICE_FOR_EVENT.get(step.event.value, "sos_button")
            if code in kinds and needed not in kinds[code]:
                problems.append(
                    (
                        ("timeline", i, "event"),
                        f"home {step.home} ({code}) has no {needed} to send {step.event.value}",
                    )
                )
        if step.power_cut is not None and step.power_cut not in townships:
            problems.append((("timeline", i, "power_cut"), f"no township {step.power_cut}"))
        if step.by is not None and step.by not in scenario.homes:
            problems.append(
                (("timeline", i, "by"), f"unknown home {step.by!r} (not under `homes:`)")
            )
    for i, exp in enumerate(scenario.expect):
        home = (exp.alert.home if exp.alert else None) or (exp.events.home if exp.events else None)
        home = home or (exp.alerts.home if exp.alerts else None)
        if home is not None and home not in scenario.homes:
            problems.append((("expect", i), f"unknown home {home!r} (not under `homes:`)"))
        problems.extend(_figure_problems(scenario, plan, i, exp))
    return problems


def _figure_problems(
    scenario: Scenario, plan: RegionPlan, i: int, exp: Expectation
) -> list[tuple[tuple[int | str, ...], str]]:
    """Names in a `visits:` or `coverage:` expectation: operators, regions, homes."""
    problems: list[tuple[tuple[int | str, ...], str]] = []
    operators = {o.username for o in plan.operators}
    regions = {plan.county.code} | {r.code for r in (*plan.townships, *plan.villages)}
    elders = {e.code for e in plan.elders}
    view = exp.visits or exp.coverage
    if view is not None and view.operator not in operators:
        subject = "visits" if exp.visits else "coverage"
        problems.append(((("expect", i, subject, "operator")), f"no operator {view.operator!r}"))
    if exp.visits is not None and exp.visits.region not in regions:
        problems.append((("expect", i, "visits", "region"), f"no region {exp.visits.region}"))
    for label in exp.missed or {}:
        if label not in scenario.homes and label not in elders:
            problems.append((("expect", i, "missed"), f"{label!r} is neither a home nor an elder"))
    for label in exp.uncovered_include or []:
        if label not in scenario.homes:
            problems.append(
                (("expect", i, "uncovered_include"), f"unknown home {label!r} (not under `homes:`)")
            )
    return problems


def bundled_scenarios() -> list[Path]:
    return sorted(SCENARIO_DIR.glob("*.yaml"))
