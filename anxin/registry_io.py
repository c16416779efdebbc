"""Registry import and export: the spreadsheets a civil-affairs office keeps, in and out.

Five kinds of sheet — regions (区域), centres (服务中心), elders (老人), devices (设备) and aides
(助老员) — as CSV (one kind per file) or Excel .xlsx (one kind per sheet). Headers may be
Chinese or English (`老人编号` or `elder_code`, `经度` or `lon`); a title row above the header
is skipped. Export writes the same layout back, so export → import changes nothing.

Rules a user can rely on (docs/operations.md repeats them):

* **Row by row.** Every row is checked on its own; a refused row is reported with its row
  number (as the spreadsheet shows it) and column, and nothing of that row is stored. The
  good rows of the file are imported.
* **Nothing half-imported.** A file (every sheet of a workbook) is one transaction: if the
  database refuses anything while writing, nothing of the file is stored. `strict=True`
  (`--strict`) refuses the whole file as soon as one row is bad; `dry_run=True` checks only.
* **Idempotent.** Natural keys — region code, centre's region, elder code, device id, aide's
  phone — decide between create and update; importing the same file twice changes nothing
  the second time. A blank optional number (coordinates, intervals) keeps what is stored.
* **Minimum data (PIPL).** ID-card numbers (身份证号) and other columns the platform does not
  need (age, sex, …) are never stored: they are ignored with a notice.

Layers: reading files and parsing rows are pure (`read_table`, `parse_sheet`); `apply_sheets`
and `export_tables` talk to the database.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from anxin.db import SessionMaker
from anxin.models import (
    AuditLog,
    Device,
    DeviceKind,
    Elder,
    Region,
    RegionLevel,
    Responder,
    ResponderKind,
    ServiceCentre,
)
from anxin.schemas import DEVICE_ID_RE

# --- the kinds of sheet and their columns -------------------------------------------------------


class RegistryKind(StrEnum):
    regions = "regions"
    centres = "centres"
    elders = "elders"
    devices = "devices"
    aides = "aides"


# Parents before children: a workbook's sheets are applied in this order whatever their order.
APPLY_ORDER: Final = (
    RegistryKind.regions,
    RegistryKind.centres,
    RegistryKind.elders,
    RegistryKind.devices,
    RegistryKind.aides,
)

SHEET_TITLES: Final[dict[RegistryKind, str]] = {
    RegistryKind.regions: "区域",
    RegistryKind.centres: "服务中心",
    RegistryKind.elders: "老人",
    RegistryKind.devices: "设备",
    RegistryKind.aides: "助老员",
}
# Sheet or file names that say which kind a sheet holds (Chinese ones may be part of a name,
# e.g. "岚皋县独居老人花名册").
_KIND_NAME_HINTS: Final[dict[RegistryKind, tuple[str, ...]]] = {
    RegistryKind.regions: ("区域", "行政区划", "地区", "regions", "region"),
    RegistryKind.centres: ("服务中心", "养老中心", "中心", "centres", "centers", "centre"),
    RegistryKind.devices: ("设备", "devices", "device"),
    RegistryKind.aides: ("助老员", "护老员", "响应人", "aides", "responders", "aide"),
    RegistryKind.elders: ("老人", "老年人", "花名册", "服务对象", "elders", "elder"),
}

# Filled in by the blank-cell rules below; `KEEP` = leave the stored value (or the default).
KEEP: Final = object()


class Blank(StrEnum):
    """What an empty cell in a present column means."""

    keep = "keep"  # keep what is stored (numbers: coordinates, intervals)
    empty = "empty"  # the empty value ("" or no phones): clearing a cell clears the field
    false = "false"  # a flag left blank is "no"
    true = "true"  # a flag left blank is "yes" (consent, enabled, on duty)


@dataclass(frozen=True)
class ColumnSpec:
    field: str
    zh: str  # the header export writes
    en: str
    aliases: tuple[str, ...] = ()
    required: bool = False
    blank: Blank = Blank.keep
    # Export only: the column helps a person read the sheet (a village's name next to its
    # code) and is not read back.
    informational: bool = False

    @property
    def headers(self) -> tuple[str, ...]:
        return (self.zh, self.en, *self.aliases)


def _c(
    field_name: str,
    zh: str,
    en: str,
    *aliases: str,
    required: bool = False,
    blank: Blank = Blank.keep,
    informational: bool = False,
) -> ColumnSpec:
    return ColumnSpec(field_name, zh, en, aliases, required, blank, informational)


_LAT = _c("lat", "纬度", "lat", "latitude", "北纬", "纬度(°)")
_LON = _c("lon", "经度", "lon", "longitude", "lng", "东经", "经度(°)")
_TOWNSHIP = _c(
    "township", "所属乡镇", "township", "乡镇", "乡镇(街道)", "镇", "乡", blank=Blank.empty
)
_VILLAGE = _c(
    "village", "所属村", "village", "村", "村(社区)", "所属村(社区)", "村名", blank=Blank.empty
)
_VILLAGE_CODE = _c("village_code", "村编码", "village_code", "村代码", blank=Blank.empty)

COLUMNS: Final[dict[RegistryKind, tuple[ColumnSpec, ...]]] = {
    RegistryKind.regions: (
        _c("code", "区域编码", "code", "编码", "区划代码", "代码", required=True),
        _c("name", "名称", "name", "区域名称", "区划名称", required=True),
        _c("level", "级别", "level", "层级", "类型", required=True),
        _c(
            "parent",
            "上级编码",
            "parent_code",
            "上级区域编码",
            "上级代码",
            "parent",
            blank=Blank.empty,
        ),
        _LAT,
        _LON,
        _c("response_minutes", "响应时限(分钟)", "response_minutes", "响应时限", "时限"),
        _c("circuity", "绕行系数", "circuity", "道路系数"),
    ),
    RegistryKind.centres: (
        _c(
            "region",
            "区域编码",
            "region_code",
            "所属区域",
            "区域",
            "所属乡镇",
            "乡镇",
            required=True,
        ),
        _c("region_name", "区域名称", "region_name", informational=True),
        _c("name", "中心名称", "name", "名称", "服务中心", required=True),
        _c("duty_phone", "值班电话", "duty_phone", "电话", "联系电话", required=True),
        _LAT,
        _LON,
        _c("has_vehicle", "有车辆", "has_vehicle", "车辆", "配车", blank=Blank.true),
    ),
    RegistryKind.elders: (
        _c("code", "老人编号", "elder_code", "编号", "档案号", "code", required=True),
        _c("name", "姓名", "name", "老人姓名", required=True),
        _TOWNSHIP,
        _VILLAGE,
        _VILLAGE_CODE,
        _c("address", "住址", "address", "地址", "家庭住址", "居住地址", blank=Blank.empty),
        _LAT,
        _LON,
        _c("living_alone", "独居", "living_alone", blank=Blank.false),
        _c("empty_nest", "空巢", "empty_nest", blank=Blank.false),
        _c("left_behind", "留守", "left_behind", blank=Blank.false),
        _c("disabled", "失能", "disabled", "失能半失能", blank=Blank.false),
        _c("advanced_age", "高龄", "advanced_age", blank=Blank.false),
        _c("wanders", "走失风险", "wanders", "走失", "易走失", blank=Blank.false),
        _c(
            "categories",
            "类别",
            "categories",
            "老人类别",
            "人员类别",
            "特殊困难类型",
            "困难类型",
            blank=Blank.empty,
        ),
        _c(
            "guardian_phones",
            "监护人电话",
            "guardian_phones",
            "监护人联系电话",
            "紧急联系人电话",
            "子女电话",
            blank=Blank.empty,
        ),
        _c("consent", "知情同意", "consent", "同意", blank=Blank.true),
        _c("night_start", "夜间开始", "night_start"),
        _c("night_end", "夜间结束", "night_end"),
    ),
    RegistryKind.devices: (
        _c(
            "device_id",
            "设备编号",
            "device_id",
            "设备号",
            "设备ID",
            "设备id",
            "IMEI",
            required=True,
        ),
        _c("kind", "设备类型", "kind", "类型", "device_kind", required=True),
        _c("elder_code", "老人编号", "elder_code", "编号", required=True),
        _c("elder_name", "老人姓名", "elder_name", "姓名", informational=True),
        _c("heartbeat_interval_s", "心跳间隔(秒)", "heartbeat_interval_s", "心跳间隔"),
        _c("enabled", "启用", "enabled", "在用", blank=Blank.true),
        _c("password", "设备密码", "password", "密码", "device_password", blank=Blank.empty),
    ),
    RegistryKind.aides: (
        _c("name", "姓名", "name", "助老员姓名", required=True),
        _c("phone", "手机号", "phone", "手机", "手机号码", "联系电话", "电话", required=True),
        _TOWNSHIP,
        _VILLAGE,
        _VILLAGE_CODE,
        _LAT,
        _LON,
        _c("travel_mode", "出行方式", "travel_mode", "交通方式", "交通工具"),
        _c("setup_minutes", "准备时间(分钟)", "setup_minutes", "准备时间", "出发准备(分钟)"),
        _c("on_duty", "在岗", "on_duty", "值班", "在班", blank=Blank.true),
        _c("lang", "短信语言", "lang", "语言"),
    ),
}

# Personal data the platform must not keep (PIPL: minimum data): refused with a notice.
_ID_NUMBER_HEADERS: Final = frozenset(
    {
        "身份证号",
        "身份证",
        "身份证号码",
        "公民身份号码",
        "证件号码",
        "id_number",
        "id_card",
        "idnumber",
    }
)
# Columns rosters often have that identify nothing the platform needs: ignored without a word.
_SILENT_HEADERS: Final = frozenset({"序号", "no", "no.", "#", "编号序号", "备注", "note", "notes"})

LEVEL_ALIASES: Final[dict[str, RegionLevel]] = {
    "county": RegionLevel.county,
    "县": RegionLevel.county,
    "区": RegionLevel.county,
    "县区": RegionLevel.county,
    "县级": RegionLevel.county,
    "township": RegionLevel.township,
    "乡镇": RegionLevel.township,
    "乡": RegionLevel.township,
    "镇": RegionLevel.township,
    "街道": RegionLevel.township,
    "乡级": RegionLevel.township,
    "village": RegionLevel.village,
    "村": RegionLevel.village,
    "社区": RegionLevel.village,
    "村(社区)": RegionLevel.village,
    "村级": RegionLevel.village,
}
LEVEL_ZH: Final = {
    RegionLevel.county: "县",
    RegionLevel.township: "乡镇",
    RegionLevel.village: "村",
}
_LEVEL_RANK: Final = {RegionLevel.county: 0, RegionLevel.township: 1, RegionLevel.village: 2}

DEVICE_KIND_ALIASES: Final[dict[str, DeviceKind]] = {
    **{k.value: k for k in DeviceKind},
    "sos": DeviceKind.sos_button,
    "一键呼叫": DeviceKind.sos_button,
    "一键呼叫器": DeviceKind.sos_button,
    "呼叫器": DeviceKind.sos_button,
    "紧急呼叫": DeviceKind.sos_button,
    "sos按钮": DeviceKind.sos_button,
    "床垫": DeviceKind.bed_sensor,
    "智能床垫": DeviceKind.bed_sensor,
    "床位传感器": DeviceKind.bed_sensor,
    "离床感应": DeviceKind.bed_sensor,
    "bed": DeviceKind.bed_sensor,
    "网关": DeviceKind.hub,
    "主机": DeviceKind.hub,
    "智能网关": DeviceKind.hub,
    "烟感": DeviceKind.smoke,
    "烟雾报警器": DeviceKind.smoke,
    "烟雾": DeviceKind.smoke,
    "燃气": DeviceKind.gas,
    "燃气报警器": DeviceKind.gas,
    "可燃气体": DeviceKind.gas,
    "水浸": DeviceKind.water,
    "水浸报警器": DeviceKind.water,
}
DEVICE_KIND_ZH: Final = {
    DeviceKind.sos_button: "一键呼叫",
    DeviceKind.bed_sensor: "智能床垫",
    DeviceKind.hub: "网关",
    DeviceKind.smoke: "烟感",
    DeviceKind.gas: "燃气",
    DeviceKind.water: "水浸",
}
# Mains-powered devices poll every minute; battery detectors less often (device_sim.region).
DEFAULT_HEARTBEAT_S: Final = {
    DeviceKind.smoke: 300,
    DeviceKind.gas: 300,
    DeviceKind.water: 300,
}
TRAVEL_MODE_ALIASES: Final[dict[str, str]] = {
    "walking": "walking",
    "步行": "walking",
    "走路": "walking",
    "ebike": "ebike",
    "电动车": "ebike",
    "电瓶车": "ebike",
    "电动自行车": "ebike",
    "motorbike": "motorbike",
    "摩托车": "motorbike",
    "摩托": "motorbike",
    "car": "car",
    "汽车": "car",
    "小车": "car",
    "轿车": "car",
    "私家车": "car",
}
TRAVEL_MODE_ZH: Final = {"walking": "步行", "ebike": "电动车", "motorbike": "摩托车", "car": "汽车"}
# Category words in a roster's 类别 column and the flag each sets.
CATEGORY_WORDS: Final = {
    "独居": "living_alone",
    "空巢": "empty_nest",
    "留守": "left_behind",
    "失能": "disabled",
    "半失能": "disabled",
    "高龄": "advanced_age",
    "走失": "wanders",
}
ELDER_FLAGS: Final = (
    "living_alone",
    "empty_nest",
    "left_behind",
    "disabled",
    "advanced_age",
    "wanders",
)
_TRUE_WORDS: Final = frozenset(
    {"是", "有", "y", "yes", "true", "1", "√", "✓", "✔", "在岗", "启用", "t"}
)
_FALSE_WORDS: Final = frozenset(
    {"否", "无", "没有", "n", "no", "false", "0", "×", "✗", "f", "-", "—"}
)
_LIST_SEPARATORS: Final = re.compile(r"[;；,，、/\s]+")
_CODE_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_HHMM_RE: Final = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
_E164_RE: Final = re.compile(r"^\+[1-9][0-9]{7,14}$")
MAX_GUARDIAN_PHONES: Final = 5
CENTRE_SETUP_MINUTES: Final = 5.0
AIDE_SETUP_MINUTES: Final = 2.0


# --- findings and reports ---------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """A refused row (or a notice) at a place a person can find in the spreadsheet."""

    sheet: str
    row: int | None  # as the spreadsheet numbers it (header = 1 unless a title row is above)
    column: str | None  # the header as written in the file
    message: str

    def __str__(self) -> str:
        where = [self.sheet]
        if self.row is not None:
            where.append(f"第{self.row}行 row {self.row}")
        if self.column:
            where.append(f"列「{self.column}」")
        return f"{' '.join(where)}: {self.message}"


@dataclass
class SheetReport:
    sheet: str
    kind: RegistryKind | None
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    refused: list[Finding] = field(default_factory=list)
    notices: list[Finding] = field(default_factory=list)

    @property
    def refused_rows(self) -> int:
        return len({f.row for f in self.refused if f.row is not None})

    @property
    def sheet_refused(self) -> bool:
        """The whole sheet was refused (a missing column, an unknown kind)."""
        return any(f.row is None for f in self.refused)


@dataclass
class ImportReport:
    source: str
    sheets: list[SheetReport] = field(default_factory=list)
    dry_run: bool = False
    strict: bool = False
    committed: bool = False
    # Set when nothing was stored for a reason beyond single rows (database refusal, strict).
    failure: str | None = None

    @property
    def refused(self) -> list[Finding]:
        """Sheet by sheet, in row order (a sheet-wide refusal first), whichever check found
        them: the parse, a duplicate key, or a reference the database did not have."""
        return [f for s in self.sheets for f in sorted(s.refused, key=_row_order)]

    @property
    def notices(self) -> list[Finding]:
        return [f for s in self.sheets for f in s.notices]

    @property
    def changed(self) -> int:
        return sum(s.created + s.updated for s in self.sheets)

    @property
    def ok(self) -> bool:
        return not self.refused and self.failure is None

    def as_dict(self) -> dict[str, Any]:
        """JSON for the web API: counts per sheet, and every refusal and notice with its place."""

        def finding(f: Finding) -> dict[str, Any]:
            return {"sheet": f.sheet, "row": f.row, "column": f.column, "message": f.message}

        return {
            "source": self.source,
            "committed": self.committed,
            "dry_run": self.dry_run,
            "strict": self.strict,
            "failure": self.failure,
            "sheets": [
                {
                    "sheet": s.sheet,
                    "kind": s.kind.value if s.kind else None,
                    "rows": s.rows,
                    "created": s.created,
                    "updated": s.updated,
                    "unchanged": s.unchanged,
                    "refused_rows": s.refused_rows,
                }
                for s in self.sheets
            ],
            "refused": [finding(f) for f in self.refused],
            "notices": [finding(f) for f in self.notices],
        }

    def summary_lines(self) -> list[str]:
        lines: list[str] = []
        for s in self.sheets:
            kind = f"{SHEET_TITLES[s.kind]}/{s.kind.value}" if s.kind else "?"
            lines.append(
                f"{s.sheet} ({kind}): 新增 {s.created} created, 更新 {s.updated} updated, "
                f"未变 {s.unchanged} unchanged, 拒绝 {s.refused_rows} rows refused"
            )
        if self.failure:
            lines.append(f"未导入任何数据 / nothing was imported: {self.failure}")
        elif self.dry_run:
            lines.append("仅检查，未写入 / dry run: nothing was written")
        for finding in self.refused:
            lines.append(f"拒绝 refused — {finding}")
        for sheet in self.sheets:
            for line in _folded(sorted(sheet.notices, key=_row_order)):
                lines.append(f"提示 note — {line}")
        return lines


def _row_order(finding: Finding) -> int:
    return -1 if finding.row is None else finding.row


def _rows_text(rows: Sequence[int], shown: int = 5) -> str:
    """2, 3, 4, 5, 9 → 2–5、9 (at most `shown` runs, then …)."""
    runs: list[tuple[int, int]] = []
    for row in sorted(set(rows)):
        if runs and row == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], row)
        else:
            runs.append((row, row))
    text = "、".join(f"{a}–{b}" if b > a else str(a) for a, b in runs[:shown])
    return text + ("…" if len(runs) > shown else "")


FOLD_AT: Final = 4  # this many identical notes and more are one line with a count


def _folded(findings: Sequence[Finding]) -> list[str]:
    """Notes as lines; the same note on many rows (a thousand devices without a password) is
    one line with the count and the rows, in the place of its first row."""
    groups: dict[tuple[str, str | None, str], list[Finding]] = {}
    for f in findings:
        groups.setdefault((f.sheet, f.column, f.message), []).append(f)
    lines: list[str] = []
    for (sheet, column, message), same in groups.items():
        rows = [f.row for f in same if f.row is not None]
        if len(rows) < FOLD_AT:
            lines.extend(str(f) for f in same)
            continue
        where = f"{sheet} 列「{column}」" if column else sheet
        lines.append(
            f"{where}: {message}（共 {len(rows)} 行 / {len(rows)} rows: 第{_rows_text(rows)}行）"
        )
    return lines


class RegistryFileError(ValueError):
    """The file cannot be read at all (format, encoding)."""


# --- reading files (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """One sheet's cells as text, rows numbered as the spreadsheet shows them (from 1)."""

    name: str
    rows: tuple[tuple[int, tuple[str, ...]], ...]


def cell_text(value: object) -> str:
    """A cell as the text a person sees: Excel keeps phone numbers as numbers, flags as bools."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) >= 1e6:  # a phone number typed as a number
            return str(int(value))
        return repr(value)
    if isinstance(value, datetime):
        # Excel keeps a time of day as a date-time on its epoch day (1899-12-30/31, 1900-01-01).
        return value.strftime("%H:%M") if value.year <= 1900 else value.isoformat()
    if isinstance(value, time):  # a time-formatted cell
        return value.strftime("%H:%M")
    if isinstance(value, date):
        return value.isoformat()
    return str(value).strip()


def read_csv_bytes(data: bytes, name: str) -> Table:
    """CSV in UTF-8 (with or without BOM) or GB18030, the encoding Chinese Excel saves CSV in."""
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:  # pragma: no cover - gb18030 decodes any byte string
        raise RegistryFileError(f"{name}: 无法识别的编码 / cannot decode (use UTF-8 or GB18030)")
    sample = text[:4096]
    delimiter = "\t" if sample.count("\t") > sample.count(",") else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    rows = tuple(
        (n, tuple(csv_unsafe(c.strip()) for c in row)) for n, row in enumerate(reader, start=1)
    )
    return Table(name, rows)


def read_xlsx_bytes(data: bytes) -> list[Table]:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds for a damaged or foreign file
        raise RegistryFileError(f"无法读取 Excel 文件 / not a readable .xlsx file: {exc}") from exc
    tables: list[Table] = []
    try:
        for sheet in workbook.worksheets:
            rows = tuple(
                (n, tuple(cell_text(v) for v in values))
                for n, values in enumerate(sheet.iter_rows(values_only=True), start=1)
            )
            tables.append(Table(sheet.title, rows))
    finally:
        workbook.close()
    return tables


def read_tables(data: bytes, filename: str) -> list[Table]:
    suffix = Path(filename).suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        return read_xlsx_bytes(data)
    if suffix in (".csv", ".tsv", ".txt"):
        return [read_csv_bytes(data, Path(filename).stem)]
    if suffix == ".xls":
        raise RegistryFileError(
            f"{filename}: 旧版 .xls 请另存为 .xlsx 或 .csv / save old .xls files as .xlsx or .csv"
        )
    raise RegistryFileError(f"{filename}: 只支持 .xlsx 和 .csv / only .xlsx and .csv are supported")


# --- parsing rows (pure) ----------------------------------------------------------------------


def normalise_header(header: str) -> str:
    """`经度（°）*`, ` Elder Code ` → comparable keys: width, case, spaces, marks, units."""
    text = header.strip().replace("（", "(").replace("）", ")").replace("＊", "*")
    text = text.strip("*").strip()
    text = re.sub(r"\s+", "_", text.lower())
    return text


def _header_key(header: str) -> str:
    """Also without a unit in brackets: `心跳间隔(秒)` matches `心跳间隔`."""
    return re.sub(r"\(.*?\)$", "", normalise_header(header)).strip("_")


def _header_index(kind: RegistryKind) -> dict[str, ColumnSpec]:
    index: dict[str, ColumnSpec] = {}
    for spec in COLUMNS[kind]:
        for header in spec.headers:
            index.setdefault(normalise_header(header), spec)
            index.setdefault(_header_key(header), spec)
    return index


_HEADER_INDEX: Final = {kind: _header_index(kind) for kind in RegistryKind}


def _match(kind: RegistryKind, header: str) -> ColumnSpec | None:
    index = _HEADER_INDEX[kind]
    return index.get(normalise_header(header)) or index.get(_header_key(header))


def _is_ignored_header(header: str) -> bool:
    key = normalise_header(header)
    return key in _ID_NUMBER_HEADERS or key in _SILENT_HEADERS


def _matched_required(kind: RegistryKind, headers: Sequence[str]) -> int:
    found = {s.field for h in headers if (s := _match(kind, h)) is not None and s.required}
    return len(found)


def _required_count(kind: RegistryKind) -> int:
    return sum(1 for s in COLUMNS[kind] if s.required)


def find_header_row(table: Table) -> int | None:
    """The index (in table.rows) of the header: a roster may have a title row or two above it."""
    best: tuple[int, int] | None = None
    for index, (_, cells) in enumerate(table.rows[:10]):
        known = sum(
            1 for cell in cells if cell and any(_match(kind, cell) for kind in RegistryKind)
        )
        if known >= 2 and (best is None or known > best[1]):
            best = (index, known)
    return None if best is None else best[0]


def guess_kind(table: Table, header_cells: Sequence[str]) -> RegistryKind | None:
    """The kind whose required columns all appear, preferring one the sheet or file name
    suggests (区域, 老人…); a name hint alone still decides when no kind is complete, so the
    user hears which columns are missing."""
    name = table.name.strip().lower()
    hinted = [kind for kind, hints in _KIND_NAME_HINTS.items() if any(h in name for h in hints)]

    def complete(kind: RegistryKind) -> bool:
        return _matched_required(kind, header_cells) == _required_count(kind)

    for kind in hinted:
        if complete(kind):
            return kind

    def recognised(kind: RegistryKind) -> int:
        return sum(1 for h in header_cells if h and _match(kind, h) is not None)

    ranked = sorted((k for k in RegistryKind if complete(k)), key=recognised, reverse=True)
    if ranked and (len(ranked) == 1 or recognised(ranked[0]) > recognised(ranked[1])):
        return ranked[0]
    return hinted[0] if hinted else None


@dataclass(frozen=True)
class ParsedRow:
    row: int
    values: dict[str, Any]  # field → parsed value; fields whose cell meant "keep" are absent
    columns: dict[str, str]  # field → the header as written, to report problems by column


@dataclass
class ParsedSheet:
    table_name: str
    kind: RegistryKind | None
    rows: list[ParsedRow] = field(default_factory=list)
    refused: list[Finding] = field(default_factory=list)
    notices: list[Finding] = field(default_factory=list)
    total_rows: int = 0
    # The natural keys (a region's code and name too) of this sheet's refused rows → their row.
    refused_keys: dict[str, int] = field(default_factory=dict)
    # Set by apply_sheets: the parents (elders for devices, regions for elders and aides)
    # refused in the same file, key → (sheet, row), so a child can say why it has no parent.
    parents_refused: dict[str, tuple[str, int]] = field(default_factory=dict)


def _keys_of(kind: RegistryKind, values: dict[str, Any]) -> list[str]:
    keys = [values.get(_KEY_FIELD[kind])]
    if kind is RegistryKind.regions:
        keys.append(values.get("name"))
    return [str(k) for k in keys if k]


class CellError(ValueError):
    pass


def parse_bool(text: str) -> bool:
    key = text.strip().lower()
    if key in _TRUE_WORDS:
        return True
    if key in _FALSE_WORDS:
        return False
    raise CellError(f"应填“是”或“否”，而不是“{text}” / expected yes or no")


def parse_phone(text: str) -> str:
    """Mobile or landline numbers as people write them → E.164 (+86…), what SMS needs."""
    raw = text.strip()
    digits = re.sub(r"[\s\-()（）.]", "", raw)
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    if digits.startswith("+"):
        number = digits
    elif digits.startswith("86") and len(digits) == 13:
        number = "+" + digits
    elif re.fullmatch(r"1[3-9][0-9]{9}", digits):
        number = "+86" + digits
    elif re.fullmatch(r"0[1-9][0-9]{8,10}", digits):  # landline with area code: 0915-1234567
        number = "+86" + digits[1:]
    else:
        raise CellError(f"“{raw}”不是有效的电话号码 / not a phone number")
    if not _E164_RE.match(number):
        raise CellError(f"“{raw}”不是有效的电话号码 / not a phone number")
    return number


def parse_phones(text: str) -> list[str]:
    phones: list[str] = []
    # Numbers written with spaces inside ("138 0013 8000") stay one number.
    for part in re.split(r"[;；,，、/]+|\s{2,}", text.strip()):
        if not part.strip():
            continue
        try:
            phone = parse_phone(part)
        except CellError:
            # "13800138000 13900139000": separated by single spaces
            pieces = [p for p in _LIST_SEPARATORS.split(part) if p]
            if len(pieces) < 2:
                raise
            phone_list = [parse_phone(p) for p in pieces]
            phones.extend(p for p in phone_list if p not in phones)
            continue
        if phone not in phones:
            phones.append(phone)
    if len(phones) > MAX_GUARDIAN_PHONES:
        raise CellError(
            f"最多 {MAX_GUARDIAN_PHONES} 个号码 / at most {MAX_GUARDIAN_PHONES} numbers"
        )
    return phones


def parse_float(text: str, low: float, high: float, what: str) -> float:
    try:
        value = float(text.replace("，", ".").replace("°", "").strip())
    except ValueError:
        raise CellError(f"“{text}”不是数字 / {what} must be a number") from None
    if not low <= value <= high:
        raise CellError(f"{value:g} 超出范围 {low:g}–{high:g} / {what} out of range")
    return value


def parse_int(text: str, low: int, high: int, what: str) -> int:
    value = parse_float(text, low, high, what)
    if not value.is_integer():
        raise CellError(f"“{text}”应为整数 / {what} must be a whole number")
    return int(value)


def parse_code(text: str) -> str:
    if not _CODE_RE.match(text):
        raise CellError(
            f"“{text}”：编码只能用字母、数字、- 和 _，最长 32 位 / "
            "codes are 1–32 letters, digits, - or _"
        )
    return text


def parse_text(text: str, max_length: int, what: str) -> str:
    if len(text) > max_length:
        raise CellError(f"{what}超过 {max_length} 字 / {what} longer than {max_length} characters")
    return text


def _lookup(aliases: dict[str, Any], text: str, what: str, choices: Iterable[str]) -> Any:
    key = text.strip().lower().replace(" ", "")
    if key in aliases:
        return aliases[key]
    raise CellError(f"不认识的{what}“{text}”（可填：{'、'.join(choices)}）/ unknown {what}")


def _parse_cell(kind: RegistryKind, spec: ColumnSpec, text: str) -> Any:
    """One non-empty cell → its value, or CellError with a message for a person."""
    name = spec.field
    if name in ("lat",):
        return parse_float(text, -90, 90, "纬度 latitude")
    if name in ("lon",):
        return parse_float(text, -180, 180, "经度 longitude")
    if name in ELDER_FLAGS or name in ("consent", "has_vehicle", "enabled", "on_duty"):
        return parse_bool(text)
    if name in ("phone", "duty_phone"):
        return parse_phone(text)
    if name == "guardian_phones":
        return parse_phones(text)
    if name == "code" or name in ("parent", "village_code", "elder_code"):
        return parse_code(text)
    if name == "device_id":
        if not DEVICE_ID_RE.match(text):
            raise CellError(
                f"“{text}”：设备编号只能用字母、数字、- 和 _，最长 64 位 / "
                "device ids are 1–64 letters, digits, - or _"
            )
        return text
    if name == "level":
        return _lookup(dict(LEVEL_ALIASES), text, "级别 level", LEVEL_ZH.values())
    if name == "kind":
        return _lookup(
            dict(DEVICE_KIND_ALIASES), text, "设备类型 device kind", DEVICE_KIND_ZH.values()
        )
    if name == "travel_mode":
        return _lookup(
            dict(TRAVEL_MODE_ALIASES), text, "出行方式 travel mode", TRAVEL_MODE_ZH.values()
        )
    if name == "response_minutes":
        return parse_int(text, 1, 240, "响应时限 response minutes")
    if name == "circuity":
        return parse_float(text, 1.0, 5.0, "绕行系数 circuity")
    if name == "heartbeat_interval_s":
        return parse_int(text, 10, 86400, "心跳间隔 heartbeat interval")
    if name == "setup_minutes":
        return parse_float(text, 0, 120, "准备时间 setup minutes")
    if name in ("night_start", "night_end"):
        value = text if len(text) != 4 else "0" + text  # 6:00 → 06:00
        if not _HHMM_RE.match(value):
            raise CellError(f"“{text}”应为 时:分，如 22:00 / expected HH:MM")
        return value
    if name == "lang":
        lang = text.strip().lower()
        if lang in ("中文", "zh", "chinese", "汉语"):
            return "zh"
        if lang in ("英文", "en", "english", "英语"):
            return "en"
        raise CellError(f"短信语言填“中文”或“英文” / lang is zh or en, not {text!r}")
    if name == "categories":
        return [flag for word, flag in CATEGORY_WORDS.items() if word in text]
    if name == "name":
        return parse_text(
            text, 64 if kind in (RegistryKind.regions, RegistryKind.centres) else 32, "名称"
        )
    if name == "address":
        return parse_text(text, 128, "住址")
    if name == "password":
        if len(text) < 8:
            raise CellError("设备密码至少 8 位 / a device password has at least 8 characters")
        return text
    return parse_text(text, 64, spec.zh)


def _blank_value(spec: ColumnSpec) -> Any:
    if spec.blank is Blank.false:
        return False
    if spec.blank is Blank.true:
        return True
    if spec.blank is Blank.empty:
        return [] if spec.field in ("guardian_phones", "categories") else ""
    return KEEP


def parse_table(table: Table, kind: RegistryKind | None = None) -> ParsedSheet:
    """Check every row of one sheet; the good ones become ParsedRows, the bad ones Findings."""
    header_index = find_header_row(table)
    header_cells: tuple[str, ...] = table.rows[header_index][1] if header_index is not None else ()
    kind = kind or guess_kind(table, header_cells)
    sheet = ParsedSheet(table.name, kind)
    if header_index is None or kind is None:
        if any(any(cells) for _, cells in table.rows):
            sheet.refused.append(
                Finding(
                    table.name,
                    None,
                    None,
                    "看不出这张表是区域、服务中心、老人、设备还是助老员：请用模板的表头或表名 / "
                    "cannot tell which registry this sheet holds: use the template's headers "
                    "or name the sheet (区域, 服务中心, 老人, 设备, 助老员)",
                )
            )
        return sheet

    columns: dict[int, ColumnSpec] = {}
    seen_fields: dict[str, str] = {}
    for position, header in enumerate(header_cells):
        if not header:
            continue
        key = normalise_header(header)
        if key in _ID_NUMBER_HEADERS:
            sheet.notices.append(
                Finding(
                    table.name,
                    None,
                    header,
                    "身份证号不导入、不保存（个人信息最小化） / ID numbers are not imported "
                    "(PIPL: minimum data)",
                )
            )
            continue
        spec = _match(kind, header)
        if spec is None:
            if not _is_ignored_header(header):
                sheet.notices.append(
                    Finding(
                        table.name,
                        None,
                        header,
                        "平台不需要这一列，已忽略 / column not used by the platform, ignored",
                    )
                )
            continue
        if spec.informational:
            continue
        if spec.field in seen_fields:
            sheet.notices.append(
                Finding(
                    table.name,
                    None,
                    header,
                    f"与列「{seen_fields[spec.field]}」重复，已忽略 / duplicate of column "
                    f"{seen_fields[spec.field]!r}, ignored",
                )
            )
            continue
        seen_fields[spec.field] = header
        columns[position] = spec

    sheet.notices.extend(_unheaded_data(table, header_index, header_cells))
    missing = [s for s in COLUMNS[kind] if s.required and s.field not in seen_fields]
    if kind in (RegistryKind.elders, RegistryKind.aides) and not (
        {"village", "village_code"} & seen_fields.keys()
    ):
        missing.append(_VILLAGE)
    if missing:
        names = "、".join(f"{s.zh}({s.en})" for s in missing)
        sheet.refused.append(
            Finding(table.name, None, None, f"缺少必填列 / missing required columns: {names}")
        )
        return sheet

    for row_number, cells in table.rows[header_index + 1 :]:
        if not any(cells):
            continue
        sheet.total_rows += 1
        values: dict[str, Any] = {}
        problems: list[Finding] = []
        for position, spec in columns.items():
            text = cells[position].strip() if position < len(cells) else ""
            header = seen_fields[spec.field]
            if not text:
                if spec.required:
                    problems.append(
                        Finding(table.name, row_number, header, "必填项为空 / required, empty")
                    )
                    continue
                blank = _blank_value(spec)
                if blank is not KEEP:
                    values[spec.field] = blank
                continue
            try:
                values[spec.field] = _parse_cell(kind, spec, text)
            except CellError as exc:
                problems.append(Finding(table.name, row_number, header, str(exc)))
        problems.extend(_row_checks(kind, table.name, row_number, values, seen_fields))
        if problems:
            sheet.refused.extend(problems)
            for key in _keys_of(kind, values):
                sheet.refused_keys.setdefault(key, row_number)
        else:
            sheet.rows.append(ParsedRow(row_number, values, dict(seen_fields)))
    _refuse_duplicate_keys(sheet)
    return sheet


def column_letter(position: int) -> str:
    """0 → A, 25 → Z, 26 → AA: how a spreadsheet names a column."""
    letters = ""
    position += 1
    while position:
        position, rest = divmod(position - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


_NOTE_HEADERS: Final = frozenset({"备注", "note", "notes"})


def _unheaded_data(table: Table, header_index: int, header_cells: Sequence[str]) -> list[Finding]:
    """Every other column whose contents are dropped gets a note too: one without a header (or
    beyond the header's last cell) that holds data, and a 备注 column that holds any."""
    filled: set[int] = set()
    for _, cells in table.rows[header_index + 1 :]:
        filled.update(i for i, cell in enumerate(cells) if cell.strip())
    notes: list[Finding] = []
    for position in sorted(filled):
        header = header_cells[position] if position < len(header_cells) else ""
        letter = column_letter(position)
        if not header:
            notes.append(
                Finding(
                    table.name,
                    None,
                    None,
                    f"第{letter}列没有表头，其中的内容已忽略 / column {letter} has data but no "
                    "header: ignored",
                )
            )
        elif normalise_header(header) in _NOTE_HEADERS:
            notes.append(
                Finding(
                    table.name,
                    None,
                    header,
                    "备注不导入，平台不保存 / notes are not imported",
                )
            )
    return notes


def _row_checks(
    kind: RegistryKind,
    sheet: str,
    row: int,
    values: dict[str, Any],
    headers: dict[str, str],
) -> list[Finding]:
    """Checks across cells of one row."""
    problems: list[Finding] = []
    lat, lon = values.get("lat"), values.get("lon")
    if (lat is None) != (lon is None):
        missing = "lon" if lon is None else "lat"
        problems.append(
            Finding(
                sheet,
                row,
                headers.get(missing),
                "经度和纬度要一起填 / give both latitude and longitude, or neither",
            )
        )
    elif lat is not None and lon is not None and 73 <= lat <= 136 and 3 <= lon <= 54:
        # China lies at lat 3–54, lon 73–136: these two are the wrong way round.
        problems.append(
            Finding(
                sheet,
                row,
                headers.get("lat"),
                "经度和纬度好像填反了 / latitude and longitude look swapped",
            )
        )
    if kind is RegistryKind.elders:
        for flag in values.pop("categories", []):
            values[flag] = True
        if values.get("living_alone") and values.get("empty_nest"):
            problems.append(
                Finding(
                    sheet,
                    row,
                    headers.get("empty_nest") or headers.get("categories"),
                    "独居和空巢不能同时为“是” / living alone and empty-nest exclude each other",
                )
            )
    return problems


def _natural_key(kind: RegistryKind, values: dict[str, Any]) -> object:
    return {
        RegistryKind.regions: values.get("code"),
        RegistryKind.centres: values.get("region"),
        RegistryKind.elders: values.get("code"),
        RegistryKind.devices: values.get("device_id"),
        RegistryKind.aides: values.get("phone"),
    }[kind]


_KEY_FIELD: Final = {
    RegistryKind.regions: "code",
    RegistryKind.centres: "region",
    RegistryKind.elders: "code",
    RegistryKind.devices: "device_id",
    RegistryKind.aides: "phone",
}


def _refuse_duplicate_keys(sheet: ParsedSheet) -> None:
    """The same natural key twice in one sheet: the first row wins, the later ones are refused
    (importing both would silently let the last one overwrite the first)."""
    assert sheet.kind is not None
    first_row: dict[object, int] = {}
    kept: list[ParsedRow] = []
    for parsed in sheet.rows:
        key = _natural_key(sheet.kind, parsed.values)
        if key in first_row:
            column = parsed.columns.get(_KEY_FIELD[sheet.kind])
            sheet.refused.append(
                Finding(
                    sheet.table_name,
                    parsed.row,
                    column,
                    f"与第{first_row[key]}行重复 / duplicate of row {first_row[key]}",
                )
            )
            continue
        first_row[key] = parsed.row
        kept.append(parsed)
    sheet.rows = kept


def parse_file(data: bytes, filename: str, kind: RegistryKind | None = None) -> list[ParsedSheet]:
    """Read and check a CSV or .xlsx file; empty sheets are skipped."""
    sheets = [parse_table(t, kind) for t in read_tables(data, filename)]
    return [s for s in sheets if s.kind is not None or s.refused]


# --- applying to the database -----------------------------------------------------------------


@dataclass
class _RegionView:
    id: int
    code: str
    name: str
    level: str
    parent_id: int | None
    lat: float | None
    lon: float | None


class _Regions:
    """Every region, by id, code and name (regions are few: thousands in a city)."""

    def __init__(self, rows: Iterable[Region]) -> None:
        self.by_id: dict[int, _RegionView] = {}
        self.by_code: dict[str, _RegionView] = {}
        for r in rows:
            assert r.id is not None
            view = _RegionView(r.id, r.code, r.name, r.level, r.parent_id, r.lat, r.lon)
            self.by_id[view.id] = view
            self.by_code[view.code] = view

    @classmethod
    async def load(cls, session: AsyncSession) -> _Regions:
        return cls((await session.execute(select(Region))).scalars())

    def find_village(self, village: str, township: str) -> tuple[_RegionView | None, str]:
        """A village by code, else by name (`柳树坪` or `柳树坪村`), narrowed by township."""
        found = self.by_code.get(village)
        if found is not None:
            return (found, "") if found.level == RegionLevel.village else (None, "not_village")
        names = {village, village.removesuffix("村"), village + "村"}
        candidates = [
            r for r in self.by_id.values() if r.level == RegionLevel.village and r.name in names
        ]
        if township:
            candidates = [c for c in candidates if self._township_matches(c, township)]
        if len(candidates) == 1:
            return candidates[0], ""
        return None, "ambiguous" if candidates else "unknown"

    def _township_matches(self, village: _RegionView, township: str) -> bool:
        parent = self.by_id.get(village.parent_id) if village.parent_id else None
        if parent is None:
            return False
        return township in (parent.code, parent.name) or parent.name.rstrip(
            "镇乡"
        ) == township.rstrip("镇乡")

    def township_of(self, region_id: int) -> _RegionView | None:
        region = self.by_id.get(region_id)
        return self.by_id.get(region.parent_id) if region and region.parent_id else None


def _village_problem(reason: str, text: str) -> str:
    if reason == "not_village":
        return f"“{text}”是乡镇或县的编码，不是村 / {text!r} is not a village"
    if reason == "ambiguous":
        return (
            f"有多个村叫“{text}”：请填村编码或所属乡镇 / several villages are called {text!r}: "
            "give the village code or the township"
        )
    return f"找不到村“{text}”：请先导入区域表 / unknown village {text!r}: import the regions first"


def _resolve_village(
    regions: _Regions,
    parsed: ParsedRow,
    sheet: str,
    refused: dict[str, tuple[str, int]] | None = None,
) -> tuple[_RegionView | None, Finding | None]:
    code = parsed.values.get("village_code") or ""
    text = code or parsed.values.get("village") or ""
    column = parsed.columns.get("village_code" if code else "village")
    if not text:
        return None, Finding(sheet, parsed.row, column, "必填项为空 / required, empty")
    village, reason = regions.find_village(text, parsed.values.get("township") or "")
    if village is None:
        refused = refused or {}
        where = next(
            (refused[n] for n in (text, text.removesuffix("村"), text + "村") if n in refused),
            None,
        )
        if reason == "unknown" and where is not None:
            return None, Finding(sheet, parsed.row, column, _refused_in_file("村", text, where))
        return None, Finding(sheet, parsed.row, column, _village_problem(reason, text))
    return village, None


def _coordinates(
    parsed: ParsedRow,
    existing: Any | None,
    village: _RegionView,
    sheet: str,
    report: SheetReport,
) -> tuple[float, float] | Finding:
    """Coordinates from the row, else what is stored, else the village centre (with a notice:
    the aide's estimated arrival is rough until the home's own position is known)."""
    if "lat" in parsed.values:
        return parsed.values["lat"], parsed.values["lon"]
    if existing is not None:
        return existing.lat, existing.lon
    if village.lat is not None and village.lon is not None:
        report.notices.append(
            Finding(
                sheet,
                parsed.row,
                parsed.columns.get("lat"),
                "没有经纬度，暂用村中心位置 / no coordinates: using the village centre",
            )
        )
        return village.lat, village.lon
    return Finding(
        sheet,
        parsed.row,
        parsed.columns.get("lat"),
        "缺少经纬度，村也没有位置 / coordinates needed (the village has none either)",
    )


def _differs(row: Any, values: dict[str, Any]) -> bool:
    return any(getattr(row, name) != value for name, value in values.items())


async def _apply_regions(session: AsyncSession, sheet: ParsedSheet, report: SheetReport) -> None:
    regions = await _Regions.load(session)
    rows = {r.code: r for r in (await session.execute(select(Region))).scalars()}
    # Parents first, whatever the row order.
    ordered = sorted(sheet.rows, key=lambda p: _LEVEL_RANK[p.values["level"]])
    for parsed in ordered:
        v = parsed.values
        level: RegionLevel = v["level"]
        parent_code: str = v.get("parent", "")
        parent_id: int | None = None
        expected_parent = {
            RegionLevel.county: None,
            RegionLevel.township: RegionLevel.county,
            RegionLevel.village: RegionLevel.township,
        }[level]
        parent_column = parsed.columns.get("parent")
        if expected_parent is None:
            if parent_code:
                report.refused.append(
                    Finding(
                        sheet.table_name,
                        parsed.row,
                        parent_column,
                        "县是最高一级，不能有上级 / a county has no parent region",
                    )
                )
                continue
        else:
            parent = regions.by_code.get(parent_code) if parent_code else None
            if parent is None or parent.level != expected_parent:
                wanted = LEVEL_ZH[expected_parent]
                report.refused.append(
                    Finding(
                        sheet.table_name,
                        parsed.row,
                        parent_column,
                        (
                            f"上级编码“{parent_code}”不存在 / unknown parent {parent_code!r}"
                            if parent is None and parent_code
                            else f"{LEVEL_ZH[level]}的上级必须是{wanted} / a {level.value}'s "
                            f"parent must be a {expected_parent.value}"
                        ),
                    )
                )
                continue
            parent_id = parent.id
        existing = rows.get(v["code"])
        if existing is not None and existing.level != level:
            report.refused.append(
                Finding(
                    sheet.table_name,
                    parsed.row,
                    parsed.columns.get("level"),
                    f"编码已是{LEVEL_ZH[RegionLevel(existing.level)]}，不能改为{LEVEL_ZH[level]} / "
                    "a region's level cannot change",
                )
            )
            continue
        values: dict[str, Any] = {
            "name": v["name"],
            "level": level.value,
            "parent_id": parent_id,
        }
        for name in ("lat", "lon", "response_minutes", "circuity"):
            if name in v:
                values[name] = v[name]
        if existing is None:
            region = Region(code=v["code"], **values)
            session.add(region)
            await session.flush()
            rows[region.code] = region
            report.created += 1
        elif _differs(existing, values):
            for name, value in values.items():
                setattr(existing, name, value)
            region = existing
            report.updated += 1
        else:
            region = existing
            report.unchanged += 1
        assert region.id is not None
        view = _RegionView(
            region.id,
            region.code,
            region.name,
            region.level,
            region.parent_id,
            region.lat,
            region.lon,
        )
        regions.by_code[view.code] = view
        regions.by_id[view.id] = view
    await session.flush()


def _responder_kind_for(level: str) -> str:
    return (
        ResponderKind.county_centre
        if level == RegionLevel.county
        else ResponderKind.township_centre
    )


async def _apply_centres(session: AsyncSession, sheet: ParsedSheet, report: SheetReport) -> None:
    regions = await _Regions.load(session)
    centres = {c.region_id: c for c in (await session.execute(select(ServiceCentre))).scalars()}
    phones = [p.values["duty_phone"] for p in sheet.rows]
    holders = {
        r.phone: r
        for r in (
            await session.execute(select(Responder).where(col(Responder.phone).in_(phones)))
        ).scalars()
    }
    for parsed in sheet.rows:
        v = parsed.values
        region = regions.by_code.get(v["region"])
        if region is None:
            by_name = [r for r in regions.by_id.values() if r.name == v["region"]]
            region = by_name[0] if len(by_name) == 1 else None
        if region is None or region.level == RegionLevel.village:
            report.refused.append(
                Finding(
                    sheet.table_name,
                    parsed.row,
                    parsed.columns.get("region"),
                    (
                        f"找不到区域“{v['region']}” / unknown region {v['region']!r}"
                        if region is None
                        else "服务中心只设在乡镇或县 / centres belong to a township or county"
                    ),
                )
            )
            continue
        existing = centres.get(region.id)
        holder = holders.get(v["duty_phone"])
        if holder is not None and (existing is None or holder.centre_id != existing.id):
            report.refused.append(
                Finding(
                    sheet.table_name,
                    parsed.row,
                    parsed.columns.get("duty_phone"),
                    f"这个号码已属于“{holder.name}” / this number already belongs to {holder.name}",
                )
            )
            continue
        lat_lon = (
            (v["lat"], v["lon"])
            if "lat" in v
            else (existing.lat, existing.lon)
            if existing is not None
            else (region.lat, region.lon)
        )
        if lat_lon[0] is None or lat_lon[1] is None:
            report.refused.append(
                Finding(
                    sheet.table_name,
                    parsed.row,
                    parsed.columns.get("lat"),
                    "缺少经纬度 / coordinates needed",
                )
            )
            continue
        values: dict[str, Any] = {
            "level": region.level,
            "name": v["name"],
            "duty_phone": v["duty_phone"],
            "lat": lat_lon[0],
            "lon": lat_lon[1],
            "has_vehicle": v.get("has_vehicle", True),
        }
        if existing is None:
            centre = ServiceCentre(region_id=region.id, **values)
            session.add(centre)
            await session.flush()
            centres[region.id] = centre
            report.created += 1
        elif _differs(existing, values):
            for name, value in values.items():
                setattr(existing, name, value)
            centre = existing
            report.updated += 1
        else:
            centre = existing
            report.unchanged += 1
        await _sync_centre_responder(session, centre)
    await session.flush()


async def _sync_centre_responder(session: AsyncSession, centre: ServiceCentre) -> None:
    """The dispatcher reaches a centre through a responder with its duty phone."""
    # The responder's own name ("…值班") is left as the operators set it.
    values: dict[str, Any] = {
        "kind": _responder_kind_for(centre.level),
        "phone": centre.duty_phone,
        "lat": centre.lat,
        "lon": centre.lon,
    }
    responder = (
        await session.execute(select(Responder).where(col(Responder.centre_id) == centre.id))
    ).scalar_one_or_none()
    if responder is None:
        session.add(
            Responder(
                centre_id=centre.id,
                name=f"{centre.name}值班"[:32],
                travel_mode="car",
                setup_minutes=CENTRE_SETUP_MINUTES,
                **values,
            )
        )
    elif _differs(responder, values):
        for name, value in values.items():
            setattr(responder, name, value)


async def _existing_by(
    session: AsyncSession, model: Any, key: Any, keys: list[Any]
) -> dict[Any, Any]:
    found: dict[Any, Any] = {}
    # Chunks keep each statement's parameter list small for city-sized files.
    for start in range(0, len(keys), 5000):
        chunk = keys[start : start + 5000]
        for row in (await session.execute(select(model).where(key.in_(chunk)))).scalars():
            found[getattr(row, key.key)] = row
    return found


async def _write(
    session: AsyncSession, model: Any, inserts: list[dict[str, Any]], updates: list[dict[str, Any]]
) -> None:
    if inserts:
        await session.execute(model.__table__.insert(), inserts)
    if updates:
        # ORM bulk UPDATE by primary key: one statement, many parameter sets.
        await session.execute(update(model), updates)


async def _apply_elders(session: AsyncSession, sheet: ParsedSheet, report: SheetReport) -> None:
    regions = await _Regions.load(session)
    existing = await _existing_by(
        session, Elder, col(Elder.code), [p.values["code"] for p in sheet.rows]
    )
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for parsed in sheet.rows:
        v = parsed.values
        village, problem = _resolve_village(
            regions, parsed, sheet.table_name, sheet.parents_refused
        )
        if village is None:
            report.refused.extend([problem] if problem else [])
            continue
        row = existing.get(v["code"])
        where = _coordinates(parsed, row, village, sheet.table_name, report)
        if isinstance(where, Finding):
            report.refused.append(where)
            continue
        values: dict[str, Any] = {"name": v["name"], "village_id": village.id}
        values["lat"], values["lon"] = where
        for name in ("address", "guardian_phones", "consent", "night_start", "night_end"):
            if name in v:
                values[name] = v[name]
        # A 类别 column alone ("独居、失能") sets its flags and clears the others.
        flags_given = any(name in v for name in ELDER_FLAGS) or "categories" in parsed.columns
        for name in ELDER_FLAGS:
            if flags_given:
                values[name] = bool(v.get(name, False))
        if row is None:
            defaults = {
                "address": "",
                "guardian_phones": [],
                "consent": True,
                "night_start": "22:00",
                "night_end": "06:00",
                "thresholds": {},
                **dict.fromkeys(ELDER_FLAGS, False),
            }
            inserts.append({**defaults, **values, "code": v["code"]})
            report.created += 1
        elif _differs(row, values):
            updates.append({"id": row.id, **values})
            report.updated += 1
        else:
            report.unchanged += 1
    await _write(session, Elder, inserts, updates)


async def _apply_devices(session: AsyncSession, sheet: ParsedSheet, report: SheetReport) -> None:
    from gateway.broker_config import hash_device_password, verify_mosquitto_hash

    elders = await _existing_by(
        session, Elder, col(Elder.code), sorted({p.values["elder_code"] for p in sheet.rows})
    )
    existing = await _existing_by(
        session, Device, col(Device.id), [p.values["device_id"] for p in sheet.rows]
    )
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for parsed in sheet.rows:
        v = parsed.values
        elder = elders.get(v["elder_code"])
        if elder is None:
            refused_elder = sheet.parents_refused.get(v["elder_code"])
            report.refused.append(
                Finding(
                    sheet.table_name,
                    parsed.row,
                    parsed.columns.get("elder_code"),
                    _refused_in_file("老人", v["elder_code"], refused_elder)
                    if refused_elder
                    else f"找不到老人编号“{v['elder_code']}”：请先导入老人表 / unknown elder "
                    f"{v['elder_code']!r}: import the elders first",
                )
            )
            continue
        kind: DeviceKind = v["kind"]
        row = existing.get(v["device_id"])
        values: dict[str, Any] = {"kind": kind.value, "elder_id": elder.id}
        if "heartbeat_interval_s" in v:
            values["heartbeat_interval_s"] = v["heartbeat_interval_s"]
        if "enabled" in v:
            values["enabled"] = v["enabled"]
        password = v.get("password", "")
        # A password already stored stays as it is: re-hashing it would be a change every time.
        if password and not (
            row is not None and verify_mosquitto_hash(row.password_hash, password)
        ):
            values["password_hash"] = hash_device_password(password)
        if row is None:
            if not password:
                report.notices.append(
                    Finding(
                        sheet.table_name,
                        parsed.row,
                        parsed.columns.get("password") or parsed.columns.get("device_id"),
                        "没有设备密码：设备暂时无法登录 MQTT / no device password: the device "
                        "cannot log in to the broker until one is set",
                    )
                )
            inserts.append(
                {
                    "heartbeat_interval_s": DEFAULT_HEARTBEAT_S.get(kind, 60),
                    "enabled": True,
                    "online": False,
                    "password_hash": "",
                    **values,
                    "id": v["device_id"],
                }
            )
            report.created += 1
        elif _differs(row, values):
            updates.append({"id": row.id, **values})
            report.updated += 1
        else:
            report.unchanged += 1
    await _write(session, Device, inserts, updates)


async def _apply_aides(session: AsyncSession, sheet: ParsedSheet, report: SheetReport) -> None:
    regions = await _Regions.load(session)
    existing = await _existing_by(
        session, Responder, col(Responder.phone), [p.values["phone"] for p in sheet.rows]
    )
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for parsed in sheet.rows:
        v = parsed.values
        row = existing.get(v["phone"])
        if row is not None and row.kind != ResponderKind.aide:
            report.refused.append(
                Finding(
                    sheet.table_name,
                    parsed.row,
                    parsed.columns.get("phone"),
                    f"这个号码是“{row.name}”的值班电话 / this number is a centre's duty phone",
                )
            )
            continue
        village, problem = _resolve_village(
            regions, parsed, sheet.table_name, sheet.parents_refused
        )
        if village is None:
            report.refused.extend([problem] if problem else [])
            continue
        where = _coordinates(parsed, row, village, sheet.table_name, report)
        if isinstance(where, Finding):
            report.refused.append(where)
            continue
        values: dict[str, Any] = {"name": v["name"], "village_id": village.id}
        values["lat"], values["lon"] = where
        for name in ("travel_mode", "setup_minutes", "on_duty", "lang"):
            if name in v:
                values[name] = v[name]
        if row is None:
            defaults = {
                "kind": ResponderKind.aide.value,
                "travel_mode": "ebike",
                "setup_minutes": AIDE_SETUP_MINUTES,
                "on_duty": True,
                "lang": "zh",
                "centre_id": None,
            }
            inserts.append({**defaults, **values, "phone": v["phone"]})
            report.created += 1
        elif _differs(row, values):
            updates.append({"id": row.id, **values})
            report.updated += 1
        else:
            report.unchanged += 1
    await _write(session, Responder, inserts, updates)


_APPLY: Final[dict[RegistryKind, Callable[[AsyncSession, ParsedSheet, SheetReport], Any]]] = {
    RegistryKind.regions: _apply_regions,
    RegistryKind.centres: _apply_centres,
    RegistryKind.elders: _apply_elders,
    RegistryKind.devices: _apply_devices,
    RegistryKind.aides: _apply_aides,
}


# Whose rows a sheet's rows name: a device its elder, an elder or an aide its village.
_PARENT_KIND: Final = {
    RegistryKind.devices: RegistryKind.elders,
    RegistryKind.elders: RegistryKind.regions,
    RegistryKind.aides: RegistryKind.regions,
}


def _refused_keys(sheet: ParsedSheet, report: SheetReport) -> dict[str, int]:
    """The keys of every row of the sheet refused so far, while parsing or while applying."""
    assert sheet.kind is not None
    keys = dict(sheet.refused_keys)
    refused_rows = {f.row for f in report.refused if f.row is not None}
    for parsed in sheet.rows:
        if parsed.row in refused_rows:
            for key in _keys_of(sheet.kind, parsed.values):
                keys.setdefault(key, parsed.row)
    return keys


def _refused_in_file(what: str, key: str, where: tuple[str, int]) -> str:
    sheet, row = where
    return (
        f"{what}“{key}”在本文件中被拒绝（{sheet} 第{row}行）：请先改正那一行 / its "
        f"{'elder' if what == '老人' else 'village'} {key!r} was refused in this file "
        f"({sheet} row {row}): fix that row first"
    )


async def apply_sheets(
    sessions: SessionMaker,
    sheets: Sequence[ParsedSheet],
    *,
    source: str,
    now: datetime,
    dry_run: bool = False,
    strict: bool = False,
    actor: str = "cli",
    operator_id: int | None = None,
) -> ImportReport:
    """Write checked sheets in one transaction, parents first; return what happened.

    Rows refused while parsing, or here because a reference is missing, are left out and
    reported. `strict`: any refusal → nothing stored. `dry_run`: everything is checked against
    the database, then rolled back.
    """
    report = ImportReport(source=source, dry_run=dry_run, strict=strict)
    by_kind: dict[RegistryKind | None, list[tuple[ParsedSheet, SheetReport]]] = {}
    for sheet in sheets:
        sheet_report = SheetReport(
            sheet.table_name,
            sheet.kind,
            rows=sheet.total_rows,
            refused=list(sheet.refused),
            notices=list(sheet.notices),
        )
        report.sheets.append(sheet_report)
        by_kind.setdefault(sheet.kind, []).append((sheet, sheet_report))

    async with sessions() as session:
        transaction = await session.begin()
        try:
            refused_by_kind: dict[RegistryKind, dict[str, tuple[str, int]]] = {}
            for kind in APPLY_ORDER:
                for sheet, sheet_report in by_kind.get(kind, []):
                    parent = _PARENT_KIND.get(kind)
                    sheet.parents_refused = refused_by_kind.get(parent, {}) if parent else {}
                    await _APPLY[kind](session, sheet, sheet_report)
                    refused = refused_by_kind.setdefault(kind, {})
                    for key, row in _refused_keys(sheet, sheet_report).items():
                        refused.setdefault(key, (sheet.table_name, row))
            session.add(
                AuditLog(
                    at=now,
                    operator_id=operator_id,
                    action="registry_import",
                    target_type="file",
                    target_id=Path(source).name[:64],
                    detail={
                        "actor": actor,
                        "created": sum(s.created for s in report.sheets),
                        "updated": sum(s.updated for s in report.sheets),
                        "refused_rows": sum(s.refused_rows for s in report.sheets),
                    },
                )
            )
            await session.flush()
        except Exception as exc:
            await transaction.rollback()
            report.failure = f"数据库拒绝写入 / the database refused the import: {exc}"[:500]
            _zero_counts(report)
            return report
        if strict and report.refused:
            await transaction.rollback()
            report.failure = (
                "严格模式：有被拒绝的行，整个文件未导入 / strict: rows were refused, so no row "
                "of this file was imported"
            )
            _zero_counts(report)
            return report
        if dry_run:
            await transaction.rollback()
            return report
        await transaction.commit()
        report.committed = True
    return report


def _zero_counts(report: ImportReport) -> None:
    for s in report.sheets:
        s.created = s.updated = s.unchanged = 0


async def import_registry_file(
    sessions: SessionMaker,
    data: bytes,
    filename: str,
    *,
    now: datetime,
    kind: RegistryKind | None = None,
    dry_run: bool = False,
    strict: bool = False,
    actor: str = "cli",
    operator_id: int | None = None,
) -> ImportReport:
    """Read, check and apply one CSV or .xlsx file (the CLI and the web API both call this)."""
    try:
        sheets = parse_file(data, filename, kind)
    except RegistryFileError as exc:
        return ImportReport(source=filename, dry_run=dry_run, strict=strict, failure=str(exc))
    return await apply_sheets(
        sessions,
        sheets,
        source=filename,
        now=now,
        dry_run=dry_run,
        strict=strict,
        actor=actor,
        operator_id=operator_id,
    )


# --- export -----------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return "、".join(str(v) for v in value)
    return str(value)


def export_headers(kind: RegistryKind, english: bool = False) -> list[str]:
    return [spec.en if english else spec.zh for spec in _export_columns(kind)]


def _export_columns(kind: RegistryKind) -> list[ColumnSpec]:
    # The 类别 column would duplicate the six flag columns.
    return [s for s in COLUMNS[kind] if s.field != "categories" and s.field != "password"]


async def export_tables(
    session: AsyncSession, english: bool = False
) -> dict[RegistryKind, list[list[str]]]:
    """Every kind as rows of text (header first), in the layout import reads back."""
    regions = await _Regions.load(session)

    def name_of(region_id: int | None) -> str:
        region = regions.by_id.get(region_id) if region_id is not None else None
        return region.name if region else ""

    def code_of(region_id: int | None) -> str:
        region = regions.by_id.get(region_id) if region_id is not None else None
        return region.code if region else ""

    def township_name(region_id: int | None) -> str:
        township = regions.township_of(region_id) if region_id is not None else None
        return township.name if township else ""

    level_text = (lambda lv: lv) if english else (lambda lv: LEVEL_ZH[RegionLevel(lv)])
    kind_text = (lambda k: k) if english else (lambda k: DEVICE_KIND_ZH[DeviceKind(k)])
    mode_text = (lambda m: m) if english else (lambda m: TRAVEL_MODE_ZH.get(m, m))

    tables: dict[RegistryKind, list[list[str]]] = {
        kind: [export_headers(kind, english)] for kind in RegistryKind
    }
    region_rows = sorted(
        (await session.execute(select(Region))).scalars(),
        key=lambda r: (_LEVEL_RANK[RegionLevel(r.level)], r.code),
    )
    for r in region_rows:
        values = {
            "code": r.code,
            "name": r.name,
            "level": level_text(r.level),
            "parent": code_of(r.parent_id),
            "lat": r.lat,
            "lon": r.lon,
            "response_minutes": r.response_minutes,
            "circuity": r.circuity,
        }
        tables[RegistryKind.regions].append(_row(RegistryKind.regions, values))
    centres = (
        await session.execute(select(ServiceCentre).order_by(col(ServiceCentre.id)))
    ).scalars()
    for c in centres:
        values = {
            "region": code_of(c.region_id),
            "region_name": name_of(c.region_id),
            "name": c.name,
            "duty_phone": c.duty_phone,
            "lat": c.lat,
            "lon": c.lon,
            "has_vehicle": c.has_vehicle,
        }
        tables[RegistryKind.centres].append(_row(RegistryKind.centres, values))
    elder_codes: dict[int, tuple[str, str]] = {}
    for e in (await session.execute(select(Elder).order_by(col(Elder.code)))).scalars():
        assert e.id is not None
        elder_codes[e.id] = (e.code, e.name)
        values = {
            "code": e.code,
            "name": e.name,
            "township": township_name(e.village_id),
            "village": name_of(e.village_id),
            "village_code": code_of(e.village_id),
            "address": e.address,
            "lat": e.lat,
            "lon": e.lon,
            **{flag: getattr(e, flag) for flag in ELDER_FLAGS},
            "guardian_phones": list(e.guardian_phones or []),
            "consent": e.consent,
            "night_start": e.night_start,
            "night_end": e.night_end,
        }
        tables[RegistryKind.elders].append(_row(RegistryKind.elders, values))
    for d in (await session.execute(select(Device).order_by(col(Device.id)))).scalars():
        code, name = elder_codes.get(d.elder_id, ("", ""))
        values = {
            "device_id": d.id,
            "kind": kind_text(d.kind),
            "elder_code": code,
            "elder_name": name,
            "heartbeat_interval_s": d.heartbeat_interval_s,
            "enabled": d.enabled,
        }
        tables[RegistryKind.devices].append(_row(RegistryKind.devices, values))
    aides = (
        await session.execute(
            select(Responder)
            .where(col(Responder.kind) == ResponderKind.aide)
            .order_by(col(Responder.village_id), col(Responder.phone))
        )
    ).scalars()
    for a in aides:
        values = {
            "name": a.name,
            "phone": a.phone,
            "township": township_name(a.village_id),
            "village": name_of(a.village_id),
            "village_code": code_of(a.village_id),
            "lat": a.lat,
            "lon": a.lon,
            "travel_mode": mode_text(a.travel_mode),
            "setup_minutes": a.setup_minutes,
            "on_duty": a.on_duty,
            "lang": a.lang if english else ("英文" if a.lang == "en" else "中文"),
        }
        tables[RegistryKind.aides].append(_row(RegistryKind.aides, values))
    return tables


def _row(kind: RegistryKind, values: dict[str, Any]) -> list[str]:
    return [_fmt(values.get(spec.field)) for spec in _export_columns(kind)]


# A spreadsheet runs a cell starting with one of these as a formula; a plain number (a phone
# "+86…", a longitude "-3.5") it reads as a number, which is harmless.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?\d[\d .]*")


def _live_in_a_spreadsheet(text: str) -> bool:
    return text.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(text)


def csv_safe(text: str) -> str:
    """A name typed as "=HYPERLINK(…)" stays text when the CSV is opened in Excel or WPS: it is
    written with a leading apostrophe, which `csv_unsafe` removes again on import."""
    return f"'{text}" if _live_in_a_spreadsheet(text) else text


def csv_unsafe(text: str) -> str:
    return text[1:] if text.startswith("'") and _live_in_a_spreadsheet(text[1:]) else text


def tables_to_csv(rows: list[list[str]]) -> bytes:
    """UTF-8 with a BOM: Excel on a Chinese Windows opens it without garbling."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows([csv_safe(c) for c in r] for r in rows)
    return out.getvalue().encode("utf-8-sig")


def tables_to_xlsx(tables: dict[RegistryKind, list[list[str]]]) -> bytes:
    from openpyxl import Workbook

    workbook = Workbook()
    first = workbook.active
    if first is not None:
        workbook.remove(first)
    for kind in APPLY_ORDER:
        sheet = workbook.create_sheet(SHEET_TITLES[kind])
        for row in tables[kind]:
            # Text cells: a phone number must not turn into 1.38e10, nor a code lose its zeros.
            sheet.append(row)
            # Nor a name typed as "=HYPERLINK(…)" into a live formula (openpyxl makes any text
            # starting with "=" one): every cell is text, read back as it was written.
            for cell in sheet[sheet.max_row]:
                if cell.data_type == "f":
                    cell.data_type = "s"
        sheet.freeze_panes = "A2"
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def write_export(tables: dict[RegistryKind, list[list[str]]], target: Path) -> list[Path]:
    """`.xlsx` → one workbook with a sheet per kind; otherwise a directory of CSV files."""
    if target.suffix.lower() == ".xlsx":
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(tables_to_xlsx(tables))
        return [target]
    target.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for kind in APPLY_ORDER:
        path = target / f"{kind.value}.csv"
        path.write_bytes(tables_to_csv(tables[kind]))
        written.append(path)
    return written


async def export_registry(
    sessions: SessionMaker, target: Path, *, english: bool = False
) -> list[Path]:
    """Export the whole registry to `target` (.xlsx workbook, or a directory of CSV files)."""
    async with sessions() as session:
        tables = await export_tables(session, english)
    return await asyncio.to_thread(write_export, tables, target)
