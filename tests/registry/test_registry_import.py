"""Registry import and export as a civil-affairs office uses it: their spreadsheet in, a report of
what was refused (row and column), the good rows stored once, and the same layout back out."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from openpyxl import Workbook
from sqlalchemy import func, select
from sqlmodel import col

from anxin.db import SessionMaker
from anxin.models import Device, Elder, Region, Responder, ServiceCentre
from registry import apply
from registry.apply import import_registry_file
from registry.columns import APPLY_ORDER, RegistryKind
from registry.export import export_registry
from registry.report import ImportReport
from registry.sheets import parse_phone
from tests.support.harness import Seeded

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
ID_NUMBER = "610921194503150027"  # an invented ID-card number: must never be stored


def _workbook() -> bytes:
    """A county's workbook as an office would keep it: Chinese headers, a title row above the
    elders' header, an ID-number column, a 类别 column, and a few mistakes."""
    wb = Workbook()
    regions = wb.active
    assert regions is not None
    regions.title = "区域"
    regions.append(["区域编码", "名称", "级别", "上级编码", "纬度", "经度"])
    regions.append(["X01", "试点县", "县", "", 32.68, 109.03])
    regions.append(["X01-T1", "青溪镇", "乡镇", "X01", 32.75, 109.10])
    regions.append(["X01-T1-V1", "柳树坪村", "村", "X01-T1", 32.76, 109.12])
    regions.append(["X01-T1-V2", "黄家湾村", "村", "X01-T1", 32.77, 109.14])
    regions.append(["X01-T1-V9", "无主村", "村", "NOPE", 32.7, 109.1])  # row 6: unknown parent

    centres = wb.create_sheet("服务中心")
    centres.append(["区域编码", "中心名称", "值班电话", "纬度", "经度", "有车辆"])
    centres.append(["X01-T1", "青溪镇区域养老服务中心", "0915-5551234", 32.75, 109.10, "是"])

    elders = wb.create_sheet("老人花名册")
    elders.append(["试点县特殊困难老年人花名册（2026年11月）"])  # title row
    elders.append(
        [
            "序号",
            "老人编号",
            "姓名",
            "身份证号",
            "所属乡镇",
            "所属村",
            "住址",
            "经度",
            "纬度",
            "类别",
            "监护人电话",
        ]
    )
    # Rows 3–8 as the spreadsheet numbers them.
    elders.append(
        [
            1,
            "E001",
            "王秀英",
            ID_NUMBER,
            "青溪镇",
            "柳树坪",
            "3组12号",
            109.121,
            32.761,
            "独居、高龄",
            13800138000,
        ]
    )
    elders.append(
        [
            2,
            "E002",
            "李德胜",
            "",
            "青溪镇",
            "黄家湾村",
            "5组",
            109.141,
            32.771,
            "空巢",
            "139 0013 9000",
        ]
    )
    elders.append(
        [3, "E003", "张桂兰", "", "青溪镇", "柳树坪村", "", "", "", "失能", "12345"]
    )  # bad phone
    elders.append(
        [4, "E004", "刘长贵", "", "青溪镇", "不存在村", "", "", "", "", ""]
    )  # unknown village
    elders.append([5, "E005", "", "", "青溪镇", "柳树坪村", "", "", "", "", ""])  # no name
    elders.append([6, "E001", "王秀英", "", "青溪镇", "柳树坪村", "", "", "", "", ""])  # duplicate

    devices = wb.create_sheet("设备")
    devices.append(["设备编号", "设备类型", "老人编号", "设备密码"])
    devices.append(["sos-E001", "一键呼叫", "E001", "device-pass-001"])
    devices.append(["bed-E002", "智能床垫", "E002", ""])
    devices.append(["sos-E003", "一键呼叫", "E003", "device-pass-003"])  # its elder was refused
    devices.append(["gas-E001", "煤气罐", "E001", ""])  # unknown kind

    aides = wb.create_sheet("助老员")
    aides.append(["姓名", "手机号", "所属村", "出行方式", "在岗"])
    aides.append(["陈红梅", "13700137000", "柳树坪村", "电动车", "是"])
    aides.append(["杨建军", "+86 136 0013 6000", "X01-T1-V2", "摩托车", "否"])
    aides.append(["周丽娟", "13500135000", "柳树坪村", "飞机", "是"])  # unknown travel mode
    aides.append(["何小红", "0915-5551234", "柳树坪村", "步行", "是"])  # the centre's duty phone
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def _refusals(report: ImportReport) -> set[tuple[str, int | None, str | None]]:
    return {(f.sheet, f.row, f.column) for f in report.refused}


EXPECTED_REFUSALS = {
    ("区域", 6, "上级编码"),
    ("老人花名册", 5, "监护人电话"),
    ("老人花名册", 6, "所属村"),
    ("老人花名册", 7, "姓名"),
    ("老人花名册", 8, "老人编号"),
    ("设备", 4, "老人编号"),
    ("设备", 5, "设备类型"),
    ("助老员", 4, "出行方式"),
    ("助老员", 5, "手机号"),
}


async def _counts(sessions: SessionMaker) -> dict[str, int]:
    async with sessions() as session:
        return {
            model.__name__: int(await session.scalar(select(func.count()).select_from(model)) or 0)
            for model in (Region, ServiceCentre, Elder, Device, Responder)
        }


async def test_xlsx_imports_good_rows_reports_bad_ones_and_reimport_changes_nothing(
    sessions: SessionMaker,
) -> None:
    data = _workbook()
    first = await import_registry_file(sessions, data, "试点县.xlsx", now=NOW)

    assert first.committed
    assert _refusals(first) == EXPECTED_REFUSALS
    by_sheet = {s.sheet: s for s in first.sheets}
    assert (by_sheet["区域"].created, by_sheet["区域"].refused_rows) == (4, 1)
    assert (by_sheet["老人花名册"].created, by_sheet["老人花名册"].refused_rows) == (2, 4)
    assert (by_sheet["设备"].created, by_sheet["助老员"].created) == (2, 2)
    # The ID-number column is named in a notice and stored nowhere.
    assert any(f.column == "身份证号" for f in first.notices)
    assert await _counts(sessions) == {
        "Region": 4,
        "ServiceCentre": 1,
        "Elder": 2,
        "Device": 2,
        "Responder": 3,  # two aides and the centre's duty phone
    }
    async with sessions() as session:
        wang = (await session.execute(select(Elder).where(col(Elder.code) == "E001"))).scalar_one()
        li = (await session.execute(select(Elder).where(col(Elder.code) == "E002"))).scalar_one()
        yang = (
            await session.execute(select(Responder).where(col(Responder.phone) == "+8613600136000"))
        ).scalar_one()
    assert (wang.living_alone, wang.advanced_age, wang.empty_nest) == (True, True, False)
    assert wang.guardian_phones == ["+8613800138000"]
    assert li.guardian_phones == ["+8613900139000"]
    assert (yang.travel_mode, yang.on_duty) == ("motorbike", False)
    assert ID_NUMBER not in repr(wang.model_dump())

    as_json = first.as_dict()
    assert {"sheet": "老人花名册", "row": 5, "column": "监护人电话"}.items() <= next(
        r for r in as_json["refused"] if r["row"] == 5 and r["sheet"] == "老人花名册"
    ).items()

    second = await import_registry_file(sessions, data, "试点县.xlsx", now=NOW)
    assert second.committed
    assert second.changed == 0
    assert sum(s.unchanged for s in second.sheets) == sum(s.created for s in first.sheets)
    assert _refusals(second) == EXPECTED_REFUSALS
    assert await _counts(sessions) == {
        "Region": 4,
        "ServiceCentre": 1,
        "Elder": 2,
        "Device": 2,
        "Responder": 3,
    }


async def test_strict_import_with_a_bad_row_stores_nothing(sessions: SessionMaker) -> None:
    report = await import_registry_file(sessions, _workbook(), "试点县.xlsx", now=NOW, strict=True)
    assert not report.committed
    assert report.failure is not None
    assert _refusals(report) == EXPECTED_REFUSALS
    assert set((await _counts(sessions)).values()) == {0}


async def test_dry_run_checks_against_the_database_and_stores_nothing(
    sessions: SessionMaker,
) -> None:
    report = await import_registry_file(sessions, _workbook(), "试点县.xlsx", now=NOW, dry_run=True)
    assert _refusals(report) == EXPECTED_REFUSALS
    assert sum(s.created for s in report.sheets) == 11
    assert set((await _counts(sessions)).values()) == {0}


async def test_reimport_updates_in_place(sessions: SessionMaker) -> None:
    await import_registry_file(sessions, _workbook(), "试点县.xlsx", now=NOW)
    moved = (
        "姓名,手机号,所属村,出行方式,在岗\n"
        "陈红梅,13700137000,黄家湾村,汽车,否\n"  # same phone: the same aide, moved
    ).encode()
    report = await import_registry_file(sessions, moved, "助老员.csv", now=NOW)
    assert (report.sheets[0].updated, report.sheets[0].created) == (1, 0)
    async with sessions() as session:
        aide = (
            await session.execute(select(Responder).where(col(Responder.phone) == "+8613700137000"))
        ).scalar_one()
        village = await session.get(Region, aide.village_id)
    assert village is not None and village.code == "X01-T1-V2"
    assert (aide.travel_mode, aide.on_duty) == ("car", False)
    assert (await _counts(sessions))["Responder"] == 3


async def test_a_database_refusal_midway_stores_nothing_of_the_file(
    sessions: SessionMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regions, centres, elders and devices are written before the aides' sheet; when the
    database refuses the aides, none of the rest stays either."""

    async def refused(*_: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setitem(apply._APPLY, RegistryKind.aides, refused)
    report = await import_registry_file(sessions, _workbook(), "试点县.xlsx", now=NOW)
    assert not report.committed
    assert report.failure is not None and "disk full" in report.failure
    assert set((await _counts(sessions)).values()) == {0}


@pytest.mark.parametrize("english", [False, True])
async def test_csv_export_then_import_changes_nothing(
    region: Seeded, tmp_path: Path, english: bool
) -> None:
    sessions = region.sessions
    first = await export_registry(sessions, tmp_path / "first", english=english)
    before = await _counts(sessions)
    for path in first:
        report = await import_registry_file(sessions, path.read_bytes(), path.name, now=NOW)
        assert report.ok, report.summary_lines()
        assert report.changed == 0, report.summary_lines()
    second = await export_registry(sessions, tmp_path / "second", english=english)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    assert await _counts(sessions) == before
    assert [p.stem for p in first] == [k.value for k in APPLY_ORDER]


async def test_xlsx_export_then_import_changes_nothing(region: Seeded, tmp_path: Path) -> None:
    """One workbook, a sheet per kind (devices without their passwords, never exported)."""
    workbook = (await export_registry(region.sessions, tmp_path / "county.xlsx"))[0]
    before = await _counts(region.sessions)
    report = await import_registry_file(
        region.sessions, workbook.read_bytes(), workbook.name, now=NOW
    )
    assert report.ok, report.summary_lines()[:5]
    assert report.changed == 0
    assert sum(s.unchanged for s in report.sheets) > 0
    assert await _counts(region.sessions) == before
    assert {s.kind for s in report.sheets} == set(RegistryKind)


def test_phone_numbers_as_people_write_them() -> None:
    assert parse_phone("138 0013 8000") == "+8613800138000"
    assert parse_phone("+86-138-0013-8000") == "+8613800138000"
    assert parse_phone("8613800138000") == "+8613800138000"
    assert parse_phone("0915-5551234") == "+869155551234"
