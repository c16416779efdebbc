"""Read a travel-time table exported from a road router. Pure: text in, rows and errors out.

A CSV with a header row and one line per responder and home:

    elder_code,responder_phone,minutes
    E0001,+8613800000001,12.5

Chinese headers (老人编号, 响应人电话 / 助老员电话, 分钟) are read too, because the people who
import it keep their registry in spreadsheets. A bad line is reported with its line number and
skipped; it never stops the good lines from being read.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

HEADER_ALIASES: dict[str, str] = {
    "elder_code": "elder_code",
    "elder": "elder_code",
    "老人编号": "elder_code",
    "responder_phone": "responder_phone",
    "phone": "responder_phone",
    "响应人电话": "responder_phone",
    "助老员电话": "responder_phone",
    "minutes": "minutes",
    "分钟": "minutes",
}
REQUIRED = ("elder_code", "responder_phone", "minutes")
_ZH = {"elder_code": "老人编号", "responder_phone": "响应人电话", "minutes": "分钟"}
# Beyond this a routed time is a unit mistake (seconds?) rather than a road.
MAX_MINUTES = 24 * 60


@dataclass(frozen=True)
class TravelTimeRow:
    line: int
    elder_code: str
    responder_phone: str
    minutes: float


@dataclass(frozen=True)
class TravelTimeError:
    line: int
    reason: str
    # The same in Chinese for the operator's report, and the column as headed in the file.
    zh: str = ""
    column: str | None = None

    def __str__(self) -> str:
        where = f"第{self.line}行 row {self.line}" + (
            f" 列「{self.column}」" if self.column else ""
        )
        return f"{where}: {self.zh} / {self.reason}" if self.zh else f"{where}: {self.reason}"


def parse_travel_table(text: str) -> tuple[list[TravelTimeRow], list[TravelTimeError]]:
    """Rows that can be imported, and the lines that cannot (with why)."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))  # Excel writes a BOM
    header = next(reader, None)
    if header is None:
        return [], [TravelTimeError(1, "empty file", "文件是空的")]
    columns = [HEADER_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header]
    missing = [name for name in REQUIRED if name not in columns]
    if missing:
        return [], [
            TravelTimeError(
                1,
                f"missing column(s): {', '.join(missing)}",
                f"缺少必填列：{'、'.join(_ZH[name] for name in missing)}",
            )
        ]
    index = {name: columns.index(name) for name in REQUIRED}
    headed = {name: header[i].strip() for name, i in index.items()}
    rows: list[TravelTimeRow] = []
    errors: list[TravelTimeError] = []
    for line, record in enumerate(reader, start=2):
        if not any(cell.strip() for cell in record):
            continue
        if len(record) < len(columns):
            errors.append(TravelTimeError(line, "too few fields", "这一行的列数不够"))
            continue
        elder_code = record[index["elder_code"]].strip()
        phone = record[index["responder_phone"]].strip().replace(" ", "")
        try:
            minutes = float(record[index["minutes"]].strip())
        except ValueError:
            errors.append(
                TravelTimeError(line, "minutes is not a number", "分钟不是数字", headed["minutes"])
            )
            continue
        if not elder_code or not phone:
            errors.append(
                TravelTimeError(
                    line,
                    "elder code and responder phone are required",
                    "老人编号和响应人电话必填",
                    headed["responder_phone" if elder_code else "elder_code"],
                )
            )
        elif not math.isfinite(minutes) or minutes < 0 or minutes > MAX_MINUTES:
            errors.append(
                TravelTimeError(
                    line,
                    f"minutes must be 0-{MAX_MINUTES}",
                    f"分钟须在 0–{MAX_MINUTES} 之间",
                    headed["minutes"],
                )
            )
        else:
            rows.append(TravelTimeRow(line, elder_code, phone, minutes))
    return rows, errors
