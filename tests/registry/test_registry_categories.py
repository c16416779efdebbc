"""The civil-affairs categories (特困, 低保, 独居 … 计划生育特殊家庭) as a roster writes them: one
类别 cell with several words, or a column each; an unknown word is a note on its row, never
dropped silently; export writes them back so that export → import changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlmodel import col

from anxin.db import SessionMaker
from anxin.models import Elder
from registry.apply import import_registry_file
from registry.columns import CATEGORY_WORDS, CATEGORY_ZH, COLUMNS, ELDER_FLAGS, RegistryKind
from registry.export import export_registry
from registry.report import ImportReport
from registry.sheets import normalise_header, parse_categories

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)

REGIONS = (
    "区域编码,名称,级别,上级编码,纬度,经度\n"
    "X01,试点县,县,,32.68,109.03\n"
    "X01-T1,青溪镇,乡镇,X01,32.75,109.10\n"
    "X01-T1-V1,柳树坪村,村,X01-T1,32.76,109.12\n"
)


async def _import(sessions: SessionMaker, text: str, name: str = "老人.csv") -> ImportReport:
    report = await import_registry_file(sessions, text.encode(), name, now=NOW)
    assert report.committed, report.summary_lines()
    return report


async def _with_regions(sessions: SessionMaker) -> None:
    await _import(sessions, REGIONS, "区域.csv")


async def _flags(sessions: SessionMaker, code: str) -> set[str]:
    async with sessions() as session:
        elder = (await session.execute(select(Elder).where(col(Elder.code) == code))).scalar_one()
    return {flag for flag in ELDER_FLAGS if getattr(elder, flag)}


def _notes_on(report: ImportReport, column: str) -> list[str]:
    return [str(f) for f in report.notices if f.column == column]


async def test_one_category_cell_with_four_words_sets_all_four_flags(
    sessions: SessionMaker,
) -> None:
    """Issue 18: this stored an elder with every flag 否 and no warning."""
    await _with_regions(sessions)
    report = await _import(
        sessions,
        "老人编号,姓名,所属村,纬度,经度,类别\n"
        "E101,王秀英,柳树坪村,32.761,109.121,特困、重残、计划生育特殊家庭、失智\n",
    )
    assert report.ok and not _notes_on(report, "类别"), report.summary_lines()
    assert await _flags(sessions, "E101") == {
        "extreme_poverty",
        "severe_disability",
        "family_planning_special",
        "dementia",
    }


@pytest.mark.parametrize(
    ("cell", "flags"),
    [
        (
            "特困、重残、计划生育特殊家庭、失智",
            {"extreme_poverty", "severe_disability", "family_planning_special", "dementia"},
        ),
        (
            "分散供养特困, 低保户；失独 / 半失能",
            {"extreme_poverty", "low_income", "family_planning_special", "semi_disabled"},
        ),
        (
            "特困供养，经济困难 计生特殊家庭",
            {"extreme_poverty", "low_income", "family_planning_special"},
        ),
        ("特困人员;独居老人;高龄", {"extreme_poverty", "living_alone", "advanced_age"}),
        ("五保户|留守老人", {"extreme_poverty", "left_behind"}),
        ("半失能", {"semi_disabled"}),  # not 失能 as well
        ("失能", {"disabled"}),
        ("失能半失能", {"disabled"}),  # as its column: not both
        ("独居高龄", {"living_alone", "advanced_age"}),  # two words written together
        ("空巢（失智）", {"empty_nest", "dementia"}),
        ("重度残疾、老年痴呆", {"severe_disability", "dementia"}),
        ("无", set()),
        ("dementia, low_income", {"dementia", "low_income"}),
    ],
)
def test_category_words_separators_and_synonyms(cell: str, flags: set[str]) -> None:
    parsed = parse_categories(cell)
    assert (set(parsed.flags), parsed.unknown) == (flags, ())


def test_an_unknown_word_is_named_and_the_known_ones_kept() -> None:
    parsed = parse_categories("独居、退役军人、失智、精神障碍")
    assert set(parsed.flags) == {"living_alone", "dementia"}
    assert parsed.unknown == ("退役军人", "精神障碍")


SEPARATORS = st.sampled_from(["、", "，", ",", ";", "；", "/", " ", " / ", "|", "\u3000"])


@given(
    words=st.lists(st.sampled_from(sorted(CATEGORY_WORDS)), max_size=6),
    separators=st.lists(SEPARATORS, min_size=6, max_size=6),
)
def test_known_words_with_any_separators_set_exactly_their_flags(
    words: list[str], separators: list[str]
) -> None:
    cell = "".join(word + separator for word, separator in zip(words, separators, strict=False))
    parsed = parse_categories(cell)
    assert parsed.unknown == ()
    assert set(parsed.flags) == {CATEGORY_WORDS[w] for w in words}


@given(st.text(max_size=80))
def test_any_cell_is_read_without_error_and_nothing_is_lost_silently(text: str) -> None:
    """Whatever a cell holds, each word is a flag or is named among the unknown ones."""
    parsed = parse_categories(text)
    assert set(parsed.flags) <= set(ELDER_FLAGS)
    assert all(word and not word.isspace() for word in parsed.unknown)
    assert len(parsed.flags) == len(set(parsed.flags))


def test_the_synonym_table_names_only_flags_and_every_header_is_one_columns() -> None:
    assert set(CATEGORY_WORDS.values()) <= set(ELDER_FLAGS)
    assert set(CATEGORY_ZH) == set(ELDER_FLAGS) - {"wanders"}
    headers = [normalise_header(h) for spec in COLUMNS[RegistryKind.elders] for h in spec.headers]
    assert len(headers) == len(set(headers)), sorted(h for h in headers if headers.count(h) > 1)


async def test_an_unknown_word_is_a_note_on_its_row_and_the_row_is_imported(
    sessions: SessionMaker,
) -> None:
    await _with_regions(sessions)
    report = await _import(
        sessions,
        "老人编号,姓名,所属村,纬度,经度,类别\n"
        "E101,王秀英,柳树坪村,32.761,109.121,独居、退役军人、失智\n"
        "E102,李德胜,柳树坪村,32.762,109.122,空巢\n",
    )
    assert report.ok
    assert report.sheets[0].created == 2
    notes = _notes_on(report, "类别")
    assert len(notes) == 1, notes
    assert "第2行" in notes[0] and "“退役军人”" in notes[0] and "不认识的类别" in notes[0]
    assert report.as_dict()["notices"][0]["row"] == 2
    assert any("退役军人" in line for line in report.summary_lines())
    assert await _flags(sessions, "E101") == {"living_alone", "dementia"}


async def test_one_column_per_category(sessions: SessionMaker) -> None:
    await _with_regions(sessions)
    header = "老人编号,姓名,所属村,纬度,经度,特困,低保,半失能,失智,重残,计划生育特殊家庭,独居"
    await _import(
        sessions,
        f"{header}\n"
        "E101,王秀英,柳树坪村,32.761,109.121,是,否,是,,否,是,是\n"
        "E102,李德胜,柳树坪村,32.762,109.122,否,是,否,是,是,否,\n",
    )
    assert await _flags(sessions, "E101") == {
        "extreme_poverty",
        "semi_disabled",
        "family_planning_special",
        "living_alone",
    }
    assert await _flags(sessions, "E102") == {"low_income", "dementia", "severe_disability"}
    # A roster's own headers for them.
    await _import(
        sessions,
        "老人编号,姓名,所属村,纬度,经度,分散供养特困,经济困难,计生特殊家庭\n"
        "E103,张桂兰,柳树坪村,32.763,109.123,是,是,是\n",
    )
    assert await _flags(sessions, "E103") == {
        "extreme_poverty",
        "low_income",
        "family_planning_special",
    }


async def test_a_file_without_a_flag_column_keeps_that_flag(sessions: SessionMaker) -> None:
    """A later sheet with only 独居 does not clear the 失智 an earlier one (or the console) set;
    a 类别 cell lists every category of its elder, so there a word left out means 否."""
    await _with_regions(sessions)
    await _import(
        sessions,
        "老人编号,姓名,所属村,纬度,经度,类别\nE101,王秀英,柳树坪村,32.761,109.121,失智、低保\n",
    )
    await _import(
        sessions,
        "老人编号,姓名,所属村,纬度,经度,独居\nE101,王秀英,柳树坪村,32.761,109.121,是\n",
    )
    assert await _flags(sessions, "E101") == {"dementia", "low_income", "living_alone"}
    await _import(
        sessions,
        "老人编号,姓名,所属村,纬度,经度,类别\nE101,王秀英,柳树坪村,32.761,109.121,特困\n",
    )
    assert await _flags(sessions, "E101") == {"extreme_poverty"}


async def test_a_category_cell_never_clears_the_wandering_risk(sessions: SessionMaker) -> None:
    """走失风险 makes a door opened at night urgent; it is no civil-affairs category, so a 类别
    cell without 走失 leaves it as it is (and one with 走失 sets it)."""
    await _with_regions(sessions)
    await _import(
        sessions,
        "老人编号,姓名,所属村,纬度,经度,走失风险\nE101,王秀英,柳树坪村,32.761,109.121,是\n",
    )
    await _import(
        sessions,
        "老人编号,姓名,所属村,纬度,经度,类别\nE101,王秀英,柳树坪村,32.761,109.121,独居、失智\n",
    )
    assert await _flags(sessions, "E101") == {"wanders", "living_alone", "dementia"}
    await _import(
        sessions,
        "老人编号,姓名,所属村,纬度,经度,类别\nE102,李德胜,柳树坪村,32.762,109.122,高龄、走失\n",
    )
    assert await _flags(sessions, "E102") == {"wanders", "advanced_age"}


ROSTER = (
    "老人编号,姓名,所属村,纬度,经度,类别\n"
    "E101,王秀英,柳树坪村,32.761,109.121,特困、重残、计划生育特殊家庭、失智\n"
    "E102,李德胜,柳树坪村,32.762,109.122,低保、空巢、半失能\n"
    "E103,张桂兰,柳树坪村,32.763,109.123,独居、高龄、失能、走失\n"
    "E104,刘长贵,柳树坪村,32.764,109.124,留守\n"
    "E105,陈红梅,柳树坪村,32.765,109.125,\n"
)


@pytest.mark.parametrize("target", ["csv", "county.xlsx"])
@pytest.mark.parametrize("english", [False, True])
async def test_categories_survive_export_and_import(
    sessions: SessionMaker, tmp_path: Path, target: str, english: bool
) -> None:
    await _with_regions(sessions)
    await _import(sessions, ROSTER)
    before = {code: await _flags(sessions, code) for code in ("E101", "E102", "E103", "E104")}
    assert before["E103"] == {"living_alone", "advanced_age", "disabled", "wanders"}

    first = await export_registry(sessions, tmp_path / "first" / target, english=english)
    elders_file = next(p for p in first if p.stem in ("elders", "county"))
    if elders_file.suffix == ".csv":
        header = elders_file.read_text("utf-8-sig").splitlines()[0].split(",")
        wanted = list(CATEGORY_ZH) if english else list(CATEGORY_ZH.values())
        assert set(wanted) <= set(header), header
    for path in first:
        report = await import_registry_file(sessions, path.read_bytes(), path.name, now=NOW)
        assert report.ok, report.summary_lines()
        assert report.changed == 0, report.summary_lines()
        assert all(s.unchanged == s.rows for s in report.sheets), report.summary_lines()
    assert {code: await _flags(sessions, code) for code in before} == before
    assert await _flags(sessions, "E105") == set()
    if target == "csv":
        second = await export_registry(sessions, tmp_path / "second" / target, english=english)
        assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
