"""`anxin registry import|export` as an administrator types it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner

from anxin.cli import app as ops_app
from anxin.db import SessionMaker

REGIONS = (
    "区域编码,名称,级别,上级编码,纬度,经度\n"
    "Y01,试验县,县,,32.68,109.03\n"
    "Y01-T1,石门镇,乡镇,Y01,32.70,109.05\n"
    "Y01-T1-V1,板桥村,村,Y01-T1,32.71,109.06\n"
)
AIDES = (
    "姓名,手机号,所属村,出行方式\n"
    "陈红梅,13700137000,板桥村,电动车\n"
    "杨建军,1370013,板桥村,摩托车\n"  # row 3: not a phone number
)


async def test_import_reports_refused_rows_and_export_writes_the_same_layout(
    sessions: SessionMaker, database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "助老员.csv").write_text(AIDES, encoding="utf-8")
    # GB18030, as Excel on a Chinese Windows saves CSV.
    (tmp_path / "区域.csv").write_bytes(REGIONS.encode("gb18030"))
    env = {"ANXIN_DATABASE_URL": database_url, "ANXIN_LOG_LEVEL": "warning"}
    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str]:
        result = runner.invoke(ops_app, list(args), env=env)
        return result.exit_code, result.output

    # Aides first on the command line: the regions file still goes in first.
    code, output = await asyncio.to_thread(
        invoke, "registry", "import", str(tmp_path / "助老员.csv"), str(tmp_path / "区域.csv")
    )
    assert code == 1, output
    assert "第3行" in output and "手机号" in output
    assert "新增 3 created" in output  # the three regions
    assert "新增 1 created" in output  # the good aide

    code, output = await asyncio.to_thread(invoke, "registry", "export", str(tmp_path / "out"))
    assert code == 0, output
    aides = (tmp_path / "out" / "aides.csv").read_text(encoding="utf-8-sig").splitlines()
    assert aides[0].startswith("姓名,手机号")
    assert len(aides) == 2 and "+8613700137000" in aides[1]

    code, output = await asyncio.to_thread(
        invoke, "registry", "import", "--dry-run", str(tmp_path / "out" / "aides.csv")
    )
    assert code == 0, output
    assert "未变 1 unchanged" in output
