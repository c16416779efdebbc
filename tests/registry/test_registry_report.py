"""The import report as an administrator reads it: refused rows in the order of the sheet, a
device whose elder was refused in the same file told so, every dropped column noted, and the
same note on thousands of rows folded into one line with its count."""

from __future__ import annotations

import asyncio
import io
import re
from datetime import UTC, datetime
from pathlib import Path

from openpyxl import Workbook
from typer.testing import CliRunner

from anxin.cli import app as ops_app
from anxin.db import SessionMaker
from registry.apply import import_registry_file

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
REGIONS = (
    "区域编码,名称,级别,上级编码,纬度,经度\n"
    "Z01,试验县,县,,32.68,109.03\n"
    "Z01-T1,石门镇,乡镇,Z01,32.70,109.05\n"
    "Z01-T1-V1,板桥村,村,Z01-T1,32.71,109.06\n"
)


def _workbook() -> bytes:
    wb = Workbook()
    regions = wb.active
    assert regions is not None
    regions.title = "区域"
    for line in REGIONS.strip().splitlines():
        regions.append(line.split(","))
    regions.append(["Z01-T1-V2", "河口村", "村", "NOPE", "32.7", "109.1"])  # row 5: bad parent
    elders = wb.create_sheet("老人")
    elders.append(["老人编号", "姓名", "所属村", "监护人电话", "纬度", "经度"])
    elders.append(["E001", "王秀英", "板桥村", "", 32.71, 109.06])  # row 2: good
    elders.append(["E002", "李德胜", "不存在村", "", 32.71, 109.06])  # row 3: unknown village
    elders.append(["E003", "张桂兰", "板桥村", "12345", 32.71, 109.06])  # row 4: bad phone
    elders.append(["E001", "王秀英", "板桥村", "", 32.71, 109.06])  # row 5: duplicate
    elders.append(["E004", "刘长贵", "河口村", "", 32.71, 109.06])  # row 6: village refused
    devices = wb.create_sheet("设备")
    devices.append(["设备编号", "设备类型", "老人编号", "设备密码"])
    devices.append(["sos-E001", "一键呼叫", "E001", "device-pass-001"])  # row 2: good
    devices.append(["sos-E003", "一键呼叫", "E003", "device-pass-003"])  # row 3
    devices.append(["sos-E002", "一键呼叫", "E002", "device-pass-002"])  # row 4
    devices.append(["sos-E999", "一键呼叫", "E999", "device-pass-999"])  # row 5: unknown
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def _refused_rows(lines: list[str], sheet: str) -> list[int]:
    found = (re.match(rf"拒绝 refused — {sheet} 第(\d+)行", line) for line in lines)
    return [int(m.group(1)) for m in found if m]


async def test_refused_rows_in_row_order_and_a_device_whose_elder_was_refused(
    sessions: SessionMaker,
) -> None:
    report = await import_registry_file(sessions, _workbook(), "county.xlsx", now=NOW)
    lines = report.summary_lines()
    text = "\n".join(lines)
    # Found by three different checks (village lookup, phone, duplicate key): in sheet order.
    assert _refused_rows(lines, "老人") == [3, 4, 5, 6], text
    assert _refused_rows(lines, "设备") == [3, 4, 5], text
    by_row = {f.row: f.message for f in report.refused if f.sheet == "设备"}
    assert "在本文件中被拒绝（老人 第4行）" in by_row[3]
    assert "its elder 'E003' was refused in this file (老人 row 4)" in by_row[3]
    assert "在本文件中被拒绝（老人 第3行）" in by_row[4]  # refused by the database check
    assert "找不到老人编号“E999”" in by_row[5]  # not in this file at all
    elder_6 = next(f.message for f in report.refused if (f.sheet, f.row) == ("老人", 6))
    assert "村“河口村”在本文件中被拒绝（区域 第5行）" in elder_6
    assert report.as_dict()["refused"][0]["row"] == 5  # the API's list is in the same order


async def test_every_ignored_column_is_noted(sessions: SessionMaker) -> None:
    roster = (
        REGIONS,
        "序号,老人编号,姓名,所属村,纬度,经度,爱好,,备注\n"
        "1,E001,王秀英,板桥村,32.71,109.06,下棋,3组,腿脚不便\n"
        "2,E002,李德胜,板桥村,32.71,109.06,,,,左邻：李家\n",
    )
    await import_registry_file(sessions, roster[0].encode(), "区域.csv", now=NOW)
    report = await import_registry_file(sessions, roster[1].encode(), "老人.csv", now=NOW)
    assert report.ok, report.summary_lines()
    notes = [line for line in report.summary_lines() if line.startswith("提示 note")]
    text = "\n".join(notes)
    assert "列「爱好」: 平台不需要这一列，已忽略" in text, text
    assert "第H列没有表头，其中的内容已忽略" in text, text  # "3组" under no header
    assert "第J列没有表头" in text, text  # past the header's last cell
    assert "列「备注」: 备注不导入" in text, text
    assert "序号" not in text  # a row number loses nothing
    assert len(notes) == 4, text


async def test_thousands_of_identical_notes_fold_into_one_line(
    sessions: SessionMaker, database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "区域.csv").write_text(REGIONS, encoding="utf-8")
    elders = ["老人编号,姓名,所属村"] + [f"E{n:05d},老人{n},板桥村" for n in range(1, 3001)]
    (tmp_path / "老人.csv").write_text("\n".join(elders) + "\n", encoding="utf-8")
    env = {"ANXIN_DATABASE_URL": database_url, "ANXIN_LOG_LEVEL": "warning"}
    result = await asyncio.to_thread(
        CliRunner().invoke,
        ops_app,
        ["registry", "import", str(tmp_path / "区域.csv"), str(tmp_path / "老人.csv")],
        env=env,
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "新增 3000 created" in result.output
    centre = [line for line in lines if "暂用村中心位置" in line]
    # No coordinates on any row: one note for the 3000 of them, with the count and the rows.
    assert len(centre) == 1, centre
    assert "没有经纬度，暂用村中心位置" in centre[0]
    assert "（共 3000 行 / 3000 rows: 第2–3001行）" in centre[0], centre
    assert len(lines) < 10, result.output
