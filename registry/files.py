"""Registry files as bytes: CSV (UTF-8 or GB18030) and Excel .xlsx in, the same layout out.

CSV holds one kind per file, a workbook one kind per sheet. A cell a spreadsheet would run as a
formula is written as text and read back as it was (`csv_safe` / `csv_unsafe`).
"""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime, time
from pathlib import Path

from registry.columns import APPLY_ORDER, SHEET_TITLES, RegistryKind
from registry.sheets import ParsedSheet, Table, parse_table


class RegistryFileError(ValueError):
    """The file cannot be read at all (format, encoding)."""


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


def parse_file(data: bytes, filename: str, kind: RegistryKind | None = None) -> list[ParsedSheet]:
    """Read and check a CSV or .xlsx file; empty sheets are skipped."""
    sheets = [parse_table(t, kind) for t in read_tables(data, filename)]
    return [s for s in sheets if s.kind is not None or s.refused]


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
