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


def parse_travel_table(text: str) -> tuple[list[TravelTimeRow], list[TravelTimeError]]:
    """Rows that can be imported, and the lines that cannot (with why)."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))  # Excel writes a BOM
    header = next(reader, None)
    if header is None:
        return [], [TravelTimeError(1, "empty file")]
    columns = [HEADER_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header]
    missing = [name for name in REQUIRED if name not in columns]
    if missing:
        return [], [TravelTimeError(1, f"missing column(s): {', '.join(missing)}")]
    index = {name: columns.index(name) for name in REQUIRED}
    rows: list[TravelTimeRow] = []
    errors: list[TravelTimeError] = []
    for line, record in enumerate(reader, start=2):
        if not any(cell.strip() for cell in record):
            continue
        if len(record) < len(columns):
            errors.append(TravelTimeError(line, "too few fields"))
            continue
        elder_code = record[index["elder_code"]].strip()
        phone = record[index["responder_phone"]].strip().replace(" ", "")
        try:
            minutes = float(record[index["minutes"]].strip())
        except ValueError:
            errors.append(TravelTimeError(line, "minutes is not a number"))
            continue
        if not elder_code or not phone:
            errors.append(TravelTimeError(line, "elder code and responder phone are required"))
        elif not math.isfinite(minutes) or minutes < 0 or minutes > MAX_MINUTES:
            errors.append(TravelTimeError(line, f"minutes must be 0-{MAX_MINUTES}"))
        else:
            rows.append(TravelTimeRow(line, elder_code, phone, minutes))
    return rows, errors
