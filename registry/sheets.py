"""Parsing the registry's sheets (pure: no database, no file, no spreadsheet library).

A sheet is a `Table` of cells as text (`registry.files` reads CSV and .xlsx into tables). Headers
may be Chinese or English (`老人编号` or `elder_code`, `经度` or `lon`); a title row above the
header is skipped. Every row is checked on its own: the good ones become `ParsedRow`s, a refused
one a `Finding` with its row number (as the spreadsheet shows it) and column. ID-card numbers
(身份证号) and columns the platform does not need are ignored with a notice (PIPL: minimum data).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from anxin.schemas import DEVICE_ID_RE, DEVICE_KIND_ZH
from dispatcher.routing import parse_month_day
from registry.columns import (
    CATEGORY_NONE,
    CATEGORY_SUFFIXES,
    CATEGORY_WORDS,
    CATEGORY_ZH,
    COLUMNS,
    DEVICE_KIND_ALIASES,
    ELDER_FLAGS,
    ID_NUMBER_HEADERS,
    KEEP,
    KIND_NAME_HINTS,
    LEVEL_ALIASES,
    LEVEL_ZH,
    SILENT_HEADERS,
    TRAVEL_MODE_ALIASES,
    TRAVEL_MODE_ZH,
    VILLAGE,
    Blank,
    ColumnSpec,
    RegistryKind,
)
from registry.report import Finding

_TRUE_WORDS: Final = frozenset(
    {"是", "有", "y", "yes", "true", "1", "√", "✓", "✔", "在岗", "启用", "t"}
)
_FALSE_WORDS: Final = frozenset(
    {"否", "无", "没有", "n", "no", "false", "0", "×", "✗", "f", "-", "—"}
)
_LIST_SEPARATORS: Final = re.compile(r"[;；,，、/\s]+")
# Between a 类别 cell's words: the list separators, and brackets ("空巢（失智）", "特困(分散供养)").
_CATEGORY_SEPARATORS: Final = re.compile(r"[;；,，、/|+\s()\[\]【】]+")
_CODE_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_HHMM_RE: Final = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
_E164_RE: Final = re.compile(r"^\+[1-9][0-9]{7,14}$")
MAX_GUARDIAN_PHONES: Final = 5


@dataclass(frozen=True)
class Table:
    """One sheet's cells as text, rows numbered as the spreadsheet shows them (from 1)."""

    name: str
    rows: tuple[tuple[int, tuple[str, ...]], ...]


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
    return key in ID_NUMBER_HEADERS or key in SILENT_HEADERS


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
    hinted = [kind for kind, hints in KIND_NAME_HINTS.items() if any(h in name for h in hints)]

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


def keys_of(kind: RegistryKind, values: dict[str, Any]) -> list[str]:
    keys = [values.get(KEY_FIELD[kind])]
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


@dataclass(frozen=True)
class Categories:
    """A 类别 cell: the flags its words set, and the words it has that no flag knows."""

    flags: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()


def _category_flag(word: str) -> str | None:
    if word in CATEGORY_WORDS:
        return CATEGORY_WORDS[word]
    for suffix in CATEGORY_SUFFIXES:
        if word.endswith(suffix) and word[: -len(suffix)] in CATEGORY_WORDS:
            return CATEGORY_WORDS[word[: -len(suffix)]]
    return None


_LONGEST_WORD: Final = max(len(w) for w in (*CATEGORY_WORDS, *CATEGORY_SUFFIXES))


def _written_together(word: str) -> list[str] | None:
    """Known words (and endings such as 老人) written together, "独居高龄", "特困失能老人",
    without a separator → their flags, longest word first; None unless all of it is covered."""
    flags: list[str] = []
    at = 0
    while at < len(word):
        for end in range(min(len(word), at + _LONGEST_WORD), at, -1):
            piece = word[at:end]
            if piece in CATEGORY_WORDS or (piece in CATEGORY_SUFFIXES and flags):
                flags.extend([CATEGORY_WORDS[piece]] if piece in CATEGORY_WORDS else [])
                at = end
                break
        else:
            return None
    return flags


def parse_categories(text: str) -> Categories:
    """A roster's 类别 cell ("特困、重残、计划生育特殊家庭、失智", "低保户; 独居老人") → its flags by
    `registry.columns.CATEGORY_WORDS`; a word it does not know is kept aside, as written, to
    be reported."""
    flags: list[str] = []
    unknown: list[str] = []
    for written in _CATEGORY_SEPARATORS.split(unicodedata.normalize("NFKC", text)):
        word = written.lower()
        if not word or word in CATEGORY_NONE:
            continue
        flag = _category_flag(word)
        found = [flag] if flag is not None else _written_together(word)
        if found is None:
            unknown.append(written)
            continue
        flags.extend(f for f in found if f not in flags)
    return Categories(tuple(flags), tuple(unknown))


def unknown_category_note(sheet: str, row: int, column: str, unknown: Sequence[str]) -> Finding:
    """The note on a row whose 类别 cell has words no flag knows: they are named, the row is
    imported with the words it does know."""
    shown = [w if len(w) <= 20 else w[:20] + "…" for w in unknown]
    words = "、".join(f"“{w}”" for w in shown)
    choices = "、".join(CATEGORY_ZH.values())
    return Finding(
        sheet,
        row,
        column,
        f"不认识的类别{words}，未保存；这一行的其他内容照常导入（可填：{choices}） / "
        f"unknown category {', '.join(repr(w) for w in shown)} not stored; the rest of the row "
        "is imported",
    )


def _lookup(aliases: dict[str, Any], text: str, what: str, choices: Iterable[str]) -> Any:
    key = text.strip().lower().replace(" ", "")
    if key in aliases:
        return aliases[key]
    raise CellError(f"不认识的{what}“{text}”（可填：{'、'.join(choices)}）/ unknown {what}")


def _parse_cell(kind: RegistryKind, spec: ColumnSpec, text: str) -> Any:  # noqa: C901 (over the complexity budget: known debt)
    """One non-empty cell → its value, or CellError with a message for a person."""
    name = spec.field
    if name in ("lat", "season_lat"):
        return parse_float(text, -90, 90, "纬度 latitude")
    if name in ("lon", "season_lon"):
        return parse_float(text, -180, 180, "经度 longitude")
    if name in ("season_start", "season_end"):
        try:
            return parse_month_day(text)
        except ValueError:
            raise CellError(f"“{text}”应为 月-日，如 06-01 / expected MM-DD") from None
    if name == "season_address":
        return parse_text(text, 128, "季节住址")
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
        return parse_categories(text)
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
        if spec.field == "categories":
            return Categories()
        return [] if spec.field == "guardian_phones" else ""
    return KEEP


def parse_table(table: Table, kind: RegistryKind | None = None) -> ParsedSheet:  # noqa: C901 (over the complexity budget: known debt)
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
        if key in ID_NUMBER_HEADERS:
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
        missing.append(VILLAGE)
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
        notes = _row_notes(table.name, row_number, values, seen_fields)
        if problems:
            sheet.refused.extend(problems)
            for key in keys_of(kind, values):
                sheet.refused_keys.setdefault(key, row_number)
        else:
            sheet.notices.extend(notes)
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
    season = [values.get(n) for n in ("season_lat", "season_lon", "season_start", "season_end")]
    if any(v is not None for v in season) and any(v is None for v in season):
        problems.append(
            Finding(
                sheet,
                row,
                headers.get("season_lat") or headers.get("season_start"),
                "季节住址要同时填季节纬度、季节经度、季节起、季节止 / a seasonal place needs "
                "its latitude, longitude, first and last day (MM-DD)",
            )
        )
    if kind is RegistryKind.elders and "categories" in values:
        for flag in values["categories"].flags:
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


def _row_notes(
    sheet: str, row: int, values: dict[str, Any], headers: dict[str, str]
) -> list[Finding]:
    """What the row says that is not stored, for a person to read: a 类别 word nobody knows."""
    categories: Categories | None = values.pop("categories", None)
    if categories is None or not categories.unknown:
        return []
    return [unknown_category_note(sheet, row, headers["categories"], categories.unknown)]


def _natural_key(kind: RegistryKind, values: dict[str, Any]) -> object:
    return {
        RegistryKind.regions: values.get("code"),
        RegistryKind.centres: values.get("region"),
        RegistryKind.elders: values.get("code"),
        RegistryKind.devices: values.get("device_id"),
        RegistryKind.aides: values.get("phone"),
    }[kind]


KEY_FIELD: Final = {
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
            column = parsed.columns.get(KEY_FIELD[sheet.kind])
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
