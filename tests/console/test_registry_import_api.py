"""Registry import over the API (CONTRACT §4): an operator POSTs the office's spreadsheet and gets
the same row-by-row report `anxin registry import` prints, as JSON; only rows inside their
region are stored; the import is audited. Over HTTP against the served app."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import httpx
from openpyxl import Workbook
from sqlalchemy import select
from sqlmodel import col
from typer.testing import CliRunner

from anxin.app import create_app
from anxin.cli import app as ops_app
from anxin.models import AuditLog, OperatorUser
from anxin.settings import Settings
from tests.builders import login, village_codes
from tests.support.harness import Seeded, ServeApp

HEADERS = ["老人编号", "姓名", "村编码", "纬度", "经度", "监护人电话"]


def elders_csv(village: str) -> str:
    return (
        ",".join(HEADERS) + "\n"
        f"E7001,李兰芳,{village},32.70,109.10,13800138001\n"
        f"E7002,周德明,{village},32.71,109.11,\n"
        f"E7003,吴秀珍,{village},32.72,109.12,12345\n"  # row 4: not a phone number
    )


def workbook(mine: str, theirs: str, township: str) -> bytes:
    wb = Workbook()
    regions = wb.active
    assert regions is not None
    regions.title = "区域"
    regions.append(["区域编码", "名称", "级别", "上级编码"])
    regions.append([f"{township}-V77", "新设村", "村", township])
    elders = wb.create_sheet("老人")
    elders.append(HEADERS)
    elders.append(["E7001", "李兰芳", mine, 32.70, 109.10, "13800138001"])
    elders.append(["E7002", "周德明", mine, 32.71, 109.11, None])
    elders.append(["E7009", "郑桂香", theirs, 32.73, 109.13, None])  # row 4: another township
    devices = wb.create_sheet("设备")
    devices.append(["设备编号", "设备类型", "老人编号", "设备密码"])
    devices.append(["sos-e7001", "一键呼叫", "E7001", "pass-e7001-xyz"])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def cli_dry_run(database_url: str, path: Path) -> list[str]:
    """What `anxin registry import --dry-run FILE` prints under the file's `==` line."""
    result = CliRunner().invoke(
        ops_app,
        ["registry", "import", "--dry-run", str(path)],
        env={"ANXIN_DATABASE_URL": database_url, "ANXIN_LOG_LEVEL": "warning"},
    )
    lines = result.output.splitlines()
    assert lines[0] == f"== {path}", result.output
    return [line.removeprefix("  ") for line in lines[1:]]


async def codes(http: httpx.AsyncClient, who: dict[str, str], path: str, key: str) -> set[Any]:
    res = await http.get(path, headers=who)
    assert res.status_code == 200, res.text
    return {row[key] for row in res.json()}


async def test_an_operator_imports_a_spreadsheet_and_gets_the_clis_report_scoped_to_their_region(
    region: Seeded, serve_app: ServeApp, database_url: str, tmp_path: Path
) -> None:
    mine = sorted(village_codes(region, "T01"))[0]
    theirs = sorted(village_codes(region, "T02"))[0]
    app = create_app(Settings(), region.sessions)
    async with serve_app(app) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        t01 = await login(http, "t01", "anxin-t01")

        # A dry run: the very lines the command prints, and nothing stored.
        csv_path = tmp_path / "老人.csv"
        csv_path.write_text(elders_csv(mine), encoding="utf-8")
        checked = await http.post(
            "/api/registry/import",
            headers=t01,
            params={"dry_run": "true"},
            files={"file": ("老人.csv", csv_path.read_bytes(), "text/csv")},
        )
        assert checked.status_code == 200, checked.text
        report = checked.json()
        assert report["lines"] == await asyncio.to_thread(cli_dry_run, database_url, csv_path)
        assert report["dry_run"] and not report["committed"] and not report["ok"]
        assert report["sheets"][0]["created"] == 2 and report["sheets"][0]["refused_rows"] == 1
        assert [(f["row"], f["column"]) for f in report["refused"]] == [(4, "监护人电话")]
        assert not {"E7001", "E7002"} & await codes(http, t01, "/api/elders", "code")

        # The workbook for real: rows outside T01, and the regions sheet, are refused by row.
        xlsx = workbook(mine, theirs, "T01")
        res = await http.post(
            "/api/registry/import",
            headers=t01,
            files={"file": ("花名册.xlsx", xlsx, "application/vnd.ms-excel")},
        )
        assert res.status_code == 200, res.text
        report = res.json()
        assert report["committed"] and not report["ok"]
        sheets = {s["kind"]: s for s in report["sheets"]}
        assert sheets["elders"]["created"] == 2 and sheets["elders"]["refused_rows"] == 1
        assert sheets["devices"]["created"] == 1
        assert sheets["regions"]["created"] == 0 and sheets["regions"]["refused_rows"] == 1
        refused = {(f["sheet"], f["row"], f["column"]): f["message"] for f in report["refused"]}
        assert "not in your region" in refused[("老人", 4, "村编码")]
        assert "only county operators" in refused[("区域", 2, "区域编码")]
        assert any("第4行" in line and "辖区" in line for line in report["lines"])

        assert {"E7001", "E7002"} <= await codes(http, t01, "/api/elders", "code")
        assert "sos-e7001" in await codes(http, t01, "/api/devices", "id")
        admin = await login(http, "admin", "anxin-admin")
        assert "E7009" not in await codes(http, admin, "/api/elders", "code")
        assert "T01-V77" not in await codes(http, admin, "/api/regions", "code")

        # The same file again changes nothing (the import is idempotent over the API too).
        again = await http.post(
            "/api/registry/import",
            headers=t01,
            files={"file": ("花名册.xlsx", xlsx, "application/vnd.ms-excel")},
        )
        assert {s["kind"]: s["unchanged"] for s in again.json()["sheets"]}["elders"] == 2

        unreadable = await http.post(
            "/api/registry/import",
            headers=t01,
            files={"file": ("花名册.xls", b"\xd0\xcf\x11\xe0", "application/vnd.ms-excel")},
        )
        assert unreadable.status_code == 422 and ".xlsx" in unreadable.json()["detail"]

    async with region.sessions() as session:
        rows = (
            await session.execute(
                select(AuditLog)
                .join(OperatorUser, col(OperatorUser.id) == col(AuditLog.operator_id))
                .where(
                    col(OperatorUser.username) == "t01", col(AuditLog.action) == "registry_import"
                )
                .order_by(col(AuditLog.id))
            )
        ).scalars()
        audited = [
            (r.target_id, r.detail.get("committed", True), r.detail["refused_rows"]) for r in rows
        ]
    assert audited == [("老人.csv", False, 1), ("花名册.xlsx", True, 2), ("花名册.xlsx", True, 2)]
