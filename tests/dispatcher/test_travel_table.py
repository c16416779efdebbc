"""Reading a travel-time table from a road router's CSV export."""

from __future__ import annotations

from dispatcher.travel_table import TravelTimeRow, parse_travel_table


def test_rows_are_read_with_english_or_chinese_headers_and_a_bom() -> None:
    english = "elder_code,responder_phone,minutes\nE0001,+8613800000001,12.5\n"
    chinese = "\ufeff老人编号,助老员电话,分钟\r\nE0001,+86 138 0000 0001,12.5\r\n"
    expected = [TravelTimeRow(2, "E0001", "+8613800000001", 12.5)]
    assert parse_travel_table(english) == (expected, [])
    assert parse_travel_table(chinese) == (expected, [])


def test_bad_lines_are_reported_and_the_good_ones_kept() -> None:
    rows, errors = parse_travel_table(
        "minutes,elder_code,responder_phone,note\n"
        "7,E0001,+8613800000001,bridge\n"
        "abc,E0002,+8613800000002,\n"
        "-1,E0003,+8613800000003,\n"
        "9999,E0004,+8613800000004,\n"
        ",,,\n"
        "5,,+8613800000005,\n"
        "5,E0006\n"
    )
    assert rows == [TravelTimeRow(2, "E0001", "+8613800000001", 7.0)]
    assert [(e.line, e.reason.split()[0]) for e in errors] == [
        (3, "minutes"),
        (4, "minutes"),
        (5, "minutes"),
        (7, "elder"),
        (8, "too"),
    ]


def test_a_file_without_the_needed_columns_is_refused_whole() -> None:
    rows, errors = parse_travel_table("elder,phone\nE0001,+8613800000001\n")
    assert rows == []
    assert [e.reason for e in errors] == ["missing column(s): minutes"]
    assert parse_travel_table("")[1][0].reason == "empty file"
